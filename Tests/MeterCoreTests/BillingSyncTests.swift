import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import XCTest
import PGClient
import MeterWire
import MeterCore
import MeterAPI
import BillingMock
import MeterDevKit

/// End to end, with real processes' code on real sockets and a real Postgres: ingest (SQL) →
/// rollup_run → the sync (BillingSync / SyncWorker over HTTP) → the mock billing engine
/// (BillingMockServer on a loopback port, with its faults) → webhooks back into `serve`.
final class BillingSyncTests: XCTestCase {
    func testOutageThenRecoveryLeavesTheEnginesHourlyTotalsEqualToTheRollups() async throws {
        let env = try await BillingEnv.start("outage")
        defer { Task { await env.stop() } }
        let c = try PGConnection(conninfo: env.db.info)
        // Some usage synced while the engine is up, through the real SyncWorker loop.
        for i in 0..<24 { try env.db.ingest(c, key: "a\(i)", hour: env.hours[i % env.hours.count], value: "\(i % 5 + 1).25") }
        let metrics = MeterMetrics()
        let worker = SyncWorker(conninfo: env.db.info, config: env.sync, metrics: metrics.sync, logger: TestDatabase.logger)
        let loop = Task { try await worker.run() }
        _ = try Rollup.drain(c)
        try await env.waitSynced(c, timeout: 30)
        try await env.assertEngineEqualsRollups(c)

        // Outage: every call 503. Ingest and rollups go on; nothing reaches the engine.
        try await env.faults(#"{"outage":true}"#)
        for i in 0..<30 { try env.db.ingest(c, key: "b\(i)", hour: env.hours[i % env.hours.count], value: "\(i % 7)") }
        _ = try Rollup.drain(c)
        XCTAssertEqual(try env.db.verify(c), [], "rollups are current during the outage")
        try await Task.sleep(for: .seconds(2))
        let during = try c.execute("select pending + in_flight as n from meter.sync_backlog").single().int("n")
        XCTAssertGreaterThan(during, 0, "hours wait in the outbox during the outage")
        let failed = try c.execute("select count(*) as n from meter.sync_outbox where attempts > 0 and last_error like '%503%'").single().int("n")
        XCTAssertGreaterThan(failed, 0, "sends were attempted and failed with 503")

        // Recovery: the backlog drains by itself.
        try await env.faults(#"{"outage":false}"#)
        try await env.waitSynced(c, timeout: 30)
        loop.cancel()
        _ = try? await loop.value
        try await env.assertEngineEqualsRollups(c)
        let text = String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self)
        XCTAssertTrue(text.contains("meter_sync_sends_total{result=\"failed\"}"), text)
    }

    func testApplyThenDropOn30PercentOfCallsBillsNoHourTwice() async throws {
        let env = try await BillingEnv.start("drop")
        defer { Task { await env.stop() } }
        let c = try PGConnection(conninfo: env.db.info)
        try await env.applyThenDropRounds(c)
        try await env.assertEngineEqualsRollups(c)
        let replays = try await env.mockMetric("billing_mock_idempotent_replays_total")
        XCTAssertGreaterThan(replays, 0, "retries after dropped responses were replayed, not applied again")
    }

    func testLateEventAfterItsHourWasSyncedEndsWithTheNewTotal() async throws {
        let env = try await BillingEnv.start("late")
        defer { Task { await env.stop() } }
        let c = try PGConnection(conninfo: env.db.info)
        let h = env.hours.last!
        try env.db.ingest(c, key: "l1", hour: h, value: "10")
        try env.db.ingest(c, key: "l2", hour: h, value: "2.5")
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)
        let first = try await env.engineTotals()[env.epoch(h)]
        XCTAssertEqual(first, "12.5")

        try env.db.ingest(c, key: "l3", hour: h, value: "0.25")  // late: its hour was synced
        try env.db.cancel(c, keys: ["l1"])
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)
        let second = try await env.engineTotals()[env.epoch(h)]
        XCTAssertEqual(second, "2.75", "the newest revision replaced the hour's total")
        let keys = try c.execute("select revision, synced_revision from meter.sync_outbox").rows
        XCTAssertEqual(keys.count, 1)
        XCTAssertEqual(try keys[0].int("synced_revision"), try keys[0].int("revision"))
        XCTAssertGreaterThanOrEqual(try keys[0].int("revision"), 2)
    }

    /// The race the outbox's "repeat the uncertain request" rule exists for: a send times out at
    /// the client but is still on its way at the engine; a newer revision must not be sent under a
    /// new key before that outcome is known, or the late older total would land last.
    func testASendThatTimedOutButLandsLateNeverOverwritesANewerRevision() async throws {
        let env = try await BillingEnv.start("slow")
        defer { Task { await env.stop() } }
        let c = try PGConnection(conninfo: env.db.info)
        let h = env.hours[0]
        try env.db.ingest(c, key: "s0", hour: env.hours.last!, value: "1")
        _ = try Rollup.drain(c)
        try await env.drainUntilSynced(c)  // links the pair

        var api = env.client.configuration
        api.timeout = .milliseconds(800)
        let impatient = BillingClient(api)
        var sync = env.sync
        sync.api = api
        sync.backoffBase = .milliseconds(1)
        sync.backoffCap = .milliseconds(1)

        // Revision 1 of hour h is sent while the engine is slow: the client gives up after 0.8 s,
        // the engine applies it after 2.5 s.
        try env.db.ingest(c, key: "s1", hour: h, value: "5")
        _ = try Rollup.drain(c)
        try await env.faults(#"{"latency_ms":2500}"#)
        let first = try await BillingSync.pass(pool: env.pool, client: impatient, config: sync, metrics: nil, logger: TestDatabase.logger)
        XCTAssertEqual(first.failed, 1, "the send timed out")
        // Revision 2 arrives; the engine is fast again; the sync goes on at once.
        try env.db.ingest(c, key: "s2", hour: h, value: "7")
        _ = try Rollup.drain(c)
        try await env.faults(#"{"latency_ms":0}"#)
        try await env.drainUntilSynced(c)
        // Let the slow request of revision 1 reach the engine.
        try await Task.sleep(for: .seconds(3))
        let totals = try await env.engineTotals()
        XCTAssertEqual(totals[env.epoch(h)], "12", "revision 2's total stays: the late revision-1 request was replayed, not applied")
        try await env.assertEngineEqualsRollups(c)
    }

    func testDuplicatedAndShuffledWebhooksLeaveTheInvoicePaidWithTheMonthsUsage() async throws {
        let env = try await BillingEnv.start("webhooks")
        defer { Task { await env.stop() } }
        let c = try PGConnection(conninfo: env.db.info)
        for (i, h) in env.hours.enumerated() { try env.db.ingest(c, key: "w\(i)", hour: h, value: "\(i + 1)") }
        let expectedQuantity = env.hours.indices.map { $0 + 1 }.reduce(0, +)

        // The real service: rollups, the sync loop and the webhook endpoint.
        var serve = ServeConfiguration()
        serve.port = 0
        serve.sync = env.sync
        serve.rollup?.interval = .milliseconds(100)
        let server = try await MeterServer.start(config: serve, conninfo: env.db.info, poolSize: 4, logger: TestDatabase.logger)
        defer { Task { await server.stop() } }
        let endpoint = try await env.client.registerWebhookEndpoint(url: "http://127.0.0.1:\(server.port)/webhooks/billing",
                                                                   idempotencyKey: UUID().uuidString)
        try await env.waitSynced(c, timeout: 30)

        try await env.faults(#"{"webhook_duplicate_rate":1,"webhook_shuffle":true}"#)
        let sub = try c.execute("select subscription_id from meter.billing_customers").single().string("subscription_id")
        let periodEnd = try await env.client.get("/v1/subscriptions/\(sub)")["current_period_end"]!.int64Value!
        _ = try await env.client.post("/v1/test_helpers/test_clocks/\(env.clock)/advance",
                                      [("frozen_time", String(periodEnd + 3600))], idempotencyKey: UUID().uuidString)
        // Our endpoint has no secret yet: it refuses (400) and the engine retries with backoff.
        try await Task.sleep(for: .milliseconds(800))
        let refused = try await env.mockMetric("billing_mock_webhook_deliveries_total{result=\"failed\"}")
        XCTAssertGreaterThan(refused, 0, "deliveries were refused before the secret was configured")
        XCTAssertEqual(try c.execute("select count(*) as n from meter.webhook_events").single().int("n"), 0,
                       "nothing stored from unverifiable deliveries")
        try c.execute("insert into meter.webhook_secrets (secret) values ($1)", [endpoint.secret])
        try RollupDB.waitUntil("the invoice is stored as paid", timeout: 30) {
            (try c.execute("select count(*) as n from meter.billing_invoices where status = 'paid'").single().int("n")) == 1
        }
        // Every delivery was sent twice: the duplicates are acknowledged and dropped.
        try RollupDB.waitUntil("both copies of the three events arrived", timeout: 30) {
            let r = try c.execute("select count(*) as n from meter.webhook_events where processed_at is not null").single()
            return try r.int("n") == 3
        }
        try await Task.sleep(for: .seconds(1))
        let inv = try c.execute("""
            select i.status, i.total, i.amount_paid, l.quantity::text as q, l.amount, l.meter_id is not null as mapped,
                   (select count(*) from meter.webhook_events) as events
            from meter.billing_invoices i join meter.billing_invoice_lines l using (invoice_id)
            """).single()
        XCTAssertEqual(try inv.string("status"), "paid")
        XCTAssertEqual(try inv.string("q"), String(expectedQuantity))
        // 0.5 minor units per unit, rounded half away from zero once per line.
        XCTAssertEqual(try inv.int("amount"), Int64((Double(expectedQuantity) * 0.5).rounded(.toNearestOrAwayFromZero)))
        XCTAssertEqual(try inv.int("total"), try inv.int("amount"))
        XCTAssertEqual(try inv.int("amount_paid"), try inv.int("total"))
        XCTAssertTrue(try inv.bool("mapped"), "the line maps back to our customer and meter")
        XCTAssertEqual(try inv.int("events"), 3, "each event stored once")
        let duplicates = try await env.mockMetric("billing_mock_faults_injected_total{kind=\"webhook_duplicate\"}")
        XCTAssertGreaterThanOrEqual(duplicates, 3)
    }
}

/// A fresh database, the mock engine on a free port, a test clock, a priced meter.
final class BillingEnv: @unchecked Sendable {
    let db: RollupDB
    let engine: InProcessServer
    let base: String
    let client: BillingClient
    let pool: PGPool
    var sync: SyncConfiguration
    let clock: String
    /// Test hours (RollupDB numbering) inside the current calendar month.
    let hours: [Int]
    /// With Billing Meters: the engine meter's id and the value scale the 'gb' meter is sent at.
    var engineMeter: String?
    var valueScale = 0

    private init(db: RollupDB, engine: InProcessServer, base: String,
                 client: BillingClient, pool: PGPool, sync: SyncConfiguration, clock: String, hours: [Int]) {
        self.db = db; self.engine = engine; self.base = base
        self.client = client; self.pool = pool; self.sync = sync; self.clock = clock; self.hours = hours
    }

    /// `valueScale` given: the 'gb' meter is billed through a Billing Meter (meter events, each
    /// hour's total times 10^valueScale); else with legacy usage records.
    static func start(_ tag: String, meterEventsScale valueScale: Int? = nil) async throws -> BillingEnv {
        let db = try RollupDB.make(tag)
        var config = BillingMockConfiguration()
        config.port = 0
        config.webhookRetryBase = .milliseconds(100)
        config.webhookPoll = .milliseconds(50)
        let engine = try await BillingMockServer.start(config: config, conninfo: db.info, sqlDirectory: TestDatabase.sqlDir,
                                                       logger: TestDatabase.logger)
        let base = "http://127.0.0.1:\(engine.port)"
        var api = BillingAPIConfiguration(baseURL: base, apiKey: "sk_test_meter")
        api.timeout = .seconds(2)
        let client = BillingClient(api)
        let now = Int64(Date().timeIntervalSince1970)
        let clock = try await client.post("/v1/test_helpers/test_clocks", [("frozen_time", String(now))],
                                          idempotencyKey: UUID().uuidString)["id"]!.stringValue!
        var engineMeter: String?
        var priceParams = [("currency", "usd"), ("product_data[name]", "GB"), ("unit_amount_decimal", "0.5"),
                           ("recurring[interval]", "month"), ("recurring[usage_type]", "metered")]
        if let valueScale {
            engineMeter = try await BillingMeters.ensure(client: client, eventName: "gb_\(tag)", displayName: "GB")
            priceParams[2] = ("unit_amount_decimal", BillingMeters.perScaledUnit("0.5", scale: valueScale))
            priceParams.append(("recurring[meter]", engineMeter!))
        }
        let price = try await client.post("/v1/prices", priceParams, idempotencyKey: UUID().uuidString)["id"]!.stringValue!
        let c = try PGConnection(conninfo: db.info)
        defer { c.close() }
        if let valueScale {
            try c.execute("select meter.billing_price_set('gb', $1, null, $2, $3)", [price, "gb_\(tag)", valueScale])
        } else {
            try c.execute("select meter.billing_price_set('gb', $1)", [price])
        }
        // Hours of this calendar month only (the engine refuses usage before the period start).
        let monthStart = try c.execute("select extract(epoch from date_trunc('month', now(), 'UTC'))::bigint as s").single().int("s")
        let hours = (0..<6).filter { Int64(db.base.timeIntervalSince1970) - Int64($0) * 3600 >= monthStart }
        precondition(!hours.isEmpty, "the first hour of a month: no complete hour of this month to bill yet")
        var sync = SyncConfiguration(api: api)
        sync.testClock = clock
        sync.batch = 20
        sync.concurrency = 4
        sync.maxAttempts = 1000
        sync.backoffBase = .milliseconds(20)
        sync.backoffCap = .milliseconds(300)
        sync.interval = .milliseconds(100)
        sync.lease = .seconds(6)
        let pool = PGPool(conninfo: db.info, maxConnections: 6, logger: TestDatabase.logger)
        let env = BillingEnv(db: db, engine: engine, base: base, client: client, pool: pool, sync: sync,
                             clock: clock, hours: hours)
        env.engineMeter = engineMeter
        env.valueScale = valueScale ?? 0
        return env
    }

    func stop() async {
        await pool.shutdown()
        await engine.stop()
    }

    func epoch(_ hour: Int) -> Int64 { Int64(db.base.timeIntervalSince1970) - Int64(hour) * 3600 }

    func admin(_ method: HTTPMethod, _ path: String, body: String? = nil) async throws -> String {
        var r = HTTPClientRequest(url: base + path)
        r.method = method
        if let body { r.body = .bytes(ByteBuffer(string: body)) }
        let response = try await HTTPClient.shared.execute(r, timeout: .seconds(10))
        let bytes = try await response.body.collect(upTo: 1 << 22)
        guard response.status == .ok else { throw RollupDB.ValidationFailure("\(path): \(response.status) \(String(buffer: bytes))") }
        return String(buffer: bytes)
    }

    func faults(_ json: String) async throws { _ = try await admin(.POST, "/admin/faults", body: json) }

    /// An hour synced, then rounds of new and late events, rollups and sync passes while 30 %
    /// of calls are applied and their answers dropped (and 10 % fail with a 500): hours get
    /// several revisions while earlier sends of them had unknown outcomes. At least six rounds,
    /// and more until a drop has happened: through the v2 stream a round is one or two calls, so
    /// six rounds without a single drop (0.7^~8, a few percent) would test nothing (it failed
    /// CI once that way). Faults off, drained.
    func applyThenDropRounds(_ c: PGConnection) async throws {
        try db.ingest(c, key: "seed", hour: hours[0], value: "1")
        _ = try Rollup.drain(c)
        _ = try await BillingSync.drain(pool: pool, client: client, config: sync, logger: TestDatabase.logger)
        try await faults(#"{"drop_rate":0.3,"error_rate":0.1,"error_status":500}"#)
        var n = 0, round = 0
        var dropped = 0.0
        while round < 6 || (dropped == 0 && round < 60) {
            for _ in 0..<15 {
                try db.ingest(c, key: "d\(n)", hour: hours[(n * 7 + round) % hours.count], value: "\(n % 9 + 1).5")
                n += 1
            }
            _ = try Rollup.drain(c)
            _ = try await BillingSync.pass(pool: pool, client: client, config: sync, metrics: nil, logger: TestDatabase.logger)
            dropped = try await mockMetric("billing_mock_faults_injected_total{kind=\"drop\"}")
            round += 1
        }
        XCTAssertGreaterThan(dropped, 0, "some responses were dropped after the call was applied")
        try await faults(#"{"drop_rate":0,"error_rate":0}"#)
        try await drainUntilSynced(c)
    }

    func mockMetric(_ series: String) async throws -> Double {
        let text = try await admin(.GET, "/metrics")
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.split(separator: " ").last!) ?? 0
        }
        return 0
    }

    /// The engine's per-hour quantities (as applied), and a check that no key was applied twice.
    func engineTotals() async throws -> [Int64: String] {
        let c = try PGConnection(conninfo: db.info)
        defer { c.close() }
        if let meter = engineMeter {
            // The meter's hourly summaries (the newest event of each hour), back to the meter's unit.
            let customer = try c.execute("select billing_customer_id from meter.billing_customers").single().string("billing_customer_id")
            let (from, to) = (epoch(hours.max()!), epoch(hours.min()!) + 3600)
            var out: [Int64: String] = [:]
            var after: String?
            while true {
                var query = [("customer", customer), ("start_time", String(from)), ("end_time", String(to)),
                             ("value_grouping_window", "hour"), ("limit", "100")]
                if let after { query.append(("starting_after", after)) }
                let page = try await client.get("/v1/billing/meters/\(meter)/event_summaries", query: query)
                for s in page["data"]?.arrayValue ?? [] {
                    let v = Decimal(string: s["aggregated_value"]!.numberLexeme!)! / pow(Decimal(10), valueScale)
                    out[s["start_time"]!.int64Value!] = "\(v)"
                }
                guard page["has_more"]?.boolValue == true else { return out }
                after = page["data"]?.arrayValue?.last?["id"]?.stringValue
            }
        }
        let item = try c.execute("select subscription_item_id from meter.billing_links").single().string("subscription_item_id")
        let doc = try JSONParser.parse(try await admin(.GET, "/admin/usage_records?subscription_item=\(item)"))
        var out: [Int64: String] = [:]
        for r in doc["data"]?.arrayValue ?? [] {
            XCTAssertEqual(r["keys_applied_twice"]?.int64Value, 0, "an idempotency key was applied twice: \(r.text)")
            out[r["timestamp"]!.int64Value!] = r["quantity"]!.numberLexeme!
        }
        return out
    }

    func assertEngineEqualsRollups(_ c: PGConnection, file: StaticString = #filePath, line: UInt = #line) async throws {
        let ours = try c.execute("""
            select extract(epoch from r.hour)::bigint as h, r.quantity::text as q
            from meter.rollup_hourly r join meter.meters m on m.id = r.meter_id where m.code = 'gb'
            """).rows
        let engine = try await engineTotals()
        XCTAssertEqual(engine.count, ours.count, "hours at the engine vs rolled up", file: file, line: line)
        for r in ours {
            let h = try r.int("h")
            XCTAssertEqual(engine[h].flatMap { Decimal(string: $0) }, Decimal(string: try r.string("q")),
                           "hour \(h): engine vs rollup", file: file, line: line)
        }
        let unsynced = try c.execute("select count(*) as n from meter.sync_outbox where synced_revision <> revision or state <> 'synced'").single().int("n")
        XCTAssertEqual(unsynced, 0, "every hour synced at its latest revision", file: file, line: line)
    }

    func waitSynced(_ c: PGConnection, timeout: TimeInterval) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            // One statement (one snapshot): as two, the rollup could create the hours between
            // them, and an empty outbox then counted as "nothing unsynced" beside "6 hours".
            let r = try c.execute("""
                select count(*) filter (where state <> 'synced') as unsynced, count(*) as hours from meter.sync_outbox
                """).single()
            if try r.int("unsynced") == 0 && r.int("hours") > 0 { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RollupDB.ValidationFailure("the outbox did not drain in \(timeout) s")
    }

    /// Sync passes until every hour is synced (backoffs included).
    func drainUntilSynced(_ c: PGConnection, timeout: TimeInterval = 30) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            _ = try await BillingSync.pass(pool: pool, client: client, config: sync, metrics: nil, logger: TestDatabase.logger)
            let n = try c.execute("select count(*) as n from meter.sync_outbox where state <> 'synced'").single().int("n")
            if n == 0 { return }
            try await Task.sleep(for: .milliseconds(30))
        }
        throw RollupDB.ValidationFailure("the outbox did not drain in \(timeout) s")
    }
}

