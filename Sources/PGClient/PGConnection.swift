import CLibpq
#if canImport(Glibc)
import Glibc
#endif

/// A notification received on a LISTENing connection.
public struct PGNotification: Sendable, Equatable {
    public let channel: String
    public let payload: String
    public let backendPID: Int32
}

/// One libpq connection. Every method blocks the calling thread: call them only from a
/// `PGPool` thread (via `PGPool.withConnection`) or a dedicated thread (`PGListener`), never
/// from a SwiftNIO event loop or a Swift concurrency executor thread.
///
/// Not thread-safe: one holder at a time, which the pool guarantees (hence `@unchecked`).
public final class PGConnection: @unchecked Sendable {
    private var conn: OpaquePointer?
    /// Statement name per SQL text, prepared on first use (`PQprepare`), reused after.
    private var preparedStatements: [String: String] = [:]
    public let conninfo: String

    /// Connects with a libpq conninfo string or a `postgres://` URL. Defaults that the string
    /// does not set itself: `connect_timeout=10` (an unreachable host fails in seconds, not after
    /// the OS TCP timeout), `client_encoding=UTF8`, `application_name` (default `meter`; the rollup
    /// worker says `meter-rollup`, the listener `meter-listen`, so DBAs can tell them apart in
    /// pg_stat_activity). Then the session is
    /// set up (TimeZone UTC, synchronous_commit never off, optional statement_timeout); a failure
    /// there fails the connection instead of leaving it half set up.
    public init(conninfo: String, statementTimeout: String? = nil, applicationName: String = "meter") throws(PGError) {
        self.conninfo = conninfo
        // Defaults first, the caller's string last: with expand_dbname, later values win.
        let keys = ["connect_timeout", "client_encoding", "application_name", "dbname"]
        let values = ["10", "UTF8", applicationName, conninfo]
        let c: OpaquePointer? = keys.withCStringArray { k in
            values.withCStringArray { v in PQconnectdbParams(k, v, 1) }
        }
        guard let c, PQstatus(c) == CONNECTION_OK else {
            let err = PGError.from(result: nil, connection: c)
            PQfinish(c)
            throw err
        }
        conn = c
        // A 2xx promises a durable commit: never run with synchronous_commit = off, whatever the
        // server's default (stronger settings such as remote_apply are kept).
        do {
            try execute("""
                select pg_catalog.set_config('TimeZone', 'UTC', false),
                       pg_catalog.set_config('statement_timeout', coalesce($1, pg_catalog.current_setting('statement_timeout')), false),
                       case when pg_catalog.current_setting('synchronous_commit') = 'off'
                            then pg_catalog.set_config('synchronous_commit', 'on', false) end
                """, [statementTimeout])
        } catch {
            PQfinish(c)
            conn = nil
            throw error
        }
    }

    deinit { PQfinish(conn) }

    public func close() {
        PQfinish(conn)
        conn = nil
    }

    /// False once the server or network has dropped the connection.
    public var isHealthy: Bool { conn != nil && PQstatus(conn) == CONNECTION_OK }

    /// Detects, without a round trip, a connection the server has closed while it sat idle
    /// (restart, pg_terminate_backend, idle timeout): the server's last words (a FATAL error) and
    /// the end of the stream make the socket readable, while libpq alone only notices at the next
    /// query. An idle pooled connection (it never LISTENs) has nothing to read in normal life, so
    /// anything pending counts as a dead connection; at worst a healthy one is replaced.
    public func isAliveWithoutRoundTrip() -> Bool {
        guard let conn, PQstatus(conn) == CONNECTION_OK else { return false }
        var pfd = pollfd(fd: PQsocket(conn), events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 0) == 0
    }

    /// True when idle outside a transaction (safe to return to the pool).
    public var isIdle: Bool { conn != nil && PQtransactionStatus(conn) == PQTRANS_IDLE }

    public var backendPID: Int32 { conn.map { PQbackendPID($0) } ?? 0 }

    public var serverVersion: Int32 { conn.map { PQserverVersion($0) } ?? 0 }

    // MARK: statements

