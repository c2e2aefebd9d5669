// StrictJSON.swift
//
// Exact, strict parsing for the ingest path. Money must be exact, so JSON numbers never pass
// through `Double`: the parser keeps every number as the lexeme that was written, and
// `ExactDecimal` turns a lexeme (or a string such as "12.50") into a normalized plain decimal
// that Postgres `numeric` accepts. `RFC3339Timestamp` parses event times without Foundation's
// calendars or formatters.
//
// Contents:
//   JSONValue          - a parsed JSON document (numbers kept as lexemes, objects keep order)
//   JSONParser         - strict RFC 8259 byte-level recursive-descent parser
//   JSONParseError     - parse failure with a byte offset
//   JSONWriter         - compact serializer
//   ExactDecimal       - exact, normalized decimal from a number lexeme or string
//   RFC3339Timestamp   - RFC 3339 date-time with microsecond precision (UTC)

// MARK: - JSONValue

/// A JSON value. Numbers keep the exact lexeme from the source, so no precision is lost.
public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number exactly as written in the source (e.g. `"12.50"`, `"1e400"`).
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Object members in source order. `JSONParser` rejects duplicate keys.
    case object([(String, JSONValue)])

    /// Structural equality: numbers compare by lexeme (`"1.0" != "1"`), object members by order.
    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.number(a), .number(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            guard a.count == b.count else { return false }
            for (x, y) in zip(a, b) where x.0 != y.0 || x.1 != y.1 { return false }
            return true
        default: return false
        }
    }

    /// The value of member `key` of an object (the first match), or nil for a missing key or a non-object.
    public subscript(key: String) -> JSONValue? {
        guard case let .object(members) = self else { return nil }
        for (k, v) in members where k == key { return v }
        return nil
    }

    /// The members if this is an object.
    public var objectValue: [(String, JSONValue)]? {
        if case let .object(m) = self { return m }
        return nil
    }

    /// The elements if this is an array.
    public var arrayValue: [JSONValue]? {
        if case let .array(a) = self { return a }
        return nil
    }

    /// The string if this is a string.
    public var stringValue: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    /// The number lexeme if this is a number.
    public var numberLexeme: String? {
        if case let .number(s) = self { return s }
        return nil
    }

    /// The boolean if this is a boolean.
    public var boolValue: Bool? {
        if case let .bool(b) = self { return b }
        return nil
    }

    /// True for JSON `null`.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

extension JSONValue: CustomStringConvertible {
    /// Compact JSON text.
    public var description: String { JSONWriter.serialize(self) }
}

// MARK: - Errors

/// Why a JSON body was rejected. `message` includes the byte offset (except for "empty body").
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Byte offset into the input where the problem was detected.
    public let offset: Int
    /// Human-readable message, e.g. `unexpected character '}' at byte 17`.
    public let message: String

    public init(offset: Int, message: String) {
        self.offset = offset
        self.message = message
    }

    public var description: String { message }
}

// MARK: - JSONParser

/// Strict RFC 8259 parser: exactly one value with optional surrounding whitespace; no comments,
/// trailing commas, NaN/Infinity or leading zeros; strings must be valid UTF-8 without raw control
/// characters; `\u` escapes must form valid scalars (lone surrogates are rejected); duplicate object
/// keys are rejected; nesting is limited to `maxDepth` containers (which also bounds recursion).
/// A byte-order mark is not accepted.
public struct JSONParser: Sendable {
    /// Default maximum container nesting.
    public static let defaultMaxDepth = 64

