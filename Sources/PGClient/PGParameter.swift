/// A value passed to a parameterized statement. Parameters travel in libpq's text format and are
/// never spliced into SQL text.
public protocol PGParameter: Sendable {
    var pgText: String? { get }
}

extension String: PGParameter { public var pgText: String? { self } }
extension Substring: PGParameter { public var pgText: String? { String(self) } }
extension Int: PGParameter { public var pgText: String? { String(self) } }
extension Int32: PGParameter { public var pgText: String? { String(self) } }
extension Int64: PGParameter { public var pgText: String? { String(self) } }
extension Bool: PGParameter { public var pgText: String? { self ? "true" : "false" } }
extension Double: PGParameter { public var pgText: String? { String(self) } }
extension Optional: PGParameter where Wrapped: PGParameter {
    public var pgText: String? { self?.pgText }
}

/// A one-dimensional Postgres array, `{"a","b\"c",NULL}`: every element quoted (backslash and
/// double quote escaped), nil as NULL. Pass it where the statement casts to an array type:
/// `where code = any($1::text[])` with `[codes]`. Arrays of arrays are not supported (an inner
/// array would arrive as one text element).
extension Array: PGParameter where Element: PGParameter {
    public var pgText: String? {
        var literal = PGArrayLiteral(capacity: count * 16)
        for e in self { literal.append(e.pgText) }
        return literal.text
    }
}

/// Builds a one-dimensional array literal element by element, `{"a","b\"c",NULL}`, without an
/// intermediate array of strings: what the ingest path sends as typed parallel arrays (one per
/// column of a batch). Every element is quoted; backslash and double quote escaped.
public struct PGArrayLiteral: Sendable {
    private var bytes: [UInt8]
    private var empty = true

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity + 2)
        bytes.append(UInt8(ascii: "{"))
    }

    /// Appends one element (nil: NULL).
    public mutating func append(_ element: String?) {
        if !empty { bytes.append(UInt8(ascii: ",")) }
        empty = false
        guard var element else {
            bytes.append(contentsOf: "NULL".utf8)
            return
        }
        bytes.append(UInt8(ascii: "\""))
        element.withUTF8 { utf8 in
            // Runs without a quote or backslash are copied whole.
            var start = 0
            for i in 0..<utf8.count where utf8[i] == UInt8(ascii: "\\") || utf8[i] == UInt8(ascii: "\"") {
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<i]))
                bytes.append(UInt8(ascii: "\\"))
                start = i
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<utf8.count]))
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// The literal, closed.
    public var text: String {
        var out = bytes
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }
}
