import ArgumentParser
import Foundation
import Synchronization
import Logging
import PGClient
import MeterWire
import MeterCore
import MeterAPI
import MeterDevKit

/// `meterctl bench rollup`: how fast the rollup folds a backlog, and how fresh it keeps the
/// rollups under steady ingest. Each figure comes with a baseline measured in the same run.
struct BenchRollup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollup",
        abstract: "Rollup throughput on a backlog, and event-to-rollup freshness under ingest load.",
        discussion: """
            Phase 1 (backlog): COPYs --events new events (three meters: sum, count, unique_count; with \
            --dimensions 1 or 2 the sum and count meters are grouped by model, and region, and their \
            events carry 5 models and 3 regions; with --gauge the third meter is a time_weighted_sum \
            gauge instead of unique_count) in \
            --transactions transactions, spread over --customers customers and the last --hours hours, \
            then drains them with meter.rollup_run(--max-events) and prints events folded per second. \
            Baseline: the same GROUP BY (with the dimensions' keys) as a read-only query over the same rows (what Postgres needs just \
            to read and aggregate them, without writing rollups or moving a watermark). Then \
            meter.rollup_verify checks the result.
            Phase 2 (freshness): starts the service in this process (its rollup loop included), sends \
            --rate events/s over HTTP for --duration-seconds, and meanwhile probes: a probe sends one \
            event, waits for its 2xx (the commit), then polls rollup_hourly until the event is counted. \
            Baseline: the same probes with no other load.
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var service: ServiceOptions
    @Option(help: "Backlog size. Default: 5000000") var events: Int = 5_000_000
    @Option(help: "Transactions the backlog is written in. Default: 50") var transactions: Int = 50
    @Option(name: .customLong("bench-customers"), help: "Customers. Default: 1000") var benchCustomers: Int = 1000
    @Option(help: "Hours the backlog spreads over. Default: 24") var hours: Int = 24
    @Option(name: .customLong("max-events"), help: "max_events per rollup run. Default: 1000000") var maxEvents: Int = Rollup.defaultMaxEvents
    @Option(help: "Ingest rate for the freshness phase, events/s. Default: 10000") var rate: Int = 10_000
    @Option(name: .customLong("duration-seconds"), help: "Length of the freshness phase. Default: 30") var duration: Double = 30
    @Option(help: "Dimensions of the sum and count meters: 0, 1 (model) or 2 (model, region). Default: 0") var dimensions: Int = 0
    @Flag(help: "The third meter is a time_weighted_sum gauge instead of unique_count.") var gauge = false
    @Option(help: "Rollup shards (meter.rollup_shards_set) for the run; the backlog is drained by one thread per shard at once. Default: 1") var shards: Int = 1
    @Flag(name: .customLong("skip-backlog"), help: "Only the freshness phase.") var skipBacklog = false
    @Flag(name: .customLong("skip-freshness"), help: "Only the backlog phase.") var skipFreshness = false

    func validate() throws {
        guard (0...2).contains(dimensions) else { throw ValidationError("--dimensions must be 0, 1 or 2") }
        guard (1...64).contains(shards) else { throw ValidationError("--shards must be between 1 and 64") }
        if events < 1 || transactions < 1 || benchCustomers < 1 || hours < 1 || maxEvents < 1 || rate < 1 || duration <= 0 {
            throw ValidationError("--events, --transactions, --bench-customers, --hours, --max-events, --rate and --duration-seconds must be positive")
        }
    }

    func run() async throws {
        let logger = global.bootstrapLogging(defaultLevel: .warning)
        let sqlDir = try global.target.locateSQL()
        let conninfo = try global.conninfo(migrate: true)
        let customers = (0..<benchCustomers).map { "bench-c\($0)" } + (0..<4).map { "bench-probe\($0)" }
        try {
            let conn = try PGConnection(conninfo: conninfo)
            defer { conn.close() }
            try SeedFile(customers: customers.map { .init(externalID: $0, name: nil, timezone: "UTC") },
                         meters: [.init(code: "bench_units", aggregation: "sum", uniqueProperty: nil, name: "bench", unit: nil),
                                  .init(code: "bench_calls", aggregation: "count", uniqueProperty: nil, name: "bench", unit: nil),
                                  .init(code: "bench_users", aggregation: "unique_count", uniqueProperty: "user", name: "bench", unit: nil)])
                .apply(conn)
            // The meters of this run's shape (dimensions and the gauge are fixed per meter, so each
            // shape has meters of its own).
            let dims = ["model", "region"].prefix(dimensions).map { "\"\($0)\"" }.joined(separator: ",")
            for (code, agg) in [(meterCodes[0], "sum"), (meterCodes[1], "count")] where dimensions > 0 {
                try conn.execute("select meter.meter_upsert($1, $2, null, 'bench', null, null, $3::text[])", [code, agg, "{\(dims)}"])
            }
            if gauge { try conn.execute("select meter.meter_upsert($1, 'time_weighted_sum', null, 'bench')", [meterCodes[2]]) }
        }()
        var lines: [String] = []
        if !skipBacklog {
            lines += try await backlogPhase(conninfo: conninfo)
        }
        if !skipFreshness {
            lines += try await freshnessPhase(conninfo: conninfo, sqlDir: sqlDir, logger: logger)
        }
        print("\n== bench rollup results ==")
        for l in lines { print(l) }
    }

    // MARK: phase 1

    /// The backlog's three meters for this run's shape.
    var meterCodes: [String] {
        let suffix = dimensions > 0 ? "_d\(dimensions)" : ""
        return ["bench_units" + suffix, "bench_calls" + suffix, gauge ? "bench_gb_tw" : "bench_users"]
    }

    func backlogPhase(conninfo: String) async throws -> [String] {
        let (n, txns, nCustomers, nHours, maxEvents) = (events, transactions, benchCustomers, hours, self.maxEvents)
        let (codes, nDims, gauge, nShards) = (meterCodes, dimensions, self.gauge, shards)
        return try await onDedicatedThread("bench-rollup") {
            let conn = try PGConnection(conninfo: conninfo, statementTimeout: nil)
            defer { conn.close() }
            let before = try Rollup.drain(conn, maxEvents: maxEvents)
            if before.events > 0 { say("drained \(before.events) events already pending") }
            if try Rollup.shardCount(conn) != nShards {
                say("rollup shards: \(nShards) (meter.rollup_shards_set)")
                try conn.execute("select meter.rollup_shards_set($1)", [nShards])
            }
            let ids = try conn.execute("""
                select (select min(id) from meter.customers where external_id like 'bench-c%') as first_customer,
                       (select id from meter.meters where code = $1) as units,
                       (select id from meter.meters where code = $2) as calls,
                       (select id from meter.meters where code = $3) as users,
                       extract(epoch from date_trunc('hour', now()))::bigint as hour0,
                       (select coalesce(max(id), 0) from meter.events) as max_id
                """, [codes[0], codes[1], codes[2]]).single()
            let firstCustomer = try ids.int("first_customer")
            let meters = [try ids.int("units"), try ids.int("calls"), try ids.int("users")]
            let hour0 = try ids.int("hour0"), idBefore = try ids.int("max_id")
            let runID = String(UInt32.random(in: 0...UInt32.max), radix: 36)

            say("writing a backlog of \(n) events in \(txns) transactions (COPY)")
            let copyStart = DispatchTime.now().uptimeNanoseconds
            let perTxn = (n + txns - 1) / txns
            var written = 0
            for t in 0..<txns {
                let lo = t * perTxn, hi = min(n, lo + perTxn)
                if lo >= hi { break }
                let chunks = stride(from: lo, to: hi, by: 10_000).lazy.map { start -> String in
                    var s = ""
                    s.reserveCapacity(1_200_000)
                    for i in start..<min(hi, start + 10_000) {
                        let m = i % 3
                        // spread over the hours, deterministic, minute and second from i
                        let at = hour0 - Int64((i / 7) % nHours) * 3600 - 3600 + Int64(i % 3600)
                        let ts = RFC3339Timestamp(epochMicroseconds: at * 1_000_000).utcString
                        let props = m == 2 ? (gauge ? "{}" : #"{"user": "u\#(i % 5000)"}"#)
                            : nDims == 0 ? "{}" : #"{"model": "m\#(i % 5)", "region": "r\#(i % 3)"}"#
                        s += "\(firstCustomer + Int64(i % nCustomers))\t\(meters[m])\trb\(runID)-\(i)\t\(ts)\t\(i % 1000).25\t\(props)\n"
                    }
                    return s
                }
                written += try conn.copyIn(
                    "copy meter.events (customer_id, meter_id, idempotency_key, occurred_at, value, properties) from stdin",
                    chunks: chunks)
                say(String(format: "  [%5.1fs] %d of %d events written", seconds(since: copyStart), written, n))
            }
            let copySeconds = seconds(since: copyStart)
            try conn.execute("analyze meter.events")

            say("rolling up the backlog: meter.rollup_run(\(maxEvents)\(nShards > 1 ? ", shard)" : ")") until caught up"
                + (nShards > 1 ? ", \(nShards) shards at once" : ""))
            let rollStart = DispatchTime.now().uptimeNanoseconds
            let drained = nShards == 1
                ? try Rollup.drain(conn, maxEvents: maxEvents) { r in
                    say(String(format: "  [%5.1fs] run: %d events, %d hours, %.0f ms", seconds(since: rollStart),
                               r.eventsFolded, r.hoursTouched, r.durationMs))
                }
                : try Rollup.drainParallel(conninfo: conninfo, maxEvents: maxEvents) { shard, r in
                    say(String(format: "  [%5.1fs] shard %d run: %d events, %d hours, %.0f ms", seconds(since: rollStart),
                               shard, r.eventsFolded, r.hoursTouched, r.durationMs))
                }
            let rollSeconds = seconds(since: rollStart)
            let rollRate = Double(drained.events) / rollSeconds

            say("baseline: the same aggregation as a read-only query" + (nDims > 0 ? ", with the dimensions' keys" : ""))
            try conn.execute("set max_parallel_workers_per_gather = 0")  // a rollup run is one process too
            try conn.execute("set work_mem = '256MB'")
            let baseStart = DispatchTime.now().uptimeNanoseconds
            let groups = try conn.execute("""
                select count(*) as n from (
                    select customer_id, meter_id, date_trunc('hour', occurred_at, 'UTC'),
                           \(nDims > 0 ? "properties ->> 'model', " : "")\(nDims > 1 ? "properties ->> 'region', " : "")
                           count(*), sum(value), max(value)
                    from meter.events where id > $1 group by 1, 2, 3\(nDims > 0 ? ", 4" : "")\(nDims > 1 ? ", 5" : "")) g
                """, [idBefore]).single().int("n")
            let baseSeconds = seconds(since: baseStart)
            let baseRate = Double(n) / baseSeconds

            say("verifying: meter.rollup_verify over the backlog's hours")
            let verifyStart = DispatchTime.now().uptimeNanoseconds
            let from = RFC3339Timestamp(epochMicroseconds: (hour0 - Int64(nHours + 2) * 3600) * 1_000_000).utcString
            let to = RFC3339Timestamp(epochMicroseconds: (hour0 + 3600) * 1_000_000).utcString
            let diffs = try Rollup.verify(conn, from: from, to: to)
            let verifySeconds = seconds(since: verifyStart)
            if !diffs.isEmpty {
                for d in diffs.prefix(10) { say("  DIFF \(d)") }
                throw ExitCode(1)
            }
            // ... and the billing period totals the rollup keeps beside the hours
            let periodDiffs = try Rollup.periodVerify(conn).count
            if periodDiffs != 0 {
                say("  \(periodDiffs) billing period total(s) differ from their hours (meter.rollup_period_verify, meter.rollup_ledger_period_verify)")
                throw ExitCode(1)
            }
            return [
                "backlog:   \(n) events over \(nCustomers) customers x 3 meters (\(codes.joined(separator: ", ")); dimensions \(nDims)\(gauge ? ", a time-weighted gauge" : "")) x \(nHours) hours (\(groups) groups), written in \(txns) transactions by COPY in \(fmt(copySeconds)) s",
                "rollup:    \(drained.events) events folded in \(drained.runs) run(s) of max_events \(maxEvents)\(nShards > 1 ? " (\(nShards) shards at once)" : "") in \(fmt(rollSeconds)) s = \(fmt0(rollRate)) events/s",
                "baseline:  read-only GROUP BY of the same rows (1 process) in \(fmt(baseSeconds)) s = \(fmt0(baseRate)) events/s",
                "ratio:     rollup / baseline = \(fmt(rollRate / baseRate))",
                "verify:    rollup_verify found 0 differing hours in \(fmt(verifySeconds)) s; rollup_period_verify and rollup_ledger_period_verify 0 differing period rows",
            ]
        }
    }

    // MARK: phase 2

    func freshnessPhase(conninfo: String, sqlDir: String, logger: Logger) async throws -> [String] {
        let token = APIKeys.generate()
        try {
            let conn = try PGConnection(conninfo: conninfo)
            defer { conn.close() }
            try APIKeys.register(conn, name: "bench-rollup", token: token)
            try Rollup.drain(conn)
        }()
        var config = service.configuration(sqlDir: sqlDir)
        config.port = 0
        config.expectedLedger = try MeterServer.expectedLedger(conninfo: conninfo, sqlDir: sqlDir)
        if config.rollup == nil { throw ValidationError("the freshness phase needs the rollup loop: drop --no-rollup") }
        let server = try await MeterServer.start(config: config, conninfo: conninfo, poolSize: service.pool, logger: logger)
        defer { Task { await server.stop() } }
        let port = server.port

        say("freshness baseline: probes with no other load (5 s)")
        let idle = try await probe(port: port, token: token, conninfo: conninfo, seconds: 5, load: nil)
        say(String(format: "freshness under load: %d events/s for %.0f s, with probes", rate, duration))
        let loaded = try await probe(port: port, token: token, conninfo: conninfo, seconds: duration, load: rate)
        await server.stop()

        func p(_ xs: [Double], _ q: Double) -> Double { xs.isEmpty ? .nan : xs[min(xs.count - 1, Int(Double(xs.count) * q))] }
        let a = idle.latencies.sorted(), b = loaded.latencies.sorted()
        return [
            "freshness: commit (2xx) to counted in rollup_hourly, measured by \(b.count) probes under \(fmt0(loaded.achievedRate)) events/s of HTTP ingest (\(loaded.failures) failed requests)",
            "           p50 \(fmt(p(b, 0.5) * 1000)) ms, p95 \(fmt(p(b, 0.95) * 1000)) ms, p99 \(fmt(p(b, 0.99) * 1000)) ms, max \(fmt(p(b, 1) * 1000)) ms",
            "baseline:  the same probes without load (\(a.count) probes): p50 \(fmt(p(a, 0.5) * 1000)) ms, p99 \(fmt(p(a, 0.99) * 1000)) ms",
            "ratio:     p99 under load / p99 idle = \(fmt(p(b, 0.99) / p(a, 0.99)))",
        ]
    }

    struct ProbeResult: Sendable {
        var latencies: [Double]
        var achievedRate: Double
        var failures: Int
    }

    /// Four probe threads (one probe customer each) and, when `load` is set, paced load threads.
    func probe(port: Int, token: String, conninfo: String, seconds: Double, load: Int?) async throws -> ProbeResult {
        let deadline = Date().addingTimeInterval(seconds)
        let latencies = LockedArray<Double>()
        let sent = BenchTally()
        let runID = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let nCustomers = benchCustomers
        let start = DispatchTime.now().uptimeNanoseconds
        try await withThrowingTaskGroup(of: Void.self) { group in
            for pi in 0..<4 {
                group.addTask {
                    try await onDedicatedThread("probe-\(pi)") {
                        let client = LoadClient(host: "127.0.0.1", port: port)
                        let conn = try PGConnection(conninfo: conninfo)
                        defer { conn.close() }
                        let customer = "bench-probe\(pi)"
                        let countSQL = """
                            select coalesce(sum(r.event_count), 0) as n from meter.rollup_hourly r
                            where r.customer_id = (select id from meter.customers where external_id = $1)
                              and r.meter_id = (select id from meter.meters where code = 'bench_calls')
                            """
                        var seen = try conn.executePrepared(countSQL, [customer]).single().int("n")
                        var k = 0
                        while Date() < deadline {
                            k += 1
                            let at = RFC3339Timestamp(epochMicroseconds: Int64(Date().timeIntervalSince1970 * 1_000_000)).iso8601
                            let body = #"{"customer":"\#(customer)","meter":"bench_calls","idempotency_key":"p\#(runID)-\#(k)","occurred_at":"\#(at)"}"#
                            let r = try client.request("POST", "/v1/events", headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")], body: body)
                            guard r.status == 201 else { continue }
                            let acked = DispatchTime.now().uptimeNanoseconds
                            while true {
                                let n = try conn.executePrepared(countSQL, [customer]).single().int("n")
                                if n > seen { seen = n; break }
                                if Date() > deadline.addingTimeInterval(30) { throw ValidationError("probe event never rolled up") }
                                usleep(1000)
                            }
                            latencies.append(Double(DispatchTime.now().uptimeNanoseconds - acked) / 1e9)
                            usleep(UInt32.random(in: 20_000...80_000))
                        }
                    }
                }
            }
            if let load {
                // 10 threads, each sending batches of rate/100 events 10 times a second, on a schedule.
                let threads = 10, perTick = max(1, load / 100)
                for t in 0..<threads {
                    group.addTask {
                        try await onDedicatedThread("load-\(t)") {
                            let client = LoadClient(host: "127.0.0.1", port: port)
                            let headers = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
                            var tick = 0, seq = 0, ok = 0, failed = 0
                            let t0 = Date()
                            while Date() < deadline {
                                let due = t0.addingTimeInterval(Double(tick) * 0.1 + Double(t) * 0.01)
                                let wait = due.timeIntervalSinceNow
                                if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
                                tick += 1
                                let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
                                var items: [String] = []
                                for _ in 0..<perTick {
                                    seq += 1
                                    let at = RFC3339Timestamp(epochMicroseconds: now - Int64(seq % 600) * 1_000_000).iso8601
                                    let meter = ["bench_units", "bench_calls", "bench_users"][seq % 3]
                                    items.append(#"{"customer":"bench-c\#((seq * 7 + t) % nCustomers)","meter":"\#(meter)","idempotency_key":"l\#(runID)-\#(t)-\#(seq)","occurred_at":"\#(at)","value":"\#(seq % 50).5","properties":{"user":"u\#(seq % 997)"}}"#)
                                }
                                let r = try client.request("POST", "/v1/events", headers: headers, body: "[" + items.joined(separator: ",") + "]")
                                if r.status == 200 { ok += perTick } else { failed += 1 }
                            }
                            sent.add(events: ok, latencies: [], failures: failed)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return ProbeResult(latencies: latencies.values, achievedRate: Double(sent.events) / elapsed, failures: sent.failures)
    }
}

final class LockedArray<T: Sendable>: Sendable {
    private let items = Mutex<[T]>([])
    func append(_ x: T) { items.withLock { $0.append(x) } }
    var values: [T] { items.withLock { $0 } }
}

private func say(_ s: String) { FileHandle.standardError.write((s + "\n").data(using: .utf8)!) }
private func seconds(since t0: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 }
private func fmt(_ x: Double) -> String { String(format: "%.2f", x) }
private func fmt0(_ x: Double) -> String { String(format: "%.0f", x) }