    /// Parses a complete JSON document.
    public static func parse(_ bytes: [UInt8], maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSONValue {
        try bytes.withUnsafeBufferPointer { (buffer) throws(JSONParseError) -> JSONValue in
            var state = ParserState(bytes: buffer, maxDepth: maxDepth)
            return try state.parseDocument()
        }
    }

    /// Parses a complete JSON document from any byte collection (copied once into an array).
    public static func parse(_ bytes: some Collection<UInt8>, maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSONValue {
        try parse(Array(bytes), maxDepth: maxDepth)
    }

    /// Parses a complete JSON document from its text.
    public static func parse(_ text: String, maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSONValue {
        try parse(Array(text.utf8), maxDepth: maxDepth)
    }
}

/// ASCII byte constants used by the parser and writer.
private enum ASCII {
    package static let quote = UInt8(ascii: "\"")
    package static let backslash = UInt8(ascii: "\\")
    package static let slash = UInt8(ascii: "/")
    package static let comma = UInt8(ascii: ",")
    package static let colon = UInt8(ascii: ":")
    package static let openBrace = UInt8(ascii: "{")
    package static let closeBrace = UInt8(ascii: "}")
    package static let openBracket = UInt8(ascii: "[")
    package static let closeBracket = UInt8(ascii: "]")
    package static let minus = UInt8(ascii: "-")
    package static let plus = UInt8(ascii: "+")
    package static let dot = UInt8(ascii: ".")
    package static let zero = UInt8(ascii: "0")
    package static let nine = UInt8(ascii: "9")
    package static let lowerE = UInt8(ascii: "e")
    package static let upperE = UInt8(ascii: "E")
    package static let space = UInt8(ascii: " ")
    package static let tab = UInt8(ascii: "\t")
    package static let newline = UInt8(ascii: "\n")
    package static let carriageReturn = UInt8(ascii: "\r")

    @inline(__always) package static func isDigit(_ c: UInt8) -> Bool { c &- zero < 10 }

    /// Value of a hex digit, or nil.
    @inline(__always) package static func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case zero...nine: return UInt32(c - zero)
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(c - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    /// Two uppercase hex digits, e.g. "0A".
    package static func hex2(_ c: UInt8) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        return String(decoding: [digits[Int(c >> 4)], digits[Int(c & 0xF)]], as: UTF8.self)
    }
}

/// Recursive-descent state over a borrowed byte buffer (valid only inside `JSONParser.parse`).
private struct ParserState {
    package let b: UnsafeBufferPointer<UInt8>
    package let n: Int
    package let maxDepth: Int
    package var i = 0
    package var depth = 0

    /// Objects with at least this many members switch from linear duplicate checks to a Set.
    package static let duplicateSetThreshold = 12

    package init(bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int) {
        self.b = bytes
        self.n = bytes.count
        self.maxDepth = maxDepth
    }

    package mutating func parseDocument() throws(JSONParseError) -> JSONValue {
        skipWhitespace()
        if i == n { throw JSONParseError(offset: 0, message: "empty body") }
        let value = try parseValue()
        skipWhitespace()
        if i != n { throw unexpected(at: i) }
        return value
    }

    @inline(__always) package mutating func skipWhitespace() {
        while i < n {
            let c = b[i]
            guard c == ASCII.space || c == ASCII.newline || c == ASCII.carriageReturn || c == ASCII.tab else { return }
            i += 1
        }
    }

    /// Error for the byte at `k` (or end of input).
    package func unexpected(at k: Int) -> JSONParseError {
        guard k < n else { return JSONParseError(offset: k, message: "unexpected end of input at byte \(k)") }
        let c = b[k]
        if c >= 0x20 && c < 0x7F {
            return JSONParseError(offset: k, message: "unexpected character '\(Character(Unicode.Scalar(c)))' at byte \(k)")
        }
        return JSONParseError(offset: k, message: "unexpected byte 0x\(ASCII.hex2(c)) at byte \(k)")
    }

    /// Parses a value starting at `i` (whitespace already skipped).
    package mutating func parseValue() throws(JSONParseError) -> JSONValue {
        guard i < n else { throw unexpected(at: i) }
        switch b[i] {
        case ASCII.openBrace: return try parseObject()
        case ASCII.openBracket: return try parseArray()
        case ASCII.quote: return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case ASCII.minus, ASCII.zero...ASCII.nine: return try parseNumber()
        default: throw unexpected(at: i)
        }
    }

    package mutating func expectLiteral(_ word: StaticString) throws(JSONParseError) {
        let p = word.utf8Start
        for k in 0..<word.utf8CodeUnitCount {
            guard i < n, b[i] == p[k] else { throw unexpected(at: i) }
            i += 1
        }
    }

    package mutating func enterContainer(at start: Int) throws(JSONParseError) {
        depth += 1
        if depth > maxDepth {
            throw JSONParseError(offset: start, message: "nesting deeper than \(maxDepth) at byte \(start)")
        }
    }

    package mutating func parseArray() throws(JSONParseError) -> JSONValue {
        try enterContainer(at: i)
        i += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if i < n && b[i] == ASCII.closeBracket {
            i += 1
            depth -= 1
            return .array(items)
        }
        while true {
            skipWhitespace()
            items.append(try parseValue())
            skipWhitespace()
            guard i < n else { throw unexpected(at: i) }
            let c = b[i]
            if c == ASCII.comma { i += 1; continue }
            if c == ASCII.closeBracket { i += 1; break }
            throw unexpected(at: i)
        }
        depth -= 1
        return .array(items)
    }

    package mutating func parseObject() throws(JSONParseError) -> JSONValue {
        try enterContainer(at: i)
        i += 1
        var members: [(String, JSONValue)] = []
        var keySet: Set<String>? = nil
        skipWhitespace()
        if i < n && b[i] == ASCII.closeBrace {
            i += 1
            depth -= 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard i < n, b[i] == ASCII.quote else { throw unexpected(at: i) }
            let keyStart = i
            let key = try parseString()
            if keySet != nil {
                if !keySet!.insert(key).inserted { throw duplicate(key, at: keyStart) }
            } else if members.count >= Self.duplicateSetThreshold {
                var set = Set(members.map { $0.0 })
                if !set.insert(key).inserted { throw duplicate(key, at: keyStart) }
                keySet = set
            } else {
                for (k, _) in members where k == key { throw duplicate(key, at: keyStart) }
            }
            skipWhitespace()
            guard i < n, b[i] == ASCII.colon else { throw unexpected(at: i) }
            i += 1
            skipWhitespace()
            let value = try parseValue()
            members.append((key, value))
            skipWhitespace()
            guard i < n else { throw unexpected(at: i) }
            let c = b[i]
            if c == ASCII.comma { i += 1; continue }
            if c == ASCII.closeBrace { i += 1; break }
            throw unexpected(at: i)
        }
        depth -= 1
        return .object(members)
    }

    package func duplicate(_ key: String, at offset: Int) -> JSONParseError {
        JSONParseError(offset: offset, message: "duplicate key \(JSONWriter.quote(key)) at byte \(offset)")
    }

    /// Number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`; returns the lexeme.
    package mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = i
        if b[i] == ASCII.minus { i += 1 }
        guard i < n, ASCII.isDigit(b[i]) else { throw unexpected(at: i) }
        if b[i] == ASCII.zero {
            i += 1
            if i < n && ASCII.isDigit(b[i]) {
                throw JSONParseError(offset: i - 1, message: "leading zeros are not allowed in numbers at byte \(i - 1)")
            }
        } else {
            while i < n && ASCII.isDigit(b[i]) { i += 1 }
        }
        if i < n && b[i] == ASCII.dot {
            i += 1
            guard i < n, ASCII.isDigit(b[i]) else { throw unexpected(at: i) }
            while i < n && ASCII.isDigit(b[i]) { i += 1 }
        }
        if i < n && (b[i] == ASCII.lowerE || b[i] == ASCII.upperE) {
            i += 1
            if i < n && (b[i] == ASCII.plus || b[i] == ASCII.minus) { i += 1 }
            guard i < n, ASCII.isDigit(b[i]) else { throw unexpected(at: i) }
            while i < n && ASCII.isDigit(b[i]) { i += 1 }
        }
        return .number(String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self))
    }

    /// Parses a string starting at the opening quote. Strings without escapes are decoded straight
    /// from the input; escapes switch to a copying loop.
    package mutating func parseString() throws(JSONParseError) -> String {
        let start = i
        let contentStart = i + 1
        var k = contentStart
        // Fast path: no escapes; validate in place.
        while true {
            guard k < n else { throw unterminated(start) }
            let c = b[k]
            if c == ASCII.quote {
                i = k + 1
                return String(decoding: UnsafeBufferPointer(rebasing: b[contentStart..<k]), as: UTF8.self)
            }
            if c == ASCII.backslash { break }
            if c < 0x20 { throw controlCharacter(c, at: k) }
            if c < 0x80 { k += 1 } else { k = try validateUTF8(at: k, stringStart: start) }
        }
        // Slow path: copy, decoding escapes.
        var out: [UInt8] = []
        out.reserveCapacity(k - contentStart + 16)
        out.append(contentsOf: UnsafeBufferPointer(rebasing: b[contentStart..<k]))
        while true {
            guard k < n else { throw unterminated(start) }
            let c = b[k]
            if c == ASCII.quote {
                i = k + 1
                return String(decoding: out, as: UTF8.self)
            }
            if c == ASCII.backslash {
                k = try decodeEscape(at: k, into: &out, stringStart: start)
            } else if c < 0x20 {
                throw controlCharacter(c, at: k)
            } else if c < 0x80 {
                out.append(c)
                k += 1
            } else {
                let end = try validateUTF8(at: k, stringStart: start)
                out.append(contentsOf: UnsafeBufferPointer(rebasing: b[k..<end]))
                k = end
            }
        }
    }

    package func unterminated(_ start: Int) -> JSONParseError {
        JSONParseError(offset: start, message: "unterminated string at byte \(start)")
    }

    package func controlCharacter(_ c: UInt8, at k: Int) -> JSONParseError {
        JSONParseError(offset: k, message: "unescaped control character 0x\(ASCII.hex2(c)) in string at byte \(k)")
    }

    /// Validates one multi-byte UTF-8 sequence at `k` (lead byte >= 0x80) per Unicode Table 3-7:
    /// no overlong forms, no encoded surrogates, nothing above U+10FFFF. Returns the index after it.
    package func validateUTF8(at k: Int, stringStart: Int) throws(JSONParseError) -> Int {
        let lead = b[k]
        let length: Int
        var lo: UInt8 = 0x80
        var hi: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; lo = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; hi = 0x9F
        case 0xF0: length = 4; lo = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; hi = 0x8F
        default: throw invalidUTF8(at: k)
        }
        for m in (k + 1)..<(k + length) {
            // Input ending inside the sequence also ends inside the string.
            guard m < n else { throw unterminated(stringStart) }
            let c = b[m]
            let ok = m == k + 1 ? (c >= lo && c <= hi) : (c & 0xC0 == 0x80)
            guard ok else { throw invalidUTF8(at: k) }
        }
        return k + length
    }

