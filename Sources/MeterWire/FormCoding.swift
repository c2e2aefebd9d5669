// FormBody.swift
//
// Stripe's request encoding: application/x-www-form-urlencoded with bracket notation for nested
// values (`items[0][price]=price_1`, `metadata[plan]=pro`, `expand[]=customer`). Used by the
// mock billing engine (bodies and query strings) and by the billing client (to encode).

/// A decoded form: a tree of maps whose leaves are strings.
public indirect enum FormNode: Sendable, Equatable {
    case value(String)
    case map([String: FormNode])

    public subscript(key: String) -> FormNode? {
        if case let .map(m) = self { return m[key] }
        return nil
    }

    public var string: String? {
        if case let .value(v) = self { return v }
        return nil
    }

    /// The children of a list (`a[0]=..&a[1]=..` or `a[]=..`), in index order.
    public var list: [FormNode] {
        guard case let .map(m) = self else { return [] }
        return m.keys.sorted { (Int($0) ?? Int.max, $0) < (Int($1) ?? Int.max, $1) }.map { m[$0]! }
    }

    public var dictionary: [String: FormNode] {
        if case let .map(m) = self { return m }
        return [:]
    }
}

public enum FormCoding {
    public struct DecodeError: Error, Sendable { public let message: String }

    /// Percent-decodes one component (`+` is a space).
    public static func unescape(_ s: Substring) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.utf8.count)
        var it = s.utf8.makeIterator()
        while let c = it.next() {
            if c == UInt8(ascii: "+") { bytes.append(UInt8(ascii: " ")) }
            else if c == UInt8(ascii: "%") {
                guard let h = it.next(), let l = it.next(),
                      let hv = Hex.digit(h), let lv = Hex.digit(l) else { return nil }
                bytes.append(UInt8(hv * 16 + lv))
            } else { bytes.append(c) }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    /// Percent-encodes one component (RFC 3986 unreserved characters stay as they are).
    public static func escape(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                 UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += "%" + Hex.byte(b).uppercased()
            }
        }
        return out
    }

    /// Decoded (name, value) pairs in order, names still in bracket form.
    public static func pairs(_ text: String) throws(DecodeError) -> [(String, String)] {
        var out: [(String, String)] = []
        for part in text.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let k = unescape(kv[0]), let v = unescape(kv.count > 1 ? kv[1] : "") else {
                throw DecodeError(message: "malformed percent-encoding in \(part.prefix(80))")
            }
            out.append((k, v))
        }
        return out
    }

    /// Decodes a body or query string into a tree. `a[]=x&a[]=y` becomes indices 0 and 1.
    public static func decode(_ text: String) throws(DecodeError) -> FormNode {
        var root: [String: FormNode] = [:]
        var appendCounters: [String: Int] = [:]
        for (name, value) in try pairs(text) {
            // split "a[b][c]" into ["a", "b", "c"]
            var path: [String] = []
            guard let open = name.firstIndex(of: "[") else {
                root[name] = .value(value); continue
            }
            path.append(String(name[..<open]))
            var rest = name[open...]
            while rest.first == "[" {
                guard let close = rest.firstIndex(of: "]") else {
                    throw DecodeError(message: "unbalanced brackets in parameter name \(name)")
                }
                var key = String(rest[rest.index(after: rest.startIndex)..<close])
                if key.isEmpty {
                    let prefix = path.joined(separator: "/")
                    key = String(appendCounters[prefix, default: 0])
                    appendCounters[prefix, default: 0] += 1
                }
                path.append(key)
                rest = rest[rest.index(after: close)...]
            }
            guard rest.isEmpty, !path[0].isEmpty else { throw DecodeError(message: "bad parameter name \(name)") }
            insert(&root, path[...], value, name)
        }
        return .map(root)
    }

    private static func insert(_ map: inout [String: FormNode], _ path: ArraySlice<String>, _ value: String, _ name: String) {
        let key = path.first!
        if path.count == 1 { map[key] = .value(value); return }
        var child: [String: FormNode]
        if case let .map(m)? = map[key] { child = m } else { child = [:] }
        insert(&child, path.dropFirst(), value, name)
        map[key] = .map(child)
    }

    /// Encodes (name, value) pairs, names already in bracket form.
    public static func encode(_ pairs: [(String, String)]) -> String {
        pairs.map { escape($0.0) + "=" + escape($0.1) }.joined(separator: "&")
    }
}
