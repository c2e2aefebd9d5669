import Foundation
import XCTest
import MeterWire

final class StrictJSONTests: XCTestCase {

    // MARK: Helpers

    private func parse(_ text: String, maxDepth: Int = 64, file: StaticString = #filePath, line: UInt = #line) -> JSONValue? {
        do {
            return try JSONParser.parse(Array(text.utf8), maxDepth: maxDepth)
        } catch {
            XCTFail("unexpected error for \(text.debugDescription): \(error)", file: file, line: line)
            return nil
        }
    }

    /// The parse error for `bytes`, failing the test when parsing succeeds.
    private func parseError(_ bytes: [UInt8], maxDepth: Int = 64, file: StaticString = #filePath, line: UInt = #line) -> JSONParseError? {
        do {
            let v = try JSONParser.parse(bytes, maxDepth: maxDepth)
            XCTFail("expected an error for \(String(decoding: bytes, as: UTF8.self).debugDescription), got \(v)", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    private func parseError(_ text: String, maxDepth: Int = 64, file: StaticString = #filePath, line: UInt = #line) -> JSONParseError? {
        parseError(Array(text.utf8), maxDepth: maxDepth, file: file, line: line)
    }

    /// `"` + bytes + `"` as a JSON document.
    private func quoted(_ bytes: [UInt8]) -> [UInt8] { [0x22] + bytes + [0x22] }

    private func decimal(_ text: String, maxIntegerDigits: Int = 26, maxScale: Int = 12) throws(DecimalError) -> String {
        try ExactDecimal(parsing: text, maxIntegerDigits: maxIntegerDigits, maxScale: maxScale).description
    }

    private func decimalError(_ text: String, maxIntegerDigits: Int = 26, maxScale: Int = 12) -> String? {
        do {
            let d = try ExactDecimal(parsing: text, maxIntegerDigits: maxIntegerDigits, maxScale: maxScale)
            return "accepted as \(d)"
        } catch {
            return error.reason
        }
    }

    private func timestampError(_ text: String) -> String? {
        do {
            let t = try RFC3339Timestamp(parsing: text)
            return "accepted as \(t.iso8601)"
        } catch {
            return error.reason
        }
    }

    private func utc(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> String? {
        do {
            return try RFC3339Timestamp(parsing: text).utcString
        } catch {
            XCTFail("unexpected error for \(text): \(error)", file: file, line: line)
            return nil
        }
    }

    // MARK: JSON - valid documents

    func testParsesScalarsWithSurroundingWhitespace() {
        XCTAssertEqual(parse("null"), .null)
        XCTAssertEqual(parse(" true "), .bool(true))
        XCTAssertEqual(parse("\t\r\nfalse\n"), .bool(false))
        XCTAssertEqual(parse("\"abc\""), .string("abc"))
        XCTAssertEqual(parse("\"\""), .string(""))
        XCTAssertEqual(parse("42"), .number("42"))
        XCTAssertEqual(parse("[]"), .array([]))
        XCTAssertEqual(parse("{}"), .object([]))
        XCTAssertEqual(parse(" [ ] "), .array([]))
        XCTAssertEqual(parse("{ }"), .object([]))
    }

    func testParsesNestedStructuresKeepingMemberOrder() throws {
        let v = try XCTUnwrap(parse(#"{"z":1,"a":[true,null,{"k":"v"}],"m":{"x":-2.5}}"#))
        let members = try XCTUnwrap(v.objectValue)
        XCTAssertEqual(members.map(\.0), ["z", "a", "m"])
        XCTAssertEqual(v["z"], .number("1"))
        XCTAssertEqual(v["a"]?.arrayValue?.count, 3)
        XCTAssertEqual(v["a"]?.arrayValue?[2]["k"]?.stringValue, "v")
        XCTAssertEqual(v["m"]?["x"]?.numberLexeme, "-2.5")
        XCTAssertEqual(v["a"]?.arrayValue?[0].boolValue, true)
        XCTAssertEqual(v["a"]?.arrayValue?[1].isNull, true)
        XCTAssertNil(v["missing"])
        XCTAssertNil(JSONValue.array([])["z"])
        XCTAssertNil(JSONValue.string("x").objectValue)
        XCTAssertNil(JSONValue.number("1").stringValue)
        XCTAssertNil(JSONValue.null.arrayValue)
    }

    func testAcceptsOtherInputForms() throws {
        XCTAssertEqual(try JSONParser.parse("[1]"), .array([.number("1")]))
        XCTAssertEqual(try JSONParser.parse(ArraySlice(Array("[1]".utf8))), .array([.number("1")]))
        XCTAssertEqual(try JSONParser.parse(Array("[1]".utf8)), .array([.number("1")]))
    }

    func testNumbersKeepTheirExactLexeme() {
        for lexeme in ["0", "-0", "0.1", "123456789012345678901234.5", "1e400", "-1.5e-3", "1E+2", "0e0",
                       "2.000", "1.0000000000000000000000000001", "-123", "9007199254740993"] {
            XCTAssertEqual(parse(lexeme), .number(lexeme), lexeme)
            XCTAssertEqual(parse("[\(lexeme)]"), .array([.number(lexeme)]), lexeme)
            XCTAssertEqual(parse("{\"v\":\(lexeme)}")?["v"], .number(lexeme), lexeme)
        }
    }

    // MARK: JSON - rejections

    func testRejectsInvalidNumbers() {
        for text in ["01", "-01", "00", "1.", ".5", "+1", "1e", "1e+", "-", "--1", "NaN", "Infinity", "-Infinity",
                     "0x10", "1.e3", "1.5.2", "[01]", "{\"a\":01}", "1e5.5", "- 1"] {
            XCTAssertNotNil(parseError(text), text)
        }
        XCTAssertEqual(parseError("[01]")?.message, "leading zeros are not allowed in numbers at byte 1")
        XCTAssertEqual(parseError("NaN")?.message, "unexpected character 'N' at byte 0")
        XCTAssertEqual(parseError("1.")?.message, "unexpected end of input at byte 2")
    }

    func testRejectsStructuralErrors() {
        let cases = ["[1,]", "{\"a\":1,}", "[1 2]", "{\"a\" 1}", "{a:1}", "{\"a\":}", "{,}", "[,1]", "[1,,2]",
                     "// c\n1", "/* c */ 1", "1 // c", "1 2", "[", "{", "[1", "{\"a\":", "{\"a\"", "]", "}",
                     "tru", "nul", "True", "nulll", "'a'", "[1]]", "{}}", "\u{FEFF}1", "undefined", "{\"a\":1 \"b\":2}"]
        for text in cases {
            XCTAssertNotNil(parseError(text), text)
        }
    }

    func testEmptyBody() {
        XCTAssertEqual(parseError("")?.message, "empty body")
        XCTAssertEqual(parseError(" \n\t\r ")?.message, "empty body")
        XCTAssertEqual(parseError("")?.offset, 0)
    }

    func testErrorMessagesCarryByteOffsets() throws {
        let trailingComma = try XCTUnwrap(parseError(#"{"a":1,}"#))
        XCTAssertEqual(trailingComma.message, "unexpected character '}' at byte 7")
        XCTAssertEqual(trailingComma.offset, 7)
        XCTAssertEqual(trailingComma.description, trailingComma.message)
        XCTAssertEqual(parseError(#"[1, "abc"#)?.message, "unterminated string at byte 4")
        XCTAssertEqual(parseError(#"[1, "abc"#)?.offset, 4)
        XCTAssertEqual(parseError("[1")?.message, "unexpected end of input at byte 2")
        XCTAssertEqual(parseError("[1] x")?.message, "unexpected character 'x' at byte 4")
        XCTAssertEqual(parseError([0x5B, 0x01, 0x5D])?.message, "unexpected byte 0x01 at byte 1")
        XCTAssertEqual(parseError([0xEF, 0xBB, 0xBF, 0x31])?.message, "unexpected byte 0xEF at byte 0")
    }

    func testDuplicateKeysAreRejected() throws {
        let small = try XCTUnwrap(parseError(#"{"value":1,"unit":"ms","value":2}"#))
        XCTAssertEqual(small.message, #"duplicate key "value" at byte 23"#)
        XCTAssertEqual(small.offset, 23)

        // Many members: exercises the Set-based check; duplicate at the end and in the middle.
        let keys = (0..<40).map { "k\($0)" }
        let body = keys.map { "\"\($0)\":1" }.joined(separator: ",")
        XCTAssertEqual(parse("{\(body)}")?.objectValue?.count, 40)
        XCTAssertEqual(parseError("{\(body),\"k39\":2}")?.message.hasPrefix(#"duplicate key "k39" at byte"#), true)
        XCTAssertEqual(parseError("{\(body),\"k0\":2}")?.message.hasPrefix(#"duplicate key "k0" at byte"#), true)
        XCTAssertNotNil(parseError(#"{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k5":0}"#))

        // Same key in different objects is fine; escaped spelling of the same key is a duplicate.
        XCTAssertNotNil(parse(#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#))
        XCTAssertNotNil(parseError(#"{"a":1,"\u0061":2}"#))
        // Keys that need quoting are shown as JSON string literals.
        XCTAssertEqual(parseError(#"{"a\"b":1,"a\"b":2}"#)?.message, #"duplicate key "a\"b" at byte 10"#)
    }

    func testNestingDepthLimit() throws {
        let ok = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        XCTAssertNotNil(parse(ok))
        let tooDeep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        let error = try XCTUnwrap(parseError(tooDeep))
        XCTAssertEqual(error.message, "nesting deeper than 64 at byte 64")
        XCTAssertEqual(error.offset, 64)

        let objects = String(repeating: "{\"a\":", count: 65) + "1" + String(repeating: "}", count: 65)
        XCTAssertEqual(parseError(objects)?.message.hasPrefix("nesting deeper than 64"), true)

        XCTAssertNotNil(parse("[[[1]]]", maxDepth: 3))
        XCTAssertEqual(parseError("[[[[1]]]]", maxDepth: 3)?.message, "nesting deeper than 3 at byte 3")
        XCTAssertEqual(parseError("[]", maxDepth: 0)?.message, "nesting deeper than 0 at byte 0")
        XCTAssertNotNil(parse("1", maxDepth: 0))
        // Sibling containers do not add up.
        XCTAssertNotNil(parse("[[1],[2],[3],{\"a\":[4]}]", maxDepth: 3))

        // A hostile body cannot exhaust the stack.
        XCTAssertNotNil(parseError(String(repeating: "[", count: 200_000)))
    }

    // MARK: JSON - strings

    func testStringEscapes() {
        XCTAssertEqual(parse(#""a\"b\\c\/d""#), .string("a\"b\\c/d"))
        XCTAssertEqual(parse(#""\b\f\n\r\t""#), .string("\u{8}\u{C}\n\r\t"))
        XCTAssertEqual(parse(#""\u0041\u00e9\u20AC\u20ac""#), .string("Aé€€"))
        XCTAssertEqual(parse(#""\u0000""#), .string("\u{0}"))
        XCTAssertEqual(parse(#""\uD83D\uDE00""#), .string("😀"))
        XCTAssertEqual(parse(#""x\ud83d\ude00y""#), .string("x😀y"))
        XCTAssertEqual(parse(#""\uDBFF\uDFFF""#), .string("\u{10FFFF}"))
        // Escapes mixed with raw UTF-8 (slow path keeps both).
        XCTAssertEqual(parse("\"é\\n€😀\\t\""), .string("é\n€😀\t"))
    }

    func testRejectsBadEscapesAndSurrogates() {
        let cases: [(String, String)] = [
            (#""\x""#, #"invalid escape '\x' at byte 1"#),
            (#""\'""#, #"invalid escape '\'' at byte 1"#),
            (#""\u12""#, #"invalid \u escape at byte 1"#),
            (#""\u12G4""#, #"invalid \u escape at byte 1"#),
            (#""\uD83D""#, #"lone surrogate \uD83D at byte 1"#),
            (#""\uD83Dx""#, #"lone surrogate \uD83D at byte 1"#),
            (#""\uD83D\u0041""#, #"lone surrogate \uD83D at byte 1"#),
            (#""\uD83D\uD83D""#, #"lone surrogate \uD83D at byte 1"#),
            (#""\uDE00""#, #"lone surrogate \uDE00 at byte 1"#),
            (#""ab\uDE00\uD83D""#, #"lone surrogate \uDE00 at byte 3"#),
            (#""\"#, "unterminated string at byte 0"),
            (#""\u"#, #"invalid \u escape at byte 1"#),
        ]
        for (text, message) in cases {
            XCTAssertEqual(parseError(text)?.message, message, text)
        }
        XCTAssertNotNil(parseError(#""\uD83D\uDE0""#))
    }

    func testRejectsRawControlCharacters() {
        for c: UInt8 in [0x00, 0x01, 0x09, 0x0A, 0x0D, 0x1F] {
            XCTAssertNotNil(parseError(quoted([0x61, c])), "0x\(String(c, radix: 16))")
            XCTAssertNotNil(parseError(quoted([0x5C, 0x6E, c])), "after escape 0x\(String(c, radix: 16))")
        }
        XCTAssertEqual(parseError(quoted([0x61, 0x0A]))?.message, "unescaped control character 0x0A in string at byte 2")
        // DEL is not a control character in JSON.
        XCTAssertEqual(try? JSONParser.parse(quoted([0x7F])), .string("\u{7F}"))
    }

    func testUTF8Validation() {
        // Valid: 2-, 3- and 4-byte sequences, including the edges of each range.
        let valid: [[UInt8]] = [
            [0xC3, 0xA9], [0xC2, 0x80], [0xDF, 0xBF], [0xE2, 0x82, 0xAC], [0xE0, 0xA0, 0x80], [0xED, 0x9F, 0xBF],
            [0xEE, 0x80, 0x80], [0xEF, 0xBF, 0xBF], [0xF0, 0x9F, 0x98, 0x80], [0xF0, 0x90, 0x80, 0x80], [0xF4, 0x8F, 0xBF, 0xBF],
        ]
        for seq in valid {
            let expected = String(decoding: seq, as: UTF8.self)
            XCTAssertEqual(try? JSONParser.parse(quoted(seq)), .string(expected), "\(seq)")
            XCTAssertEqual(try? JSONParser.parse(quoted([0x5C, 0x74] + seq)), .string("\t" + expected), "escaped \(seq)")
        }
        // Invalid: stray continuation, overlong forms, encoded surrogates, beyond U+10FFFF, bad continuations.
        let invalid: [[UInt8]] = [
            [0x80], [0xBF], [0xC0, 0xAF], [0xC1, 0xBF], [0xC3, 0x28], [0xE0, 0x80, 0x80], [0xE0, 0x9F, 0xBF],
            [0xED, 0xA0, 0x80], [0xED, 0xBF, 0xBF], [0xF0, 0x80, 0x80, 0x80], [0xF0, 0x8F, 0xBF, 0xBF],
            [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80], [0xFE], [0xFF],
            [0xE2, 0x82], [0xE2, 0x28, 0xAC], [0xF0, 0x9F, 0x98],
        ]
        for seq in invalid {
            let error = parseError(quoted(seq))
            XCTAssertEqual(error?.message, "invalid UTF-8 in string at byte 1", "\(seq)")
            XCTAssertNotNil(parseError(quoted([0x5C, 0x6E] + seq)), "escaped \(seq)")
        }
        // Input ending inside a sequence inside a string.
        XCTAssertEqual(parseError([0x22, 0xE2, 0x82])?.message, "unterminated string at byte 0")
        // Non-ASCII outside strings.
        XCTAssertEqual(parseError([0x5B, 0xC3, 0xA9, 0x5D])?.message, "unexpected byte 0xC3 at byte 1")
        // Invalid UTF-8 in a key.
        XCTAssertNotNil(parseError([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D]))
    }

    // MARK: JSON - writer

    func testWriterEscaping() {
        XCTAssertEqual(JSONWriter.quote("plain"), #""plain""#)
        XCTAssertEqual(JSONWriter.quote("a\"b\\c/d"), #""a\"b\\c/d""#)
        XCTAssertEqual(JSONWriter.quote("\n\r\t\u{8}\u{C}"), #""\n\r\t\b\f""#)
        XCTAssertEqual(JSONWriter.quote("\u{0}\u{1}\u{1F}"), #""\u0000\u0001\u001f""#)
        XCTAssertEqual(JSONWriter.quote("é€😀"), "\"é€😀\"")
        XCTAssertEqual(JSONWriter.serialize(.object([("a", .array([.number("1.50"), .null, .bool(true), .bool(false)])), ("b", .object([]))])),
                       #"{"a":[1.50,null,true,false],"b":{}}"#)
        XCTAssertEqual(JSONWriter.serialize(.number("1e400")), "1e400")
        XCTAssertEqual(JSONValue.array([.string("x")]).description, #"["x"]"#)
        var bytes: [UInt8] = []
        JSONWriter.serialize(.array([]), into: &bytes)
        XCTAssertEqual(bytes, Array("[]".utf8))
    }

    func testRoundTrip() {
        let documents = [
            #"{"event_id":"e-1","customer":"c\"1","value":123456789012345678901234.5,"tags":["a","b"],"meta":{"n":null,"t":true,"f":false,"x":1e400,"y":-0.000}}"#,
            #"[0.1,-0,1E+2,"\u0000\n\t\\","é€😀",[],{},[[[]]]]"#,
            #""just a string""#,
            "7",
        ]
        for text in documents {
            guard let v = parse(text) else { continue }
            let written = JSONWriter.serialize(v)
            XCTAssertEqual(parse(written), v, text)
            // Compact input with canonical escapes comes back byte for byte.
            XCTAssertEqual(written, text)
        }
        // Whitespace is dropped, structure kept.
        XCTAssertEqual(parse(" { \"a\" : [ 1 , 2 ] } ").map(JSONWriter.serialize), #"{"a":[1,2]}"#)
        // Every control character survives a round trip.
        let controls = String(decoding: (0..<0x20).map { UInt8($0) }, as: UTF8.self)
        XCTAssertEqual(parse(JSONWriter.quote(controls)), .string(controls))
    }

    func testEqualityIsStructural() {
        XCTAssertNotEqual(JSONValue.number("1.0"), .number("1"))
        XCTAssertNotEqual(JSONValue.object([("a", .null), ("b", .null)]), .object([("b", .null), ("a", .null)]))
        XCTAssertEqual(JSONValue.object([("a", .array([.null]))]), .object([("a", .array([.null]))]))
        XCTAssertNotEqual(JSONValue.object([("a", .null)]), .object([("a", .null), ("b", .null)]))
        XCTAssertNotEqual(JSONValue.string("1"), .number("1"))
        XCTAssertNotEqual(JSONValue.bool(false), .null)
    }

    func testLargeBatchParsesQuickly() throws {
        var text = "["
        for k in 0..<1000 {
            if k > 0 { text += "," }
            text += #"{"event_id":"evt-\#(k)-7f3a9c2e-41d2-4b8e-9a77-0c5d1e2f3a4b","customer_id":"cust-\#(k % 37)","meter":"api_calls","value":\#(k).125,"timestamp":"2026-10-31T23:59:59.123456Z","properties":{"region":"eu-west-1","tier":"gold","note":"caf\u00e9 ☕"}}"#
        }
        text += "]"
        let bytes = Array(text.utf8)
        XCTAssertGreaterThan(bytes.count, 190_000)

        let start = Date()
        let v = try JSONParser.parse(bytes)
        let elapsed = Date().timeIntervalSince(start)
        let items = try XCTUnwrap(v.arrayValue)
        XCTAssertEqual(items.count, 1000)
        XCTAssertEqual(items[999]["value"], .number("999.125"))
        XCTAssertEqual(items[5]["properties"]?["note"]?.stringValue, "café ☕")
        // Generous bound so debug builds pass; release builds take a few milliseconds.
        XCTAssertLessThan(elapsed, 2.0)
        XCTAssertEqual(try JSONParser.parse(Array(JSONWriter.serialize(v).utf8)), v)
    }

    // MARK: ExactDecimal

    func testDecimalNormalization() throws {
        let table: [(String, String)] = [
            ("12.50", "12.5"), ("-3", "-3"), ("1e3", "1000"), ("1.5E-2", "0.015"), ("1.500", "1.5"), ("2.000", "2"),
            ("-0", "0"), ("0.000", "0"), ("-0.0e5", "0"), ("0", "0"), ("0e10000", "0"), ("007.10", "7.1"),
            ("0.1", "0.1"), ("123456789012345678901234.5", "123456789012345678901234.5"), ("1.23e2", "123"),
            ("1.23e1", "12.3"), ("123e-5", "0.00123"), ("5E+0", "5"), ("100", "100"), ("1000000e-6", "1"),
            ("-1.5000000000000000000", "-1.5"), ("0.000000000001", "0.000000000001"), ("-12.345e-2", "-0.12345"),
            ("1200e-2", "12"), ("0.05e1", "0.5"), ("0.05e2", "5"), ("0.05e3", "50"), ("10.01", "10.01"),
            ("1e-12", "0.000000000001"), ("1e25", "10000000000000000000000000"), ("0.000123e3", "0.123"),
            ("1e+0003", "1000"), ("5e-0", "5"),
        ]
        for (text, expected) in table {
            XCTAssertEqual(try decimal(text), expected, text)
        }
    }

    func testDecimalSyntaxRejections() {
        for text in ["", "  ", " 1", "1 ", "+1", ".5", "1.", "0x10", "1e", "1e+", "1e-", "--1", "-", "1.2.3", "abc",
                     "NaN", "Infinity", "-Infinity", "1,000", "1_000", "e5", "1e5.0", "\u{0661}", "１", "1.5f", "- 1"] {
            XCTAssertEqual(decimalError(text), "not a decimal number", text.debugDescription)
        }
    }

    func testDecimalLimits() {
        let twentySix = String(repeating: "9", count: 26)
        XCTAssertEqual(try decimal(twentySix + ".5"), twentySix + ".5")
        XCTAssertEqual(decimalError("1" + twentySix), "more than 26 digits before the decimal point")
        XCTAssertEqual(try decimal(String(repeating: "0", count: 40) + "1"), "1")
        XCTAssertEqual(decimalError("1e26"), "more than 26 digits before the decimal point")
        XCTAssertEqual(decimalError("1e10000"), "more than 26 digits before the decimal point")
        XCTAssertEqual(decimalError("0.1234567890123"), "more than 12 digits after the decimal point")
        XCTAssertEqual(try decimal("0.123456789012" + String(repeating: "0", count: 50)), "0.123456789012")
        XCTAssertEqual(decimalError("1e-13"), "more than 12 digits after the decimal point")
        XCTAssertEqual(decimalError("1e-10000"), "more than 12 digits after the decimal point")
        XCTAssertEqual(decimalError("1e10001"), "exponent out of range (more than ±10000)")
        XCTAssertEqual(decimalError("1e-10001"), "exponent out of range (more than ±10000)")
        XCTAssertEqual(decimalError("0e99999"), "exponent out of range (more than ±10000)")
        XCTAssertEqual(decimalError("1e999999999999999999999999999999"), "exponent out of range (more than ±10000)")
        // Custom limits.
        XCTAssertEqual(decimalError("1.005", maxScale: 2), "more than 2 digits after the decimal point")
        XCTAssertEqual(try decimal("1.10", maxScale: 2), "1.1")
        XCTAssertEqual(decimalError("1000", maxIntegerDigits: 3), "more than 3 digits before the decimal point")
        XCTAssertEqual(try decimal("100e1", maxIntegerDigits: 4), "1000")
        XCTAssertEqual(try decimal("0.5", maxIntegerDigits: 0), "0.5")
        XCTAssertEqual(try decimal("12", maxScale: 0), "12")
        // Huge exponent with digits that shift back into range.
        XCTAssertEqual(try decimal("0." + String(repeating: "0", count: 9999) + "1e10000"), "1")
    }

    func testDecimalProperties() throws {
        let negative = try ExactDecimal(parsing: "-12.50")
        XCTAssertTrue(negative.isNegative)
        XCTAssertFalse(negative.isZero)
        XCTAssertEqual(negative.integerDigits, "12")
        XCTAssertEqual(negative.fractionDigits, "5")
        XCTAssertEqual(negative.scale, 1)
        let zero = try ExactDecimal(parsing: "-0.000e3")
        XCTAssertTrue(zero.isZero)
        XCTAssertFalse(zero.isNegative)
        XCTAssertEqual(zero.description, "0")
        XCTAssertEqual(try ExactDecimal(parsing: "1.50"), try ExactDecimal(parsing: "15e-1"))
        XCTAssertNotEqual(try ExactDecimal(parsing: "1.5"), try ExactDecimal(parsing: "-1.5"))
        XCTAssertEqual(try ExactDecimal(parsing: "0"), try ExactDecimal(parsing: "-0"))
        XCTAssertEqual(DecimalError(reason: "x").description, "x")
    }

    func testDecimalFromParsedJSONNumber() throws {
        let v = try JSONParser.parse(#"{"value":123456789012345678901234.5000,"small":1.5E-2}"#)
        let value = try ExactDecimal(parsing: try XCTUnwrap(v["value"]?.numberLexeme))
        XCTAssertEqual(value.description, "123456789012345678901234.5")
        XCTAssertEqual(try ExactDecimal(parsing: try XCTUnwrap(v["small"]?.numberLexeme)).description, "0.015")
    }

    // MARK: RFC3339Timestamp

    func testKnownEpochs() throws {
        let cases: [(String, Int64)] = [
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01T00:00:00.000001Z", 1),
            ("2000-01-01T00:00:00Z", 946_684_800_000_000),
            ("2026-01-01T00:00:00Z", 1_767_225_600_000_000),
            ("2024-02-29T12:34:56.789012Z", 1_709_210_096_789_012),
            ("2038-01-19T03:14:08Z", 2_147_483_648_000_000),
            ("9999-12-31T23:59:59.999999Z", 253_402_300_799_999_999),
        ]
        for (text, micros) in cases {
            let t = try RFC3339Timestamp(parsing: text)
            XCTAssertEqual(t.epochMicroseconds, micros, text)
            XCTAssertEqual(RFC3339Timestamp(epochMicroseconds: micros), t, text)
        }
    }

    func testOffsetsConvertToUTC() {
        XCTAssertEqual(utc("2026-10-31T23:30:00-01:00"), "2026-11-01 00:30:00.000000+00")
        XCTAssertEqual(utc("2026-11-01T05:30:00+05:30"), "2026-11-01 00:00:00.000000+00")
        XCTAssertEqual(utc("2026-01-01T00:00:00+00:01"), "2025-12-31 23:59:00.000000+00")
        XCTAssertEqual(utc("2026-11-01T00:00:00-00:00"), "2026-11-01 00:00:00.000000+00")
        XCTAssertEqual(utc("2026-11-01T00:00:00+00:00"), "2026-11-01 00:00:00.000000+00")
        XCTAssertEqual(utc("2026-03-01T00:00:00+23:59"), "2026-02-28 00:01:00.000000+00")
        XCTAssertEqual(utc("2024-02-28T23:00:00-23:59"), "2024-02-29 22:59:00.000000+00")
        XCTAssertEqual(utc("1970-01-01T00:00:00-00:30"), "1970-01-01 00:30:00.000000+00")
    }

    func testSeparatorAndCaseVariants() throws {
        let reference = try RFC3339Timestamp(parsing: "2026-11-01T12:00:00Z")
        for text in ["2026-11-01t12:00:00Z", "2026-11-01 12:00:00Z", "2026-11-01T12:00:00z", "2026-11-01t12:00:00.000z"] {
            XCTAssertEqual(try RFC3339Timestamp(parsing: text), reference, text)
        }
    }

    func testFractionIsTruncatedNeverRounded() throws {
        XCTAssertEqual(utc("2026-10-31T23:59:59.9999999Z"), "2026-10-31 23:59:59.999999+00")
        XCTAssertEqual(utc("2026-12-31T23:59:59.99999999999999999999Z"), "2026-12-31 23:59:59.999999+00")
        XCTAssertEqual(utc("2026-10-31T23:59:59.123456789Z"), "2026-10-31 23:59:59.123456+00")
        XCTAssertEqual(utc("2026-10-31T23:59:59.5Z"), "2026-10-31 23:59:59.500000+00")
        XCTAssertEqual(utc("2026-10-31T23:59:59.05Z"), "2026-10-31 23:59:59.050000+00")
        XCTAssertEqual(utc("2026-10-31T23:59:59.000001Z"), "2026-10-31 23:59:59.000001+00")
        XCTAssertEqual(utc("2026-10-31T23:59:59.0000009Z"), "2026-10-31 23:59:59.000000+00")
        XCTAssertEqual(try RFC3339Timestamp(parsing: "1970-01-01T00:00:00.5Z").epochMicroseconds, 500_000)
    }

    func testCalendarEdges() {
        XCTAssertEqual(utc("2024-02-29T00:00:00Z"), "2024-02-29 00:00:00.000000+00")
        XCTAssertEqual(utc("2000-02-29T00:00:00Z"), "2000-02-29 00:00:00.000000+00")
        XCTAssertEqual(utc("2026-12-31T23:59:59Z"), "2026-12-31 23:59:59.000000+00")
        XCTAssertEqual(utc("2026-04-30T00:00:00Z"), "2026-04-30 00:00:00.000000+00")
        XCTAssertEqual(timestampError("2025-02-29T00:00:00Z"), "day 29 does not exist in month 2 of 2025")
        XCTAssertEqual(timestampError("2100-02-29T00:00:00Z"), "day 29 does not exist in month 2 of 2100")
        XCTAssertEqual(timestampError("2026-02-30T00:00:00Z"), "day 30 does not exist in month 2 of 2026")
        XCTAssertEqual(timestampError("2026-04-31T00:00:00Z"), "day 31 does not exist in month 4 of 2026")
        XCTAssertEqual(timestampError("2026-01-32T00:00:00Z"), "day 32 does not exist in month 1 of 2026")
        XCTAssertEqual(timestampError("2026-01-00T00:00:00Z"), "day 0 does not exist in month 1 of 2026")
    }

    func testRejectsInvalidTimestamps() {
        let syntax = "not an RFC 3339 date-time (expected YYYY-MM-DDTHH:MM:SS[.fraction] followed by Z or ±HH:MM)"
        let cases: [(String, String)] = [
            ("2026-11-01T00:00:00", "missing UTC offset (Z or ±HH:MM)"),
            ("2026-11-01T00:00:00.123", "missing UTC offset (Z or ±HH:MM)"),
            ("2026-13-01T00:00:00Z", "month out of range 01-12"),
            ("2026-00-01T00:00:00Z", "month out of range 01-12"),
            ("2026-11-01T24:00:00Z", "hour out of range 00-23"),
            ("2026-11-01T00:60:00Z", "minute out of range 00-59"),
            ("2016-12-31T23:59:60Z", "leap seconds are not supported"),
            ("2026-11-01T00:00:61Z", "second out of range 00-59"),
            ("1969-12-31T23:59:59Z", "year out of range 1970-9999"),
            ("0000-01-01T00:00:00Z", "year out of range 1970-9999"),
            ("1970-01-01T00:30:00+01:00", "year out of range 1970-9999"),
            ("9999-12-31T23:30:00-01:00", "year out of range 1970-9999"),
            ("2026-11-01T00:00:00+24:00", "UTC offset out of range (at most ±23:59)"),
            ("2026-11-01T00:00:00-12:60", "UTC offset out of range (at most ±23:59)"),
            ("2026-11-01T00:00:00+99:99", "UTC offset out of range (at most ±23:59)"),
            ("", syntax), ("2026-11-01", syntax), ("2026-1-01T00:00:00Z", syntax), ("2026-11-01T00:00Z", syntax),
            ("2026-11-01T00:00:00.Z", syntax), ("2026-11-01T00:00:00Zx", syntax), ("2026-11-01T00:00:00Z ", syntax),
            (" 2026-11-01T00:00:00Z", syntax), ("2026-11-01T00:00:00+0100", syntax), ("2026-11-01T00:00:00+01", syntax),
            ("2026-11-01  00:00:00Z", syntax), ("2026-11-01_00:00:00Z", syntax), ("2026/11/01T00:00:00Z", syntax),
            ("+2026-11-01T00:00:00Z", syntax), ("12026-11-01T00:00:00Z", syntax), ("2026-11-01T00:00:00,5Z", syntax),
            ("2026-11-01T00:00:00UTC", syntax), ("2026-11-01T00:00:00+01:00:00", syntax), ("２026-11-01T00:00:00Z", syntax),
        ]
        for (text, reason) in cases {
            XCTAssertEqual(timestampError(text), reason, text)
        }
        XCTAssertEqual(TimestampError(reason: "x").description, "x")
    }

    func testFormattingAndRoundTrip() throws {
        let epoch = RFC3339Timestamp(epochMicroseconds: 0)
        XCTAssertEqual(epoch.iso8601, "1970-01-01T00:00:00.000000Z")
        XCTAssertEqual(epoch.utcString, "1970-01-01 00:00:00.000000+00")
        XCTAssertEqual(epoch.description, epoch.iso8601)
        let last = RFC3339Timestamp(epochMicroseconds: 253_402_300_799_999_999)
        XCTAssertEqual(last.iso8601, "9999-12-31T23:59:59.999999Z")
        XCTAssertEqual(RFC3339Timestamp(epochMicroseconds: -1).iso8601, "1969-12-31T23:59:59.999999Z")
        for text in ["2026-10-31T23:59:59.999999Z", "2024-02-29T12:34:56.789012Z", "1999-12-31T23:59:59.000000Z"] {
            let t = try RFC3339Timestamp(parsing: text)
            XCTAssertEqual(t.iso8601, text)
            XCTAssertEqual(try RFC3339Timestamp(parsing: t.iso8601), t)
            XCTAssertEqual(try RFC3339Timestamp(parsing: t.utcString.replacingOccurrences(of: "+00", with: "Z")), t)
        }
        XCTAssertLessThan(try RFC3339Timestamp(parsing: "2026-01-01T00:00:00Z"), try RFC3339Timestamp(parsing: "2026-01-01T00:00:00.000001Z"))
    }

    func testCivilDayConversionAgreesWithDayByDayCount() {
        // Walk every day from 1970 through 2200 and compare with a simple counter.
        var days = 0
        for year in 1970...2200 {
            for month in 1...12 {
                for day in 1...RFC3339Timestamp.daysInMonth(year: year, month: month) {
                    if RFC3339Timestamp.daysFromCivil(year: year, month: month, day: day) != days {
                        XCTFail("daysFromCivil(\(year)-\(month)-\(day)) != \(days)")
                        return
                    }
                    let civil = RFC3339Timestamp.civilFromDays(days)
                    if civil.year != year || civil.month != month || civil.day != day {
                        XCTFail("civilFromDays(\(days)) = \(civil), expected \(year)-\(month)-\(day)")
                        return
                    }
                    days += 1
                }
            }
        }
        XCTAssertEqual(RFC3339Timestamp.daysFromCivil(year: 10_000, month: 1, day: 1), 2_932_897)
    }
}