/// The mock engine keeps its state in Postgres: a restart loses nothing, not even the
/// idempotency keys (a retry after the restart is replayed, not applied again).
final class BillingMockRestartTests: XCTestCase {
    func testStateAndIdempotencyKeysSurviveARestart() async throws {
        let env = try await BillingEnv.start("restart")
        let customer = try await env.client.post("/v1/customers", [("name", "Kept")], idempotencyKey: "restart-key-1")
        let id = customer["id"]!.stringValue!
        await env.stop()

        // A second engine process on the same schema.
        var config = BillingMockConfiguration()
        config.port = 0
        let restarted = try await BillingMockServer.start(config: config, conninfo: env.db.info, sqlDirectory: TestDatabase.sqlDir,
                                                          logger: TestDatabase.logger)
        let client = BillingClient(BillingAPIConfiguration(baseURL: "http://127.0.0.1:\(restarted.port)", apiKey: "sk_test_meter"))
        let again = try await client.get("/v1/customers/\(id)")
        XCTAssertEqual(again["name"]?.stringValue, "Kept")
        let replay = try await client.post("/v1/customers", [("name", "Kept")], idempotencyKey: "restart-key-1")
        XCTAssertEqual(replay["id"]?.stringValue, id, "the retry after the restart replays the first response")
        let c = try PGConnection(conninfo: env.db.info)
        defer { c.close() }
        XCTAssertEqual(try c.execute("select count(*) as n from billing_mock.objects where object = 'customer'").single().int("n"), 1)
        await restarted.stop()
    }
}
