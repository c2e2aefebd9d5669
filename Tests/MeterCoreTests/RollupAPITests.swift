import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import XCTest
import PGClient
import MeterWire
import MeterCore
import MeterAPI
import MeterDevKit

/// POST /v1/events/cancel and GET /v1/usage end to end, and the serve rollup loop woken after ingest.
final class RollupAPITests: XCTestCase {
    typealias T = APIHarness

    static func cancel(_ client: any TestClientProtocol, _ body: String, token: String?,
                       contentType: String = "application/json") async throws -> T.Reply {
        var headers: HTTPFields = [.contentType: contentType]
        if let token { headers[.authorization] = "Bearer \(token)" }
        let r = try await client.execute(uri: "/v1/events/cancel", method: .post, headers: headers, body: ByteBuffer(string: body))
        let text = String(buffer: r.body)
        return T.Reply(status: Int(r.status.code), json: (try? JSONParser.parse(text)) ?? .string(text), headers: r.headers)
    }

    static func usage(_ client: any TestClientProtocol, _ query: String, token: String?) async throws -> T.Reply {
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        let r = try await client.execute(uri: "/v1/usage?" + query, method: .get, headers: headers)
        let text = String(buffer: r.body)
        return T.Reply(status: Int(r.status.code), json: (try? JSONParser.parse(text)) ?? .string(text), headers: r.headers)
    }

    static func first(_ r: T.Reply) -> JSONValue? { r.json["data"]?.arrayValue?.first }

    static func drain(_ fx: T.Fixture) throws {
        let c = try PGConnection(conninfo: fx.conninfo)
        defer { c.close() }
        try Rollup.drain(c)
    }

    static func lastHour(_ offset: Int = 1) -> String {
        let h = (Date().timeIntervalSince1970 / 3600).rounded(.down) * 3600 - Double(offset) * 3600
        // as the API prints it: whole seconds, Z
        return RFC3339Timestamp(epochMicroseconds: Int64(h) * 1_000_000).iso8601.replacingOccurrences(of: ".000000Z", with: "Z")
    }

    static func cancelBody(_ fx: T.Fixture, _ key: String, customer: Int = 0) -> String {
        #"{"customer":\#(JSONWriter.quote(fx.customers[customer])),"idempotency_key":\#(JSONWriter.quote(key))}"#
    }

    // MARK: cancel

    func testCancelSingleIsIdempotentAndTheRollupSubtractsOnce() async throws {
        try await T.withApp { client, fx in
            let at = Self.lastHour(2)
            let from = Self.lastHour(2), to = Self.lastHour(1)
            for (k, v) in [("a", "3"), ("b", "4.5")] {
                let r = try await T.post(client, T.event(fx, key: k, meter: "gb", value: "\"\(v)\"", occurredAt: at), token: fx.token)
                XCTAssertEqual(r.status, 201)
            }
            try Self.drain(fx)
            let q = "customer=\(fx.customers[0])&meter=\(fx.prefix).gb&from=\(from)&to=\(to)&granularity=hour"
            var u = try await Self.usage(client, q, token: fx.token)
            XCTAssertEqual(u.status, 200)
            XCTAssertEqual(Self.first(u)?["quantity"]?.stringValue, "7.5")
            XCTAssertEqual(Self.first(u)?["events"]?.numberLexeme, "2")

            let first = try await Self.cancel(client, Self.cancelBody(fx, "b"), token: fx.token)
            XCTAssertEqual(first.status, 200)
            XCTAssertEqual(first.json["status"]?.stringValue, "cancelled")
            let again = try await Self.cancel(client, Self.cancelBody(fx, "b"), token: fx.token)
            XCTAssertEqual(again.status, 200)
            XCTAssertEqual(again.json["status"]?.stringValue, "already_cancelled")
            XCTAssertEqual(again.json["id"], first.json["id"])
            try Self.drain(fx)
            try Self.drain(fx)
            u = try await Self.usage(client, q, token: fx.token)
            XCTAssertEqual(Self.first(u)?["quantity"]?.stringValue, "3")
            XCTAssertEqual(Self.first(u)?["events"]?.numberLexeme, "1")

            // The key stays taken: the same event again is a duplicate (and stays cancelled), a
            // different one under the key a conflict.
            let retry = try await T.post(client, T.event(fx, key: "b", meter: "gb", value: "\"4.5\"", occurredAt: at), token: fx.token)
            XCTAssertEqual(retry.status, 200)
            XCTAssertEqual(retry.json["status"]?.stringValue, "duplicate")
            let reuse = try await T.post(client, T.event(fx, key: "b", meter: "gb", value: "\"1\"", occurredAt: at), token: fx.token)
            XCTAssertEqual(reuse.status, 409)
            try Self.drain(fx)
            u = try await Self.usage(client, q, token: fx.token)
            XCTAssertEqual(Self.first(u)?["quantity"]?.stringValue, "3")
        }
    }

