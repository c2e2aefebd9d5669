import Foundation
import XCTest
import PGClient
import MeterWire
import MeterCore
import MeterDevKit

/// Our strict JSON parser against Postgres's own (`::jsonb`), on generated documents: numbers at
/// the edges of `numeric`, escapes, surrogates, nesting, and byte-level mutations of all of them.
/// The contract, checked document by document:
///   * whatever we accept, Postgres accepts, and reads as the same value as our serialization of
///     it, except documents holding NUL or a number beyond numeric's display scale, which
///     Postgres refuses and which ingest refuses by name before the database (EventDecoder);
///   * whatever Postgres refuses, we refuse (the same exceptions);
///   * we may refuse more than Postgres (duplicate keys, depth over the limit): by design.
final class JSONDifferentialTests: XCTestCase {
    func testTheParserAgreesWithPostgres() throws {
        let conn = try TestDatabase.connect()
        defer { conn.close() }
        try conn.execute("""
            create function pg_temp.try_jsonb(t text) returns jsonb language plpgsql as $$
            begin return t::jsonb; exception when others then return null; end $$
            """)
        var rng = SeededRandom(seed: 20261203)
        var docs: [String] = []
        for _ in 0..<600 { docs.append(Self.document(&rng, depth: 0)) }
        for i in 0..<900 { docs.append(Self.mutate(docs[i % 600], &rng)) }
        docs += Self.edges
        var agreed = 0, strictlyOurs = 0, exempt = 0
        for doc in docs {
            let ours = try? JSONParser.parse(doc)
            let row = try conn.execute("select pg_temp.try_jsonb($1) is not null as ok, pg_temp.try_jsonb($1)::text as pg",
                                       [doc]).single()
            let postgresAccepts = try row.bool("ok")
            let outsideNumeric = ours.map { EventDecoder.firstUnstorableNumber($0) != nil } ?? false
            let hasNUL = ours.map(EventDecoder.containsNUL) ?? false
            if let ours {
                if outsideNumeric || hasNUL { exempt += 1; continue }
                XCTAssertTrue(postgresAccepts, "we accept, Postgres refuses: \(doc.prefix(200))")
                let same = try conn.execute("select pg_temp.try_jsonb($1) = pg_temp.try_jsonb($2) as same",
                                            [doc, JSONWriter.serialize(ours)]).single().optionalString("same")
                XCTAssertEqual(same, "t", "different values: \(doc.prefix(200)) -> \(JSONWriter.serialize(ours).prefix(200))")
                agreed += 1
            } else if postgresAccepts {
                strictlyOurs += 1   // duplicate keys, depth: refused by design
            } else {
                agreed += 1
            }
        }
        // The generator reached both sides and the exemptions, or the test proves little.
        XCTAssertGreaterThan(agreed, 1000)
        XCTAssertGreaterThan(exempt, 5)
        XCTAssertGreaterThan(strictlyOurs, 5)
    }

    /// Documents at the edges, kept whatever the generator does.
    static let edges: [String] = [
        "0", "-0", "1e308", "1E-308", "123456789012345678901234567890.123456789012345678901234567890",
        "1." + String(repeating: "0", count: 16_383) + "e-0", "1." + String(repeating: "0", count: 16_384) + "e-0",
        "1e-16383", "1e-16384", "9" + String(repeating: "9", count: 1000), "[1e1000]",
        #""\u0000""#, #""\ud800""#, #""\udc00\ud800""#, #""\ud83d\ude00""#, #""\uD83D\uDE00""#, #""\/""#,
        #"{"a":1,"a":2}"#, "[" + String(repeating: "[", count: 200) + String(repeating: "]", count: 201),
        #"{"k":"\t"}"#, "{\"k\":\"\u{7f}\"}", "\u{feff}{}", "{} ", " [ ] ", "nul", "true", "-", "01", "1.", ".5", "+1",
    ]

    static func document(_ r: inout SeededRandom, depth: Int) -> String {
        switch depth > 4 ? r.below(4) : r.below(7) {
        case 0: return number(&r)
        case 1: return string(&r)
        case 2: return ["true", "false", "null"][r.below(3)]
        case 3: return "\"" + String(repeating: "x", count: r.below(3) * 700) + "\""
        case 4, 5:
            return "{" + (0..<r.below(5)).map { _ in string(&r) + ":" + document(&r, depth: depth + 1) }.joined(separator: ",") + "}"
        default:
            return "[" + (0..<r.below(5)).map { _ in document(&r, depth: depth + 1) }.joined(separator: ",") + "]"
        }
    }

    static func number(_ r: inout SeededRandom) -> String {
        let sign = r.chance(0.3) ? "-" : ""
        let int = r.chance(0.2) ? "0" : String(1 + r.below(9)) + String((0..<r.below(30)).map { _ in "0123456789".randomElement(using: &r)! })
        let frac = r.chance(0.5) ? "." + String((0..<1 + r.below(40)).map { _ in "0123456789".randomElement(using: &r)! }) : ""
        let exp = r.chance(0.4) ? ["e", "E"][r.below(2)] + ["", "+", "-"][r.below(3)] + String(r.below(r.chance(0.1) ? 20_000 : 400)) : ""
        return sign + int + frac + exp
    }

    static func string(_ r: inout SeededRandom) -> String {
        let pieces = [#"\""#, #"\\"#, #"\/"#, #"\b"#, #"\f"#, #"\n"#, #"\r"#, #"\t"#, #"\u00e9"#, #"\u20AC"#,
                      #"\ud83d\ude00"#, #"\ud800"#, #"\u0000"#, "é", "😀", "a", "Z", " ", "\u{1}", "\u{7f}"]
        return "\"" + (0..<r.below(8)).map { _ in pieces[r.below(pieces.count)] }.joined() + "\""
    }

    /// One byte-level change: delete, duplicate or replace a byte with a JSON-significant one.
    static func mutate(_ doc: String, _ r: inout SeededRandom) -> String {
        var b = Array(doc.utf8)
        guard !b.isEmpty else { return "x" }
        let i = r.below(b.count)
        switch r.below(3) {
        case 0: b.remove(at: i)
        case 1: b.insert(b[i], at: i)
        default:
            let significant = Array(#"{}[],:"\-+.eE0 x"#.utf8)
            b[i] = significant[r.below(significant.count)]
        }
        return String(decoding: b, as: UTF8.self)
    }
}
