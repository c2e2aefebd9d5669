import CLibpq
import Foundation

/// An error from Postgres or from the client side of a connection. Always carries the SQLSTATE
/// when the server sent one, so callers branch on codes (e.g. `55P03` lock_not_available), never
/// on message text.
public struct PGError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// Could not connect, or the connection broke; the statement's outcome may be unknown.
        case connection
        /// The server rejected the statement (SQLSTATE set).
        case server
        /// The pool had no connection to give within its acquire timeout.
        case poolExhausted
        /// The pool is shut down.
        case poolClosed
        /// A result did not have the shape the caller expected (wrong column, NULL, bad integer).
        case decoding
    }

    public var kind: Kind
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var hint: String?

    public init(kind: Kind, sqlState: String? = nil, message: String, detail: String? = nil, hint: String? = nil) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    public var description: String {
        var s = sqlState.map { "[\($0)] \(message)" } ?? message
        if let detail { s += " (detail: \(detail))" }
        if let hint { s += " (hint: \(hint))" }
        return s
    }

    /// True when the same work may well succeed if simply tried again: the connection or pool
    /// failed, or the server gave up for a passing reason (deadlock 40P01, serialization 40001,
    /// lock_timeout 55P03, statement_timeout 57014, insufficient resources 53xxx, shutdown 57P0x).
    public var isTransient: Bool {
        if isConnectionLevel { return true }
        guard let s = sqlState else { return false }
        return ["40P01", "40001", "55P03", "57014"].contains(s) || s.hasPrefix("53")
    }

    /// True when the connection itself failed (its statement's outcome may be unknown).
    public var isConnectionLevel: Bool {
        kind == .connection || kind == .poolExhausted
            || (sqlState.map { $0.hasPrefix("08") || $0 == "57P01" || $0 == "57P02" || $0 == "57P03" } ?? false)
    }

    /// Builds an error from a failed result (server error) or, without one, from the connection.
    package static func from(result: OpaquePointer?, connection: OpaquePointer?) -> PGError {
        func field(_ code: UInt8) -> String? {
            guard let result, let p = PQresultErrorField(result, Int32(code)) else { return nil }
            return String(cString: p)
        }
        if let result, let state = field(UInt8(ascii: "C")) {
            let primary = field(UInt8(ascii: "M")) ?? String(cString: PQresultErrorMessage(result))
            return PGError(kind: .server, sqlState: state, message: primary,
                           detail: field(UInt8(ascii: "D")), hint: field(UInt8(ascii: "H")))
        }
        var text = "connection error"
        if let connection, let p = PQerrorMessage(connection) {
            let s = String(cString: p).trimmingCharacters(in: .whitespacesAndNewlines)
            if !s.isEmpty { text = s }
        }
        return PGError(kind: .connection, message: text)
    }
}