    func testCancelBatchGivesEachElementItsVerdict() async throws {
        try await T.withApp { client, fx in
            _ = try await T.post(client, T.event(fx, key: "x1"), token: fx.token)
            _ = try await T.post(client, T.event(fx, key: "x2"), token: fx.token)
            let body = "[" + [Self.cancelBody(fx, "x1"), Self.cancelBody(fx, "x1"), Self.cancelBody(fx, "nope"),
                              #"{"customer":"no-such-customer","idempotency_key":"x2"}"#,
                              #"{"customer":\#(JSONWriter.quote(fx.customers[0]))}"#,
                              #"{"customer":\#(JSONWriter.quote(fx.customers[0])),"idempotency_key":"x2","colour":"red"}"#,
                              #"{"customer":\#(JSONWriter.quote(fx.customers[0])),"idempotency_key":"x2","reason":"refund #42"}"#,
                              "17"].joined(separator: ",") + "]"
            let r = try await Self.cancel(client, body, token: fx.token)
            XCTAssertEqual(r.status, 207)
            let results = r.results()
            XCTAssertEqual(results.map { $0["status"]?.stringValue ?? "" },
                           ["cancelled", "already_cancelled", "rejected", "rejected", "rejected", "rejected", "cancelled", "rejected"])
            XCTAssertEqual(results.map { $0["error"]?["code"]?.stringValue ?? "" },
                           ["", "", "event_not_found", "unknown_customer", "missing_field", "unknown_field", "", "invalid_type"])
            XCTAssertEqual(results[4]["error"]?["field"]?.stringValue, "idempotency_key")
            XCTAssertEqual(results[5]["error"]?["field"]?.stringValue, "colour")
            XCTAssertEqual(r.summary("cancelled"), 2)
            XCTAssertEqual(r.summary("rejected"), 5)
            let c = try PGConnection(conninfo: fx.conninfo)
            XCTAssertEqual(try c.execute("""
                select reason from meter.event_cancellations x join meter.events e on e.id = x.event_id
                join meter.customers c on c.id = e.customer_id where c.external_id = $1 and e.idempotency_key = 'x2'
                """, [fx.customers[0]]).single().optionalString("reason"), "refund #42")

            let ok = try await Self.cancel(client, #"{"cancellations":[\#(Self.cancelBody(fx, "x1"))]}"#, token: fx.token)
            XCTAssertEqual(ok.status, 200, "a batch of only already-cancelled elements is fine")
        }
    }

    func testCancelRequestLevelErrors() async throws {
        try await T.withApp { client, fx in
            let one = Self.cancelBody(fx, "k")
            var r = try await Self.cancel(client, one, token: nil)
            XCTAssertEqual(r.status, 401)
            r = try await Self.cancel(client, one, token: "mk_wrong")
            XCTAssertEqual(r.status, 401)
            r = try await Self.cancel(client, one, token: fx.token, contentType: "text/plain")
            XCTAssertEqual(r.status, 415)
            XCTAssertEqual(r.code, "unsupported_media_type")
            r = try await Self.cancel(client, one, token: "mk_wrong", contentType: "text/plain")
            XCTAssertEqual(r.status, 401, "a bad key wins over a bad body")
            r = try await Self.cancel(client, "{nope", token: fx.token)
            XCTAssertEqual(r.status, 400)
            XCTAssertEqual(r.code, "malformed_json")
            r = try await Self.cancel(client, "[]", token: fx.token)
            XCTAssertEqual(r.code, "empty_batch")
            r = try await Self.cancel(client, #"{"cancellations":5}"#, token: fx.token)
            XCTAssertEqual(r.status, 400)
            XCTAssertEqual(r.field, "cancellations")
            r = try await Self.cancel(client, Self.cancelBody(fx, "never-sent"), token: fx.token)
            XCTAssertEqual(r.status, 404)
            XCTAssertEqual(r.code, "event_not_found")
            r = try await Self.cancel(client, #"{"customer":"","idempotency_key":"k"}"#, token: fx.token)
            XCTAssertEqual(r.status, 422)
            XCTAssertEqual(r.field, "customer")
        }
    }

    // MARK: usage

    func testUsageBucketsAndAggregations() async throws {
        try await T.withApp { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            try c.execute("select meter.meter_upsert($1, 'max')", ["\(fx.prefix).peak"])
            try c.execute("select meter.meter_upsert($1, 'unique_count', 'user')", ["\(fx.prefix).users"])
            let h2 = Self.lastHour(2), h3 = Self.lastHour(3)
            var events: [String] = []
            for (i, h) in [h2, h2, h3].enumerated() {
                events.append(T.event(fx, key: "c\(i)", occurredAt: h))
                events.append(T.event(fx, key: "g\(i)", meter: "gb", value: "\"\(i).25\"", occurredAt: h))
                events.append(T.event(fx, key: "p\(i)", meter: "peak", value: "\(10 - i)", occurredAt: h))
                events.append(T.event(fx, key: "u\(i)", meter: "users", occurredAt: h, properties: #"{"user":"alice"}"#))
            }
            events.append(T.event(fx, key: "u9", meter: "users", occurredAt: h3, properties: #"{"user":"bob"}"#))
            let posted = try await T.post(client, "[" + events.joined(separator: ",") + "]", token: fx.token)
            XCTAssertEqual(posted.summary("accepted"), 13)
            try Self.drain(fx)

            let base = "customer=\(fx.customers[0])&from=\(Self.lastHour(3))&to=\(Self.lastHour(1))"
            let hourly = try await Self.usage(client, base + "&granularity=hour", token: fx.token)
            XCTAssertEqual(hourly.status, 200)
            let rows = hourly.json["data"]?.arrayValue ?? []
            func cell(_ meter: String, _ from: String) -> String? {
                rows.first { $0["meter"]?.stringValue == "\(fx.prefix).\(meter)" && $0["from"]?.stringValue == from }?["quantity"]?.stringValue
            }
            XCTAssertEqual(cell("calls", h2), "2")
            XCTAssertEqual(cell("calls", h3), "1")
            XCTAssertEqual(cell("gb", h2), "1.5")
            XCTAssertEqual(cell("peak", h2), "10")
            XCTAssertEqual(cell("users", h3), "2")
            XCTAssertEqual(cell("users", h2), "1")
            XCTAssertEqual(rows.count, 8)

            let whole = try await Self.usage(client, base + "&granularity=day&meter=\(fx.prefix).users", token: fx.token)
            let wrows = whole.json["data"]?.arrayValue ?? []
            let distinct = wrows.compactMap { $0["quantity"]?.stringValue }
            // alice and bob over both hours: 2 distinct, not 1 + 2 (one row, or two when the two
            // hours fall on both sides of midnight UTC)
            if wrows.count == 1 { XCTAssertEqual(distinct, ["2"]) } else { XCTAssertEqual(Set(distinct), ["1", "2"]) }
            XCTAssertEqual(wrows.first?["aggregation"]?.stringValue, "unique_count")
            XCTAssertEqual(wrows.first?["meter_version"]?.numberLexeme, "1")
        }
    }

    /// A meter with dimensions through HTTP: events ingested with properties (one without the
    /// dimension, a duplicate, a cancellation), grouped by model and filtered on it; the figures
    /// are recomputed here from what was sent.
    func testUsageGroupedAndFilteredByDimension() async throws {
        try await T.withApp { client, fx in
            let c = try PGConnection(conninfo: fx.conninfo)
            try c.execute("select meter.meter_upsert($1, 'sum', null, null, null, null, array['model', 'region'])", ["\(fx.prefix).tokens"])
            let h = Self.lastHour(2)
            let sent: [(key: String, value: Int, props: String)] = [
                ("k1", 100, #"{"model":"gpt-4o","region":"eu"}"#), ("k2", 40, #"{"model":"gpt-4o","region":"us"}"#),
                ("k3", 7, #"{"model":"mini","region":"eu"}"#), ("k4", 3, #"{"region":"eu"}"#), ("k5", 20, #"{"model":"mini","region":"us"}"#),
            ]
            let events = sent.map { T.event(fx, key: $0.key, meter: "tokens", value: "\($0.value)", occurredAt: h, properties: $0.props) }
            let posted = try await T.post(client, "[" + (events + [events[0]]).joined(separator: ",") + "]", token: fx.token)
            XCTAssertEqual(posted.summary("accepted"), 5)
            XCTAssertEqual(posted.summary("duplicate"), 1)
            let cancelled = try await Self.cancel(client, Self.cancelBody(fx, "k5"), token: fx.token)
            XCTAssertEqual(cancelled.status, 200)
            try Self.drain(fx)

            let base = "customer=\(fx.customers[0])&meter=\(fx.prefix).tokens&from=\(Self.lastHour(2))&to=\(Self.lastHour(1))&granularity=hour"
            let grouped = try await Self.usage(client, base + "&group_by=model", token: fx.token)
            XCTAssertEqual(grouped.status, 200, "\(grouped.json)")
            var byModel: [String: String] = [:]
            for row in grouped.json["data"]?.arrayValue ?? [] {
                let model = row["dimensions"]?["model"]?.stringValue ?? "(none)"
                byModel[model] = row["quantity"]?.stringValue
            }
            // Expected from what was sent: k5 cancelled, the duplicate of k1 counted once, k4 has no model.
            var expected: [String: Int] = [:]
            for e in sent where e.key != "k5" {
                let model = (try JSONParser.parse(e.props))["model"]?.stringValue ?? "(none)"
                expected[model, default: 0] += e.value
            }
            XCTAssertEqual(byModel, expected.mapValues { String($0) })

            // (the second key percent-encoded, as HTTP clients send brackets)
            let filtered = try await Self.usage(client, base + "&group_by=region&filter[model]=gpt-4o&filter%5Bmodel%5D=mini", token: fx.token)
            var byRegion: [String: String] = [:]
            for row in filtered.json["data"]?.arrayValue ?? [] {
                byRegion[row["dimensions"]?["region"]?.stringValue ?? "(none)"] = row["quantity"]?.stringValue
            }
            XCTAssertEqual(byRegion, ["eu": "107", "us": "40"])
            let plain = try await Self.usage(client, base, token: fx.token)
            XCTAssertEqual(Self.first(plain)?["quantity"]?.stringValue, "150")
            XCTAssertNil(Self.first(plain)?["dimensions"], "no dimensions member without group_by")

            for (query, field, code) in [("&group_by=colour", "group_by", "unknown_dimension"),
                                         ("&filter[colour]=red", "filter", "unknown_dimension"),
                                         ("&group_by=model,model", "group_by", "invalid_value"),
                                         ("&filter[bad%20name]=x", "filter[bad name]", "invalid_value")] {
                let r = try await Self.usage(client, base + query, token: fx.token)
                XCTAssertEqual(r.status, 422, query)
                XCTAssertEqual(r.field, field, query)
                XCTAssertEqual(r.code, code, query)
            }
            let noMeter = try await Self.usage(client, "customer=\(fx.customers[0])&group_by=model", token: fx.token)
            XCTAssertEqual(noMeter.status, 422)
            XCTAssertEqual(noMeter.code, "missing_field")
        }
    }

    func testUsageRefusesBadParametersWithTheFieldNamed() async throws {
        try await T.withApp { client, fx in
            let cu = "customer=\(fx.customers[0])"
            let cases: [(String, Int, String, String)] = [
                ("", 422, "missing_field", "customer"),
                (cu + "&granularity=week", 422, "invalid_value", "granularity"),
                (cu + "&from=2026-11-01T00:30:00Z", 422, "not_hour_aligned", "from"),
                (cu + "&to=yesterday", 422, "invalid_timestamp", "to"),
                (cu + "&from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", 422, "invalid_range", "to"),
                (cu + "&from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", 422, "range_too_large", "to"),
                (cu + "&from=2020-01-01T00:00:00Z", 422, "range_too_large", "from"),
                (cu + "&to=2020-01-01T00:00:00Z", 422, "invalid_range", "to"),
                ("customer=acme-meter-co", 404, "customer_not_found", "customer"),
                (cu + "&colour=red", 422, "unknown_parameter", "colour"),
                (cu + "&meter=a&meter=b", 422, "repeated_parameter", "meter"),
                ("customer=nobody-at-all", 404, "customer_not_found", "customer"),
                (cu + "&meter=no.such.meter", 404, "meter_not_found", "meter"),
            ]
            for (query, status, code, field) in cases {
                let r = try await Self.usage(client, query, token: fx.token)
                XCTAssertEqual(r.status, status, query)
                XCTAssertEqual(r.code, code, query)
                XCTAssertEqual(r.field, field, query)
            }
            let r = try await Self.usage(client, cu, token: nil)
            XCTAssertEqual(r.status, 401)
            let ok = try await Self.usage(client, cu, token: fx.token)
            XCTAssertEqual(ok.status, 200)
            XCTAssertEqual(ok.json["granularity"]?.stringValue, "day", "the defaults: this month by day")
        }
    }

    // MARK: the serve loop

    /// With a 60 s interval, an ingested event reaches the rollups in well under that: ingest
    /// itself sends no NOTIFY (it would serialize commits), the service's EventsNotifier does,
    /// from its own connection, and wakes a rollup loop of another process. Graceful shutdown
    /// ends the loop.
    func testServeLoopIsWokenByTheNotifierOfAnotherProcess() async throws {
        let fx = try T.makeFixture()
        var config = RollupWorker.Configuration()
        config.interval = .seconds(60)
        let metrics = MeterMetrics()
        let worker = RollupWorker(conninfo: fx.conninfo, configuration: config, metrics: metrics, logger: TestDatabase.logger)
        let notifier = EventsNotifier(conninfo: fx.conninfo, local: nil, logger: TestDatabase.logger)
        let task = Task { try await worker.run() }
        let notifying = Task { try await notifier.run() }
        try await Task.sleep(for: .milliseconds(500))   // first run and LISTEN
        let c = try PGConnection(conninfo: fx.conninfo)
        let at = Self.lastHour(1)
        try c.execute("select meter.event_ingest($1::jsonb)", [
            #"[{"customer":\#(JSONWriter.quote(fx.customers[1])),"meter":"\#(fx.prefix).calls","idempotency_key":"wake","occurred_at":"\#(at)"}]"#,
        ])
        // Ingest alone wakes nobody now: the loop, on its 60 s interval, leaves it pending.
        try await Task.sleep(for: .milliseconds(700))
        XCTAssertEqual(try rolledUp(c, fx.customers[1]), 0, "event_ingest sends no NOTIFY")
        notifier.committed()
        let after = try await secondsUntilRolledUp(c, fx.customers[1])
        task.cancel()
        notifying.cancel()
        _ = try? await task.value
        _ = try? await notifying.value
        XCTAssertLessThan(try XCTUnwrap(after, "the event was not rolled up within 20 s"), 5, "woken by the notifier's NOTIFY, not by the 60 s interval")
        let text = String(buffer: ByteBuffer(bytes: metrics.registry.emitToBuffer()))
        XCTAssertTrue(text.contains("meter_rollup_runs_total{result=\"ran\"}"), text)
    }

    /// The service wakes its own rollup loop after a commit it made, with no NOTIFY at all.
    func testServiceWakesItsOwnRollupLoopAfterIngest() async throws {
        let fx = try T.makeFixture()
        var config = ServeConfiguration()
        var rollup = RollupWorker.Configuration()
        rollup.interval = .seconds(60)
        config.rollup = rollup
        let server = try await RunningServer.start(config, conninfo: fx.conninfo, poolSize: 2)
        let port = server.port
        try await Task.sleep(for: .milliseconds(500))   // the loop's first run
        let c = try PGConnection(conninfo: fx.conninfo)
        let body = #"{"customer":\#(JSONWriter.quote(fx.customers[2])),"meter":"\#(fx.prefix).calls","idempotency_key":"self-wake","occurred_at":"\#(Self.lastHour(1))"}"#
        let token = fx.token
        let r = try await onDedicatedThread {
            try LoadClient(port: port).request("POST", "/v1/events",
                                               headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")], body: body)
        }
        XCTAssertEqual(r.status, 201, r.body)
        let after = try await secondsUntilRolledUp(c, fx.customers[2])
        try await server.stop()
        XCTAssertLessThan(try XCTUnwrap(after, "the event was not rolled up within 20 s"), 5, "woken in process, not by the 60 s interval")
    }

    private func rolledUp(_ c: PGConnection, _ customer: String) throws -> Int64 {
        try c.execute("""
            select coalesce(sum(r.event_count), 0) as n from meter.rollup_hourly r
            join meter.customers cu on cu.id = r.customer_id where cu.external_id = $1
            """, [customer]).single().int("n")
    }

    /// Seconds until the customer's one event is in the rollups (nil after 20 s).
    private func secondsUntilRolledUp(_ c: PGConnection, _ customer: String) async throws -> Double? {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .seconds(20) {
            if try rolledUp(c, customer) == 1 { return (ContinuousClock.now - start).seconds }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }
}