    /// Runs one parameterized statement (extended protocol, text format).
    @discardableResult
    public func execute(_ sql: String, _ params: [any PGParameter] = []) throws(PGError) -> PGResult {
        guard let conn else { throw PGError(kind: .connection, message: "connection is closed") }
        let res = withParams(params) { values, count in
            PQexecParams(conn, sql, count, nil, values, nil, nil, 0)
        }
        return try consume(res)
    }

    /// Runs a statement through a per-connection prepared statement (parse and plan once).
    /// Use for hot statements; `sql` must be a constant, never built from user data.
    @discardableResult
    public func executePrepared(_ sql: String, _ params: [any PGParameter] = []) throws(PGError) -> PGResult {
        guard let conn else { throw PGError(kind: .connection, message: "connection is closed") }
        let name: String
        if let existing = preparedStatements[sql] {
            name = existing
        } else {
            name = "meter_s\(preparedStatements.count + 1)"
            let prep = PQprepare(conn, name, sql, Int32(params.count), nil)
            _ = try consume(prep)
            preparedStatements[sql] = name
        }
        let res = withParams(params) { values, count in
            PQexecPrepared(conn, name, count, values, nil, nil, 0)
        }
        return try consume(res)
    }

    /// Runs a script of one or more statements with the simple query protocol. Only for trusted
    /// text from the repository (migrations, function files), never for user data.
    public func executeScript(_ sql: String) throws(PGError) {
        guard let conn else { throw PGError(kind: .connection, message: "connection is closed") }
        var failure: PGError?
        guard PQsendQuery(conn, sql) == 1 else { throw PGError.from(result: nil, connection: conn) }
        while let res = PQgetResult(conn) {
            let st = PQresultStatus(res)
            if failure == nil, st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR {
                failure = PGError.from(result: res, connection: conn)
            }
            PQclear(res)
        }
        if let failure { throw failure }
        if PQstatus(conn) != CONNECTION_OK { throw PGError.from(result: nil, connection: conn) }
    }

    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws.
    public func transaction<T>(_ begin: String = "begin", _ body: (PGConnection) throws -> T) throws -> T {
        try execute(begin)
        do {
            let value = try body(self)
            try execute("commit")
            return value
        } catch {
            if isHealthy { _ = try? execute("rollback") }
            throw error
        }
    }

    // MARK: COPY (bulk path)

    /// Streams rows into `COPY ... FROM STDIN` (text format). Each chunk is sent as it is; the
    /// caller formats rows (tab-separated, escaped per COPY text rules, newline-terminated).
    /// Returns the number of rows copied.
    @discardableResult
    public func copyIn(_ copySQL: String, chunks: some Sequence<String>) throws(PGError) -> Int {
        guard let conn else { throw PGError(kind: .connection, message: "connection is closed") }
        let start = PQexec(conn, copySQL)
        guard PQresultStatus(start) == PGRES_COPY_IN else { _ = try consume(start); return 0 }
        PQclear(start)
        for chunk in chunks {
            var chunk = chunk
            let ok = chunk.withUTF8 { buf in
                buf.withMemoryRebound(to: CChar.self) { PQputCopyData(conn, $0.baseAddress, Int32($0.count)) }
            }
            if ok != 1 { break }
        }
        guard PQputCopyEnd(conn, nil) == 1 else { throw PGError.from(result: nil, connection: conn) }
        return try copyFinished(conn)
    }

    /// After a COPY's data: its results until libpq has none left (the connection is usable
    /// again), the rows the server counted, or the first error.
    private func copyFinished(_ conn: OpaquePointer) throws(PGError) -> Int {
        var failure: PGError?
        var copied = 0
        while let res = PQgetResult(conn) {
            if PQresultStatus(res) == PGRES_COMMAND_OK {
                copied = Int(String(cString: PQcmdTuples(res))) ?? 0
            } else if failure == nil {
                failure = PGError.from(result: res, connection: conn)
            }
            PQclear(res)
        }
        if let failure { throw failure }
        return copied
    }

