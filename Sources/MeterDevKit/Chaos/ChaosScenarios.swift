// ChaosScenarios.swift: the five scenarios of chaos/ (see chaos/README.md for what each proves
// and its full settings). Each: set up (ChaosHarness), load with faults, drain, close the month,
// verdict.

import Foundation
import Logging
#if canImport(Glibc)
import Glibc
import PGClient
import MeterCore
#endif

public enum ChaosScenarios {
    public static let names = ["ingest-restart", "billing-outage", "clock-skew", "postgres-crash", "db-network"]

    /// The full settings of a scenario (chaos/README.md); CI runs `--quick` ones.
    public static func defaults(_ name: String, quick: Bool) -> ChaosOptions {
        var o = ChaosOptions()
        switch name {
        case "ingest-restart": o.events = quick ? 20_000 : 200_000; o.rate = quick ? 2_000 : 4_000; o.kills = quick ? 5 : 8
        case "clock-skew": o.events = quick ? 4_000 : 20_000; o.rate = quick ? 1_000 : 2_000
        case "postgres-crash": o.events = quick ? 10_000 : 50_000; o.rate = quick ? 1_500 : 2_500; o.kills = quick ? 2 : 4
        default:
            // billing-outage and db-network: the load lasts through every fault phase and the
            // recovery after it (4.5 and 6 phases long).
            o.events = quick ? 10_000 : 50_000; o.phaseSeconds = quick ? 4 : 10
            o.rate = Int(Double(o.events) / (o.phaseSeconds * (name == "db-network" ? 6 : 4.5)))
        }
        return o
    }

    public static func run(_ name: String, options: ChaosOptions, logger: Logger,
                           say: @escaping @Sendable (String) -> Void) async throws -> ChaosVerdict {
        let h = try ChaosHarness(scenario: name, options: options, logger: logger, say: say)
        defer { h.tearDown() }
        switch name {
        case "ingest-restart": return try await ingestRestart(h)
        case "billing-outage": return try await billingOutage(h)
        case "clock-skew": return try await clockSkew(h)
        case "postgres-crash": return try await postgresCrash(h)
        case "db-network": return try await dbNetwork(h)
        default: throw ChaosHarness.Failure(description: "unknown scenario \(name); one of \(names.joined(separator: ", "))")
        }
    }

    /// Polls `condition` every 2 ms for up to `timeout` seconds; true when it held.
    package static func poll(_ timeout: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while ContinuousClock.now < deadline {
            if try condition() { return true }
            usleep(2_000)
        }
        return false
    }

    /// A rollup run of the current service instance (backends opened since it started: a killed
    /// instance's backend may linger a moment).
    package static let rollupActive = """
        select count(*) as n from pg_stat_activity
        where state = 'active' and query like '%meter.rollup_run(%' and pid <> pg_backend_pid()
          and backend_start >= $1::timestamptz
        """

    // MARK: 1. ingest-restart

