// ChaosHarness.swift: what every chaos scenario (chaos/<name>, `meterctl chaos <name>`) shares.
//
//   * its own Postgres cluster (.meter/chaos/pg), a fresh database per scenario, migrated;
//   * the billing mock and the service as child processes (`meterctl billing-mock`, `meterctl
//     serve`), so that they can be SIGKILLed and started again like on a real host;
//   * a seeded catalog: 2 meters (api_calls: count, storage_gb: sum), a per-unit plan, N customers
//     subscribed from the previous calendar month, mirrored as engine prices, the engine on a test
//     clock at the end of that month, the webhook endpoint and its secret;
//   * an at-least-once client (ChaosLoad): every event is re-sent, same idempotency key, until a
//     2xx answer acknowledges it; duplicates and out-of-order deliveries on top;
//   * the end: dead letters re-driven with `meterctl sync retry`, rollups and outbox drained, the
//     engine's clock moved past the month end (it invoices, webhooks come back), the month closed;
//   * the verdict, computed in SQL from the client's own record of what it sent (chaos.expected):
//     sent, acknowledged, stored, rolled up, billed; PASS only when every acknowledged event is
//     counted exactly once in the rollups and in the engine, meter.rollup_verify() is empty and
//     every reconciliation row of the month is MATCH.

import Foundation
import Logging
#if canImport(Glibc)
import Glibc
import PGClient
import MeterWire
import MeterCore
#endif

public struct ChaosOptions: Sendable {
    public var seed: UInt64 = 1
    /// Distinct events of the main load.
    public var events = 20_000
    public var customers = 20
    /// The load's events fall in the last `hours` hours of the previous month.
    public var hours = 24
    /// Share of events delivered twice on purpose (on top of the client's own retries).
    public var duplicateRate = 0.10
    /// Events per second the client offers (paced); 0 = as fast as it can.
    public var rate = 2_000
    /// SIGKILLs (ingest-restart) / crashes (postgres-crash).
    public var kills = 5
    /// Seconds each fault phase lasts (billing-outage, db-network).
    public var phaseSeconds = 5.0
    public var lanes = 4
    public var workDir = ".meter/chaos"
    public var pgPort = 54369
    /// Test of the verdict itself: one rollup hour and one engine hour are altered before the
    /// checks, which must then FAIL (scripts/test.sh).
    public var sabotage = false
    public var meterctl = ""
    public var sqlDir = ""
    public init() {}
}

