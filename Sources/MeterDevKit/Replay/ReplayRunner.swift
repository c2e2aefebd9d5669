// ReplayRunner.swift: `meterctl replay`, end to end, in one process: a fresh database, the mock
// billing engine on a test clock, the service (ingest, rollup loop, sync loop, webhooks), the
// workload of ReplayWorkload sent over HTTP day by day with retries, then, at each month end: the
// backlog drained, the engine's clock moved past the period end (it invoices and sends its
// webhooks), our close, and late-after-close events. The month after the window is closed too, so
// the late events land as adjustments. Progress is printed all along.

import Foundation
import Logging
import PGClient
import MeterWire
import MeterCore
import MeterAPI
import BillingMock

public struct ReplayOptions: Sendable {
    public var days = 30
    public var customers = 100
    public var seed: UInt64 = 42
    public var eventsPerCustomerDay = 40
    /// Share of a day's events cancelled that day, and of a closed period's events cancelled
    /// after its close (ReplayWorkload); tests raise them to force both cases into a small run.
    public var cancelShare = 0.01
    public var lateCancelShare = 0.002
    public var outputDir = ".meter/replay"
    public init() {}
}

/// What the replay did, as the service answered it (verdicts received, never intended).
public struct ReplaySummary: Sendable {
    public var periods: [String] = []
    /// NDJSON rows: events, invalid events, cancellations.
    public var generated = 0
    public var generatedEvents = 0, generatedInvalid = 0, generatedCancellations = 0
    /// Elements sent over HTTP (each delivery of an event, each cancellation sent, re-sends of
    /// cancellations included).
    public var deliveries = 0
    /// Event verdicts received.
    public var accepted = 0, duplicates = 0, conflicts = 0
    public var rejectedCodes: [String: Int] = [:]
    public var rejected: Int { rejectedCodes.values.reduce(0, +) }
    /// Cancellation verdicts received (final ones: a cancellation refused with event_not_found
    /// and re-sent counts once, by its final verdict).
    public var cancelled = 0, alreadyCancelled = 0
    /// Cancellations refused with event_not_found because their event was still held back by the
    /// client, then re-sent after it (docs/decisions.md 78).
    public var cancellationsResent = 0
    /// Cancellations never applied, by the code of their last refusal (must stay empty).
    public var cancellationsRefused: [String: Int] = [:]
    /// Rows sent after their period's close.
    public var lateEvents = 0
    public var lateCancelled = 0, lateAlreadyCancelled = 0
    public var ndjsonPath = ""
    public var seconds = 0.0
    /// Where those seconds went, by phase (in order of first appearance): measured, for the
    /// progress output only (the summary file stays free of timings).
    public var phases: [(name: String, seconds: Double)] = []
    package mutating func time<T>(_ name: String, _ work: () async throws -> T) async rethrows -> T {
        let started = ContinuousClock.now
        defer {
            let d = (ContinuousClock.now - started).seconds
            if let i = phases.firstIndex(where: { $0.name == name }) { phases[i].seconds += d } else { phases.append((name, d)) }
        }
        return try await work()
    }
    /// The NDJSON's independent expectation compared with the verdicts and meter's invoices.
    public var check: ReplayExpectation.Comparison?

    /// Verdicts received, in the expectation's terms.
    public var received: ReplayExpectation.Verdicts {
        var v = ReplayExpectation.Verdicts()
        v.accepted = accepted; v.duplicates = duplicates; v.conflicts = conflicts; v.rejectedCodes = rejectedCodes
        v.cancelled = cancelled; v.alreadyCancelled = alreadyCancelled
        return v
    }

    package mutating func add(_ r: ReplaySender.Counts) {
        accepted += r.accepted; duplicates += r.duplicates; conflicts += r.conflicts
        rejectedCodes.merge(r.rejectedCodes, uniquingKeysWith: +)
    }
}

public enum ReplayRunner {
    package struct Failure: Error, CustomStringConvertible { package let description: String }

    /// A plan price: the meter, the part of its usage it prices (`filter`, a JSON object of
    /// dimension -> values; "{}" the meter's default, or the whole meter), model and amounts.
    package typealias Price = (meter: String, filter: String, model: String, unit: String?, package: String?, tiers: String?)

