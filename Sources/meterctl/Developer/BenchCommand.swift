import ArgumentParser
import Foundation
import Synchronization
import Logging
import PGClient
import MeterWire
import MeterCore
import MeterAPI
import MeterDevKit

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks that print figures and a same-run baseline.",
                                                    subcommands: [BenchIngest.self, BenchRollup.self, BenchSync.self, BenchClose.self, BenchLimits.self])
}

/// Thread-safe accumulator for the load generator's threads.
final class BenchTally: Sendable {
    private struct Totals { var events = 0, requests = 0, failures = 0; var latenciesNs: [UInt64] = [] }
    private let totals = Mutex(Totals())
    func add(events e: Int, latencies: [UInt64], failures f: Int) {
        totals.withLock { t in
            t.events += e; t.requests += latencies.count; t.failures += f
            t.latenciesNs.append(contentsOf: latencies)
        }
    }
    var snapshot: (Int, Int) { totals.withLock { ($0.events, $0.requests) } }
    var events: Int { totals.withLock { $0.events } }
    var requests: Int { totals.withLock { $0.requests } }
    var failures: Int { totals.withLock { $0.failures } }
    var latenciesNs: [UInt64] { totals.withLock { $0.latenciesNs } }
}

struct BenchIngest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Drive POST /v1/events over loopback HTTP; compare with a raw COPY of the same events.",
        discussion: """
            Starts the service in this process (embedded Postgres unless DATABASE_URL) unless --url is \
            given, creates bench customers and a meter, then runs --concurrency client threads sending \
            batches of --events-per-request new events (1 = single-event requests) for --duration-seconds or \
            --events events. Then it COPYs the same number of new events into meter.events and prints \
            events/s, latency p50/p99/max and the ratio HTTP/COPY. With single events it also runs, \
            same process, GET /healthz (the service's HTTP ceiling, no database) and a one-row INSERT \
            per transaction (the commit ceiling) with as many clients, and prints both ratios.
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var service: ServiceOptions
    @Option(help: "Client threads. Default: 16") var concurrency: Int = 16
    @Option(name: .customLong("events-per-request"), help: "Events per request; 1 sends single-event bodies. Default: 1000")
    var eventsPerRequest: Int = 1000
    @Option(name: .customLong("duration-seconds"), help: "How long to run. Default: 10") var duration: Double = 10
    @Option(help: "Stop after this many events (optional).") var events: Int?
    @Option(name: .customLong("bench-customers"), help: "Customers to spread events over. Default: 100")
    var benchCustomers: Int = 100
    @Option(help: "Drive an already running service at this base URL (http://127.0.0.1:8080) instead.")
    var url: String?
    @Option(name: .customLong("api-key"), help: "API key for --url.") var apiKey: String?

    func run() async throws {
        let logger = global.bootstrapLogging(defaultLevel: .warning)
        let sqlDir = try global.target.locateSQL()
        let conninfo = try global.conninfo(migrate: true)
        let runID = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let token = apiKey ?? APIKeys.generate()
        let customers = (0..<benchCustomers).map { "bench-c\($0)" }
        try {
            let conn = try PGConnection(conninfo: conninfo)
            defer { conn.close() }
            try SeedFile(customers: customers.map { .init(externalID: $0, name: nil, timezone: "UTC") },
                         meters: [.init(code: "bench_units", aggregation: "sum", uniqueProperty: nil, name: "bench", unit: nil)])
                .apply(conn)
            if apiKey == nil { try APIKeys.register(conn, name: "bench-\(runID)", token: token) }
        }()

        var host = "127.0.0.1", port = 0
        var server: (@Sendable () async -> Void)?
        if let url, let u = URL(string: url) {
            host = u.host ?? host
            port = u.port ?? 80
        } else {
            var config = service.configuration(sqlDir: sqlDir)
            config.port = service.port ?? 0
            config.limits.maxBatchEvents = max(config.limits.maxBatchEvents, eventsPerRequest)
            config.expectedLedger = try MeterServer.expectedLedger(conninfo: conninfo, sqlDir: sqlDir)
            let started = try await MeterServer.start(config: config, conninfo: conninfo, poolSize: service.pool, logger: logger)
            port = started.port
            server = started.stop
        }
        let mode = eventsPerRequest == 1 ? "single-event requests" : "batches of \(eventsPerRequest)"
        print("bench ingest: \(mode), concurrency \(concurrency), duration \(duration)s\(events.map { ", at most \($0) events" } ?? ""), run \(runID)")

        // Phase 1: HTTP.
        let tally = BenchTally()
        let deadline = Date().addingTimeInterval(duration)
        let limit = events ?? Int.max
        let start = DispatchTime.now().uptimeNanoseconds
        let (c, b, h, p, tok) = (concurrency, eventsPerRequest, host, port, token)
        let progress = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(1))
                let (e, r) = tally.snapshot
                let secs = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                FileHandle.standardError.write(String(format: "  [%5.1fs] %9d events, %7d requests, %9.0f events/s\n",
                                                      secs, e, r, Double(e) / secs).data(using: .utf8)!)
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<c {
                group.addTask {
                    try await onDedicatedThread("bench-\(worker)") {
                        let client = LoadClient(host: h, port: p)
                        let headers = [("Authorization", "Bearer \(tok)"), ("Content-Type", "application/json")]
                        var seq = 0
                        var lat: [UInt64] = []
                        var sent = 0, failed = 0
                        let nowMicros = Int64(Date().timeIntervalSince1970 * 1_000_000)
                        while Date() < deadline {
                            let (already, _) = tally.snapshot
                            if already + sent >= limit { break }
                            var items: [String] = []
                            items.reserveCapacity(b)
                            for _ in 0..<b {
                                seq += 1
                                let t = RFC3339Timestamp(epochMicroseconds: nowMicros - Int64(seq % 3600) * 1_000_000).iso8601
                                items.append(#"{"customer":"bench-c\#((worker + seq) % customers.count)","meter":"bench_units","idempotency_key":"b\#(runID)-\#(worker)-\#(seq)","occurred_at":"\#(t)","value":"\#(seq % 100).5"}"#)
                            }
                            let body = b == 1 ? items[0] : "[" + items.joined(separator: ",") + "]"
                            let t0 = DispatchTime.now().uptimeNanoseconds
                            let r = try client.request("POST", "/v1/events", headers: headers, body: body)
                            lat.append(DispatchTime.now().uptimeNanoseconds - t0)
                            if r.status == 200 || r.status == 201 { sent += b } else { failed += 1 }
                            // Into the shared tally every 50 requests or 1,000 events, whichever comes
                            // first, so the per-second progress counts what was acknowledged so far
                            // in every mode (with batches of 1,000 it showed 0 for the whole run).
                            if lat.count >= 50 || sent >= 1000 { tally.add(events: sent, latencies: lat, failures: failed); sent = 0; failed = 0; lat = [] }
                        }
                        tally.add(events: sent, latencies: lat, failures: failed)
                    }
                }
            }
            try await group.waitForAll()
        }
        progress.cancel()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9

        // Single events only: the service's own HTTP ceiling, GET /healthz (no database) with as
        // many clients for as long (5 s at most), same process, same load generator: how much of
        // the single-event time is HTTP and thread hand-offs rather than the ingest itself.
        var healthzRate: Double?
        if eventsPerRequest == 1 {
            let seconds = min(elapsed, 5)
            print("HTTP baseline: \(concurrency) client(s), GET /healthz, \(String(format: "%.0f", seconds)) s")
            let n = try await Self.operations(clients: c, seconds: seconds, name: "bench-healthz") { _ in
                let client = LoadClient(host: h, port: p)
                return { try client.request("GET", "/healthz").status == 200 }
            }
            healthzRate = Double(n) / seconds
        }
        await server?()
        let lat = tally.latenciesNs.sorted()
        func pct(_ q: Double) -> Double { lat.isEmpty ? 0 : Double(lat[min(lat.count - 1, Int(Double(lat.count) * q))]) / 1e6 }
        let httpRate = Double(tally.events) / elapsed

        // Phase 2: baseline, a raw COPY of as many new events into the same table.
        let copyCount = tally.events
        print("copy baseline: \(copyCount) events")
        let copySeconds: Double = try await onDedicatedThread {
            let conn = try PGConnection(conninfo: conninfo)
            defer { conn.close() }
            let ids = try conn.execute("""
                select (select id from meter.meters where code = 'bench_units') as meter_id,
                       (select min(id) from meter.customers where external_id like 'bench-c%') as first_customer
                """).single()
            let meterID = try ids.int("meter_id"), firstCustomer = try ids.int("first_customer")
            let nowMicros = Int64(Date().timeIntervalSince1970 * 1_000_000)
            let t0 = DispatchTime.now().uptimeNanoseconds
            var chunks: [String] = []
            var chunk = ""
            for i in 0..<copyCount {
                let t = RFC3339Timestamp(epochMicroseconds: nowMicros - Int64(i % 3600) * 1_000_000).utcString
                chunk += "\(firstCustomer + Int64(i % customers.count))\t\(meterID)\tcopy\(runID)-\(i)\t\(t)\t\(i % 100).5\t{}\n"
                if i % 10_000 == 9_999 { chunks.append(chunk); chunk = "" }
            }
            chunks.append(chunk)
            try conn.copyIn("copy meter.events (customer_id, meter_id, idempotency_key, occurred_at, value, properties) from stdin",
                            chunks: chunks)
            return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        }
        let copyRate = Double(copyCount) / copySeconds

        // Phase 3, single events only: a durable one-row INSERT per transaction, as many clients
        // as the HTTP run had, for as long (10 s at most): the ceiling of a commit per event.
        var insertRate: Double?
        if eventsPerRequest == 1 {
            let seconds = min(elapsed, 10)
            print("insert baseline: \(concurrency) client(s), one-row INSERT per transaction, \(String(format: "%.0f", seconds)) s")
            let setup = try PGConnection(conninfo: conninfo)
            try setup.execute("create table if not exists public.bench_insert_baseline (id bigserial primary key, k text not null unique, v numeric not null)")
            let rows = try await Self.operations(clients: concurrency, seconds: seconds, name: "bench-insert") { worker in
                let conn = try PGConnection(conninfo: conninfo)
                var n = 0
                return {
                    _ = try conn.executePrepared("insert into public.bench_insert_baseline (k, v) values ($1, 1)", ["\(runID)-\(worker)-\(n)"])
                    n += 1
                    return true
                }
            }
            try setup.execute("drop table public.bench_insert_baseline")
            setup.close()
            insertRate = Double(rows) / seconds
        }

        print("""

            == bench ingest results (\(mode), concurrency \(concurrency)) ==
            HTTP:   \(tally.events) events in \(tally.requests) requests over \(String(format: "%.2f", elapsed)) s, \(tally.failures) failed requests
                    \(String(format: "%.0f", httpRate)) events/s, \(String(format: "%.0f", Double(tally.requests) / elapsed)) requests/s
                    latency per request: p50 \(String(format: "%.2f", pct(0.5))) ms, p99 \(String(format: "%.2f", pct(0.99))) ms, max \(String(format: "%.2f", pct(1.0))) ms
            COPY:   \(copyCount) events in \(String(format: "%.2f", copySeconds)) s = \(String(format: "%.0f", copyRate)) events/s (same table, same indexes, one connection)
            ratio:  HTTP / COPY = \(String(format: "%.2f", httpRate / copyRate))
            """)
        if let insertRate {
            print("""
                INSERT: \(String(format: "%.0f", insertRate)) rows/s (one-row INSERT per transaction, \(concurrency) client(s), durable commits)
                ratio:  HTTP single events / INSERT = \(String(format: "%.2f", httpRate / insertRate))
                """)
        }
        if let healthzRate {
            print("""
                healthz: \(String(format: "%.0f", healthzRate)) requests/s (GET /healthz, no database, \(concurrency) client(s), same service)
                ratio:  HTTP single events / healthz = \(String(format: "%.2f", httpRate / healthzRate))
                """)
        }
        if tally.failures > 0 { throw ExitCode(1) }
    }

    /// A same-run baseline: `clients` threads, each repeating the operation `make` gives it (made
    /// on its own thread: its connection or client) for `seconds`; returns how many succeeded.
    private static func operations(clients: Int, seconds: Double, name: String,
                                   make: @escaping @Sendable (Int) throws -> () throws -> Bool) async throws -> Int {
        try await withThrowingTaskGroup(of: Int.self) { group in
            for worker in 0..<clients {
                group.addTask {
                    try await onDedicatedThread("\(name)-\(worker)") {
                        let operation = try make(worker)
                        let end = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
                        var n = 0
                        while ContinuousClock.now < end { if try operation() { n += 1 } }
                        return n
                    }
                }
            }
            var total = 0
            for try await n in group { total += n }
            return total
        }
    }
}