    /// SIGKILL the service at random moments, some while a rollup run is in progress, some while
    /// usage sends are in flight to the engine; start it again each time.
    package static func ingestRestart(_ h: ChaosHarness) async throws -> ChaosVerdict {
        try await h.setUp()
        try h.mockFaults(#"{"latency_ms": 20}"#)  // sends last long enough to be caught in flight
        let events = h.mainEvents()
        let load = h.load(events)
        let loadTask = Task { try await load.run() }
        var r = SeededRandom(seed: h.o.seed ^ 0x4B11)
        var kinds: [String: Int] = [:]
        // Spread over the load: on average one kill per (load time / (kills + 1)), at random.
        let loadSeconds = Double(events.count) * (1 + h.o.duplicateRate) / Double(max(h.o.rate, 1))
        let gapMs = max(Int(loadSeconds * 1000) / (h.o.kills + 1), 800)
        for k in 0..<h.o.kills {
            try await Task.sleep(for: .milliseconds(gapMs / 2 + r.below(gapMs)))
            // (a send is in flight only while the load makes new hours: the kill during a sync
            // comes first, while the load runs; a short load, such as the sabotage self-test's
            // 3,000 events, had ended before a third kill, which then caught a send only if a
            // killed instance's claims happened to be re-sent inside its 10 s window. Rollup runs
            // go on after the load: the loop's idle runs are caught too.)
            let want = ["during a sync", "during a rollup run", "at a random moment"][k % 3]
            let (kind, pid) = try await onDedicatedThread { () throws -> (String, pid_t) in
                let c = try h.connect()
                defer { c.close() }
                var kind = want
                if want == "during a rollup run" {
                    if !(try poll(10) { try c.execute(rollupActive, [h.serviceStartedAt]).single().int("n") > 0 }) { kind = "at a random moment (no rollup run caught in 10 s)" }
                } else if want == "during a sync" {
                    // claimed by this instance's sync worker (a killed one's claims linger until their lease ends)
                    let worker = "meter-sync-\(h.service.pid)"
                    if !(try poll(10) { try c.execute("select count(*) as n from meter.sync_outbox where state = 'in_flight' and claimed_by = $1", [worker]).single().int("n") > 0 }) {
                        kind = "at a random moment (no send caught in flight in 10 s)"
                    }
                }
                let pid = h.service.pid
                h.service.kill(SIGKILL)
                return (kind, pid)
            }
            kinds[kind, default: 0] += 1
            h.log("SIGKILL \(k + 1)/\(h.o.kills) of the service (pid \(pid)) \(kind); load \(Int(load.fractionSent * 100)) % sent")
            try await h.startService()
            h.log("service restarted (pid \(h.service.pid))")
        }
        // A deploy under load: SIGTERM must drain in-flight requests and work, and exit 0.
        try await load.waitUntil(0.9)
        let termStarted = ContinuousClock.now
        let termStatus = await Task.detached { h.service.stop(grace: 30) }.value
        let termSeconds = (ContinuousClock.now - termStarted).seconds
        h.log("SIGTERM of the service under load (a deploy): exit status \(termStatus.map(String.init) ?? "none, killed after 30 s") in \(String(format: "%.1f", termSeconds)) s")
        try await h.startService()
        h.faults.append(String(format: "service stopped with SIGTERM under load (a deploy) and started again: exit %@ in %.1f s",
                               termStatus.map(String.init) ?? "none", termSeconds))
        h.faults.append("service SIGKILLed \(h.o.kills) times and restarted: " + kinds.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
        let result = try await loadTask.value
        try await h.drain()
        try await h.closeMonth()
        return try h.verdict(sent: events, result: result, extraChecks: [
            ("at least \(h.o.kills) SIGKILLs, some during a rollup run and some during a sync",
             kinds.values.reduce(0, +) >= h.o.kills && kinds["during a rollup run", default: 0] > 0 && kinds["during a sync", default: 0] > 0),
            ("SIGTERM under load drained and exited 0 (\(termStatus.map(String.init) ?? "killed"))", termStatus == 0),
        ])
    }

    // MARK: 2. billing-outage

    /// The engine down, then failing half its calls with 503, then applying calls and dropping the
    /// answer on 30 %, then well again; ingest goes on throughout. An hour unsynced for longer
    /// than the (shortened) give-up time is parked as dead and re-driven after recovery.
    package static func billingOutage(_ h: ChaosHarness) async throws -> ChaosVerdict {
        let phase = h.o.phaseSeconds
        let giveUp = max(Int(phase / 2), 2)
        h.serviceArguments = ["--sync-give-up-after-seconds", String(giveUp)]
        try await h.setUp()
        let events = h.mainEvents()
        let load = h.load(events)
        let loadTask = Task { try await load.run() }
        let deadSeen = Task { () -> Int64 in
            let c = try h.connect()
            defer { c.close() }
            var most: Int64 = 0
            while !Task.isCancelled {
                most = max(most, try c.execute("select dead from meter.sync_backlog").single().int("dead"))
                try? await Task.sleep(for: .milliseconds(200))
            }
            return most
        }
        try await Task.sleep(for: .seconds(phase / 2))
        for (what, faults) in [("engine down (every call 503)", #"{"outage": true}"#),
                               ("engine failing 50 % of calls with 503", #"{"outage": false, "error_rate": 0.5, "error_status": 503}"#),
                               ("engine applying 30 % of calls and dropping the answer", #"{"error_rate": 0, "drop_rate": 0.3}"#)] {
            try h.mockFaults(faults)
            h.log("fault: \(what) for \(Int(phase)) s; load \(Int(load.fractionSent * 100)) % sent")
            h.faults.append("\(what) for \(Int(phase)) s")
            try await Task.sleep(for: .seconds(phase))
        }
        try h.mockFaults(#"{"drop_rate": 0}"#)
        h.log("engine recovered; load \(Int(load.fractionSent * 100)) % sent")
        // The operator's re-drive, as soon as the engine is back (hours still dead now; others
        // went back to pending by themselves when a newer rollup revision arrived).
        let redriven = try await h.redriveDead()
        let result = try await loadTask.value
        try await h.drain()
        deadSeen.cancel()
        let dead = try await deadSeen.value
        h.faults.append("hours parked as dead at most at once: \(dead) (give-up time \(giveUp) s); \(redriven) still dead at recovery, re-driven with `meterctl sync retry`")
        try await h.closeMonth()
        let retriesDuringOutage = result.retries
        return try h.verdict(sent: events, result: result, extraChecks: [
            ("ingest never stopped: every request answered 2xx the first time (\(retriesDuringOutage) retried)", retriesDuringOutage == 0),
            ("the outage parked hours as dead, and they were re-driven (\(dead) at most)", dead > 0),
        ])
    }

    // MARK: 3. clock-skew

    /// The service's wall clock an hour ahead, an hour behind, and stepped back 58 minutes
    /// mid-load, all with chaos/realtime-shift.c (it moves wall-clock reads only, as a badly set
    /// host or an NTP step does; see there why not libfaketime); clients' timestamps skewed by up
    /// to ± 10 minutes, events at the month edge (23:59:59.999 and 00:00:00.000). Every stored
    /// figure takes its time from the database (decision 70), and the service's loops wait on the
    /// monotonic clock only.
    package static func clockSkew(_ h: ChaosHarness) async throws -> ChaosVerdict {
        try FileManager.default.createDirectory(atPath: h.dir, withIntermediateDirectories: true)
        let shiftSource = URL(fileURLWithPath: h.o.sqlDir).deletingLastPathComponent().appendingPathComponent("chaos/realtime-shift.c").path
        let shiftLib = h.dir + "/librealtime-shift.so"  // h.dir is absolute
        let cc = try Subprocess.run(["/usr/bin/env", "clang", "-shared", "-fPIC", "-O2", "-o", shiftLib, shiftSource, "-ldl"])
        guard cc.status == 0 else { throw ChaosHarness.Failure(description: "cannot build \(shiftSource): \(cc.output)") }
        let clockFile = h.dir + "/clock-offset"
        /// The service's wall-clock offset in seconds; a running service picks it up within 200 ms.
        func setClock(_ seconds: Int) throws { try String(seconds).write(toFile: clockFile, atomically: true, encoding: .utf8) }
        let shifted = ["LD_PRELOAD": shiftLib, "REALTIME_SHIFT_FILE": clockFile]
        try setClock(3600)
        h.serviceEnvironment = shifted
        try await h.setUp()
        /// The service's clock minus the real one (to the minute): the `ts` of the log line of a
        /// request tagged with its own X-Request-Id. (Not the Date header: Hummingbird caches it,
        /// refreshed once a second.)
        var probes = 0
        func probe() async throws -> Int {
            probes += 1
            let id = "chaos-clock-probe-\(probes)"
            let sentAt = Date()
            _ = try await onDedicatedThread {
                try LoadClient(port: h.servicePort, timeoutSeconds: 10).request("GET", "/healthz", headers: [("X-Request-Id", id)])
            }
            try await Task.sleep(for: .milliseconds(300))
            let log = (try? String(contentsOfFile: h.dir + "/service.log", encoding: .utf8)) ?? ""
            guard let line = log.split(separator: "\n").last(where: { $0.contains("\"request_id\":\"\(id)\"") }),
                  let tsRange = line.range(of: #""ts":"([^"]+)""#, options: .regularExpression) else {
                throw ChaosHarness.Failure(description: "no log line of request \(id) in \(h.dir)/service.log")
            }
            let ts = String(line[tsRange].dropFirst(6).dropLast())
            let f = ISO8601DateFormatter()
            f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            guard let t = f.date(from: ts) else { throw ChaosHarness.Failure(description: "unreadable log timestamp \(ts)") }
            return Int((t.timeIntervalSince(sentAt) / 60).rounded()) * 60
        }
        /// Probes until the clock shows `expected` seconds of skew (a new offset is read within
        /// 200 ms), 15 s at most; the last value seen.
        func skew(_ expected: Int) async throws -> Int {
            let deadline = ContinuousClock.now + .seconds(15)
            var seen = try await probe()
            while abs(seen - expected) > 120 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(500))
                seen = try await probe()
            }
            return seen
        }
        /// The service's clock set while it is stopped (a host started with a wrong clock).
        func restartService(_ offset: Int) async throws {
            h.service.stop()
            try setClock(offset)
            try await h.startService()
        }
        /// The service's rollup loop keeps turning under its clock: the runs it completes
        /// (`meter.rollup_lag.runs_total`) grow by at least 3 within 5 s at its 200 ms interval.
        /// Fails at once, instead of a drain that never ends, if a wait follows the wall clock.
        func loopTurns(_ under: String) async throws -> (String, Bool) {
            let c = try h.connect()
            defer { c.close() }
            func runs() throws -> Int64 { try Rollup.lag(c).runsTotal }
            let r0 = try runs()
            let deadline = ContinuousClock.now + .seconds(5)
            var r1 = r0
            while r1 - r0 < 3 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
                r1 = try runs()
            }
            guard r1 - r0 >= 3 else {
                throw ChaosHarness.Failure(description: "the service's rollup loop stopped with its clock \(under): \(r1 - r0) run(s) in 5 s (a wait that follows the wall clock, or a clock shim that stalls timers)")
            }
            return ("the rollup loop kept running with the clock \(under) (\(r1 - r0) runs in \(String(format: "%.1f", (ContinuousClock.now - (deadline - .seconds(5))).seconds)) s)", true)
        }
        var skews: [String] = []
        var checks: [(String, Bool)] = []
        let ahead = try await skew(3600)
        skews.append("ahead \(ahead) s")
        checks.append(("the service's clock was ahead (\(ahead) s)", ahead >= 3000))
        checks.append(try await loopTurns("an hour ahead"))

        // Phase A, service an hour ahead: the month's last hours, and the month edge.
        var events = h.mainEvents(prefix: "a")
        for i in 0..<h.o.customers {
            events.append(ChaosEvent(customer: h.customer(i), meter: "api_calls", key: "edge-before-\(i)", at: h.periodEnd * 1_000_000 - 1000, value: "1"))
            events.append(ChaosEvent(customer: h.customer(i), meter: "api_calls", key: "edge-after-\(i)", at: h.periodEnd * 1_000_000, value: "1"))
        }
        var result = try await h.load(events).run()
        h.log("phase A (service clock \(ahead) s ahead): \(events.count) events incl. \(2 * h.o.customers) at the month edge")
        try await h.drain()
        try await h.closeMonth()

        // Phase B: the engine's clock brought to now; client timestamps skewed by ± 10 minutes
        // around the database's now, read right before each load. The 300 s tolerance is tested
        // with margins (accepted up to +240 s, rejected from +420 s) so that a slow machine, whose
        // loads take longer, cannot move an event across it.
        func dbNow() throws -> Int64 {
            let c = try h.connect()
            defer { c.close() }
            return try c.execute("select extract(epoch from now())::bigint as n").single().int("n")
        }
        let now0 = try dbNow()
        _ = try await h.client.post("/v1/test_helpers/test_clocks/\(h.clock)/advance", [("frozen_time", String(now0 + 1800))],
                                    idempotencyKey: "chaos-advance-\(h.clock)-now")
        var r = SeededRandom(seed: h.o.seed ^ 0xC10C)
        let offsets: [Int64] = [-600, -420, -300, -120, -30, -1, 0, 1, 30, 120, 180, 240, 420, 480, 600]
        func skewed(_ tag: String, _ n: Int, now: Int64) -> [ChaosEvent] {
            (0..<n).map { i in
                let off = offsets[r.below(offsets.count)]
                let at = (now + off) * 1_000_000 + Int64(r.below(1_000_000))
                return ChaosEvent(customer: h.customer(r.below(h.o.customers)), meter: "api_calls", key: "\(tag)-\(h.o.seed)-\(i)",
                                  at: at, value: "1", expectReject: off > 300 ? "occurred_at_in_future" : nil)
            }
        }
        // B1: the service an hour behind.
        try await restartService(-3600)
        let behind = try await skew(-3600)
        skews.append("behind \(behind) s")
        checks.append(("the service's clock was behind (\(behind) s)", behind <= -3000))
        checks.append(try await loopTurns("an hour behind"))
        let b1 = skewed("b", h.o.events / 4, now: try dbNow())
        let r1 = try await h.load(b1).run()
        // B2: an hour ahead, then stepped back 58 minutes in the middle of the load.
        try await restartService(3600)
        let before = try await skew(3600)
        let b2 = skewed("c", h.o.events / 4, now: try dbNow())
        let load2 = h.load(b2, rate: max(h.o.rate / 4, 50))
        let t2 = Task { try await load2.run() }
        try await load2.waitUntil(0.5)
        let jumpedAt = Int(load2.fractionSent * 100)
        try setClock(120)
        let after = try await skew(120)
        skews.append("jumped back from \(before) s to \(after) s mid-load (with \(jumpedAt) % of the phase's deliveries sent)")
        checks.append(("the service's clock jumped back mid-load (\(before) s → \(after) s)", before - after >= 3000))
        checks.append(try await loopTurns("stepped back 58 minutes while running"))
        let r2 = try await t2.value
        h.log("phase B: \(b1.count + b2.count) events with client timestamps skewed up to ± 600 s")
        try await h.drain()
        h.faults.append("service clock (chaos/realtime-shift.c): " + skews.joined(separator: "; "))
        h.faults.append("\(h.o.customers) events at 23:59:59.999 and \(h.o.customers) at 00:00:00.000 of the month edge")

        // The three loads' records, one verdict.
        let all = events + b1 + b2
        for part in [r1, r2] {
            result.acked += part.acked; result.rejected += part.rejected
            result.deliveries += part.deliveries; result.requests += part.requests
            result.retries += part.retries; result.duplicates += part.duplicates
        }
        let c2 = try h.connect()
        defer { c2.close() }
        let edge = try c2.execute("""
            select count(*) filter (where e.idempotency_key like 'edge-before-%' and r.hour = to_timestamp($1::bigint) - interval '1 hour'
                                    and l.invoice_id is not null) as before_ok,
                   count(*) filter (where e.idempotency_key like 'edge-after-%' and r.hour = to_timestamp($1::bigint)) as after_ok
            from meter.events e
            join meter.rollup_hourly r on r.customer_id = e.customer_id and r.meter_id = e.meter_id
                                       and r.hour = date_trunc('hour', e.occurred_at, 'UTC')
            left join lateral (select i.id as invoice_id from meter.invoices i
                               where i.customer_id = e.customer_id and i.period_start <= e.occurred_at and e.occurred_at < i.period_end) l on true
            where e.idempotency_key like 'edge-%'
            """, [h.periodEnd]).single()
        checks.append(("month edge: 23:59:59.999 in the last hour of the closed month and on its invoice (\(try edge.int("before_ok")) of \(h.o.customers)), 00:00:00.000 in the next month's first hour (\(try edge.int("after_ok")) of \(h.o.customers))",
                       try edge.int("before_ok") == h.o.customers && edge.int("after_ok") == h.o.customers))
        return try h.verdict(sent: all, result: result, extraChecks: checks)
    }

    // MARK: 4. postgres-crash

    /// Postgres killed mid-load (`pg_ctl stop -m immediate`), mid-rollup (SIGKILL of every server
    /// process) and mid-close (SIGKILL while the close's transaction is open), restarted each time.
    /// The service is never restarted: its pool and loops reconnect.
    package static func postgresCrash(_ h: ChaosHarness) async throws -> ChaosVerdict {
        try await h.setUp()
        let servicePid = h.service.pid
        let events = h.mainEvents()
        let load = h.load(events)
        let loadTask = Task { try await load.run() }
        var crashes: [String] = []
        for k in 0..<h.o.kills {
            let at = Double(k + 1) / Double(h.o.kills + 1)
            try await load.waitUntil(at)
            let what = try await onDedicatedThread { () throws -> String in
                if k % 2 == 0 {
                    try h.pg.stopImmediately()
                    return "pg_ctl stop -m immediate mid-load"
                }
                let c = try h.connect()
                let caught = try poll(10) { try c.execute(rollupActive, [h.serviceStartedAt]).single().int("n") > 0 }
                let n = try h.pg.killAll()
                c.close()
                return "SIGKILL of all \(n) server processes " + (caught ? "mid-rollup (a rollup_run was active)" : "mid-load (no rollup run caught in 10 s)")
            }
            h.log("crash \(k + 1): \(what); load \(Int(load.fractionSent * 100)) % sent")
            try await Task.sleep(for: .seconds(1))
            try h.pg.start()
            h.log("Postgres restarted (crash recovery)")
            crashes.append(what)
        }
        let result = try await loadTask.value
        try await h.drain()
        var invoicesAfterCrash: Int64 = -1
        try await h.closeMonth(beforeClose: { h in
            try await onDedicatedThread {
                let c = try h.connect()
                try c.execute("begin")
                let n = try c.execute("select count(*) as n from meter.period_close($1, null, interval '0')", [h.period]).single().int("n")
                let killed = try h.pg.killAll()
                c.close()
                h.log("crash mid-close: SIGKILL of all \(killed) server processes with the close of \(n) invoices uncommitted")
            }
            try await Task.sleep(for: .seconds(1))
            try h.pg.start()
            let c = try h.connect()
            defer { c.close() }
            invoicesAfterCrash = try c.execute("select count(*) as n from meter.invoices where period = $1", [h.period]).single().int("n")
            h.log("Postgres restarted: \(invoicesAfterCrash) invoices of \(h.period) survived the crash (an uncommitted close leaves nothing)")
        })
        crashes.append("SIGKILL of all server processes mid-close")
        h.faults.append("Postgres crashed \(crashes.count) times: " + crashes.joined(separator: "; "))
        let ready = (try? LoadClient(port: h.servicePort, timeoutSeconds: 10).request("GET", "/readyz").status) ?? 0
        return try h.verdict(sent: events, result: result, extraChecks: [
            ("the crash mid-close left no invoice behind (\(invoicesAfterCrash)); the close after it is complete", invoicesAfterCrash == 0),
            ("the service rode out every crash without a restart (pid \(servicePid), started \(h.service.starts) time), ready again (HTTP \(ready))",
             h.service.pid == servicePid && h.service.starts == 1 && ready == 200),
        ])
    }

    // MARK: 5. db-network

    /// A TCP proxy between the service and Postgres: stalls every byte, resets every connection,
    /// refuses new ones for a while; the pool recovers without a restart.
    package static func dbNetwork(_ h: ChaosHarness) async throws -> ChaosVerdict {
        let proxy = TCPProxy(upstreamSocket: h.pg.socketDir + "/.s.PGSQL.\(h.pg.port)")
        try proxy.start()
        h.serviceConninfo = "host=127.0.0.1 port=\(proxy.port) dbname=\(h.conninfo.split(separator: " ").first { $0.hasPrefix("dbname=") }!.dropFirst(7)) user=meter sslmode=disable"
        try await h.setUp()
        let servicePid = h.service.pid
        let phase = h.o.phaseSeconds
        let events = h.mainEvents()
        let load = h.load(events)
        let loadTask = Task { try await load.run() }
        try await Task.sleep(for: .seconds(phase / 2))
        proxy.mode = .stall
        h.log("fault: every byte between the service and Postgres stalled for \(Int(phase)) s (\(proxy.openConnections) connections)")
        try await Task.sleep(for: .seconds(phase))
        proxy.mode = .pass
        h.faults.append("all traffic stalled for \(Int(phase)) s")
        try await Task.sleep(for: .seconds(phase / 2))
        var reset = 0
        for _ in 0..<3 {
            reset += proxy.resetAll()
            try await Task.sleep(for: .milliseconds(700))
        }
        h.log("fault: \(reset) connections reset (3 rounds)")
        h.faults.append("\(reset) connections reset with RST, in 3 rounds")
        try await Task.sleep(for: .seconds(phase / 2))
        proxy.mode = .refuse
        let refusedBefore = proxy.resets
        reset = proxy.resetAll()
        h.log("fault: \(reset) connections reset, new ones refused for \(Int(phase)) s")
        try await Task.sleep(for: .seconds(phase))
        proxy.mode = .pass
        h.faults.append("\(reset) connections reset, then every new connection reset for \(Int(phase)) s (\(proxy.resets - refusedBefore - reset) refused)")
        h.log("network healthy again; load \(Int(load.fractionSent * 100)) % sent")
        let result = try await loadTask.value
        try await h.drain()
        try await h.closeMonth()
        let discarded = ((try? String(contentsOfFile: h.dir + "/service.log", encoding: .utf8)) ?? "")
            .components(separatedBy: "\"msg\":\"pg.connection.discarded\"").count - 1
        let ready = (try? LoadClient(port: h.servicePort, timeoutSeconds: 10).request("GET", "/readyz").status) ?? 0
        return try h.verdict(sent: events, result: result, extraChecks: [
            ("the pool discarded broken connections and opened new ones (\(discarded) discarded)", discarded > 0),
            ("no restart: same service process (pid \(servicePid), started \(h.service.starts) time), ready (HTTP \(ready))",
             h.service.pid == servicePid && h.service.starts == 1 && ready == 200),
        ])
    }
}
