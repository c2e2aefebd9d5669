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
        var s = "{"
        for (i, e) in enumerated() {
            if i > 0 { s += "," }
            guard let t = e.pgText else { s += "NULL"; continue }
            s += "\""
            for ch in t.unicodeScalars {
                if ch == "\\" || ch == "\"" { s += "\\" }
                s.unicodeScalars.append(ch)
            }
            s += "\""
        }
        return s + "}"
    }
}
