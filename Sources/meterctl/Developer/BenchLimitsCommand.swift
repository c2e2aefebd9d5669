import ArgumentParser
import Foundation
import Logging
import Synchronization
import PGClient
import MeterWire
import MeterCore
import MeterAPI
import MeterDevKit

/// `meterctl bench limits`: the limit check's latency under ingest, beside bare round trips.
struct BenchLimits: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "limits",
        abstract: "GET /v1/customers/{c}/limits/{m} at --checks-per-second while --rate events/s are ingested (goal: p99 ≤ 5 ms at 1,000 checks/s).",
        discussion: """
            Runs in a database of its own (meter_bench_limits, dropped and recreated in the same cluster) with the \
            service in this process (its rollup loop included). Setup (not timed): --bench-customers customers on one \
            plan limiting a count meter and a sum meter with a model dimension (a limit on the whole meter and one on a \
            model), --seed-events events of this month per customer, rolled up. Then, for --duration-seconds, \
            --rate events/s of HTTP ingest on the same customers and, in the same run and under the same load, four \
            paced probes at --checks-per-second each, one after the other: the limit check over HTTP (a random \
            customer, meter and model), the same checks as SQL alone (meter.limit_check on its own libpq connection: \
            where the time goes), a bare `select 1` round trip (the database floor), and GET /healthz (the HTTP \
            floor). Prints p50, p99 and max of each and the ratios; then checks the period totals against the hours.
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var service: ServiceOptions
    @Option(name: .customLong("bench-customers"), help: "Customers. Default: 200") var benchCustomers: Int = 200
    @Option(name: .customLong("seed-events"), help: "Events of this month per customer before the run. Default: 500") var seedEvents: Int = 500
    @Option(help: "Ingest rate during the probes, events/s. Default: 2000") var rate: Int = 2_000
    @Option(name: .customLong("checks-per-second"), help: "Probe rate. Default: 1000") var checksPerSecond: Int = 1_000
    @Option(name: .customLong("duration-seconds"), help: "Length of each probe phase. Default: 15") var duration: Double = 15

    func validate() throws {
        if benchCustomers < 1 || seedEvents < 0 || rate < 0 || checksPerSecond < 1 || duration <= 0 {
            throw ValidationError("--bench-customers, --checks-per-second and --duration-seconds must be positive; --seed-events and --rate not negative")
        }
    }

    func run() async throws {
        let logger = global.bootstrapLogging(defaultLevel: .warning)
        let sqlDir = try global.target.locateSQL()
        let main = try global.conninfo(migrate: true)
        let admin = try PGConnection(conninfo: main)
        try admin.execute("drop database if exists meter_bench_limits with (force)")
        try admin.execute("create database meter_bench_limits")
        admin.close()
        let conninfo = databaseConninfo(main, database: "meter_bench_limits")
        let token = APIKeys.generate()
        try {
            let c = try PGConnection(conninfo: conninfo, statementTimeout: nil)
            defer { c.close() }
            _ = try c.execute("set client_min_messages = warning")
            try Migrator(sqlDirectory: sqlDir, logger: logger).migrate(c)
            try c.execute("select meter.meter_upsert('bench_calls', 'count'), meter.meter_upsert('bench_tokens', 'sum', null, null, null, null, array['model'])")
            try c.execute("select meter.plan_upsert('bench', 'usd')")
            try c.execute("select meter.plan_limit_set('bench', 'bench_calls', 1000000)")
            try c.execute("select meter.plan_limit_set('bench', 'bench_tokens', 50000000)")
            try c.execute(#"select meter.plan_limit_set('bench', 'bench_tokens', 20000000, '{"model": "m1"}')"#)
            try c.execute("insert into meter.customers (external_id) select 'bench-l' || g from generate_series(0, $1::int - 1) g", [benchCustomers])
            try c.execute("""
                insert into meter.customer_plans (customer_id, effective_from, plan_id)
                select c.id, to_char(now() at time zone 'UTC', 'YYYY-MM'), (select id from meter.plans where code = 'bench')
                from meter.customers c
                """)
            // This month's history (before the current hour, so the rollup has hours to read).
            try c.execute("""
                insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, value, properties)
                select cu.id, m.id, 'seed-' || m.code || '-' || g,
                       date_trunc('month', now(), 'UTC') + (now() - date_trunc('month', now(), 'UTC')) * (g::float8 / ($1::int + 1)),
                       (g % 90) + 1, jsonb_build_object('model', 'm' || (g % 5))
                from meter.customers cu cross join meter.meters m cross join generate_series(1, $1::int) g
                """, [seedEvents])
            _ = try Rollup.drain(c, maxEvents: 1_000_000)
            try APIKeys.register(c, name: "bench-limits", token: token)
        }()
        say("setup: \(benchCustomers) customers, \(seedEvents) events of this month per customer and meter, rolled up")

        var config = service.configuration(sqlDir: sqlDir)
        config.port = 0
        config.expectedLedger = try MeterServer.expectedLedger(conninfo: conninfo, sqlDir: sqlDir)
        let server = try await MeterServer.start(config: config, conninfo: conninfo, poolSize: service.poolSize ?? 16, logger: logger)
        defer { Task { await server.stop() } }
        let port = server.port

        let load = LoadRunner(port: port, token: token, customers: benchCustomers, rate: rate)
        let loadTask = Task { try await load.run() }
        try await Task.sleep(for: .seconds(1))  // the load settles
        say(String(format: "under %d events/s of HTTP ingest: %d limit checks/s for %.0f s", rate, checksPerSecond, duration))
        let checks = try await paced(name: "check", port: port, conninfo: conninfo, kind: .check(token: token))
        say(String(format: "the same checks in SQL alone: %d meter.limit_check() round trips/s for %.0f s (same load)", checksPerSecond, duration))
        let sqlChecks = try await paced(name: "checksql", port: port, conninfo: conninfo, kind: .checkSQL)
        say(String(format: "baseline: %d select 1 round trips/s for %.0f s (same load)", checksPerSecond, duration))
        let selects = try await paced(name: "select1", port: port, conninfo: conninfo, kind: .select1)
        say(String(format: "baseline: %d GET /healthz/s for %.0f s (same load)", checksPerSecond, duration))
        let healthz = try await paced(name: "healthz", port: port, conninfo: conninfo, kind: .healthz)
        load.stop()
        let ingested = try await loadTask.value
        await server.stop()

        func line(_ what: String, _ r: Probe) -> String {
            String(format: "%@ %d in %.1f s (%.0f/s), %d failed: p50 %.2f ms, p99 %.2f ms, max %.2f ms",
                   what, r.latencies.count, r.seconds, Double(r.latencies.count) / r.seconds, r.failures,
                   r.p(0.5) * 1000, r.p(0.99) * 1000, r.p(1) * 1000)
        }
        print(line("check:     ", checks))
        print(line("check SQL: ", sqlChecks))
        print(line("select 1:  ", selects))
        print(line("healthz:   ", healthz))
        print(String(format: "ingest:    %.0f events/s achieved during the probes (asked %d)", ingested, rate))
        print(String(format: "ratio:     check p99 / select 1 p99 = %.1f; check p99 / healthz p99 = %.1f",
                     checks.p(0.99) / selects.p(0.99), checks.p(0.99) / healthz.p(0.99)))
        print(checks.p(0.99) <= 0.005 ? "goal:      p99 <= 5 ms: met" : String(format: "goal:      p99 <= 5 ms: NOT met (%.2f ms)", checks.p(0.99) * 1000))
        // What the checks read (the period totals) still agrees with the hours after the run.
        let differing = try {
            let c = try PGConnection(conninfo: conninfo, statementTimeout: nil)
            defer { c.close() }
            return try Rollup.periodVerify(c).count
        }()
        print("verify:    \(differing) billing period total(s) differ from their hours (meter.rollup_period_verify, meter.rollup_ledger_period_verify)")
        if differing != 0 { throw ExitCode(1) }
    }

    enum Kind: Sendable { case check(token: String), checkSQL, select1, healthz }

    struct Probe: Sendable {
        var latencies: [Double]
        var seconds: Double
        var failures: Int
        func p(_ q: Double) -> Double {
            let s = latencies.sorted()
            return s.isEmpty ? .nan : s[min(s.count - 1, Int(Double(s.count) * q))]
        }
    }

    /// Probes on 4 threads, each at a quarter of --checks-per-second on its own schedule.
    func paced(name: String, port: Int, conninfo: String, kind: Kind) async throws -> Probe {
        let threads = 4
        let interval = Double(threads) / Double(checksPerSecond)
        let collected = ProbeSink()
        let (customers, duration) = (benchCustomers, duration)
        let start = Date()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<threads {
                group.addTask {
                    try await onDedicatedThread("\(name)-\(t)") {
                        let client = LoadClient(host: "127.0.0.1", port: port)
                        let conn = try PGConnection(conninfo: conninfo)
                        defer { conn.close() }
                        var mine: [Double] = [], failed = 0, k = 0
                        let t0 = Date().addingTimeInterval(Double(t) * interval / Double(threads))
                        while true {
                            let due = t0.addingTimeInterval(Double(k) * interval)
                            if due.timeIntervalSince(start) > duration { break }
                            let wait = due.timeIntervalSinceNow
                            if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
                            k += 1
                            let began = DispatchTime.now().uptimeNanoseconds
                            var ok = true
                            switch kind {
                            case .check(let token):
                                let customer = "bench-l\((k * 7919 + t) % customers)"
                                let path = k % 2 == 0 ? "/v1/customers/\(customer)/limits/bench_calls"
                                    : "/v1/customers/\(customer)/limits/bench_tokens?quantity=100&properties%5Bmodel%5D=m\(k % 5)"
                                let r = try client.request("GET", path, headers: [("Authorization", "Bearer \(token)")])
                                ok = r.status == 200
                            case .checkSQL:
                                let customer = "bench-l\((k * 7919 + t) % customers)"
                                _ = try k % 2 == 0
                                    ? conn.executePrepared("select * from meter.limit_check($1, 'bench_calls')", [customer])
                                    : conn.executePrepared("select * from meter.limit_check($1, 'bench_tokens', $2::jsonb, 100)",
                                                           [customer, #"{"model": "m\#(k % 5)"}"#])
                            case .select1:
                                _ = try conn.executePrepared("select 1 as one", []).single()
                            case .healthz:
                                ok = try client.request("GET", "/healthz", headers: []).status == 200
                            }
                            mine.append(Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9)
                            if !ok { failed += 1 }
                        }
                        collected.add(mine, failed: failed)
                    }
                }
            }
            try await group.waitForAll()
        }
        let c = collected.values
        return Probe(latencies: c.latencies, seconds: Date().timeIntervalSince(start), failures: c.failures)
    }
}

/// Latencies and failures collected from the probe threads.
final class ProbeSink: Sendable {
    private let state = Mutex<(latencies: [Double], failures: Int)>(([], 0))
    func add(_ latencies: [Double], failed: Int) { state.withLock { $0.latencies += latencies; $0.failures += failed } }
    var values: (latencies: [Double], failures: Int) { state.withLock { $0 } }
}

/// HTTP ingest at a steady rate on the bench customers, until stopped; returns events/s achieved.
final class LoadRunner: Sendable {
    let port: Int, token: String, customers: Int, rate: Int
    private let stopped = Atomic<Bool>(false)
    private let sent = Mutex(0)
    init(port: Int, token: String, customers: Int, rate: Int) {
        self.port = port; self.token = token; self.customers = customers; self.rate = rate
    }
    func stop() { stopped.store(true, ordering: .relaxed) }

    func run() async throws -> Double {
        guard rate > 0 else { return 0 }
        let threads = 4, perTick = max(1, rate / (threads * 10))
        let runID = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let start = Date()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<threads {
                group.addTask { [self] in
                    try await onDedicatedThread("limits-load-\(t)") {
                        let client = LoadClient(host: "127.0.0.1", port: self.port)
                        let headers = [("Authorization", "Bearer \(self.token)"), ("Content-Type", "application/json")]
                        var tick = 0, seq = 0
                        let t0 = Date()
                        while !self.stopped.load(ordering: .relaxed) {
                            let wait = t0.addingTimeInterval(Double(tick) * 0.1 + Double(t) * 0.025).timeIntervalSinceNow
                            if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
                            tick += 1
                            let at = RFC3339Timestamp(epochMicroseconds: Int64(Date().timeIntervalSince1970 * 1_000_000)).iso8601
                            var items: [String] = []
                            for _ in 0..<perTick {
                                seq += 1
                                let meter = seq % 2 == 0 ? "bench_calls" : "bench_tokens"
                                items.append(#"{"customer":"bench-l\#((seq * 13 + t) % self.customers)","meter":"\#(meter)","idempotency_key":"load-\#(runID)-\#(t)-\#(seq)","occurred_at":"\#(at)","value":"\#(seq % 90 + 1)","properties":{"model":"m\#(seq % 5)"}}"#)
                            }
                            let r = try client.request("POST", "/v1/events", headers: headers, body: "[" + items.joined(separator: ",") + "]")
                            if r.status == 200 { self.sent.withLock { $0 += perTick } }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        return Double(self.sent.withLock { $0 }) / Date().timeIntervalSince(start)
    }
}

private func say(_ s: String) { FileHandle.standardError.write((s + "\n").data(using: .utf8)!) }
