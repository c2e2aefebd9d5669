import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import XCTest
import PGClient
import MeterWire

/// Bad input: every refusal names its field and reason with a stable code and status, valid
/// events sent along are stored, and nothing a client sends yields a 5xx.
final class IngestValidationTests: XCTestCase {
    typealias T = APIHarness

    /// A property number whose value is small but whose display scale (the fraction as written
    /// minus the exponent) exceeds what Postgres stores (16,383) is refused by name, not a 500,
    /// and the valid event beside it is stored.
    func testANumberPostgresCannotStoreIsRefusedNotA500() async throws {
        try await T.withApp { client, fx in
            let huge = "1." + String(repeating: "0", count: 6_384) + "e-10000"   // 1e-10000, display scale 16,384
            let fits = "1." + String(repeating: "0", count: 6_383) + "e-10000"   // display scale 16,383
            let batch = "[" + [T.event(fx, key: "ds0", properties: #"{"n":\#(huge)}"#),
                               T.event(fx, key: "ds1", properties: #"{"n":\#(fits)}"#),
                               T.event(fx, key: "ds2")].joined(separator: ",") + "]"
            let r = try await T.post(client, batch, token: fx.token)
            XCTAssertEqual(r.status, 207, "\(r.json)")
            let results = try XCTUnwrap(r.json["results"]?.arrayValue)
            XCTAssertEqual(results[0]["status"]?.stringValue, "rejected")
            XCTAssertEqual(results[0]["error"]?["code"]?.stringValue, "invalid_value")
            XCTAssertEqual(results[0]["error"]?["field"]?.stringValue, "properties")
            XCTAssertEqual(results[1]["status"]?.stringValue, "accepted", "\(r.json)")
            XCTAssertEqual(results[2]["status"]?.stringValue, "accepted", "\(r.json)")
            let single = try await T.post(client, T.event(fx, key: "ds3", properties: #"{"n":\#(huge)}"#), token: fx.token)
            XCTAssertEqual(single.status, 422, "\(single.json)")
            XCTAssertEqual(try T.count(fx), 2)
        }
    }

    /// The cheap limit check (no digits built) answers exactly as parsing does.
    func testLimitCheckAgreesWithParsing() {
        let lexemes = ["0", "-0", "1", "1e-9999", "1e-10000", "1e-10001", "1e10000", "1e9999", "12.5e3", "0.000",
                       "1." + String(repeating: "0", count: 20_000), String(repeating: "9", count: 10_001),
                       String(repeating: "9", count: 10_000), "1.5e-9998", "-3.25E+2", "abc", "1.", ".5", "1e", "--1"]
        for l in lexemes {
            let parsed = (try? ExactDecimal(parsing: l, maxIntegerDigits: 10_000, maxScale: 10_000)) != nil
            XCTAssertEqual(ExactDecimal.isWithinLimits(l, maxIntegerDigits: 10_000, maxScale: 10_000), parsed, l.prefix(30) + "")
        }
    }

    func testDisplayScaleIsComputedAsPostgresDoes() {
        XCTAssertEqual(ExactDecimal.postgresDisplayScale(ofLexeme: "1.500"), 3)
        XCTAssertEqual(ExactDecimal.postgresDisplayScale(ofLexeme: "1.5e-3"), 4)
        XCTAssertEqual(ExactDecimal.postgresDisplayScale(ofLexeme: "12.5e3"), 0)
        XCTAssertEqual(ExactDecimal.postgresDisplayScale(ofLexeme: "-0.25E+1"), 1)
        XCTAssertEqual(ExactDecimal.postgresDisplayScale(ofLexeme: "7"), 0)
        XCTAssertGreaterThan(ExactDecimal.postgresDisplayScale(ofLexeme: "1e-99999999999") ?? 0, ExactDecimal.postgresMaxDisplayScale)
        XCTAssertNil(ExactDecimal.postgresDisplayScale(ofLexeme: "1.2.3"))
    }

    func testMixedBatchStoresTheValidAndReportsTheInvalidByIndex() async throws {
        try await T.withApp { client, fx in
            let batch = "[" + [
                T.event(fx, key: "m0"),
                T.event(fx, key: "m1", occurredAt: "yesterday"),
                T.event(fx, key: "m2", value: "-1"),
                #"{"customer":"nobody-\#(fx.prefix)","meter":"\#(fx.prefix).calls","idempotency_key":"m3","occurred_at":"\#(T.now())"}"#,
                T.event(fx, key: "m4", meter: "nometer"),
                #"{"customer":\#(JSONWriter.quote(fx.customers[0])),"meter":"\#(fx.prefix).calls","occurred_at":"\#(T.now())"}"#,
                T.event(fx, key: "m6", value: "\"1.0000000000001\""),
                #"{"customer":\#(JSONWriter.quote(fx.customers[0])),"meter":"\#(fx.prefix).calls","idempotency_key":"m7","occurred_at":"\#(T.now())","ocurred":"typo"}"#,
                T.event(fx, key: "m8", value: "true"),
                "42",
                T.event(fx, key: "m10", value: "\"12.25\""),
            ].joined(separator: ",") + "]"
            let r = try await T.post(client, batch, token: fx.token)
            XCTAssertEqual(r.status, 207)
            let res = r.results()
            XCTAssertEqual(res.count, 11)
            func check(_ i: Int, _ status: String, _ code: String?, _ field: String?, file: StaticString = #filePath, line: UInt = #line) {
                XCTAssertEqual(res[i]["index"]?.numberLexeme, String(i), file: file, line: line)
                XCTAssertEqual(res[i]["status"]?.stringValue, status, "index \(i)", file: file, line: line)
                XCTAssertEqual(res[i]["error"]?["code"]?.stringValue, code, "index \(i)", file: file, line: line)
                XCTAssertEqual(res[i]["error"]?["field"]?.stringValue, field, "index \(i)", file: file, line: line)
                if code != nil { XCTAssertFalse((res[i]["error"]?["message"]?.stringValue ?? "").isEmpty, file: file, line: line) }
            }
            check(0, "accepted", nil, nil)
            check(1, "rejected", "invalid_timestamp", "occurred_at")
            check(2, "rejected", "negative_value", "value")
            check(3, "rejected", "unknown_customer", "customer")
            check(4, "rejected", "unknown_meter", "meter")
            check(5, "rejected", "missing_field", "idempotency_key")
            check(6, "rejected", "invalid_decimal", "value")
            check(7, "rejected", "unknown_field", "ocurred")
            check(8, "rejected", "invalid_type", "value")
            check(9, "rejected", "invalid_type", nil)
            check(10, "accepted", nil, nil)
            XCTAssertEqual(r.summary("accepted"), 2)
            XCTAssertEqual(r.summary("rejected"), 9)
            XCTAssertEqual(try T.count(fx), 2)
            XCTAssertEqual(try T.count(fx, "e.idempotency_key = 'm10' and e.value = 12.25"), 1)
        }
    }

    func testRequestLevelErrors() async throws {
        try await T.withApp({ $0.limits.maxBodyBytes = 4096 }) { client, fx in
            let ok = T.event(fx, key: "x")
            // 401: missing, malformed, unknown key.
            for token in [nil, "", "mk_doesnotexist"] as [String?] {
                let r = try await T.post(client, ok, token: token)
                XCTAssertEqual(r.status, 401)
                XCTAssertEqual(r.code, "unauthorized")
                XCTAssertNotNil(r.headers[.wwwAuthenticate])
            }
            // 415: wrong or missing content type.
            for ct in ["text/plain", "application/xml", nil] as [String?] {
                let r = try await T.post(client, ok, token: fx.token, contentType: ct)
                XCTAssertEqual(r.status, 415)
                XCTAssertEqual(r.code, "unsupported_media_type")
                XCTAssertEqual(r.field, "Content-Type")
            }
            // 200 with a charset parameter.
            let withCharset = try await T.post(client, T.event(fx, key: "cs"), token: fx.token, contentType: "application/json; charset=utf-8")
            XCTAssertEqual(withCharset.status, 201)
            // 400: malformed JSON of several kinds, with the offending byte offset.
            for bad in ["{", "[1,]", "{\"a\":1,\"a\":2}", "", "nul", "{'a':1}", "[\"\\ud800\"]"] {
                let r = try await T.post(client, bad, token: fx.token)
                XCTAssertEqual(r.status, 400, bad)
                XCTAssertEqual(r.code, "malformed_json", bad)
            }
            let notEvents = try await T.post(client, "\"hello\"", token: fx.token)
            XCTAssertEqual(notEvents.status, 400)
            XCTAssertEqual(notEvents.code, "invalid_body")
            let empty = try await T.post(client, "[]", token: fx.token)
            XCTAssertEqual(empty.status, 400)
            XCTAssertEqual(empty.code, "empty_batch")
            // 413: over the body limit (4 KiB here).
            let big = "[" + (0..<60).map { T.event(fx, key: "big\($0)") }.joined(separator: ",") + "]"
            XCTAssertGreaterThan(big.utf8.count, 4096)
            let tooBig = try await T.post(client, big, token: fx.token)
            XCTAssertEqual(tooBig.status, 413)
            XCTAssertEqual(tooBig.code, "body_too_large")
            XCTAssertEqual(try T.count(fx), 1)
        }
    }

    func testRevokedKeyIsRefusedAtOnce() async throws {
        try await T.withApp { client, fx in
            let r1 = try await T.post(client, T.event(fx, key: "before"), token: fx.token)
            XCTAssertEqual(r1.status, 201)
            let c = try PGConnection(conninfo: fx.conninfo)
            XCTAssertEqual(try c.execute("select meter.api_key_revoke(left($1, 12)) as n", [fx.token]).single().int("n"), 1)
            let r2 = try await T.post(client, T.event(fx, key: "after"), token: fx.token)
            XCTAssertEqual(r2.status, 401)
            XCTAssertEqual(r2.code, "unauthorized")
            XCTAssertEqual(try T.count(fx), 1)
        }
    }

    func testBatchOfOneThousandAndOneMore() async throws {
        try await T.withApp { client, fx in
            let thousand = "[" + (0..<1000).map { T.event(fx, key: "n\($0)", customer: $0 % 3, value: "\($0)") }.joined(separator: ",") + "]"
            let r = try await T.post(client, thousand, token: fx.token)
            XCTAssertEqual(r.status, 200)
            XCTAssertEqual(r.summary("accepted"), 1000)
            XCTAssertEqual(try T.count(fx), 1000)
            let c = try PGConnection(conninfo: fx.conninfo)
            let sum = try c.execute("""
                select sum(e.value)::text as s from meter.events e join meter.customers c on c.id = e.customer_id
                where c.external_id like $1
                """, [fx.prefix + "%"]).single().string("s")
            XCTAssertEqual(sum, "499500")
            let more = "[" + (0..<1001).map { T.event(fx, key: "o\($0)") }.joined(separator: ",") + "]"
            let r2 = try await T.post(client, more, token: fx.token)
            XCTAssertEqual(r2.status, 413)
            XCTAssertEqual(r2.code, "batch_too_large")
            XCTAssertEqual(try T.count(fx), 1000)
            // The wrapper form {"events": [...]} is a batch too.
            let wrapped = try await T.post(client, #"{"events":[\#(T.event(fx, key: "w1"))]}"#, token: fx.token)
            XCTAssertEqual(wrapped.status, 200)
            XCTAssertEqual(wrapped.summary("accepted"), 1)
        }
    }

    func testTimeWindowUsesTheDatabaseClock() async throws {
        try await T.withApp { client, fx in
            let future = try await T.post(client, T.event(fx, key: "f", occurredAt: T.now(offsetSeconds: 600)), token: fx.token)
            XCTAssertEqual(future.status, 422)
            XCTAssertEqual(future.code, "occurred_at_in_future")
            XCTAssertEqual(future.field, "occurred_at")
            let old = try await T.post(client, T.event(fx, key: "o", occurredAt: T.now(offsetSeconds: -36 * 86_400)), token: fx.token)
            XCTAssertEqual(old.status, 422)
            XCTAssertEqual(old.code, "occurred_at_too_old")
            let nearFuture = try await T.post(client, T.event(fx, key: "nf", occurredAt: T.now(offsetSeconds: 240)), token: fx.token)
            XCTAssertEqual(nearFuture.status, 201)
            let oldButInside = try await T.post(client, T.event(fx, key: "ob", occurredAt: T.now(offsetSeconds: -34 * 86_400)), token: fx.token)
            XCTAssertEqual(oldButInside.status, 201)
            // An offset is converted to UTC; sub-microsecond digits are truncated, never rounded.
            let offset = try await T.post(client, T.event(fx, key: "tz", occurredAt: "\(T.now(offsetSeconds: -3600).prefix(19)).9999999+00:00"), token: fx.token)
            XCTAssertEqual(offset.status, 201)
            let c = try PGConnection(conninfo: fx.conninfo)
            let frac = try c.execute("""
                select extract(microseconds from e.occurred_at)::bigint % 1000000 as us from meter.events e
                join meter.customers c on c.id = e.customer_id where c.external_id like $1 and e.idempotency_key = 'tz'
                """, [fx.prefix + "%"]).single().int("us")
            XCTAssertEqual(frac, 999_999)
            let noOffset = try await T.post(client, T.event(fx, key: "no", occurredAt: "2026-11-01T00:00:00"), token: fx.token)
            XCTAssertEqual(noOffset.status, 422)
            XCTAssertEqual(noOffset.code, "invalid_timestamp")
            XCTAssertEqual(try T.count(fx), 3)
        }
    }

    func testNonASCIIOverlongAndNULStrings() async throws {
        try await T.withApp { client, fx in
            let key = "ключ-🔑-" + String(repeating: "é", count: 240)
            XCTAssertEqual(key.unicodeScalars.count, 247)
            let props = #"{"région":"Île-de-France","emoji":"🚀","nested":{"日本":[1,2.50,"x"]}}"#
            let r = try await T.post(client, T.event(fx, key: key, customer: 1, properties: props), token: fx.token)
            XCTAssertEqual(r.status, 201)
            let c = try PGConnection(conninfo: fx.conninfo)
            let row = try c.execute("""
                select e.idempotency_key, c.external_id, e.properties::text as p from meter.events e
                join meter.customers c on c.id = e.customer_id where c.external_id = $1
                """, [fx.customers[1]]).single()
            XCTAssertEqual(try row.string("idempotency_key"), key)
            XCTAssertEqual(try row.string("external_id"), fx.customers[1])
            XCTAssertEqual(try row.string("p"), #"{"emoji": "🚀", "nested": {"日本": [1, 2.50, "x"]}, "région": "Île-de-France"}"#)

            let k255 = String(repeating: "k", count: 255)
            let ok = try await T.post(client, T.event(fx, key: k255), token: fx.token)
            XCTAssertEqual(ok.status, 201)
            let long = try await T.post(client, T.event(fx, key: k255 + "k"), token: fx.token)
            XCTAssertEqual(long.status, 422)
            XCTAssertEqual(long.code, "too_long")
            XCTAssertEqual(long.field, "idempotency_key")
            let longCustomer = try await T.post(client, #"{"customer":"\#(String(repeating: "c", count: 300))","meter":"x","idempotency_key":"k","occurred_at":"\#(T.now())"}"#, token: fx.token)
            XCTAssertEqual(longCustomer.code, "too_long")
            XCTAssertEqual(longCustomer.field, "customer")
            let nul = try await T.post(client, T.event(fx, key: "NULKEY").replacingOccurrences(of: "NULKEY", with: "nul\\u0000key"), token: fx.token)
            XCTAssertEqual(nul.status, 422)
            XCTAssertEqual(nul.code, "invalid_value")
            let nulProps = try await T.post(client, T.event(fx, key: "np", properties: #"{"a":"b\u0000"}"#), token: fx.token)
            XCTAssertEqual(nulProps.status, 422)
            XCTAssertEqual(nulProps.field, "properties")
            let hugeProps = try await T.post(client, T.event(fx, key: "hp", properties: #"{"blob":"\#(String(repeating: "x", count: 9000))"}"#), token: fx.token)
            XCTAssertEqual(hugeProps.status, 422)
            XCTAssertEqual(hugeProps.code, "too_large")
            let arrayProps = try await T.post(client, T.event(fx, key: "ap", properties: "[1]"), token: fx.token)
            XCTAssertEqual(arrayProps.code, "invalid_type")
            XCTAssertEqual(try T.count(fx), 2)
        }
    }

    func testExactDecimalsNeverTouchFloatingPoint() async throws {
        try await T.withApp { client, fx in
            let batch = "[" + [T.event(fx, key: "d1", meter: "gb", value: "0.1"),
                               T.event(fx, key: "d2", meter: "gb", value: "0.2"),
                               T.event(fx, key: "d3", meter: "gb", value: "12345678901234567890.123456789012"),
                               T.event(fx, key: "d4", meter: "gb", value: "1e3"),
                               T.event(fx, key: "d5", meter: "gb", value: "\"0.000000000001\"")].joined(separator: ",") + "]"
            let r = try await T.post(client, batch, token: fx.token)
            XCTAssertEqual(r.status, 200)
            let c = try PGConnection(conninfo: fx.conninfo)
            let sum = try c.execute("""
                select sum(e.value)::text as s from meter.events e join meter.customers c on c.id = e.customer_id
                where c.external_id like $1
                """, [fx.prefix + "%"]).single().string("s")
            XCTAssertEqual(sum, "12345678901234568890.423456789013")
            let tooPrecise = try await T.post(client, T.event(fx, key: "d6", value: "0.0000000000001"), token: fx.token)
            XCTAssertEqual(tooPrecise.code, "invalid_decimal")
            let tooBig = try await T.post(client, T.event(fx, key: "d7", value: "1e30"), token: fx.token)
            XCTAssertEqual(tooBig.code, "invalid_decimal")
        }
    }

    func testCloudEventsStructuredAndBatch() async throws {
        try await T.withApp { client, fx in
            let time = T.now()
            func ce(_ id: String, _ extra: String = "") -> String {
                #"{"specversion":"1.0","id":"\#(id)","source":"//svc/test","type":"\#(fx.prefix).gb","subject":\#(JSONWriter.quote(fx.customers[2])),"time":"\#(time)","datacontenttype":"application/json","data":{"value":"2.5","region":"eu","pod":"p-1"}\#(extra)}"#
            }
            let single = try await T.post(client, ce("ce-1"), token: fx.token, contentType: "application/cloudevents+json")
            XCTAssertEqual(single.status, 201)
            let batch = try await T.post(client, "[\(ce("ce-2")),\(ce("ce-1"))]", token: fx.token,
                                         contentType: "application/cloudevents-batch+json; charset=utf-8")
            XCTAssertEqual(batch.status, 200)
            XCTAssertEqual(batch.results().map { $0["status"]?.stringValue }, ["accepted", "duplicate"])
            let c = try PGConnection(conninfo: fx.conninfo)
            let row = try c.execute("""
                select e.value::text as v, e.properties::text as p, m.code from meter.events e
                join meter.customers c on c.id = e.customer_id join meter.meters m on m.id = e.meter_id
                where c.external_id = $1 and e.idempotency_key = 'ce-1'
                """, [fx.customers[2]]).single()
            XCTAssertEqual(try row.string("v"), "2.5")
            XCTAssertEqual(try row.string("code"), "\(fx.prefix).gb")
            XCTAssertEqual(try row.string("p"), #"{"pod": "p-1", "region": "eu"}"#)
            // Invalid CloudEvents: wrong specversion, no time, data not an object.
            let bad = try await T.post(client, "[" + [
                ce("ce-3").replacingOccurrences(of: #""specversion":"1.0""#, with: #""specversion":"0.3""#),
                ce("ce-4").replacingOccurrences(of: #""time":"#, with: #""notime":"#),
                #"{"specversion":"1.0","id":"ce-5","source":"s","type":"\#(fx.prefix).gb","subject":\#(JSONWriter.quote(fx.customers[2])),"time":"\#(T.now())","data":[1]}"#,
                #"{"specversion":"1.0","id":"ce-6","source":"s","type":"\#(fx.prefix).gb","subject":\#(JSONWriter.quote(fx.customers[2])),"time":"\#(T.now())","data_base64":"AAEC"}"#,
            ].joined(separator: ",") + "]", token: fx.token, contentType: "application/cloudevents-batch+json")
            XCTAssertEqual(bad.status, 207)
            XCTAssertEqual(bad.results().map { $0["error"]?["field"]?.stringValue }, ["specversion", "time", "data", "data_base64"])
            let notArray = try await T.post(client, ce("x"), token: fx.token, contentType: "application/cloudevents-batch+json")
            XCTAssertEqual(notArray.status, 400)
            XCTAssertEqual(try T.count(fx), 2)
        }
    }

    /// Regressions found in review: a repeated key whose second copy is out of the time window is
    /// a conflict, not a second "accepted"; a property number Postgres cannot store is refused for
    /// that event alone instead of failing the request.
    func testRepeatedKeyOutOfWindowAndUnstorablePropertyNumbers() async throws {
        try await T.withApp { client, fx in
            let batch = "[" + [T.event(fx, key: "w"), T.event(fx, key: "w", occurredAt: T.now(offsetSeconds: -40 * 86_400)),
                               T.event(fx, key: "big", properties: #"{"x":1e200000}"#),
                               T.event(fx, key: "fine", properties: #"{"x":1e300,"y":[-0.5]}"#)].joined(separator: ",") + "]"
            let r = try await T.post(client, batch, token: fx.token)
            XCTAssertEqual(r.status, 207)
            XCTAssertEqual(r.results().map { $0["status"]?.stringValue }, ["accepted", "conflict", "rejected", "accepted"])
            XCTAssertEqual(r.results()[2]["error"]?["code"]?.stringValue, "invalid_value")
            XCTAssertEqual(r.results()[2]["error"]?["field"]?.stringValue, "properties")
            XCTAssertEqual(r.summary("accepted"), 2)
            XCTAssertEqual(try T.count(fx), 2)
            // CloudEvents errors name CloudEvents attributes, also when the database decided.
            let ce = #"{"specversion":"1.0","id":"u1","source":"s","type":"\#(fx.prefix).gb","subject":"nobody-\#(fx.prefix)","time":"\#(T.now())"}"#
            let unknown = try await T.post(client, ce, token: fx.token, contentType: "application/cloudevents+json")
            XCTAssertEqual(unknown.status, 422)
            XCTAssertEqual(unknown.json["error"]?["code"]?.stringValue, "unknown_customer")
            XCTAssertEqual(unknown.json["error"]?["field"]?.stringValue, "subject")
        }
    }
}
