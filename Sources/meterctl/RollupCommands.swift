import ArgumentParser
import Foundation
import MeterCore

/// `meterctl rollup run|status|verify|shards`: the hourly rollup by hand. `meterctl serve` runs the same
/// `meter.rollup_run()` in its loop; running both at once is safe (one waits its turn).
struct RollupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollup",
        abstract: "Run, inspect and verify the hourly rollups.",
        subcommands: [Run.self, Status.self, Verify.self, Shards.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fold pending events into the hourly rollups, until caught up.",
            discussion: """
                Calls meter.rollup_run(max_events) repeatedly until nothing is left below the horizon \
                (the oldest open transaction), printing each run. With --once, one run only. If another \
                worker holds the rollup lock, retries every 50 ms for --lock-wait-seconds, then fails.
                """)
        @OptionGroup var global: GlobalOptions
        @Option(name: .customLong("max-events"), help: "Events per run at most. Default: 1000000") var maxEvents = Rollup.defaultMaxEvents
        @Flag(help: "One run only.") var once = false
        @Option(name: .customLong("lock-wait-seconds"), help: "How long to wait while another rollup holds the lock. Default: 300")
        var lockWait: Double = 300
        func validate() throws {
            if maxEvents < 1 || maxEvents > Int(Int32.max) {
                throw ValidationError("--max-events must be between 1 and \(Int32.max); got \(maxEvents)")
            }
        }
        func run() async throws {
            let started = ContinuousClock.now
            let total = try global.withConnection(migrate: global.target.isEmbedded) { conn in
                try Rollup.drain(conn, maxEvents: maxEvents, maxRuns: once ? 1 : .max, lockWait: lockWait) { r in
                    if r.ran {
                        print("run: \(r.eventsFolded) events, \(r.cancellationsFolded) cancellations, "
                              + "\(r.hoursTouched) hours in \(r.durationMs) ms; watermark \(r.position ?? "?")"
                              + (r.morePending ? " (more pending)" : ""))
                    } else {
                        print("run: skipped, another rollup holds the lock")
                    }
                }
            }
            let seconds = (ContinuousClock.now - started).seconds
            print("rollup: \(total.runs) run(s), \(total.events) events and \(total.cancellations) cancellations folded in "
                  + String(format: "%.2f s", seconds))
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the watermark, the lag and what holds it (meter.rollup_lag).")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let lag = try global.withConnection { conn in try Rollup.lag(conn) }
            print("watermark:             \(lag.position)  (xid/id: events below it are rolled up)")
            print("horizon:               \(lag.horizon)  (oldest open transaction)")
            print("lag:                   \(lag.lagSeconds) s")
            print("pending events:        \(lag.pendingEvents) (\(lag.waitingOnHorizon) waiting for an older transaction)")
            print("pending cancellations: \(lag.pendingCancellations)")
            print("last run:              \(lag.lastRunAt ?? "never")")
            print("totals:                \(lag.runsTotal) runs, \(lag.eventsTotal) events, \(lag.cancellationsTotal) cancellations")
            print("shards:                \(lag.shards) (watermark: the lowest shard's; meterctl rollup shards)")
            if let pid = lag.horizonHeldByPID {
                print("horizon held by:       pid \(pid), \(lag.horizonState ?? "?") since \(lag.horizonXactStart ?? "?"): \(lag.horizonQuery ?? "")")
            }
        }
    }

    struct Shards: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the rollup shards, or split the rollup into N (meter.rollup_shards_set).",
            discussion: """
                A customer's events belong to shard customer_id % N; each shard has its own watermark and \
                lock, and meterctl serve's --rollup-workers loops fold them at once (decision 125). --set N \
                first folds every shard to one common position, inside its transaction and with ingest \
                waiting (run it when the rollup has caught up), then writes N watermark rows.
                """)
        @OptionGroup var global: GlobalOptions
        @Option(name: .customLong("set"), help: "Split the rollup into this many shards (1 to 64).") var set: Int?
        func validate() throws {
            if let n = set, n < 1 || n > 64 { throw ValidationError("--set must be between 1 and 64; got \(n)") }
        }
        func run() async throws {
            try global.withConnection(migrate: global.target.isEmbedded) { conn in
                if let n = set {
                    // the backlog first, outside the change's transaction (which holds ingest back)
                    let drained = try Rollup.drain(conn)
                    print("rollup shards: \(drained.events) events and \(drained.cancellations) cancellations folded first")
                    print("rollup shards: folding every shard to one common position, then splitting into \(n)")
                    let folded = try conn.execute("select meter.rollup_shards_set($1) as n", [n]).single().int("n")
                    print("rollup shards: \(n) shard(s); \(folded) events and cancellations folded on the way")
                }
                for r in try conn.execute("""
                    select shard, shard_count, position_xid || '/' || position_id as position,
                           redeliveries_xid || '/' || redeliveries_id as redeliveries,
                           coalesce(to_char(last_run_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'never') as last_run_at,
                           runs_total, events_total
                    from meter.rollup_watermark order by shard
                    """).rows {
                    print("shard \(try r.int("shard")) of \(try r.int("shard_count")): watermark \(try r.string("position")), "
                          + "redeliveries \(try r.string("redeliveries")), last run \(try r.string("last_run_at")), "
                          + "\(try r.int("runs_total")) runs, \(try r.int("events_total")) events")
                }
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute rollups from raw events and list every hour that differs (meter.rollup_verify), and every billing period total or ledger period row that differs from its hours (meter.rollup_period_verify, meter.rollup_ledger_period_verify).",
            discussion: "Exit status 0 when all agree, 1 when any hour or period differs.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Start (RFC 3339 or any Postgres timestamptz). Default: 35 days ago") var from: String?
        @Option(help: "End, exclusive. Default: now + 1 day") var to: String?
        func run() async throws {
            let (diffs, range, periods) = try global.withConnection { conn in
                let r = try conn.execute("""
                    select coalesce($1::timestamptz, now() - interval '35 days')::text as f,
                           coalesce($2::timestamptz, now() + interval '1 day')::text as t
                    """, [from, to]).single()
                let f = try r.string("f"), t = try r.string("t")
                let periods = try Rollup.periodVerify(conn)
                return (try Rollup.verify(conn, from: f, to: t), "\(f) .. \(t)", periods)
            }
            for d in diffs { print(d) }
            for p in periods { print(p) }
            if diffs.isEmpty {
                print("rollup verify: every hour in \(range) agrees with raw events")
            } else {
                print("rollup verify: \(diffs.count) hour(s) differ in \(range)")
            }
            if periods.isEmpty {
                print("rollup verify: every billing period total agrees with its hours")
            } else {
                print("rollup verify: \(periods.count) billing period total(s) differ from their hours (repair: select meter.rollup_period_rebuild();)")
            }
            if !diffs.isEmpty || !periods.isEmpty { throw ExitCode(1) }
        }
    }
}