    /// Streams the rows of `COPY ... TO STDOUT` to `chunk`, one buffer per row as libpq hands
    /// them over (text format: tab-separated, newline-terminated). Returns the number of rows.
    @discardableResult
    public func copyOut(_ copySQL: String, chunk: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        guard let conn else { throw PGError(kind: .connection, message: "connection is closed") }
        let start = PQexec(conn, copySQL)
        guard PQresultStatus(start) == PGRES_COPY_OUT else { _ = try consume(start); return 0 }
        PQclear(start)
        var callerError: (any Error)?
        while true {
            var buf: UnsafeMutablePointer<CChar>?
            let n = PQgetCopyData(conn, &buf, 0)
            if n > 0, let buf {
                if callerError == nil {
                    do { try chunk(UnsafeRawBufferPointer(start: buf, count: Int(n))) } catch { callerError = error }
                }
                PQfreemem(buf)
            } else {
                if let buf { PQfreemem(buf) }
                if n == -2 {
                    let e = PGError.from(result: nil, connection: conn)
                    while let res = PQgetResult(conn) { PQclear(res) }  // leave the connection usable
                    throw e
                }
                break  // -1: the COPY is done
            }
        }
        let copied = try copyFinished(conn)
        if let callerError { throw callerError }
        return copied
    }

    /// Escapes one value for COPY text format.
    public static func copyEscape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for ch in s.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    // MARK: LISTEN / NOTIFY

    /// The socket to wait on (with `poll`) for notifications.
    public var socket: Int32 { conn.map { PQsocket($0) } ?? -1 }

    /// Reads whatever the server has sent and returns the notifications received, without blocking.
    public func drainNotifications() throws(PGError) -> [PGNotification] {
        guard let conn else { throw PGError(kind: .connection, message: "connection is closed") }
        guard PQconsumeInput(conn) == 1 else { throw PGError.from(result: nil, connection: conn) }
        var out: [PGNotification] = []
        while let n = PQnotifies(conn) {
            out.append(PGNotification(channel: String(cString: n.pointee.relname),
                                      payload: String(cString: n.pointee.extra),
                                      backendPID: n.pointee.be_pid))
            PQfreemem(n)
        }
        return out
    }

    /// Blocks up to `timeoutMilliseconds` for input on the socket, then drains notifications.
    public func waitForNotifications(timeoutMilliseconds: Int32) throws(PGError) -> [PGNotification] {
        let pending = try drainNotifications()
        if !pending.isEmpty { return pending }
        var pfd = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        let rc = poll(&pfd, 1, timeoutMilliseconds)
        if rc < 0 && errno != EINTR {
            throw PGError(kind: .connection, message: "poll failed: errno \(errno)")
        }
        let got = try drainNotifications()
        if !isHealthy { throw PGError.from(result: nil, connection: conn) }
        return got
    }

    // MARK: internals

    private func consume(_ res: OpaquePointer?) throws(PGError) -> PGResult {
        guard let res else { throw PGError.from(result: nil, connection: conn) }
        defer { PQclear(res) }
        switch PQresultStatus(res) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY, PGRES_SINGLE_TUPLE:
            return PGResult(res)
        default:
            throw PGError.from(result: res, connection: conn)
        }
    }

    private func withParams<R>(_ params: [any PGParameter],
                               _ body: (UnsafePointer<UnsafePointer<CChar>?>?, Int32) -> R) -> R {
        let texts = params.map { $0.pgText }
        // strdup'd C strings, freed after the call; NULL stands for SQL NULL.
        let cstrings: [UnsafeMutablePointer<CChar>?] = texts.map { $0.map { strdup($0) } ?? nil }
        defer { cstrings.forEach { free($0) } }
        let ptrs: [UnsafePointer<CChar>?] = cstrings.map { $0.map { UnsafePointer($0) } }
        return ptrs.withUnsafeBufferPointer { body($0.baseAddress, Int32(params.count)) }
    }
}

extension Array where Element == String {
    /// Calls `body` with a C array of C strings (NULL-terminated), valid only during the call.
    package func withCStringArray<R>(_ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
        let dup: [UnsafeMutablePointer<CChar>?] = map { strdup($0) } + [nil]
        defer { dup.forEach { free($0) } }
        let ptrs: [UnsafePointer<CChar>?] = dup.map { $0.map { UnsafePointer($0) } }
        return ptrs.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