    /// The plans: every pricing model, three currencies; the AI API's tokens priced per model
    /// (and per direction on one plan), graduated on gpt-4o; disk as GB-hours.
    package static let plans: [(code: String, currency: String, prices: [Price])] = [
        ("starter", "usd", [
            ("api_calls", "{}", "per_unit", "0.05", nil, nil),
            ("storage_gb", "{}", "package", "100", "10", nil),
            ("peak_seats", "{}", "volume", nil, nil, #"[{"up_to": 10, "unit_amount": 500}, {"up_to": 50, "unit_amount": 400, "flat_amount": 1000}, {"up_to": null, "unit_amount": 300}]"#),
            ("active_users", "{}", "graduated", nil, nil, #"[{"up_to": 20, "unit_amount": 0}, {"up_to": null, "unit_amount": 150}]"#),
            ("ai_tokens", #"{"model": ["gpt-4o"]}"#, "graduated", nil, nil, #"[{"up_to": 20000, "unit_amount": 0.003}, {"up_to": null, "unit_amount": 0.002}]"#),
            ("ai_tokens", #"{"model": ["gpt-4o-mini"]}"#, "per_unit", "0.0004", nil, nil),
            ("ai_tokens", "{}", "per_unit", "0.0001", nil, nil),
            ("disk_gb", "{}", "per_unit", "0.0125", nil, nil),
        ]),
        ("scale", "eur", [
            ("api_calls", "{}", "graduated", nil, nil, #"[{"up_to": 1000, "unit_amount": 0.1, "flat_amount": 500}, {"up_to": 10000, "unit_amount": 0.04}, {"up_to": null, "unit_amount": 0.01}]"#),
            ("storage_gb", "{}", "per_unit", "1.5", nil, nil),
            ("peak_seats", "{}", "per_unit", "250", nil, nil),
            ("active_users", "{}", "package", "900", "25", nil),
            ("ai_tokens", #"{"direction": ["output"], "model": ["gpt-4o"]}"#, "per_unit", "0.006", nil, nil),
            ("ai_tokens", #"{"direction": ["input"], "model": ["gpt-4o"]}"#, "graduated", nil, nil, #"[{"up_to": 10000, "unit_amount": 0.0025}, {"up_to": null, "unit_amount": 0.0015}]"#),
            ("ai_tokens", #"{"model": ["embed-3", "gpt-4o-mini"]}"#, "per_unit", "0.0003", nil, nil),
            ("ai_tokens", "{}", "per_unit", "0.0002", nil, nil),
            ("disk_gb", "{}", "graduated", nil, nil, #"[{"up_to": 50000, "unit_amount": 0.012}, {"up_to": null, "unit_amount": 0.008}]"#),
        ]),
        ("tokyo", "jpy", [
            ("api_calls", "{}", "volume", nil, nil, #"[{"up_to": 500, "unit_amount": 0.2}, {"up_to": null, "unit_amount": 0.1, "flat_amount": 100}]"#),
            ("storage_gb", "{}", "graduated", nil, nil, #"[{"up_to": 100, "unit_amount": 3}, {"up_to": null, "unit_amount": 2}]"#),
            ("peak_seats", "{}", "package", "1200", "5", nil),
            ("active_users", "{}", "per_unit", "40", nil, nil),
            ("ai_tokens", #"{"model": ["embed-3"]}"#, "package", "2", "10000", nil),
            ("ai_tokens", "{}", "per_unit", "0.004", nil, nil),
            ("disk_gb", "{}", "per_unit", "0.02", nil, nil),
        ]),
    ]

    /// The replay's alerts (plan, threshold, kind) and limits (plan, limit) on api_calls.
    package static let alerts: [(plan: String, threshold: String, kind: String)] = [("starter", "700", "quantity"), ("tokyo", "0.8", "limit_share")]
    package static let limits: [(plan: String, limit: String)] = [("tokyo", "900")]

    public static func run(conninfo: String, sqlDir: String, options o: ReplayOptions, logger: Logger,
                           progress: @escaping @Sendable (String) -> Void) async throws -> ReplaySummary {
        let started = ContinuousClock.now
        var summary = ReplaySummary()
        let c = try PGConnection(conninfo: conninfo, statementTimeout: nil)
        defer { c.close() }
        _ = try c.execute("set client_min_messages = warning")
        try Migrator(sqlDirectory: sqlDir, logger: logger).migrate(c)

        // The window: `days` days ending where the month before this one starts, so that the
        // window's months and the month after it have all ended (and can be closed).
        let w = try c.execute("""
            select extract(epoch from date_trunc('month', now(), 'UTC') - interval '1 month')::bigint as e,
                   extract(epoch from date_trunc('month', now(), 'UTC'))::bigint as n
            """).single()
        let windowEnd = try w.int("e"), nextEnd = try w.int("n")
        let start = windowEnd - Int64(o.days) * 86_400
        let workload = ReplayWorkload(days: o.days, customers: o.customers, seed: o.seed, start: start,
                                      eventsPerCustomerDay: o.eventsPerCustomerDay,
                                      cancelShare: o.cancelShare, lateCancelShare: o.lateCancelShare)
        func period(_ t: Int64) throws -> String {
            try c.execute("select to_char(to_timestamp($1::bigint), 'YYYY-MM') as p", [t]).single().string("p")
        }
        func monthStart(_ t: Int64) throws -> Int64 {
            try c.execute("select extract(epoch from date_trunc('month', to_timestamp($1::bigint), 'UTC'))::bigint as s", [t]).single().int("s")
        }
        let firstPeriod = try period(start)
        progress("replay: \(o.days) days from \(RFC3339Timestamp(epochMicroseconds: start * 1_000_000).iso8601), \(o.customers) customers, seed \(o.seed)")

        // Customers, meters, plans (every pricing model, three currencies), an API key.
        for m in ReplayWorkload.meters {
            try c.execute("select meter.meter_upsert($1, $2, $3, null, null, null, $4::text[])",
                          [m.code, m.aggregation, m.unique, ReplayWorkload.dimensions[m.code] ?? []])
        }
        for p in plans {
            try c.execute("select meter.plan_upsert($1, $2)", [p.code, p.currency])
            for x in p.prices {
                try c.execute("select meter.plan_price_set($1, $2, $3, $4::numeric, $5::numeric, $6::jsonb, $7::jsonb)",
                              [p.code, x.meter, x.model, x.unit, x.package, x.tiers, x.filter])
            }
        }
        // Alerts and a limit (issue 16): api_calls reaching 700 in a period for starter customers,
        // 80 % of tokyo's limit of 900 api_calls, and that limit reached; each fires once per
        // customer and period (checked against the NDJSON: ReplayExpectation.alertCheck).
        for (plan, threshold, kind) in Self.alerts {
            try c.execute("select meter.alert_set(null, $1, 'api_calls', $2, $3::numeric)", [plan, kind, threshold])
        }
        for (plan, limit) in Self.limits {
            try c.execute("select meter.plan_limit_set($1, 'api_calls', $2::numeric)", [plan, limit])
        }
        for i in 0..<o.customers {
            try c.execute("select meter.customer_upsert($1, $2, 'UTC')", [workload.customerID(i), "Replay customer \(i + 1)"])
            try c.execute("select meter.customer_subscribe($1, $2, $3)",
                          [workload.customerID(i), plans[ReplayWorkload.planIndex(customer: i, plans: plans.count)].code, firstPeriod])
        }
        let token = APIKeys.generate()
        try APIKeys.register(c, name: "replay", token: token)

        // The engine, on a test clock at the window's start; our plans mirrored as its prices.
        var mockConfig = BillingMockConfiguration()
        mockConfig.port = 0
        mockConfig.webhookRetryBase = .milliseconds(200)
        mockConfig.webhookPoll = .milliseconds(50)
        let engine = try await BillingMockServer.start(config: mockConfig, conninfo: conninfo, sqlDirectory: sqlDir, logger: logger)
        var service: InProcessServer?
        func stopAll() async {
            await service?.stop()
            await engine.stop()
        }
        do {
            let base = "http://127.0.0.1:\(engine.port)"
            var api = BillingAPIConfiguration(baseURL: base, apiKey: "sk_test_replay")
            api.timeout = .seconds(10)
            let client = BillingClient(api)
            let clock = try await client.post("/v1/test_helpers/test_clocks", [("frozen_time", String(start)), ("name", "replay")],
                                              idempotencyKey: "replay-clock-\(o.seed)-\(start)")["id"]!.stringValue!
            // Billing Meters (Stripe's API since 2025-03-31.basil); storage_gb has 3 decimals, so
            // the engine counts milli-GB. ai_tokens goes as one engine meter and price per priced
            // filter of each plan (decision 110). The disk gauge is billed by our invoices only:
            // its hours accrue up to the real now, which is in the future of the replay's engine
            // clock (decision 110), as active_users' distinct counts are not hourly sums.
            let scales = ["storage_gb": 3]
            let engineBilled = ["api_calls", "storage_gb", "peak_seats", "ai_tokens"]
            try await PlanMirror.mirror(c, client: client, engineMeters: engineBilled, scales: scales)
            try PlanMirror.billMeters(c, plan: "starter", meters: engineBilled, since: start, scales: scales)
            progress("engine: mock at \(base), test clock \(clock), plans mirrored as engine prices on Billing Meters")

            // The service: ingest (history allowed), rollup loop, sync loop on the test clock, webhooks.
            var serve = ServeConfiguration()
            serve.port = 0
            serve.limits.maxPastSeconds = (o.days + 75) * 86_400
            serve.rollup?.interval = .milliseconds(200)
            var sync = SyncConfiguration(api: api)
            sync.testClock = clock
            sync.batch = 500
            sync.concurrency = 8
            sync.backoffBase = .milliseconds(100)
            sync.backoffCap = .seconds(2)
            sync.interval = .milliseconds(200)
            serve.sync = sync
            let server = try await MeterServer.start(config: serve, conninfo: conninfo, poolSize: 8, logger: logger)
            service = server
            let port = server.port
            let endpoint = try await client.registerWebhookEndpoint(url: "http://127.0.0.1:\(port)/webhooks/billing",
                                                                   idempotencyKey: "replay-endpoint-\(port)")
            try c.execute("insert into meter.webhook_secrets (secret) values ($1) on conflict do nothing", [endpoint.secret])
            progress("service: http://127.0.0.1:\(port) (rollup and sync loops, webhooks)")

            try FileManager.default.createDirectory(atPath: o.outputDir, withIntermediateDirectories: true)
            summary.ndjsonPath = o.outputDir + "/replay-events.ndjson"
            guard FileManager.default.createFile(atPath: summary.ndjsonPath, contents: nil) else {
                throw Failure(description: "cannot create \(summary.ndjsonPath)")
            }
            let ndjson = try FileHandle(forWritingTo: URL(fileURLWithPath: summary.ndjsonPath))
            defer { try? ndjson.close() }
            func record(_ es: [ReplayEvent]) throws {
                try ndjson.write(contentsOf: Self.ndjsonLines(es))
            }

            let sender = ReplaySender(port: port, token: token)
            var held: [ReplayEvent] = []
            var periodEvents: [String: [ReplayEvent]] = [:]
            var lateIndex = 0
            // Cancellations refused with event_not_found: their event is still held back by this
            // client. A correct at-least-once client re-sends them once it has delivered what it
            // held (docs/decisions.md 78); so does the replay, before the next day's and before
            // every close.
            var refused: [ReplayEvent] = []

            func sendEvents(_ es: [ReplayEvent]) async throws {
                guard !es.isEmpty else { return }
                let counts = try await summary.time("sending events") { try await sender.send(es) }
                summary.add(counts)
                summary.deliveries += es.count
            }
            /// Sends cancellations (and re-sends the refused ones first); returns their counts.
            @discardableResult
            func sendCancels(_ xs: [ReplayEvent]) async throws -> ReplaySender.CancelCounts {
                let again = refused
                refused = []
                summary.cancellationsResent += again.count
                let r = try await summary.time("sending cancellations") { try await sender.sendCancels(again + xs) }
                summary.deliveries += again.count + xs.count
                summary.cancelled += r.cancelled; summary.alreadyCancelled += r.alreadyCancelled
                summary.cancellationsRefused.merge(r.rejectedCodes, uniquingKeysWith: +)
                refused = r.notFound
                return r
            }
            /// Before a close: what was held back, then the cancellations refused meanwhile.
            func flush() async throws {
                try await sendEvents(held)
                held = []
                if !refused.isEmpty { try await sendCancels([]) }
            }

            // At a month end: everything sent so far synced, the engine's clock past the end (it
            // invoices: EngineAlignment), our close, then the late events and cancellations for
            // the closed month, each to its endpoint.
            func endOfPeriod(_ end: Int64, _ p: String, sendLate: Bool = true) async throws {
                try await summary.time("waiting for rollups and sync at month ends") { try await drain(c, progress: progress) }
                // The engine brought to the period's end as `meterctl close` does it.
                let expected = try await summary.time("engine invoicing") {
                    try await EngineAlignment.align(c, client: client, testClock: clock, period: p, timeout: 120, say: progress)
                }
                let closed = try await summary.time("closes") { try MonthClose.run(c, period: p, graceSeconds: 0) }
                    .filter { $0.outcome == "closed" }.count
                summary.periods.append(p)
                progress("close \(p): \(closed) invoices; engine invoices \(expected)")
                // (none after the last close: nothing would follow to adjust them)
                let late = sendLate ? workload.lateAfterClose(periodEnd: end, periodEvents: periodEvents[p] ?? [], index: lateIndex) : []
                lateIndex += 1
                if !late.isEmpty {
                    try record(late)
                    let events = late.filter { $0.kind != .cancel }, cancels = late.filter { $0.kind == .cancel }
                    summary.generated += late.count
                    summary.generatedEvents += events.count; summary.generatedCancellations += cancels.count
                    let acceptedBefore = summary.accepted
                    try await sendEvents(events)
                    let r = try await sendCancels(cancels)
                    summary.lateEvents += summary.accepted - acceptedBefore
                    summary.lateCancelled += r.cancelled; summary.lateAlreadyCancelled += r.alreadyCancelled
                    progress("late after close of \(p): \(summary.accepted - acceptedBefore) events accepted; "
                             + "\(cancels.count) cancellations: \(r.cancelled) cancelled, \(r.alreadyCancelled) already cancelled, "
                             + "\(r.notFound.count) not found")
                }
            }

            // Generation overlapped with sending: the next day's events, cancellations and NDJSON
            // lines are made on another core while this day's go out (the workload is a pure
            // function of the seed: the same rows whatever the timing; they are written in order).
            func generate(_ d: Int) -> Task<(events: [ReplayEvent], cancels: [ReplayEvent], lines: Data), Never> {
                Task.detached {
                    let events = workload.day(d)
                    let cancels = workload.cancellations(events, day: d)
                    return (events, cancels, Self.ndjsonLines(events + cancels))
                }
            }
            var nextDay = o.days > 0 ? generate(0) : nil
            for d in 0..<o.days {
                let dayStart = start + Int64(d) * 86_400
                if d > 0, try monthStart(dayStart) == dayStart {
                    try await flush()
                    try await endOfPeriod(dayStart, try period(dayStart - 1))
                }
                // The engine's clock follows the replay (usage may not be in its future).
                _ = try await client.post("/v1/test_helpers/test_clocks/\(clock)/advance", [("frozen_time", String(dayStart + 86_400 - 1))],
                                          idempotencyKey: "replay-advance-\(clock)-\(dayStart + 86_400 - 1)")
                guard let today = await summary.time("waiting for the day's generation", { await nextDay?.value }) else { break }
                nextDay = d + 1 < o.days ? generate(d + 1) : nil
                let (events, cancels) = (today.events, today.cancels)
                try ndjson.write(contentsOf: today.lines)
                periodEvents[try period(dayStart), default: []] += events
                // Deliveries: every event once, duplicates again later in the day; 10 % of the
                // day's first deliveries are held back and sent after the next day's.
                var deliveries: [ReplayEvent] = []
                var again: [ReplayEvent] = []
                var keep: [ReplayEvent] = []
                for (i, e) in events.enumerated() {
                    if i % 10 == 9 && e.kind == .event { keep.append(e) } else { deliveries.append(e) }
                    for _ in 1..<max(e.deliveries, 1) { again.append(e) }
                }
                try await sendEvents(held + deliveries + again)
                held = keep
                // The day's cancellations, after the refused ones of the day before (whose events
                // went out just now); those of events held back until tomorrow are refused now.
                try await sendCancels(cancels)
                summary.generated += events.count + cancels.count
                summary.generatedEvents += events.filter { $0.kind == .event }.count
                summary.generatedInvalid += events.filter { $0.kind == .invalid }.count
                summary.generatedCancellations += cancels.count
                let b = try c.execute("select pending + in_flight as n from meter.sync_backlog").single().int("n")
                progress(String(format: "day %d/%d %@: %d events (%d accepted, %d duplicates, %d rejected so far), %d cancellations waiting for their event, sync backlog %d hours",
                                d + 1, o.days, RFC3339Timestamp(epochMicroseconds: dayStart * 1_000_000).iso8601.prefix(10) as CVarArg,
                                events.count, summary.accepted, summary.duplicates, summary.rejected, refused.count, b))
            }
            try await flush()
            try await endOfPeriod(windowEnd, try period(windowEnd - 1))
            // The month after the window: its close carries the adjustments for the late events.
            try await flush()
            try await endOfPeriod(nextEnd, try period(windowEnd), sendLate: false)
            try await drain(c, progress: progress)
            // Still refused with every event delivered: lost, and the check below will say where.
            if !refused.isEmpty { summary.cancellationsRefused["event_not_found", default: 0] += refused.count }
            try? ndjson.synchronize()

            // The independent check: the NDJSON's expectation against the verdicts and invoices.
            let checkStarted = ContinuousClock.now
            let expectation = try ReplayExpectation(ndjsonPath: summary.ndjsonPath, customers: o.customers, periods: summary.periods)
            var check = try expectation.compare(received: summary.received, c)
            try expectation.alertCheck(c, into: &check)
            summary.phases.append(("the independent check (NDJSON recomputation)", (ContinuousClock.now - checkStarted).seconds))
            summary.check = check
            progress("check: \(check.linesEqual) of \(check.linesCompared) invoice lines equal to the expectation recomputed from the NDJSON"
                     + (check.equal ? "" : "; \(check.differences.count) difference(s)"))
        } catch {
            await stopAll()
            throw error
        }
        await stopAll()
        summary.seconds = (ContinuousClock.now - started).seconds
        return summary
    }

    /// The NDJSON lines of some replay rows, each ended by a newline.
    package static func ndjsonLines(_ es: [ReplayEvent]) -> Data {
        Data((es.map(\.ndjson).joined(separator: "\n") + (es.isEmpty ? "" : "\n")).utf8)
    }

    /// Waits until rollups and the sync have caught up with everything committed.
    package static func drain(_ c: PGConnection, progress: @Sendable (String) -> Void) async throws {
        try await waitFor("rollups and sync to catch up", timeout: 600) {
            let lag = try Rollup.lag(c)
            guard lag.pendingEvents == 0 && lag.pendingCancellations == 0 else { return false }
            let b = try c.execute("select pending + in_flight as n, dead from meter.sync_backlog").single()
            if try b.int("dead") > 0 { throw Failure(description: "\(try b.int("dead")) outbox hours went dead (meterctl sync status)") }
            return try b.int("n") == 0
        }
    }

    package static func waitFor(_ what: String, timeout: Double, _ done: () throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while ContinuousClock.now < deadline {
            if try done() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw Failure(description: "timed out after \(Int(timeout)) s waiting for \(what)")
    }
}

/// Sends events and cancellations over HTTP in batches, retrying a batch until a definitive
/// answer, and tallies the verdicts the service gave, element by element.
package final class ReplaySender: Sendable {
    package let port: Int
    package let token: String
    package init(port: Int, token: String) { self.port = port; self.token = token }

    /// The verdicts of some events as received.
    package struct Counts: Sendable {
        package var accepted = 0, duplicates = 0, conflicts = 0
        /// Rejections by error code.
        package var rejectedCodes: [String: Int] = [:]
        package mutating func add(_ o: Counts) {
            accepted += o.accepted; duplicates += o.duplicates; conflicts += o.conflicts
            rejectedCodes.merge(o.rejectedCodes, uniquingKeysWith: +)
        }
    }

    /// The verdicts of some cancellations as received.
    package struct CancelCounts: Sendable {
        package var cancelled = 0, alreadyCancelled = 0
        /// Refused with `event_not_found`: no stored event under the key yet (docs/decisions.md 78:
        /// retryable; the caller re-sends them once its pending events are delivered).
        package var notFound: [ReplayEvent] = []
        /// Other refusals by error code (none expected).
        package var rejectedCodes: [String: Int] = [:]
    }

    /// Connections sending at once (each on its own thread, batches dealt round-robin). Which
    /// copy of a duplicated event arrives first may vary; what is stored does not.
    package static let connections = 4

    package func send(_ events: [ReplayEvent]) async throws -> Counts {
        let batches = stride(from: 0, to: events.count, by: 500).map { Array(events[$0..<min($0 + 500, events.count)]) }
        let (port, token) = (port, token)
        return try await withThrowingTaskGroup(of: Counts.self) { group in
            for lane in 0..<Self.connections {
                let mine = stride(from: lane, to: batches.count, by: Self.connections).map { batches[$0] }
                if mine.isEmpty { continue }
                group.addTask {
                    try await onDedicatedThread("replay-send-\(lane)") {
                        let client = LoadClient(port: port)
                        var counts = Counts()
                        for b in mine {
                            let body = "[" + b.map(\.apiJSON).joined(separator: ",") + "]"
                            let json = try Self.post(client, "/v1/events", body, token)
                            let results = json["results"]?.arrayValue ?? []
                            guard results.count == b.count else {
                                throw ReplayRunner.Failure(description: "POST /v1/events: \(results.count) verdicts for \(b.count) events")
                            }
                            for r in results {
                                switch r["status"]?.stringValue {
                                case "accepted": counts.accepted += 1
                                case "duplicate": counts.duplicates += 1
                                case "conflict": counts.conflicts += 1
                                default:
                                    counts.rejectedCodes[r["error"]?["code"]?.stringValue ?? "unknown", default: 0] += 1
                                }
                            }
                        }
                        return counts
                    }
                }
            }
            var total = Counts()
            for try await c in group { total.add(c) }
            return total
        }
    }

    package func sendCancels(_ cancels: [ReplayEvent]) async throws -> CancelCounts {
        guard !cancels.isEmpty else { return CancelCounts() }
        let (port, token) = (port, token)
        return try await onDedicatedThread("replay-cancel") {
            let client = LoadClient(port: port)
            var counts = CancelCounts()
            for start in stride(from: 0, to: cancels.count, by: 500) {
                let b = Array(cancels[start..<min(start + 500, cancels.count)])
                let json = try Self.post(client, "/v1/events/cancel", "[" + b.map(\.apiJSON).joined(separator: ",") + "]", token)
                let results = json["results"]?.arrayValue ?? []
                guard results.count == b.count else {
                    throw ReplayRunner.Failure(description: "POST /v1/events/cancel: \(results.count) verdicts for \(b.count) cancellations")
                }
                for (x, r) in zip(b, results) {
                    switch r["status"]?.stringValue {
                    case "cancelled": counts.cancelled += 1
                    case "already_cancelled": counts.alreadyCancelled += 1
                    default:
                        let code = r["error"]?["code"]?.stringValue ?? "unknown"
                        if code == "event_not_found" { counts.notFound.append(x) } else { counts.rejectedCodes[code, default: 0] += 1 }
                    }
                }
            }
            return counts
        }
    }

    /// At-least-once: a batch is re-sent (same keys) until the service answers 200 or 207.
    package static func post(_ client: LoadClient, _ path: String, _ body: String, _ token: String) throws -> JSONValue {
        var last = ""
        for attempt in 0..<20 {
            if let r = try? client.request("POST", path, headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")],
                                           body: body) {
                if r.status == 200 || r.status == 207 { return (try? JSONParser.parse(r.body)) ?? .null }
                last = "HTTP \(r.status): \(r.body.prefix(200))"
                if r.status < 500 && r.status != 429 { break }
            }
            Thread.sleep(forTimeInterval: min(0.05 * Double(1 << min(attempt, 6)), 2))
        }
        throw ReplayRunner.Failure(description: "POST \(path) failed: \(last)")
    }
}