    package func invalidUTF8(at k: Int) -> JSONParseError {
        JSONParseError(offset: k, message: "invalid UTF-8 in string at byte \(k)")
    }

    /// Decodes the escape at `k` (a backslash) into `out`; returns the index after it.
    package func decodeEscape(at k: Int, into out: inout [UInt8], stringStart: Int) throws(JSONParseError) -> Int {
        guard k + 1 < n else { throw unterminated(stringStart) }
        let e = b[k + 1]
        switch e {
        case ASCII.quote: out.append(ASCII.quote)
        case ASCII.backslash: out.append(ASCII.backslash)
        case ASCII.slash: out.append(ASCII.slash)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "u"):
            let unit = try hex4(at: k + 2, escapeAt: k)
            var scalar = unit
            var end = k + 6
            if unit >= 0xD800 && unit <= 0xDBFF {
                // High surrogate: must be followed by an escaped low surrogate.
                guard end + 1 < n, b[end] == ASCII.backslash, b[end + 1] == UInt8(ascii: "u") else {
                    throw loneSurrogate(unit, at: k)
                }
                let low = try hex4(at: end + 2, escapeAt: end)
                guard low >= 0xDC00 && low <= 0xDFFF else { throw loneSurrogate(unit, at: k) }
                scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                end += 6
            } else if unit >= 0xDC00 && unit <= 0xDFFF {
                throw loneSurrogate(unit, at: k)
            }
            appendUTF8(scalar, to: &out)
            return end
        default:
            if e >= 0x20 && e < 0x7F {
                throw JSONParseError(offset: k, message: "invalid escape '\\\(Character(Unicode.Scalar(e)))' at byte \(k)")
            }
            throw JSONParseError(offset: k, message: "invalid escape at byte \(k)")
        }
        return k + 2
    }

    package func hex4(at k: Int, escapeAt: Int) throws(JSONParseError) -> UInt32 {
        var v: UInt32 = 0
        for m in k..<(k + 4) {
            guard m < n, let d = ASCII.hexValue(b[m]) else {
                throw JSONParseError(offset: escapeAt, message: "invalid \\u escape at byte \(escapeAt)")
            }
            v = v << 4 | d
        }
        return v
    }

    package func loneSurrogate(_ unit: UInt32, at k: Int) -> JSONParseError {
        let hex = String(unit, radix: 16, uppercase: true)
        return JSONParseError(offset: k, message: "lone surrogate \\u\(hex) at byte \(k)")
    }

    package func appendUTF8(_ s: UInt32, to out: inout [UInt8]) {
        switch s {
        case 0..<0x80:
            out.append(UInt8(s))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | (s >> 6)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | (s >> 12)))
            out.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        default:
            out.append(UInt8(0xF0 | (s >> 18)))
            out.append(UInt8(0x80 | ((s >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((s >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (s & 0x3F)))
        }
    }
}

// MARK: - JSONWriter

/// Compact JSON serializer. Escapes `"`, `\` and control characters; keeps other text as UTF-8;
/// writes numbers as their stored lexeme (a hand-built `.number` must hold a valid JSON number).
public enum JSONWriter {
    /// Compact JSON text for `value`.
    public static func serialize(_ value: JSONValue) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(128)
        serialize(value, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends compact JSON for `value` to `out` (UTF-8).
    public static func serialize(_ value: JSONValue, into out: inout [UInt8]) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let lexeme): out.append(contentsOf: lexeme.utf8)
        case .string(let s): appendQuoted(s, to: &out)
        case .array(let items):
            out.append(ASCII.openBracket)
            for (k, item) in items.enumerated() {
                if k > 0 { out.append(ASCII.comma) }
                serialize(item, into: &out)
            }
            out.append(ASCII.closeBracket)
        case .object(let members):
            out.append(ASCII.openBrace)
            for (k, member) in members.enumerated() {
                if k > 0 { out.append(ASCII.comma) }
                appendQuoted(member.0, to: &out)
                out.append(ASCII.colon)
                serialize(member.1, into: &out)
            }
            out.append(ASCII.closeBrace)
        }
    }

    /// A JSON string literal (with quotes) for `s`.
    public static func quote(_ s: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count + 2)
        appendQuoted(s, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    package static func appendQuoted(_ s: String, to out: inout [UInt8]) {
        out.append(ASCII.quote)
        for c in s.utf8 {
            switch c {
            case ASCII.quote: out.append(ASCII.backslash); out.append(ASCII.quote)
            case ASCII.backslash: out.append(ASCII.backslash); out.append(ASCII.backslash)
            case 0x0A: out.append(ASCII.backslash); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(ASCII.backslash); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(ASCII.backslash); out.append(UInt8(ascii: "t"))
            case 0x08: out.append(ASCII.backslash); out.append(UInt8(ascii: "b"))
            case 0x0C: out.append(ASCII.backslash); out.append(UInt8(ascii: "f"))
            case 0..<0x20:
                out.append(contentsOf: "\\u00".utf8)
                out.append(contentsOf: ASCII.hex2(c).lowercased().utf8)
            default: out.append(c)
            }
        }
        out.append(ASCII.quote)
    }
}

