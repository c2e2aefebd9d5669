import Foundation
import XCTest
import PGClient
import MeterWire
import MeterCore
import MeterAPI
import BillingMock
import MeterDevKit

/// The sync through Billing Meters (issue 14): each changed hour is one meter event on an hourly
/// pre-aggregated meter, its total times 10^value_scale; the engine's hourly summaries (read
/// back through its API) then equal our rollups, whatever revisions, faults and repeats happened.
final class BillingMetersSyncTests: XCTestCase {
    func testEachHoursTotalIsAMeterEventAndALateRevisionOverwritesIt() async throws {
        let env = try await BillingEnv.start("mev_late", meterEventsScale: 2)
        defer { Task { await env.stop() } }
        let c = try PGConnection(conninfo: env.db.info)
        let h = env.hours.last!
        try env.db.ingest(c, key: "l1", hour: h, value: "10")
        try env.db.ingest(c, key: "l2", hour: h, value: "2.25")
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)
        let first = try await env.engineTotals()[env.epoch(h)]
        XCTAssertEqual(first.flatMap { Decimal(string: $0) }, Decimal(string: "12.25"))

        try env.db.ingest(c, key: "l3", hour: h, value: "0.5")  // late: its hour was synced
        try env.db.cancel(c, keys: ["l1"])
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)
        let second = try await env.engineTotals()[env.epoch(h)]
        XCTAssertEqual(second.flatMap { Decimal(string: $0) }, Decimal(string: "2.75"), "the newest revision's event is the hour's value")
        // What the engine holds: one event per revision sent, each identified by it, the value
        // scaled, the timestamp inside the hour carrying the revision.
        let sent = try c.execute("""
            select e.identifier, e.value::text as v, e.ts - $1::bigint as offset_s from billing_mock.meter_events e order by e.seq
            """, [env.epoch(h)]).rows.map { (try $0.string("identifier"), try $0.string("v"), try $0.int("offset_s")) }
        let revision = try c.execute("select revision from meter.sync_outbox").single().int("revision")
        XCTAssertEqual(sent.count, 2, "\(sent)")
        XCTAssertEqual(sent.last?.1, "275", "2.75 at value scale 2")
        XCTAssertEqual(sent.last?.2, min(revision, 3599), "the revision in the timestamp's seconds")
        XCTAssertTrue(sent.last?.0.hasSuffix("-r\(revision)") ?? false, "\(sent)")
        try await env.assertEngineEqualsRollups(c)
    }

    func testApplyThenDropOn30PercentOfCallsBillsNoHourTwice() async throws {
        let env = try await BillingEnv.start("mev_drop", meterEventsScale: 1)
        defer { Task { await env.stop() } }
        let c = try PGConnection(conninfo: env.db.info)
        try await env.applyThenDropRounds(c)
        try await env.assertEngineEqualsRollups(c)
        let doubled = try c.execute("""
            select count(*) - count(distinct identifier) as n from billing_mock.meter_events
            """).single().int("n")
        XCTAssertEqual(doubled, 0, "an identifier stored twice")
    }

    func testATotalWithMoreDecimalsThanTheScaleIsDeadWithTheReasonAndNothingIsSent() async throws {
        let env = try await BillingEnv.start("mev_scale", meterEventsScale: 0)
        defer { Task { await env.stop() } }
        env.sync.maxAttempts = 1  // a definitive refusal parks the hour at once
        let c = try PGConnection(conninfo: env.db.info)
        try env.db.ingest(c, key: "f1", hour: env.hours[0], value: "1.5")
        _ = try Rollup.drain(c)
        _ = try await BillingSync.drain(pool: env.pool, client: env.client, config: env.sync, logger: TestDatabase.logger)
        let r = try c.execute("select state, last_error from meter.sync_outbox").single()
        XCTAssertEqual(try r.string("state"), "dead")
        let lastError = try r.string("last_error")
        XCTAssertTrue(lastError.contains("meter_value_not_whole"), lastError)
        XCTAssertTrue(lastError.contains("--value-scale 1"), lastError)
        XCTAssertEqual(try c.execute("select count(*) as n from billing_mock.meter_events").single().int("n"), 0)
    }

    /// A max meter: its engine meter takes the last value of hourly running maxima, so the
    /// engine's value for the month is the month's maximum, after a late event raised an early
    /// hour and after that maximum was cancelled (both re-send the later hours).
    func testAMaxMeterBillsTheMonthsMaximumThroughRunningMaxima() async throws {
        let env = try await BillingEnv.start("mev_max", meterEventsScale: 0)
        defer { Task { await env.stop() } }
        guard env.hours.count >= 3 else { throw XCTSkip("the first hours of a month: three hours of it are needed") }
        let c = try PGConnection(conninfo: env.db.info)
        try c.execute("select meter.meter_upsert('peak', 'max')")
        let engineMeter = try await BillingMeters.ensure(client: env.client, eventName: "peak_mev_max", displayName: "Peak",
                                                         formula: BillingMeters.formula(forAggregation: "max"))
        let price = try await env.client.post("/v1/prices", [
            ("currency", "usd"), ("product_data[name]", "Peak"), ("unit_amount_decimal", "100"),
            ("recurring[interval]", "month"), ("recurring[usage_type]", "metered"), ("recurring[meter]", engineMeter),
        ], idempotencyKey: UUID().uuidString)["id"]!.stringValue!
        try c.execute("select meter.billing_price_set('peak', $1, null, 'peak_mev_max', 0)", [price])
        let (early, middle, late) = (env.hours.max()!, env.hours.sorted()[env.hours.count / 2], env.hours.min()!)
        func put(_ key: String, _ hour: Int, _ value: String) throws {
            let at = RFC3339Timestamp(epochMicroseconds: (env.epoch(hour) + 600) * 1_000_000).iso8601
            let status = try c.execute("select status from meter.event_ingest($1::jsonb)", [
                #"[{"customer":"acme","meter":"peak","idempotency_key":"\#(key)","occurred_at":"\#(at)","value":"\#(value)"}]"#,
            ]).single().string("status")
            XCTAssertEqual(status, "accepted")
        }
        func engineMonth() async throws -> Decimal? { try await Self.engineMonth(env, c, meter: engineMeter, hour: late) }
        try put("m1", early, "4")
        try put("m2", late, "2")
        try put("m3", middle, "3")
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)
        let first = try await engineMonth()
        XCTAssertEqual(first, 4, "the month's maximum so far (early hour), carried by the last hour")

        try put("m4", early, "9")   // late: raises the early hour; the later hours must carry 9
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)
        let second = try await engineMonth()
        XCTAssertEqual(second, 9, "a late maximum in an early hour reaches the month's value")

        try env.db.cancel(c, keys: ["m4"])   // the maximum cancelled: back to 4
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)
        let third = try await engineMonth()
        XCTAssertEqual(third, 4, "cancelling the maximum lowers the month's value")
        let keys = try c.execute("""
            select count(*) - count(distinct identifier) as dup from billing_mock.meter_events
            """).single().int("dup")
        XCTAssertEqual(keys, 0)
    }

    /// A latest meter (a gauge) through a Billing Meter: each hour carries the running last value
    /// of its month, so the engine's "last" is our period's latest whatever arrives late or is
    /// cancelled; a tie at the same instant goes to the greater idempotency key.
    func testALatestMeterBillsThePeriodsLastValue() async throws {
        let env = try await BillingEnv.start("mev_latest", meterEventsScale: 0)
        defer { Task { await env.stop() } }
        guard env.hours.count >= 3 else { throw XCTSkip("the first hours of a month: three hours of it are needed") }
        let c = try PGConnection(conninfo: env.db.info)
        try c.execute("select meter.meter_upsert('seats', 'latest')")
        let engineMeter = try await BillingMeters.ensure(client: env.client, eventName: "seats_mev_latest", displayName: "Seats",
                                                         formula: BillingMeters.formula(forAggregation: "latest"))
        let price = try await env.client.post("/v1/prices", [
            ("currency", "usd"), ("product_data[name]", "Seats"), ("unit_amount_decimal", "100"),
            ("recurring[interval]", "month"), ("recurring[usage_type]", "metered"), ("recurring[meter]", engineMeter),
        ], idempotencyKey: UUID().uuidString)["id"]!.stringValue!
        try c.execute("select meter.billing_price_set('seats', $1, null, 'seats_mev_latest', 0)", [price])
        let (early, middle, late) = (env.hours.max()!, env.hours.sorted()[env.hours.count / 2], env.hours.min()!)
        func put(_ key: String, _ hour: Int, _ value: String, minute: Int64 = 10) throws {
            let at = RFC3339Timestamp(epochMicroseconds: (env.epoch(hour) + minute * 60) * 1_000_000).iso8601
            let status = try c.execute("select status from meter.event_ingest($1::jsonb)", [
                #"[{"customer":"acme","meter":"seats","idempotency_key":"\#(key)","occurred_at":"\#(at)","value":"\#(value)"}]"#,
            ]).single().string("status")
            XCTAssertEqual(status, "accepted")
        }
        func engineMonth() async throws -> Decimal? { try await Self.engineMonth(env, c, meter: engineMeter, hour: late) }
        func sync() async throws {
            _ = try Rollup.drain(c)
            try await env.drainUntilSynced(c)
        }
        try put("a", early, "10")
        try put("b", middle, "12")
        try put("c", late, "7")
        try await sync()
        var month = try await engineMonth()
        XCTAssertEqual(month, 7, "the last hour's last value")
        try put("e", late, "15", minute: 40)   // later in the last hour: 15
        try put("d", late, "20", minute: 40)   // same instant, smaller key: e stays
        try await sync()
        month = try await engineMonth()
        XCTAssertEqual(month, 15, "a tie goes to the greater key (e over d)")
        try env.db.cancel(c, keys: ["c", "d", "e"])   // the last hour empties: back to the middle hour's 12
        try await sync()
        month = try await engineMonth()
        XCTAssertEqual(month, 12, "with the last hour's events cancelled, it carries the month's last value before it")
        let ours = try c.execute("""
            select quantity::text as q from meter._period_usage(
                (select id from meter.customers where external_id = 'acme'), (select id from meter.meters where code = 'seats'),
                date_trunc('month', to_timestamp($1::bigint), 'UTC'), date_trunc('month', to_timestamp($1::bigint), 'UTC') + interval '1 month')
            """, [env.epoch(late)]).single().string("q")
        XCTAssertEqual(Decimal(string: ours), month, "the engine's month equals our period's latest")
    }

    /// Batches go through the v2 stream (one call per 100 hours), and with it turned off one
    /// POST /v1/billing/meter_events per hour: the engine's hours equal the rollups either way.
    func testTheStreamCarriesBatchesAndTheV1PathStillWorks() async throws {
        let env = try await BillingEnv.start("mev_stream", meterEventsScale: 2)
        defer { Task { await env.stop() } }
        let c = try PGConnection(conninfo: env.db.info)
        for (i, h) in env.hours.enumerated() { try env.db.ingest(c, key: "s\(i)", hour: h, value: "\(i + 1).25") }
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)
        try await env.assertEngineEqualsRollups(c)
        let via = try c.execute("select via, count(*) as n from billing_mock.meter_events group by via").rows
            .map { (try $0.string("via"), try $0.int("n")) }
        XCTAssertEqual(via.map(\.0), ["v2_stream"], "\(via)")

        env.sync.meterEventStream = false
        try env.db.ingest(c, key: "late", hour: env.hours[0], value: "0.5")
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)
        try await env.assertEngineEqualsRollups(c)
        XCTAssertEqual(try c.execute("select count(*) as n from billing_mock.meter_events where via = 'v1'").single().int("n"), 1)
    }

    /// The stream answers before it judges: an event the engine refuses afterwards (its meter
    /// was deactivated) comes back as a signed error report to serve's webhook endpoint, which
    /// fetches it and parks the hour dead with the engine's reason, never leaving it "synced".
    func testARefusalReportedAfterTheStreamAnsweredParksTheHourDead() async throws {
        let env = try await BillingEnv.start("mev_refused", meterEventsScale: 2)
        defer { Task { await env.stop() } }
        let c = try PGConnection(conninfo: env.db.info)
        try env.db.ingest(c, key: "r0", hour: env.hours[0], value: "1")
        var serve = ServeConfiguration()
        serve.port = 0
        serve.sync = env.sync
        serve.rollup?.interval = .milliseconds(100)
        let server = try await MeterServer.start(config: serve, conninfo: env.db.info, poolSize: 4, logger: TestDatabase.logger)
        defer { Task { await server.stop() } }
        let endpoint = try await env.client.registerWebhookEndpoint(url: "http://127.0.0.1:\(server.port)/webhooks/billing",
                                                                   idempotencyKey: UUID().uuidString)
        try c.execute("insert into meter.webhook_secrets (secret) values ($1)", [endpoint.secret])
        try await env.waitSynced(c, timeout: 30)

        _ = try await env.client.post("/v1/billing/meters/\(env.engineMeter!)/deactivate", [], idempotencyKey: UUID().uuidString)
        let h = env.hours.last!
        try env.db.ingest(c, key: "r1", hour: h, value: "2")
        try RollupDB.waitUntil("the refused hour is parked dead with the engine's reason", timeout: 30) {
            let r = try c.execute("select state, coalesce(last_error, '') as e from meter.sync_outbox where hour = $1::timestamptz",
                                  [env.db.hourStart(h)]).rows.first
            return try r?.string("state") == "dead" && (r?.string("e").contains("archived_meter") ?? false)
        }
        let report = try c.execute("""
            select outcome from meter.webhook_events where type = 'v1.billing.meter.error_report_triggered'
            """).single().string("outcome")
        XCTAssertTrue(report.hasPrefix("applied: 1 hour(s) parked dead"), report)
        XCTAssertEqual(try c.execute("select count(*) as n from meter.sync_outbox where state = 'synced'").single().int("n"),
                       Int64(env.hours[0] == h ? 0 : 1), "only the hour sent before the deactivation is synced")
    }

    /// The reconciliation's "synced to engine" is what the engine holds (its summaries), not what
    /// the outbox recorded as acknowledged: after an event is cancelled at the engine behind our
    /// back, the fetched figure drops while the outbox still says the hour is synced. Both APIs.
    func testEngineUsageIsReadFromTheEnginesSummariesNotTheOutbox() async throws {
        for scale in [2, nil] as [Int?] {
            let env = try await BillingEnv.start(scale == nil ? "usage_legacy" : "usage_meters", meterEventsScale: scale)
            let c = try PGConnection(conninfo: env.db.info)
            for (i, h) in env.hours.enumerated() { try env.db.ingest(c, key: "u\(i)", hour: h, value: "\(i + 1).25") }
            _ = try Rollup.drain(c)
            try await env.drainUntilSynced(c)
            let period = try c.execute("select to_char(now() at time zone 'UTC', 'YYYY-MM') as p").single().string("p")
            let n = try await EngineUsage.fetch(c, client: env.client, period: period) { _ in }
            XCTAssertEqual(n, 1, "one billed customer/meter pair")
            func figures() throws -> (engine: Decimal?, acknowledged: Decimal?, api: String) {
                let r = try c.execute("""
                    select u.quantity::text as q, u.engine_api,
                           (select sum(o.synced_quantity) from meter.sync_outbox o where o.state = 'synced')::text as a
                    from meter.billing_usage u
                    """).single()
                return (Decimal(string: try r.string("q")), Decimal(string: try r.string("a")), try r.string("engine_api"))
            }
            let rolled = try c.execute("select sum(quantity)::text as q from meter.rollup_hourly").single().string("q")
            var f = try figures()
            XCTAssertEqual(f.api, scale == nil ? "usage_records" : "meter_events")
            XCTAssertEqual(f.engine, Decimal(string: rolled), "the engine's figure, back in our unit, equals the rollups")
            XCTAssertEqual(f.acknowledged, f.engine)
            if env.engineMeter != nil {
                // An hour's event cancelled at the engine (an adjustment nobody told meter about).
                let h = env.hours.last!
                let row = try c.execute("""
                    select identifier from billing_mock.meter_events where ts >= $1::bigint and ts < $1::bigint + 3600
                    order by seq desc limit 1
                    """, [env.epoch(h)]).single()
                _ = try await env.client.post("/v1/billing/meter_event_adjustments", [
                    ("event_name", "gb_usage_meters"), ("type", "cancel"), ("cancel[identifier]", try row.string("identifier")),
                ], idempotencyKey: UUID().uuidString)
                try await EngineUsage.fetch(c, client: env.client, period: period) { _ in }
                f = try figures()
                let hourTotal = Decimal(env.hours.firstIndex(of: h)! + 1) + Decimal(string: "0.25")!
                XCTAssertEqual(f.engine, Decimal(string: rolled)! - hourTotal, "the engine no longer holds that hour")
                XCTAssertEqual(f.acknowledged, Decimal(string: rolled), "while the outbox still says it was acknowledged")
            }
            c.close()
            await env.stop()
        }
    }

    /// The engine's value of a Billing Meter over the UTC month of `hour` for the one customer.
    static func engineMonth(_ env: BillingEnv, _ c: PGConnection, meter: String, hour: Int) async throws -> Decimal? {
        let customer = try c.execute("select billing_customer_id from meter.billing_customers").single().string("billing_customer_id")
        let month = try c.execute("""
            select extract(epoch from date_trunc('month', to_timestamp($1::bigint), 'UTC'))::bigint as s,
                   extract(epoch from date_trunc('month', to_timestamp($1::bigint), 'UTC') + interval '1 month')::bigint as e
            """, [env.epoch(hour)]).single()
        let page = try await env.client.get("/v1/billing/meters/\(meter)/event_summaries", query: [
            ("customer", customer), ("start_time", String(try month.int("s"))), ("end_time", String(try month.int("e")))])
        return page["data"]?.arrayValue?.first?["aggregated_value"]?.numberLexeme.flatMap { Decimal(string: $0) }
    }

    func testValuesAreScaledExactly() throws {
        XCTAssertEqual(try MeterEventValue.scaled("12.25", scale: 2), "1225")
        XCTAssertEqual(try MeterEventValue.scaled("12.250000", scale: 3), "12250")
        XCTAssertEqual(try MeterEventValue.scaled("0", scale: 4), "0")
        XCTAssertEqual(try MeterEventValue.scaled("0.001", scale: 3), "1")
        XCTAssertEqual(try MeterEventValue.scaled("-2.5", scale: 1), "-25")
        XCTAssertThrowsError(try MeterEventValue.scaled("0.0001", scale: 3))
        XCTAssertThrowsError(try MeterEventValue.scaled("1234567890123456", scale: 0))
        XCTAssertEqual(BillingMeters.perScaledUnit("0.5", scale: 3), "0.0005")
        XCTAssertEqual(BillingMeters.perScaledUnit("12", scale: 1), "1.2")
        XCTAssertEqual(BillingMeters.perScaledUnit("100", scale: 2), "1")
        XCTAssertEqual(BillingMeters.perScaledUnit("1.5", scale: 0), "1.5")
    }
}
