import ArgumentParser
import Foundation
import Logging
import PGClient
import MeterCore
import MeterDevKit

/// `meterctl replay`: the 30-day replay, end to end, with its reconciliation reports.
struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a deterministic workload end to end: ingest, rollups, billing sync, month close, reconciliation.",
        discussion: """
            Works in a database of its own (meter_replay, dropped and recreated in the cluster of \
            --database-url or the embedded Postgres). Generates --days days of usage for --customers \
            customers from --seed (four meters, plans in three currencies covering per-unit, package, \
            graduated and volume prices, a daily rhythm with bursts, ≥ 5 % duplicate deliveries, \
            out-of-order batches, cancellations, invalid events, late events, some after their month's \
            close), writes it to <output>/replay-events.ndjson, and sends it over HTTP to the service \
            running in this process, with the mock billing engine on a test clock. At each month end the \
            backlog is drained, the engine invoices, and the month is closed; the month after the window \
            is closed too (it carries the adjustments). Then writes the reconciliation of each month as \
            md, csv and html to <output>, and <output>/replay-summary.md: the verdicts received and the \
            invoices recomputed from the NDJSON alone, compared line by line with meter's. Exit status 1 \
            if any reconciliation row is a MISMATCH, any line differs, or a cancellation was never applied.
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Days of usage. Default: 30") var days: Int = 30
    @Option(help: "Customers. Default: 100") var customers: Int = 100
    @Option(help: "Seed of the workload. Default: 42") var seed: UInt64 = 42
    @Option(name: .customLong("events-per-customer-day"), help: "Mean events per customer and day. Default: 40") var eventsPerCustomerDay: Int = 40
    @Option(help: "Directory for the NDJSON and the reports. Default: .meter/replay") var output: String = ".meter/replay"

    func validate() throws {
        guard (1...62).contains(days) else { throw ValidationError("--days must be between 1 and 62; got \(days)") }
        guard customers >= 1, eventsPerCustomerDay >= 1 else { throw ValidationError("--customers and --events-per-customer-day must be positive") }
    }

    func run() async throws {
        let logger = global.bootstrapLogging(defaultLevel: .warning)
        let sqlDir = try global.target.locateSQL()
        let main = try global.conninfo(migrate: global.target.isEmbedded)
        let admin = try PGConnection(conninfo: main)
        try admin.execute("drop database if exists meter_replay with (force)")
        try admin.execute("create database meter_replay")
        admin.close()
        let conninfo = databaseConninfo(main, database: "meter_replay")
        var options = ReplayOptions()
        options.days = days
        options.customers = customers
        options.seed = seed
        options.eventsPerCustomerDay = eventsPerCustomerDay
        options.outputDir = output
        let s = try await ReplayRunner.run(conninfo: conninfo, sqlDir: sqlDir, options: options, logger: logger) { line in print(line) }
        print("replay: \(s.generated) NDJSON rows (\(s.generatedEvents) events, \(s.generatedInvalid) invalid, \(s.generatedCancellations) cancellations), "
              + "\(s.deliveries) elements sent; received: \(s.accepted) accepted (\(s.lateEvents) after close), \(s.duplicates) duplicates, "
              + "\(s.conflicts) conflicts, \(s.rejected) rejected; \(s.cancelled) cancelled (\(s.lateCancelled) after close), "
              + "\(s.alreadyCancelled) already cancelled, \(s.cancellationsResent) re-sent after event_not_found, "
              + "\(s.cancellationsRefused.values.reduce(0, +)) never applied; in " + String(format: "%.1f s", s.seconds))
        // Throughput of the whole job (generation, sending, rollups, sync, closes, checks).
        print(String(format: "throughput: %.0f elements/s sent end to end (%d in %.1f s)",
                     Double(s.deliveries) / max(s.seconds, 0.001), s.deliveries, s.seconds))
        let measured = s.phases.map(\.seconds).reduce(0, +)
        print("time:    " + (s.phases.map { String(format: "%@ %.1f s", $0.name, $0.seconds) }
                             + [String(format: "everything else (setup, days' bookkeeping) %.1f s", max(s.seconds - measured, 0))])
                            .joined(separator: "; "))
        print("events:  \(s.ndjsonPath)")
        var mismatch = false
        let source = "meterctl replay --days \(days) --customers \(customers) --seed \(seed) --events-per-customer-day \(eventsPerCustomerDay)"
        var verified: [ReconciliationReport.Verification] = []
        // The database was filled seconds ago: its statistics first, as autovacuum would have
        // gathered them by the time anyone reconciles (without them the raw recomputation of a
        // 3-day replay took 6.5 s instead of 0.3 s).
        do {
            let c = try PGConnection(conninfo: conninfo)
            defer { c.close() }
            try c.execute("analyze")
        }
        for p in s.periods {
            // One read of the period's figures, three renderings.
            let c = try PGConnection(conninfo: conninfo)
            defer { c.close() }
            let started = ContinuousClock.now
            let report = try ReconciliationReport.load(c, period: p, source: source, withChart: true)
            print(String(format: "report %@: %d rows read in %.2f s (meter.reconciliation and the daily chart)", p, report.rows.count,
                         (ContinuousClock.now - started).seconds))
            for f in ReconciliationReport.Format.allCases { print(try report.write(f, to: "\(output)/reconciliation-\(p).\(f.rawValue)")) }
            if report.hasMismatch { mismatch = true }
            // The separate verification: every line recomputed from raw events (decision 123).
            let v = try ReconciliationReport.verify(c, period: p)
            print(v.summary)
            for d in v.differences.prefix(10) { print("  differs: \(d.customer) \(d.line) \(d.figure): ledger or rollup \(d.ledger), raw events \(d.raw)") }
            if !v.differences.isEmpty { mismatch = true }
            verified.append(v)
        }
        var summary = s.markdown(command: source)
        summary += "\n## Raw recomputation (meter.reconciliation_verify)\n\n"
        summary += "The reports read the rollup's ledger; every usage line was then recomputed from raw events:\n\n"
        for v in verified {
            summary += "- \(v.period): \(v.lines) lines, " + (v.differences.isEmpty ? "no difference" : "\(v.differences.count) difference(s)") + "\n"
        }
        try summary.write(toFile: "\(output)/replay-summary.md", atomically: true, encoding: .utf8)
        let check = s.check
        print("check:   \(check?.linesEqual ?? 0) of \(check?.linesCompared ?? 0) invoice lines equal to the expectation recomputed from the NDJSON; "
              + "\(check?.differences.count ?? -1) difference(s); \(check?.negativeAdjustmentLines ?? 0) adjustment line(s) from cancellations after a close, \(check?.negativeAmountLines ?? 0) with a negative amount")
        for d in (check?.differences ?? []).prefix(10) { print("  differs: \(d)") }
        print("report:  \(output)/replay-summary.md, \(output)/reconciliation-<period>.{md,csv,html} for \(s.periods.joined(separator: ", "))")
        print("open the database with: psql \"\(conninfo)\"")
        // The run fails on a reconciliation MISMATCH, on any difference from the independent
        // expectation, and on a cancellation never applied.
        if mismatch || check?.equal != true || !s.cancellationsRefused.isEmpty { throw ExitCode(1) }
    }
}
