import ArgumentParser
import Foundation
import MeterCore
import PGClient

/// `meterctl events`: the raw events' storage (monthly partitions, archiving; decisions 121-122).
struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Raw events' storage: monthly partitions and archiving of closed months.",
        subcommands: [Partitions.self, Archive.self])

    /// `meterctl events partitions`: the runway, each partition, and creation ahead by hand.
    struct Partitions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show meter.events' monthly partitions and their runway; --ahead-months creates missing months.",
            discussion: """
                serve creates its ingest window to three months ahead before it listens and hourly; this is \
                the same by hand (meter.events_partitions_ensure, from 35 days back). An event whose month \
                has no partition cannot be stored.
                """)
        @OptionGroup var global: GlobalOptions
        @Option(name: .customLong("ahead-months"), help: "Create missing months up to this many months ahead (1-60).")
        var aheadMonths: Int?

        func validate() throws {
            if let m = aheadMonths, !(1...60).contains(m) { throw ValidationError("--ahead-months must be between 1 and 60; got \(m)") }
        }

        func run() async throws {
            _ = global.bootstrapLogging(defaultLevel: .warning)
            let (created, runway, parts) = try global.withConnection(migrate: global.target.isEmbedded) { c in
                let n = try aheadMonths.map { try EventPartitions.ensure(c, pastSeconds: 35 * 86_400, aheadMonths: $0) } ?? 0
                let parts = try c.execute("""
                    select c.relname::text as name, pg_size_pretty(pg_total_relation_size(c.oid)) as size,
                           coalesce(s.n_live_tup, 0) as rows
                    from pg_inherits i join pg_class c on c.oid = i.inhrelid
                    left join pg_stat_user_tables s on s.relid = c.oid
                    where i.inhparent = 'meter.events'::regclass order by 1
                    """).rows.map { r in (try r.string("name"), try r.string("size"), try r.int("rows")) }
                return (n, try EventPartitions.runway(c), parts)
            }
            for p in parts { print("\(p.0)  \(p.1)  ~\(p.2) rows") }
            if aheadMonths != nil { print("created: \(created)") }
            print("partitions: \(runway.partitions), oldest month \(runway.oldestMonth ?? "none"), covered until \(runway.coveredUntil ?? "none") "
                  + "(runway \(runway.runwaySeconds / 86_400) days), archived months: \(runway.archivedMonths)")
            if runway.runwaySeconds < EventPartitions.shortRunwaySeconds { throw ExitCode(1) }
        }
    }

    /// `meterctl events archive --period YYYY-MM --dir DIR`.
    struct Archive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Archive a closed UTC month of events: export, verify, then detach and drop its partition.",
            discussion: """
                Refuses unless the month's late window has passed, its events and cancellations are rolled \
                up, every billing period its events fall in is closed and signed off (meterctl signoff). \
                Then exports the partition to DIR/events-YYYY-MM.copy (COPY text format, ordered by id, \
                UTC) with its SHA-256 beside it, reads the file back (same SHA-256, the partition's rows \
                exactly), recomputes a sample of invoice lines' events hashes from it, and only then keeps \
                each key's content digest (retries stay duplicate or conflict), records the archive in \
                meter.event_archives, detaches and drops the partition. After it: invoices, rollups, usage \
                and the sync work as before; reconciliation and rollup verify of that month, and \
                cancellations of its events (event_archived), do not (docs/runbook.md, "Archiving a month").
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "The UTC month, YYYY-MM.") var period: String
        @Option(help: "Directory for the archive file (created if missing).") var dir: String
        @Option(help: "Invoice lines whose events hash is recomputed from the file. Default: 100") var sample = 100
        @Option(name: .customLong("late-window-seconds"),
                help: "How long after the month's end late events may arrive: the largest --past-tolerance-seconds of any serve, plus 300. Default: 3024300")
        var lateWindowSeconds = 35 * 86_400 + 300

        func validate() throws {
            guard period.range(of: #"^[0-9]{4}-(0[1-9]|1[0-2])$"#, options: .regularExpression) != nil else {
                throw ValidationError("--period must be YYYY-MM; got \(period)")
            }
            guard (1...100_000).contains(sample) else { throw ValidationError("--sample must be between 1 and 100000; got \(sample)") }
            guard lateWindowSeconds >= 0 else { throw ValidationError("--late-window-seconds must not be negative") }
        }

        func run() async throws {
            _ = global.bootstrapLogging(defaultLevel: .warning)
            var o = EventArchive.Options(month: period, directory: dir)
            o.sample = sample; o.lateWindowSeconds = lateWindowSeconds
            let started = ContinuousClock.now
            do {
                let r = try global.withConnection(migrate: global.target.isEmbedded) { c in
                    try EventArchive.archive(c, o) { print($0) }
                }
                print("archived \(period): \(r.events) events, \(r.bytes) bytes in \(r.file) (SHA-256 \(r.sha256)), "
                      + "\(r.hashesChecked) events hashes checked, in " + String(format: "%.2f s", (ContinuousClock.now - started).seconds))
            } catch let e as EventArchive.Refused {
                throw ValidationError("archive refused: \(e.description)")
            } catch let e as PGError where e.sqlState == "55000" || e.sqlState == "22023" {
                throw ValidationError("archive refused: \(e.message)")
            }
        }
    }
}

/// `meterctl signoff --period P --by NAME`: record the sign-off of a closed period's reconciliation.
struct Signoff: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Record that a closed period's reconciliation was reviewed and signed (who, when, which report).",
        discussion: """
            Adds a row to meter.period_signoffs with the period's invoice count and total at signing and, \
            with --report, the SHA-256 of the report file signed (meterctl reconcile --output). Archiving a \
            month of events requires a sign-off of every period its events were billed in.
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Billing period, YYYY-MM.") var period: String
    @Option(help: "Who signs (a name or a role).") var by: String
    @Option(help: "Free text kept with the sign-off.") var note: String?
    @Option(help: "The report file signed; its SHA-256 is recorded.") var report: String?

    func validate() throws {
        guard period.range(of: #"^[0-9]{4}-(0[1-9]|1[0-2])$"#, options: .regularExpression) != nil else {
            throw ValidationError("--period must be YYYY-MM; got \(period)")
        }
        guard !by.trimmingCharacters(in: .whitespaces).isEmpty, by.count <= 200 else { throw ValidationError("--by must name who signs (1 to 200 characters)") }
    }

    func run() async throws {
        _ = global.bootstrapLogging(defaultLevel: .warning)
        var sha: String?
        if let report {
            guard let data = FileManager.default.contents(atPath: report) else { throw ValidationError("--report: cannot read \(report)") }
            sha = EventArchive.sha256Hex(data)
        }
        do {
            let r = try global.withConnection(migrate: global.target.isEmbedded) { c in
                try c.execute("select id, period, signed_by, signed_at, invoices, total_minor from meter.period_signoff($1, $2, $3, $4)",
                              [period, by, note, sha]).single()
            }
            print("signed off \(try r.string("period")) by \(try r.string("signed_by")) at \(try r.string("signed_at")): "
                  + "\(try r.string("invoices")) invoices, total \(try r.string("total_minor")) (minor units)"
                  + (sha.map { ", report SHA-256 \($0)" } ?? ""))
        } catch let e as PGError where e.sqlState == "55000" || e.sqlState == "22023" {
            throw ValidationError(e.message)
        }
    }
}