public final class ChaosHarness: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible { public let description: String }

    public let scenario: String
    public let o: ChaosOptions
    package let say: @Sendable (String) -> Void
    package let logger: Logger
    public let pg: EmbeddedPostgres
    package let database: String
    public var conninfo: String { pg.conninfo(database: database) }
    /// What the service connects with (db-network points it at the proxy).
    public var serviceConninfo: String
    public let dir: String
    public private(set) var service: ChildProcess!
    public private(set) var mock: ChildProcess!
    public let servicePort: Int
    public let mockPort: Int
    public private(set) var token = ""
    public private(set) var clock = ""
    public private(set) var client: BillingClient!
    public private(set) var periodStart: Int64 = 0
    public private(set) var periodEnd: Int64 = 0
    public private(set) var period = ""
    /// Extra arguments and environment of `meterctl serve` (set before start).
    public var serviceArguments: [String] = []
    public var serviceEnvironment: [String: String] = [:]
    /// One line per fault injected, for the verdict.
    public var faults: [String] = []
    package let started = ContinuousClock.now

    public static let meters: [(code: String, aggregation: String, unitAmount: String)] = [
        ("api_calls", "count", "0.5"), ("storage_gb", "sum", "12"),
    ]

    public init(scenario: String, options: ChaosOptions, logger: Logger, say: @escaping @Sendable (String) -> Void) throws {
        self.scenario = scenario
        self.o = options
        self.logger = logger
        self.dir = URL(fileURLWithPath: options.workDir + "/" + scenario).standardizedFileURL.path
        self.pg = EmbeddedPostgres(dataDir: options.workDir + "/pg", port: options.pgPort)
        self.database = "chaos_" + scenario.replacingOccurrences(of: "-", with: "_")
        self.servicePort = try Self.freePort()
        self.mockPort = try Self.freePort()
        self.serviceConninfo = ""
        self.say = say
        self.serviceConninfo = conninfo
    }

    /// Progress line with the seconds since the start.
    public func log(_ s: String) {
        say(String(format: "[%6.1f s] ", (ContinuousClock.now - started).seconds) + s)
    }

    public func connect() throws -> PGConnection {
        let c = try PGConnection(conninfo: conninfo, statementTimeout: nil)
        _ = try c.execute("set client_min_messages = warning")
        return c
    }

    // MARK: set-up

    /// Cluster up, fresh database, catalog, engine, service.
    public func setUp() async throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for f in ["service.log", "billing-mock.log"] { try? FileManager.default.removeItem(atPath: dir + "/" + f) }
        try pg.start(log: { self.log($0) })
        do {
            let admin = try PGConnection(conninfo: pg.conninfo(database: "postgres"))
            defer { admin.close() }
            try admin.execute("drop database if exists \(database) with (force)")
            try admin.execute("create database \(database)")
        }
        let c = try connect()
        defer { c.close() }
        try Migrator(sqlDirectory: o.sqlDir, logger: logger).migrate(c)
        let p = try c.execute("""
            select extract(epoch from date_trunc('month', now(), 'UTC') - interval '1 month')::bigint as s,
                   extract(epoch from date_trunc('month', now(), 'UTC'))::bigint as e,
                   to_char(date_trunc('month', now(), 'UTC') - interval '1 month', 'YYYY-MM') as p
            """).single()
        (periodStart, periodEnd, period) = (try p.int("s"), try p.int("e"), try p.string("p"))

        for m in Self.meters { try c.execute("select meter.meter_upsert($1, $2)", [m.code, m.aggregation]) }
        try c.execute("select meter.plan_upsert('chaos', 'usd')")
        for m in Self.meters {
            try c.execute("select meter.plan_price_set('chaos', $1, 'per_unit', $2::numeric)", [m.code, m.unitAmount])
        }
        for i in 0..<o.customers {
            try c.execute("select meter.customer_upsert($1, $2, 'UTC')", [customer(i), "Chaos customer \(i + 1)"])
            try c.execute("select meter.customer_subscribe($1, 'chaos', $2)", [customer(i), period])
        }
        token = APIKeys.generate()
        try APIKeys.register(c, name: "chaos", token: token)

        mock = ChildProcess(name: "billing-mock", argv: [o.meterctl, "billing-mock", "--database-url", conninfo,
                                                         "--sql-dir", o.sqlDir, "--port", String(mockPort),
                                                         "--webhook-retry-base-seconds", "0.2", "--log-level", "info"],
                            logPath: dir + "/billing-mock.log")
        try mock.start()
        try await onDedicatedThread { [mockPort] in try waitForHTTP(port: mockPort, path: "/healthz") }
        var api = BillingAPIConfiguration(baseURL: "http://127.0.0.1:\(mockPort)", apiKey: "sk_test_chaos")
        api.timeout = .seconds(10)
        client = BillingClient(api)
        // The engine's clock: a minute before the month's end (usage may be at most 5 minutes in
        // its future; customers created now start their subscription at the month's first).
        guard let clockID = try await client.post("/v1/test_helpers/test_clocks", [("frozen_time", String(periodEnd - 60)), ("name", "chaos")],
                                                  idempotencyKey: "chaos-clock-\(scenario)-\(o.seed)")["id"]?.stringValue else {
            throw Failure(description: "the engine created a test clock without an id")
        }
        clock = clockID
        // Billing Meters; storage_gb values have 3 decimals (the engine counts milli-GB).
        try await PlanMirror.mirror(c, client: client, engineMeters: Self.meters.map(\.code), scales: ["storage_gb": 3])
        try PlanMirror.billMeters(c, plan: "chaos", meters: Self.meters.map(\.code), since: periodStart, scales: ["storage_gb": 3])
        let endpoint = try await client.registerWebhookEndpoint(url: "http://127.0.0.1:\(servicePort)/webhooks/billing",
                                                               idempotencyKey: "chaos-endpoint-\(scenario)-\(servicePort)")
        try c.execute("insert into meter.webhook_secrets (secret) values ($1)", [endpoint.secret])
        log("set up: database \(database), \(o.customers) customers, engine on 127.0.0.1:\(mockPort) (test clock \(clock)), period \(period)")

        service = ChildProcess(name: "service", argv: [o.meterctl, "serve", "--database-url", serviceConninfo,
                                                       "--sql-dir", o.sqlDir, "--port", String(servicePort),
                                                       "--pool-size", "8", "--past-tolerance-seconds", "8640000",
                                                       "--rollup-interval-seconds", "0.2", "--log-level", "info",
                                                       "--billing-api-base", "http://127.0.0.1:\(mockPort)",
                                                       "--billing-api-key", "sk_test_chaos", "--billing-test-clock", clock,
                                                       "--billing-timeout-seconds", "3", "--sync-backoff-cap-seconds", "2",
                                                       // a killed worker's claims are handed out again after 10 s (default 60)
                                                       "--sync-lease-seconds", "10"] + serviceArguments,
                               environment: serviceEnvironment, logPath: dir + "/service.log")
        try await startService()
        log("service on 127.0.0.1:\(servicePort) (pid \(service.pid)), logs in \(dir)/")
    }

    /// The database's clock when the current service instance was started (its backends opened
    /// after it), as text for a timestamptz parameter.
    public private(set) var serviceStartedAt = "-infinity"

    public func startService() async throws {
        if let c = try? connect() {
            serviceStartedAt = (try? c.execute("select now()::text as t").single().string("t")) ?? "-infinity"
            c.close()
        }
        try service.start()
        try await onDedicatedThread { [servicePort] in try waitForHTTP(port: servicePort, timeout: 120) }
    }

    public func customer(_ i: Int) -> String { "chaos-c\(i)" }

    /// Faults of the mock, at run time.
    public func mockFaults(_ json: String) throws {
        let r = try LoadClient(port: mockPort, timeoutSeconds: 10).request("POST", "/admin/faults", headers: [("Content-Type", "application/json")], body: json)
        guard r.status == 200 else { throw Failure(description: "POST /admin/faults \(json): HTTP \(r.status) \(r.body)") }
    }

    // MARK: the load

    /// The main load's events: `o.events` events in the last `o.hours` hours of the month,
    /// spread over the customers and both meters.
    public func mainEvents(prefix: String = "e") -> [ChaosEvent] {
        var r = SeededRandom(seed: o.seed)
        let from = (periodEnd - Int64(o.hours) * 3600) * 1_000_000
        let span = Int64(o.hours) * 3_600_000_000
        return (0..<o.events).map { i in
            let m = r.below(3) == 0 ? "storage_gb" : "api_calls"
            let value = m == "api_calls" ? "1" : "\(r.below(100)).\(String(format: "%03d", r.below(1000)))"
            return ChaosEvent(customer: customer(r.below(o.customers)), meter: m, key: "\(prefix)-\(o.seed)-\(i)",
                              at: from + Int64(r.next() % UInt64(span)), value: value)
        }
    }

    public func load(_ events: [ChaosEvent], rate: Int? = nil) -> ChaosLoad {
        ChaosLoad(events: events, port: servicePort, token: token, seed: o.seed, duplicateRate: o.duplicateRate,
                  rate: rate ?? o.rate, lanes: o.lanes, progress: { self.log($0) })
    }

    // MARK: the end

    /// Dead letters re-driven (`meterctl sync retry`, as an operator would), then rollups and the
    /// outbox drained.
    public func drain(timeout: Double = 300) async throws {
        let c = try connect()
        defer { c.close() }
        let deadline = ContinuousClock.now + .seconds(timeout)
        var lastSay = ContinuousClock.now
        var redrives = 0
        while true {
            let lag = try Rollup.lag(c)
            let b = try c.execute("select pending, in_flight, dead from meter.sync_backlog").single()
            let (pending, inFlight, dead) = (try b.int("pending"), try b.int("in_flight"), try b.int("dead"))
            if dead > 0 && redrives < 10 {
                redrives += 1
                let n = try await redriveDead()
                faults.append("dead letters re-driven while draining: \(n) hour(s), `meterctl sync retry`")
            } else if dead == 0 && lag.pendingEvents == 0 && lag.pendingCancellations == 0 && pending + inFlight == 0 {
                return
            }
            if ContinuousClock.now > deadline {
                throw Failure(description: "not drained after \(Int(timeout)) s: \(lag.pendingEvents) events to roll up, \(pending + inFlight) hours to sync, \(dead) dead after \(redrives) re-drives")
            }
            if ContinuousClock.now - lastSay > .seconds(3) {
                log("draining: \(lag.pendingEvents) events to roll up, \(pending) hours pending, \(inFlight) in flight")
                lastSay = ContinuousClock.now
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// `meterctl sync retry` when hours are dead (as an operator would); how many there were.
    public func redriveDead() async throws -> Int64 {
        let c = try connect()
        defer { c.close() }
        let dead = try c.execute("select dead from meter.sync_backlog").single().int("dead")
        guard dead > 0 else { return 0 }
        let r = try Subprocess.run([o.meterctl, "sync", "retry", "--database-url", conninfo, "--log-level", "warning"])
        guard r.status == 0 else { throw Failure(description: "meterctl sync retry failed: \(r.output)") }
        log("re-drove \(dead) dead hour(s): \(r.output.trimmingCharacters(in: .whitespacesAndNewlines))")
        return dead
    }

    /// The month's close, as an operator runs it: `meterctl close` with the engine configured
    /// brings the engine to the same point (its test clock past the month end; it invoices and its
    /// webhooks come back), then closes in batches of 7 customers (one transaction each).
    /// `beforeClose` may inject a fault first (postgres-crash).
    public func closeMonth(beforeClose: ((ChaosHarness) async throws -> Void)? = nil) async throws {
        if let beforeClose { try await beforeClose(self) }
        let r = try Subprocess.run([o.meterctl, "close", "--period", period, "--grace-seconds", "0", "--customers-per-transaction", "7",
                                    "--billing-api-base", "http://127.0.0.1:\(mockPort)", "--billing-api-key", "sk_test_chaos",
                                    "--billing-test-clock", clock, "--database-url", conninfo, "--log-level", "warning"])
        let lines = r.output.split(separator: "\n")
        guard r.status == 0, let summary = lines.last(where: { $0.hasPrefix("close \(period): ") && $0.contains(" closed, ") }) else {
            throw Failure(description: "meterctl close --period \(period) failed (\(r.status)): \(r.output.suffix(600))")
        }
        for line in lines where line.hasPrefix("engine: ") { log(String(line)) }
        log(String(summary))
    }

    // MARK: verdict

    /// Loads the client's record into chaos.expected and compares every stage with it.
    public func verdict(sent: [ChaosEvent], result: ChaosLoad.Result, extraChecks: [(String, Bool)] = []) throws -> ChaosVerdict {
        let c = try connect()
        defer { c.close() }
        if o.sabotage {
            // The first rollup hour one event and one unit over, and its billing period's total with
            // it, as a wrong fold would write them (the period total is what the reconciliation
            // reads for a whole period, decision 124; an hour altered alone is rollup verify's).
            try c.execute("""
                with h as (
                    update meter.rollup_hourly set event_count = event_count + 1, quantity = quantity + 1
                    where (customer_id, meter_id, hour) = (select customer_id, meter_id, hour from meter.rollup_hourly order by 1, 2, 3 limit 1)
                    returning customer_id, meter_id, hour
                )
                update meter.rollup_period p set event_count = p.event_count + 1, quantity = p.quantity + 1
                from h join meter.customers cu on cu.id = h.customer_id
                where p.customer_id = h.customer_id and p.meter_id = h.meter_id
                  and p.period_start = meter._period_of(cu.billing_timezone, h.hour)
                """)
            // The newest event of the latest hour window: the one the engine bills for that hour.
            try c.execute("""
                update billing_mock.meter_events set value = value + 1
                where seq = (select seq from billing_mock.meter_events order by ts desc, seq desc limit 1)
                """)
            faults.append("sabotage: the first rollup hour (and its period total) and the last engine hour altered before the checks (the verdict must FAIL, with 2 engine hours differing)")
        }
        try c.execute("create schema if not exists chaos")
        try c.execute("drop table if exists chaos.expected")
        try c.execute("""
            create table chaos.expected (key text, customer text, meter text, occurred_at timestamptz, value numeric,
                                         acked boolean, rejected text, expect_reject text)
            """)
        for start in stride(from: 0, to: sent.count, by: 5000) {
            let part = Array(sent[start..<min(start + 5000, sent.count)])
            let idx = start..<(start + part.count)
            try c.execute("""
                insert into chaos.expected
                select k, c, m, to_timestamp(t / 1e6), v, a, r, x
                from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::numeric[], $6::boolean[], $7::text[], $8::text[])
                     as u(k, c, m, t, v, a, r, x)
                """, [part.map(\.key), part.map(\.customer), part.map(\.meter), part.map(\.at), part.map(\.value),
                      idx.map { result.acked[$0] }, idx.map { result.rejected[$0] }, part.map(\.expectReject)])
        }
        let s = try c.execute("""
            select count(*) as sent,
                   count(*) filter (where x.acked) as acked,
                   count(e.id) as stored,
                   count(*) filter (where x.acked and e.id is null) as lost,
                   count(*) filter (where e.id is not null and (e.occurred_at <> x.occurred_at or e.value <> x.value or m.code <> x.meter)) as altered,
                   count(*) filter (where x.expect_reject is not null) as expect_reject,
                   count(*) filter (where x.expect_reject is not null and x.rejected = x.expect_reject and e.id is null) as rejected_ok,
                   count(*) filter (where x.expect_reject is null and not x.acked) as unacked
            from chaos.expected x
            left join meter.customers c on c.external_id = x.customer
            left join meter.events e on e.customer_id = c.id and e.idempotency_key = x.key
            left join meter.meters m on m.id = e.meter_id
            """).single()
        let foreign = try c.execute("""
            select count(*) as n from meter.events e join meter.customers c on c.id = e.customer_id
            where not exists (select 1 from chaos.expected x where x.customer = c.external_id and x.key = e.idempotency_key)
            """).single().int("n")
        let r = try c.execute("""
            with exp as (
                select c.id as customer_id, m.id as meter_id, date_trunc('hour', x.occurred_at, 'UTC') as hour,
                       count(*) as n, sum(x.value) as q
                from chaos.expected x join meter.customers c on c.external_id = x.customer join meter.meters m on m.code = x.meter
                where x.acked group by 1, 2, 3)
            select count(*) filter (where r.hour is null) as missing,
                   count(*) filter (where exp.hour is null and (r.event_count <> 0 or r.quantity <> 0)) as extra,
                   count(*) filter (where exp.n <> r.event_count or exp.q <> r.quantity) as differing,
                   coalesce(sum(r.event_count), 0) as rolled_up, count(*) as hours
            from exp full join meter.rollup_hourly r using (customer_id, meter_id, hour)
            """).single()
        // The engine's hours, as it bills them (billing_mock.meter_kept_events: per Billing Meter,
        // customer and hour window, the newest event), back in the meter's unit (10^-value_scale).
        let b = try c.execute("""
            with ours as (
                select r.customer_id, r.meter_id, r.hour, r.event_count,
                       case m.code when 'api_calls' then r.event_count::numeric else r.quantity end as quantity,
                       bc.billing_customer_id as cus, p.event_name, p.value_scale
                from meter.rollup_hourly r join meter.meters m on m.id = r.meter_id
                join meter.billing_links l on l.customer_id = r.customer_id and l.meter_id = r.meter_id
                join meter.billing_customers bc on bc.customer_id = r.customer_id
                join meter.billing_prices p on p.meter_id = r.meter_id),
            eng as (
                select k.customer as cus, o.data ->> 'event_name' as event_name, to_timestamp(k.window_start) as hour,
                       k.value / power(10::numeric, coalesce(p.value_scale, 0)) as quantity,
                       (select count(*) from billing_mock.meter_events e
                        where e.meter_id = o.id and e.customer = k.customer and e.cancelled_at is null
                          and e.ts >= k.window_start and e.ts < k.window_start + 3600) as writes
                from billing_mock.objects o
                cross join lateral billing_mock.meter_kept_events(o.id, null, 0, 9223372036854775807) k
                left join meter.billing_prices p on p.event_name = o.data ->> 'event_name'
                where o.object = 'billing.meter')
            select count(*) as hours,
                   count(*) filter (where eng.quantity is null) as unbilled,
                   count(*) filter (where eng.quantity <> ours.quantity) as differing,
                   coalesce(sum(ours.event_count) filter (where eng.quantity = ours.quantity), 0) as billed,
                   coalesce(sum(eng.writes), 0) as writes,
                   (select count(*) from eng where not exists (select 1 from ours where ours.cus = eng.cus and ours.event_name = eng.event_name
                                                                                     and ours.hour = eng.hour)) as foreign_hours
            from ours left join eng on eng.cus = ours.cus and eng.event_name = ours.event_name and eng.hour = ours.hour
            """).single()
        let verifyRows = try c.execute("""
            select count(*) as n from meter.rollup_verify((select min(occurred_at) from meter.events),
                                                          (select max(occurred_at) + interval '1 hour' from meter.events))
            """).single().int("n")
        let rec = try c.execute("""
            select count(*) filter (where status = 'MATCH') as ok, count(*) filter (where status <> 'MATCH') as bad,
                   coalesce(string_agg(distinct status, '; ') filter (where status <> 'MATCH'), '') as why
            from meter.reconciliation where period = $1
            """, [period]).single()

        let sentN = try s.int("sent"), acked = try s.int("acked"), stored = try s.int("stored")
        let lost = try s.int("lost"), altered = try s.int("altered"), unacked = try s.int("unacked")
        let expectReject = try s.int("expect_reject"), rejectedOK = try s.int("rejected_ok")
        let rolledUp = try r.int("rolled_up"), hoursDiffering = try r.int("differing") + r.int("missing") + r.int("extra")
        let billed = try b.int("billed"), billedHours = try b.int("hours"), billDiff = try b.int("differing") + b.int("unbilled") + b.int("foreign_hours")
        let recOK = try rec.int("ok"), recBad = try rec.int("bad")
        let accepted = acked  // every acknowledged event must be stored, rolled up and billed once
        var checks: [(String, Bool)] = [
            ("every acknowledged event stored (lost \(lost), altered \(altered))", lost == 0 && altered == 0 && stored == accepted),
            ("no event stored that was not sent (\(foreign))", foreign == 0),
            ("every valid event acknowledged in the end (unacknowledged \(unacked))", unacked == 0),
            ("rollups: every hour equals the acknowledged events (\(hoursDiffering) differing)", hoursDiffering == 0 && rolledUp == accepted),
            ("meter.rollup_verify() empty (\(verifyRows) rows)", verifyRows == 0),
            ("engine: every hour billed exactly its rollup (\(billDiff) differing of \(billedHours))", billDiff == 0 && billed == accepted),
            ("reconciliation \(period): \(recOK) MATCH, \(recBad) not\(recBad > 0 ? " (" + (try rec.string("why")) + ")" : "")",
             recBad == 0 && recOK == o.customers * Self.meters.count),
        ]
        if expectReject > 0 {
            checks.append(("events beyond the tolerance rejected with their code, not stored (\(rejectedOK) of \(expectReject))", rejectedOK == expectReject))
        }
        checks += extraChecks
        let pass = checks.allSatisfy(\.1)
        var lines = [
            "chaos \(scenario) (seed \(o.seed)): \(pass ? "PASS" : "FAIL")",
            "  distinct events: sent \(Self.n(sentN)), acknowledged \(Self.n(acked)), stored \(Self.n(stored)), rolled up \(Self.n(rolledUp)), billed \(Self.n(billed))"
                + (expectReject > 0 ? " (\(Self.n(expectReject)) sent beyond the tolerance, rejected as they must be)" : ""),
            "  deliveries \(Self.n(result.deliveries)) in \(Self.n(result.requests)) requests; retried requests \(Self.n(result.retries)); answered duplicate \(Self.n(result.duplicates)); engine writes \(Self.n(try b.int("writes"))) for \(Self.n(billedHours)) hours",
        ]
        lines += faults.map { "  fault: " + $0 }
        lines += checks.map { "  [\($0.1 ? "ok" : "FAIL")] " + $0.0 }
        return ChaosVerdict(pass: pass, lines: lines)
    }

    public func tearDown() {
        service?.stop()
        mock?.stop()
    }

    // MARK: helpers

    package static func n(_ v: Int64) -> String { n(Int(v)) }
    package static func n(_ v: Int) -> String {
        let f = NumberFormatter()
        f.numberStyle = .decimal
        f.groupingSeparator = ","
        f.usesGroupingSeparator = true
        return f.string(from: NSNumber(value: v)) ?? String(v)
    }

    /// A free port below the kernel's ephemeral range (ip_local_port_range), so that a client
    /// reconnecting while the service is down can never be given that port as its own source port
    /// (a TCP self-connect would then hold it).
    package static func freePort() throws -> Int {
        let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))?
            .split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) } ?? [32768, 60999]
        let upper = max((range.first ?? 32768) - 1, 11_000)
        for _ in 0..<200 {
            let port = Int.random(in: 10_000...upper)
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            close(s)
            if rc == 0 { return port }
        }
        throw Failure(description: "no free port below \(upper)")
    }
}

public struct ChaosVerdict: Sendable {
    public let pass: Bool
    public let lines: [String]
    public init(pass: Bool, lines: [String]) { (self.pass, self.lines) = (pass, lines) }
}

public struct ChaosEvent: Sendable {
    public var customer: String
    public var meter: String
    public var key: String
    /// Unix microseconds.
    public var at: Int64
    public var value: String
    /// The error code the service must answer (events beyond the tolerance).
    public var expectReject: String?

    public init(customer: String, meter: String, key: String, at: Int64, value: String, expectReject: String? = nil) {
        (self.customer, self.meter, self.key, self.at, self.value, self.expectReject) = (customer, meter, key, at, value, expectReject)
    }

    package var json: String {
        #"{"customer":"\#(customer)","meter":"\#(meter)","idempotency_key":"\#(key)","occurred_at":"\#(RFC3339Timestamp(epochMicroseconds: at).iso8601)","value":"\#(value)"}"#
    }
}
