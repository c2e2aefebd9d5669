// JSONBuild.swift: small helpers to build and read API documents (`JSONValue`) in the billing
// mock and client without Foundation's untyped dictionaries.

extension JSONValue {
    /// An object from ordered pairs: `.obj(["id": .string(id), "object": "customer"])`.
    package static func obj(_ pairs: KeyValuePairs<String, JSONValue>) -> JSONValue {
        .object(pairs.map { ($0.key, $0.value) })
    }

    package static func int(_ v: Int64) -> JSONValue { .number(String(v)) }
    package static func str(_ v: String?) -> JSONValue { v.map(JSONValue.string) ?? .null }

    /// A copy with member `key` set (replaced in place, or appended).
    package func setting(_ key: String, _ value: JSONValue) -> JSONValue {
        guard case var .object(members) = self else { return self }
        if let i = members.firstIndex(where: { $0.0 == key }) { members[i].1 = value } else { members.append((key, value)) }
        return .object(members)
    }

    /// A copy without member `key`.
    package func removing(_ key: String) -> JSONValue {
        guard case let .object(members) = self else { return self }
        return .object(members.filter { $0.0 != key })
    }

    /// Integer value of a number member (exact lexeme, no fractions).
    package var int64Value: Int64? {
        if case let .number(s) = self { return Int64(s) }
        return nil
    }

    package var text: String { JSONWriter.serialize(self) }
}

/// String literals as JSON strings, for readable documents: `["object": "customer"]`.
extension JSONValue: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
}

/// Lower-case hexadecimal, both ways.
package enum Hex {
    package static func digit(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
    package static let digits = Array("0123456789abcdef".utf8)
    package static func byte(_ b: UInt8) -> String {
        String(decoding: [digits[Int(b >> 4)], digits[Int(b & 15)]], as: UTF8.self)
    }
}
