import ArgumentParser
import Foundation
import Synchronization
import AsyncHTTPClient
import NIOCore
import Logging
import PGClient
import MeterWire
import MeterCore
import BillingMock

/// `meterctl bench sync`: hours synced per second to the mock engine on loopback, and the time to
/// drain a backlog after an outage, each beside a baseline measured in the same run.
struct BenchSync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Billing sync throughput to the mock engine, and the drain time of a backlog after an outage.",
        discussion: """
            Runs in a database of its own (meter_bench_sync, dropped and recreated in the same cluster), \
            with the mock engine in this process on a free loopback port. Setup (not timed): --customers \
            customers linked to one priced meter, and --hours rolled-up hours in January 2026 (rows written \
            directly, the engine on a test clock in that month).
            With --engine-api meter-events (the default) the meter is billed through a Billing Meter and \
            the sync sends its hours in batches of 100 through the v2 meter event stream; the baseline is \
            --baseline-calls raw stream calls of 100 fresh events each, at the same concurrency (the \
            engine's rate for the same batches, without the outbox). With usage-records: raw usage-record \
            POSTs with fresh Idempotency-Keys, one hour each.
            Phase 1 (outage then drain): the engine is down (every call 503) while the sync runs for \
            --outage-seconds; then it recovers and the whole backlog is drained by the sync passes \
            (claim, send, report), timed to the last hour synced. Prints hours/s, the drain time, the ratio \
            to the baseline, and checks that the engine's totals equal the rollups.
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Backlog of hours. Default: 100000") var hours: Int = 100_000
    @Option(help: "Customers the hours spread over. Default: 200") var customers: Int = 200
    @Option(help: "Sends in flight at once. Default: 16") var concurrency: Int = 16
    @Option(name: .customLong("claim-hours"), help: "Hours claimed per pass. Default: 500") var claimHours: Int = 500
    @Option(help: "Passes side by side, as serve's --sync-passes. Default: 2") var passes: Int = 2
    @Option(name: .customLong("baseline-calls"), help: "Raw calls of the baseline. Default: 20000 usage records, or --hours / 100 stream calls of 100 events (the drain's volume)") var baselineCallsOption: Int?
    @Option(name: .customLong("engine-api"), help: "meter-events (v2 stream) or usage-records. Default: meter-events") var engineAPI = "meter-events"
    var meterEvents: Bool { engineAPI == "meter-events" }
    var baselineCalls: Int { baselineCallsOption ?? (meterEvents ? max(hours / 100, 1) : 20_000) }
    @Option(name: .customLong("outage-seconds"), help: "Outage length before the drain. Default: 5") var outageSeconds: Double = 5

    func validate() throws {
        if hours < 1 || customers < 1 || concurrency < 1 || claimHours < 1 || baselineCalls < 1 || passes < 1 || outageSeconds < 0 {
            throw ValidationError("--hours, --customers, --concurrency, --claim-hours, --baseline-calls, --passes must be positive")
        }
        guard ["meter-events", "usage-records"].contains(engineAPI) else {
            throw ValidationError("--engine-api must be meter-events or usage-records; got \(engineAPI)")
        }
        if hours / customers > 24 * 30 {
            throw ValidationError("--hours / --customers must be at most 720 (hours of one month per customer)")
        }
    }

    func run() async throws {
        let logger = global.bootstrapLogging(defaultLevel: .warning)
        let sqlDir = try global.target.locateSQL()
        let main = try global.conninfo(migrate: true)
        let admin = try PGConnection(conninfo: main)
        try admin.execute("drop database if exists meter_bench_sync with (force)")
        try admin.execute("create database meter_bench_sync")
        admin.close()
        let conninfo = databaseConninfo(main, database: "meter_bench_sync")
        let conn = try PGConnection(conninfo: conninfo, statementTimeout: nil)
        defer { conn.close() }
        _ = try conn.execute("set client_min_messages = warning")
        try Migrator(sqlDirectory: sqlDir, logger: logger).migrate(conn)

        // The engine, in this process.
        var mockConfig = BillingMockConfiguration()
        mockConfig.port = 0
        let engine = try await BillingMockServer.start(config: mockConfig, conninfo: conninfo, sqlDirectory: sqlDir, logger: logger)
        let base = "http://127.0.0.1:\(engine.port)"
        var api = BillingAPIConfiguration(baseURL: base, apiKey: "sk_test_bench")
        api.timeout = .seconds(10)
        let client = BillingClient(api)
        do {
            try await measure(conn: conn, conninfo: conninfo, base: base, client: client, logger: logger)
        } catch {
            await engine.stop()
            throw error
        }
        await engine.stop()
    }

    func measure(conn: PGConnection, conninfo: String, base: String, client: BillingClient, logger: Logger) async throws {
        let api = client.configuration
        print("setup: \(customers) customers, \(hours) hours of rollups in January 2026, engine at \(base)")
        let month: Int64 = 1_767_225_600  // 2026-01-01T00:00:00Z
        let perCustomer = (hours + customers - 1) / customers
        let clock = try await client.post("/v1/test_helpers/test_clocks",
                                          [("frozen_time", String(month + Int64(perCustomer + 2) * 3600))],
                                          idempotencyKey: UUID().uuidString)["id"]!.stringValue!
        var priceParams = [("currency", "usd"), ("product_data[name]", "bench"), ("unit_amount_decimal", "0.01"),
                           ("recurring[interval]", "month"), ("recurring[usage_type]", "metered")]
        if meterEvents {
            let engineMeter = try await BillingMeters.ensure(client: client, eventName: "bench_sync", displayName: "bench")
            priceParams[2] = ("unit_amount_decimal", "0.001")   // per tenth (value scale 1: totals end in .5)
            priceParams.append(("recurring[meter]", engineMeter))
        }
        let price = try await client.post("/v1/prices", priceParams, idempotencyKey: UUID().uuidString)["id"]!.stringValue!
        try conn.execute("select meter.meter_upsert('bench.sync', 'sum')")
        try conn.execute("""
            insert into meter.customers (external_id) select 'bench-' || g from generate_series(1, $1::int) g
            """, [customers])
        try conn.execute("""
            insert into meter.rollup_hourly (customer_id, meter_id, hour, event_count, quantity, max_value)
            select c.id, m.id, to_timestamp($1::bigint) + make_interval(hours => h), 10, (c.id * 7 + h) % 1000 + 0.5, 100
            from meter.customers c cross join generate_series(0, $2::int - 1) h, meter.meters m
            where m.code = 'bench.sync'
            order by c.id, h
            limit $3
            """, [month, perCustomer, hours])
        if meterEvents {
            _ = try conn.execute("select meter.billing_price_set('bench.sync', $1, null, 'bench_sync', 1)", [price])
        } else {
            _ = try conn.execute("select meter.billing_price_set('bench.sync', $1)", [price])
        }

        var sync = SyncConfiguration(api: api)
        sync.testClock = clock
        sync.batch = claimHours
        sync.concurrency = concurrency
        sync.passes = passes
        sync.maxAttempts = 1000
        sync.backoffBase = .milliseconds(200)
        sync.backoffCap = .seconds(2)
        sync.lease = .seconds(60)
        let pool = PGPool(conninfo: conninfo, maxConnections: concurrency * passes + 2, logger: logger)
        // Links (not timed): one billing customer, subscription and item per customer.
        var linked = 0
        while true {
            let n = try await BillingSync.linkPending(pool: pool, client: client, config: sync, logger: logger, limit: 100)
            if n == 0 { break }
            linked += n
            print("setup: linked \(linked)/\(customers)")
        }
        let item = try conn.execute("select subscription_item_id from meter.billing_links limit 1").single().string("subscription_item_id")
        let cus = try conn.execute("select billing_customer_id from meter.billing_customers limit 1").single().string("billing_customer_id")

        // Baseline: raw calls, same concurrency (in meter events: hours per second, 100 per call).
        let perCall = meterEvents ? MeterEventSession.eventsPerCall : 1
        print("baseline: \(baselineCalls) raw \(meterEvents ? "stream calls of \(perCall) events" : "usage-record POSTs"), concurrency \(concurrency)")
        let t0 = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            let calls = baselineCalls
            let meterEvents = self.meterEvents
            func add(_ i: Int) {
                group.addTask {
                    if meterEvents {
                        // Fresh identifiers, a day after the backlog's hours (kept apart from them).
                        let events: [JSONValue] = (0..<perCall).map { k in
                            .obj(["event_name": "bench_sync", "identifier": .string("bench-baseline-\(i)-\(k)-\(UUID().uuidString)"),
                                  "timestamp": .string(RFC3339Timestamp(epochMicroseconds: (month + Int64(perCustomer + 1) * 3600) * 1_000_000).iso8601),
                                  "payload": .obj(["stripe_customer_id": .string(cus), "value": "1"])])
                        }
                        try await client.meterEventSession.stream(events, client: client, idempotencyKey: UUID().uuidString)
                    } else {
                        _ = try await client.post("/v1/subscription_items/\(item)/usage_records", [
                            ("quantity", "1"), ("timestamp", String(month + Int64(i % perCustomer) * 3600 + 1800)), ("action", "set"),
                        ], idempotencyKey: "bench-baseline-\(UUID().uuidString)")
                    }
                }
            }
            while next < min(concurrency, calls) { add(next); next += 1 }
            while try await group.next() != nil {
                if next < calls { add(next); next += 1 }
            }
        }
        let baselineSeconds = (ContinuousClock.now - t0).seconds
        let baselineRate = Double(baselineCalls * perCall) / baselineSeconds
        print(String(format: "baseline: %.0f hours/s (%d calls in %.2f s)", baselineRate, baselineCalls, baselineSeconds))

        // Phase 1: an outage while the sync keeps trying, then the drain.
        try await setFaults(base, #"{"outage":true}"#)
        print(String(format: "outage: %.0f s, the sync keeps trying (every call 503)", outageSeconds))
        let outageEnd = ContinuousClock.now + .milliseconds(Int(outageSeconds * 1000))
        var attempted = 0
        while ContinuousClock.now < outageEnd {
            let r = try await BillingSync.pass(pool: pool, client: client, config: sync, metrics: nil, logger: logger)
            attempted += r.claimed
            if r.claimed == 0 { try await Task.sleep(for: .milliseconds(100)) }
        }
        let pending = try conn.execute("select pending + in_flight as n from meter.sync_backlog").single().int("n")
        print("outage: \(attempted) sends failed; \(pending) hours pending")
        try await setFaults(base, #"{"outage":false}"#)
        let t1 = ContinuousClock.now
        // `passes` loops side by side, as serve's sync worker runs them; each stops when a claim
        // comes back empty and nothing is left unsynced.
        final class Progress: Sendable { let state = Mutex((sent: 0, lastPrint: ContinuousClock.now)) }
        let progress = Progress()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<passes {
                group.addTask { [sync] in
                    let check = try PGConnection(conninfo: conninfo)
                    defer { check.close() }
                    while true {
                        let r = try await BillingSync.pass(pool: pool, client: client, config: sync, metrics: nil, logger: logger,
                                                           link: false)
                        let line: String? = progress.state.withLock { p in
                            p.sent += r.succeeded
                            guard ContinuousClock.now - p.lastPrint >= .seconds(5) else { return nil }
                            p.lastPrint = ContinuousClock.now
                            return String(format: "drain: %d/%d hours synced (%.0f s)", p.sent, hours, (ContinuousClock.now - t1).seconds)
                        }
                        if let line { print(line) }
                        if r.claimed == 0 {
                            let left = try check.execute("select count(*) as n from meter.sync_outbox where state <> 'synced'").single().int("n")
                            if left == 0 { return }
                            try await Task.sleep(for: .milliseconds(20))  // hours still in backoff, or in another pass's flight
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let drainSeconds = (ContinuousClock.now - t1).seconds
        let rate = Double(hours) / drainSeconds
        // The engine's totals against the rollups, hour by hour, for every customer.
        let mismatches = try conn.execute(meterEvents ? """
            with kept as (
                select k.customer, k.window_start as ts, k.value / 10 as q
                from billing_mock.objects o
                cross join lateral billing_mock.meter_kept_events(o.id, null, 0, 9223372036854775807) k
                where o.object = 'billing.meter' and o.data ->> 'event_name' = 'bench_sync')
            select count(*) as n from meter.rollup_hourly r
            join meter.billing_customers b using (customer_id)
            left join kept k on k.customer = b.billing_customer_id and k.ts = extract(epoch from r.hour)::bigint
            where k.q is distinct from r.quantity
            """ : """
            select count(*) as n from meter.rollup_hourly r
            join meter.billing_links l using (customer_id, meter_id)
            left join billing_mock.usage_records u
              on u.subscription_item = l.subscription_item_id and u.ts = extract(epoch from r.hour)::bigint
            where u.quantity is distinct from r.quantity
            """).single().int("n")
        print(String(format: "drain (%@): %d hours in %.2f s = %.0f hours/s; baseline %.0f hours/s; ratio %.2f; engine totals differing from rollups: %d",
                     engineAPI, hours, drainSeconds, rate, baselineRate, rate / baselineRate, mismatches))

        // The outbox's own cost, without the engine: every hour made due again, then claimed and
        // acknowledged in SQL by `passes` connections, `claimHours` at a time. With the engine in
        // this process on the same Postgres and cores, the drain cannot beat
        // 1 / (1 / engine rate + 1 / outbox rate): printed as the bound, for reading the ratio.
        _ = try conn.execute("""
            update meter.sync_outbox set state = 'pending', revision = revision + 1, next_attempt_at = now(), unsynced_since = now()
            """)
        let t2 = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<passes {
                group.addTask { [claimHours] in
                    let c = try PGConnection(conninfo: conninfo)
                    defer { c.close() }
                    while try c.execute("""
                        select count(meter.sync_succeeded(s.customer_id, s.meter_id, s.hour, s.claim_token)) as n
                        from meter.sync_claim($1, $2, '60 seconds') s
                        """, ["bench-outbox-\(i)", claimHours]).single().int("n") > 0 {}
                }
            }
            try await group.waitForAll()
        }
        let outboxRate = Double(hours) / (ContinuousClock.now - t2).seconds
        let bound = 1 / (1 / baselineRate + 1 / outboxRate)
        print(String(format: "outbox alone (claim + acknowledge in SQL, no engine): %.0f hours/s; bound with the engine on the same cores %.0f hours/s; drain / bound %.2f",
                     outboxRate, bound, rate / bound))
        await pool.shutdown()
        if mismatches != 0 { throw ExitCode.failure }
    }


    func setFaults(_ base: String, _ json: String) async throws {
        var r = HTTPClientRequest(url: base + "/admin/faults")
        r.method = .POST
        r.body = .bytes(ByteBuffer(string: json))
        let response = try await HTTPClient.shared.execute(r, timeout: .seconds(10))
        guard response.status == .ok else { throw ValidationError("the mock refused the faults: HTTP \(response.status.code)") }
    }
}