// MARK: - ExactDecimal

/// Why a decimal was rejected.
public struct DecimalError: Error, Sendable, Equatable, CustomStringConvertible {
    /// E.g. "not a decimal number", "more than 12 digits after the decimal point".
    public let reason: String
    public init(reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// An exact decimal in normal form: no leading zeros in the integer part (except a single "0"),
/// no trailing zeros in the fraction, no negative zero. `description` is the plain form
/// (never exponent notation) that Postgres `numeric` parses.
public struct ExactDecimal: Sendable, Hashable, CustomStringConvertible {
    /// True for values below zero (never for zero).
    public let isNegative: Bool
    /// Integer digits without leading zeros; "0" when the magnitude is below one.
    public let integerDigits: String
    /// Fraction digits without trailing zeros; empty for integers.
    public let fractionDigits: String

    /// Largest exponent magnitude accepted in the text.
    public static let maxExponent = 10_000

    /// Parses `-? digits (. digits)? ([eE] [+-]? digits)?` (a JSON number lexeme, or the same in a
    /// string; leading zeros such as "007" are tolerated). No whitespace, "+", ".5", "1." or hex.
    /// The exponent is applied exactly by moving the decimal point; exponents beyond ±10000 are
    /// rejected before any digits are built. Limits apply to the normalized value.
    public init(parsing text: String, maxIntegerDigits: Int = 26, maxScale: Int = 12) throws(DecimalError) {
        try self.init(parsing: text, maxIntegerDigits: maxIntegerDigits, maxScale: maxScale, materialize: true)
    }

    /// Whether `text` is a decimal within the limits, decided without building its digits: the
    /// cost is the length of the text whatever its exponent (`1e-9999` is 7 bytes, not 10,000
    /// digit writes), so checking a body of such numbers costs what reading it costs.
    public static func isWithinLimits(_ text: String, maxIntegerDigits: Int, maxScale: Int) -> Bool {
        (try? ExactDecimal(parsing: text, maxIntegerDigits: maxIntegerDigits, maxScale: maxScale, materialize: false)) != nil
    }

    /// `materialize: false` stops after the limit checks, leaving the digits empty (isWithinLimits).
    private init(parsing text: String, maxIntegerDigits: Int, maxScale: Int, materialize: Bool) throws(DecimalError) {
        let b = Array(text.utf8)
        let n = b.count
        let notANumber = DecimalError(reason: "not a decimal number")
        var i = 0
        var negative = false
        if i < n && b[i] == ASCII.minus { negative = true; i += 1 }
        let intStart = i
        while i < n && ASCII.isDigit(b[i]) { i += 1 }
        let intEnd = i
        guard intEnd > intStart else { throw notANumber }
        var fracStart = i
        var fracEnd = i
        if i < n && b[i] == ASCII.dot {
            i += 1
            fracStart = i
            while i < n && ASCII.isDigit(b[i]) { i += 1 }
            fracEnd = i
            guard fracEnd > fracStart else { throw notANumber }
        }
        var exponent = 0
        if i < n && (b[i] == ASCII.lowerE || b[i] == ASCII.upperE) {
            i += 1
            var expNegative = false
            if i < n && (b[i] == ASCII.plus || b[i] == ASCII.minus) {
                expNegative = b[i] == ASCII.minus
                i += 1
            }
            let expStart = i
            while i < n && ASCII.isDigit(b[i]) {
                // Saturate just above the limit: never overflows, still detects "too large".
                if exponent <= Self.maxExponent { exponent = exponent * 10 + Int(b[i] - ASCII.zero) }
                i += 1
            }
            guard i > expStart else { throw notANumber }
            if expNegative { exponent = -exponent }
        }
        guard i == n else { throw notANumber }
        guard abs(exponent) <= Self.maxExponent else {
            throw DecimalError(reason: "exponent out of range (more than ±\(Self.maxExponent))")
        }

        // All digits as one sequence; the decimal point sits before index `point`.
        let intCount = intEnd - intStart
        let total = intCount + (fracEnd - fracStart)
        func digit(_ k: Int) -> UInt8 { k < intCount ? b[intStart + k] : b[fracStart + k - intCount] }
        var first = 0
        while first < total && digit(first) == ASCII.zero { first += 1 }
        guard first < total else {
            self.isNegative = false
            self.integerDigits = "0"
            self.fractionDigits = ""
            return
        }
        var last = total - 1
        while digit(last) == ASCII.zero { last -= 1 }
        let point = intCount + exponent

        let integerCount = max(0, point - first)
        let scale = max(0, last + 1 - point)
        if integerCount > maxIntegerDigits {
            throw DecimalError(reason: "more than \(maxIntegerDigits) digits before the decimal point")
        }
        if scale > maxScale {
            throw DecimalError(reason: "more than \(maxScale) digits after the decimal point")
        }
        guard materialize else {
            self.isNegative = negative
            self.integerDigits = ""
            self.fractionDigits = ""
            return
        }

        var intPart: [UInt8] = []
        if integerCount == 0 {
            intPart = [ASCII.zero]
        } else {
            intPart.reserveCapacity(integerCount)
            for k in first..<min(point, last + 1) { intPart.append(digit(k)) }
            if point > last + 1 { intPart.append(contentsOf: repeatElement(ASCII.zero, count: point - last - 1)) }
        }
        var fracPart: [UInt8] = []
        if scale > 0 {
            fracPart.reserveCapacity(scale)
            if point < first { fracPart.append(contentsOf: repeatElement(ASCII.zero, count: first - point)) }
            for k in max(first, point)...last { fracPart.append(digit(k)) }
        }
        self.isNegative = negative
        self.integerDigits = String(decoding: intPart, as: UTF8.self)
        self.fractionDigits = String(decoding: fracPart, as: UTF8.self)
    }

    /// The display scale Postgres gives a number written as `lexeme` (numeric_in: the digits after
    /// the point as written, trailing zeros included, minus the exponent, at least 0), or nil when
    /// `lexeme` is not a number. Postgres refuses a display scale over `postgresMaxDisplayScale`
    /// (SQLSTATE 22003) even when the value itself is small: `1.000…0e-10000` with 6,384 zeros is
    /// 1e-10000 but has display scale 16,384. The exponent saturates, so any text is safe to ask.
    public static func postgresDisplayScale(ofLexeme lexeme: String) -> Int? {
        var fraction = 0, exponent = 0, expNegative = false
        var part = 0  // 0 integer digits, 1 fraction digits, 2 exponent digits
        for (k, c) in lexeme.utf8.enumerated() {
            switch c {
            case ASCII.minus where k == 0: continue
            case ASCII.dot where part == 0: part = 1
            case ASCII.lowerE, ASCII.upperE: guard part < 2 else { return nil }; part = 2
            case ASCII.plus, ASCII.minus:
                guard part == 2 else { return nil }
                expNegative = c == ASCII.minus
            case ASCII.zero...ASCII.nine:
                if part == 1 { fraction += 1 }
                if part == 2, exponent < 1_000_000 { exponent = exponent * 10 + Int(c - ASCII.zero) }
            default: return nil
            }
        }
        return max(0, fraction - (expNegative ? -exponent : exponent))
    }

    /// NUMERIC_DSCALE_MAX of Postgres: the largest display scale a numeric (and a jsonb number) holds.
    public static let postgresMaxDisplayScale = 16_383

    /// True when the value is zero.
    public var isZero: Bool { integerDigits == "0" && fractionDigits.isEmpty }

    /// Number of digits after the decimal point in normal form.
    public var scale: Int { fractionDigits.utf8.count }

    /// Plain normal form, e.g. "-12.5", "0.001", "1000".
    public var description: String {
        var s = isNegative ? "-" : ""
        s += integerDigits
        if !fractionDigits.isEmpty { s += "."; s += fractionDigits }
        return s
    }
}

// MARK: - RFC3339Timestamp

/// Why a timestamp was rejected.
public struct TimestampError: Error, Sendable, Equatable, CustomStringConvertible {
    /// E.g. "missing UTC offset (Z or ±HH:MM)", "leap seconds are not supported".
    public let reason: String
    public init(reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// An instant parsed from an RFC 3339 `date-time`, held as UTC microseconds since 1970-01-01.
///
/// Accepted: `YYYY-MM-DD('T'|'t'|' ')HH:MM:SS[.fraction](Z|z|+HH:MM|-HH:MM)`, years 1970-9999 (both
/// as written and after conversion to UTC), offsets up to ±23:59. Leap seconds (":60") are rejected.
///
/// Fractions of any length are accepted and TRUNCATED (never rounded) to microseconds. Truncation
/// only ever drops time, so an event at 23:59:59.9999999 stays at 23:59:59.999999 and can never
/// move into the next second, hour, day or month (and so never into the next billing period).
public struct RFC3339Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Microseconds since 1970-01-01T00:00:00Z.
    public let epochMicroseconds: Int64

    package static let microsPerSecond: Int64 = 1_000_000
    package static let microsPerDay: Int64 = 86_400 * microsPerSecond
    /// First microsecond after 9999-12-31T23:59:59.999999Z.
    package static let endOfRange: Int64 = Int64(daysFromCivil(year: 10_000, month: 1, day: 1)) * microsPerDay

    /// Wraps a UTC instant. Formatting is meaningful for years 0000-9999.
    public init(epochMicroseconds: Int64) {
        self.epochMicroseconds = epochMicroseconds
    }

    public init(parsing text: String) throws(TimestampError) {
        let b = Array(text.utf8)
        let n = b.count
        let syntax = TimestampError(reason: "not an RFC 3339 date-time (expected YYYY-MM-DDTHH:MM:SS[.fraction] followed by Z or ±HH:MM)")
        func number(_ at: Int, _ length: Int) -> Int? {
            guard at + length <= n else { return nil }
            var v = 0
            for k in at..<(at + length) {
                guard ASCII.isDigit(b[k]) else { return nil }
                v = v * 10 + Int(b[k] - ASCII.zero)
            }
            return v
        }
        func byte(_ at: Int) -> UInt8? { at < n ? b[at] : nil }

        guard let year = number(0, 4), byte(4) == ASCII.minus,
              let month = number(5, 2), byte(7) == ASCII.minus,
              let day = number(8, 2),
              let separator = byte(10),
              separator == UInt8(ascii: "T") || separator == UInt8(ascii: "t") || separator == ASCII.space,
              let hour = number(11, 2), byte(13) == ASCII.colon,
              let minute = number(14, 2), byte(16) == ASCII.colon,
              let second = number(17, 2)
        else { throw syntax }

        var i = 19
        var micros = 0
        if byte(i) == ASCII.dot {
            i += 1
            let fracStart = i
            while i < n && ASCII.isDigit(b[i]) {
                if i - fracStart < 6 { micros = micros * 10 + Int(b[i] - ASCII.zero) }  // truncate the rest
                i += 1
            }
            let count = i - fracStart
            guard count > 0 else { throw syntax }
            for _ in count..<max(count, 6) { micros *= 10 }
        }
        guard i < n else { throw TimestampError(reason: "missing UTC offset (Z or ±HH:MM)") }
        var offsetSeconds = 0
        switch b[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            i += 1
        case ASCII.plus, ASCII.minus:
            let sign = b[i] == ASCII.minus ? -1 : 1
            guard let offsetHour = number(i + 1, 2), byte(i + 3) == ASCII.colon,
                  let offsetMinute = number(i + 4, 2) else { throw syntax }
            guard offsetHour <= 23, offsetMinute <= 59 else {
                throw TimestampError(reason: "UTC offset out of range (at most ±23:59)")
            }
            offsetSeconds = sign * (offsetHour * 3600 + offsetMinute * 60)
            i += 6
        default:
            throw syntax
        }
        guard i == n else { throw syntax }

        let yearError = TimestampError(reason: "year out of range 1970-9999")
        guard year >= 1970 && year <= 9999 else { throw yearError }
        guard month >= 1 && month <= 12 else { throw TimestampError(reason: "month out of range 01-12") }
        guard day >= 1 && day <= Self.daysInMonth(year: year, month: month) else {
            throw TimestampError(reason: "day \(day) does not exist in month \(month) of \(year)")
        }
        guard hour <= 23 else { throw TimestampError(reason: "hour out of range 00-23") }
        guard minute <= 59 else { throw TimestampError(reason: "minute out of range 00-59") }
        if second == 60 { throw TimestampError(reason: "leap seconds are not supported") }
        guard second <= 59 else { throw TimestampError(reason: "second out of range 00-59") }

        let days = Self.daysFromCivil(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
        let epoch = Int64(seconds) * Self.microsPerSecond + Int64(micros)
        // The offset can move the instant across the range edges (e.g. 1970-01-01T00:30+01:00).
        guard epoch >= 0 && epoch < Self.endOfRange else { throw yearError }
        self.epochMicroseconds = epoch
    }

    /// "YYYY-MM-DD HH:MM:SS.ffffff+00" - unambiguous input for Postgres `timestamptz`.
    public var utcString: String { format(separator: ASCII.space, suffix: "+00") }

    /// "YYYY-MM-DDTHH:MM:SS.ffffffZ".
    public var iso8601: String { format(separator: UInt8(ascii: "T"), suffix: "Z") }

    public var description: String { iso8601 }

    public static func < (lhs: RFC3339Timestamp, rhs: RFC3339Timestamp) -> Bool {
        lhs.epochMicroseconds < rhs.epochMicroseconds
    }

    private func format(separator: UInt8, suffix: String) -> String {
        let us = epochMicroseconds
        var days = us / Self.microsPerDay
        var ofDay = us % Self.microsPerDay
        if ofDay < 0 { ofDay += Self.microsPerDay; days -= 1 }  // floor division for pre-1970 values
        let (year, month, day) = Self.civilFromDays(Int(days))
        let secondsOfDay = Int(ofDay / Self.microsPerSecond)
        let fraction = Int(ofDay % Self.microsPerSecond)

        // Digits written in place (no string per field: this runs once per ingested event).
        var out: [UInt8] = []
        out.reserveCapacity(32)
        func put(_ value: Int, width: Int) {
            if value < 0 { out.append(ASCII.minus) }
            var v = abs(value), n = 1
            while v >= 10 { v /= 10; n += 1 }
            if n < width { out.append(contentsOf: repeatElement(ASCII.zero, count: width - n)) }
            let end = out.count + n
            out.append(contentsOf: repeatElement(ASCII.zero, count: n))
            v = abs(value)
            for i in stride(from: end - 1, through: end - n, by: -1) {
                out[i] = ASCII.zero + UInt8(v % 10)
                v /= 10
            }
        }
        put(year, width: 4); out.append(ASCII.minus)
        put(month, width: 2); out.append(ASCII.minus)
        put(day, width: 2); out.append(separator)
        put(secondsOfDay / 3600, width: 2); out.append(ASCII.colon)
        put(secondsOfDay / 60 % 60, width: 2); out.append(ASCII.colon)
        put(secondsOfDay % 60, width: 2); out.append(ASCII.dot)
        put(fraction, width: 6)
        out.append(contentsOf: suffix.utf8)
        return String(decoding: out, as: UTF8.self)
    }

    package static func isLeapYear(_ y: Int) -> Bool { y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) }

    package static func daysInMonth(year: Int, month: Int) -> Int {
        switch month {
        case 2: return isLeapYear(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 for a proleptic Gregorian date. Counts years from March so the leap
    /// day falls at the end of the (shifted) year; 400-year eras have 146097 days.
    package static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400                                  // 0...399
        let shiftedMonth = month > 2 ? month - 3 : month + 9           // March = 0
        let dayOfYear = (153 * shiftedMonth + 2) / 5 + day - 1         // 0...365
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468                      // 719468 = days 0000-03-01...1970-01-01
    }

    /// Inverse of `daysFromCivil`.
    package static func civilFromDays(_ days: Int) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097                                               // 0...146096
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }
}
