import ArgumentParser
import Foundation
import MeterCore
import PGClient

/// `meterctl reconcile --period P --format md|csv|html`: the per-customer reconciliation of a closed
/// period (ReconciliationReport over meter.reconciliation).
struct Reconcile: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report a closed period's reconciliation: raw events → rollups → synced → engine invoice → our invoice.",
        discussion: """
            Reads meter.reconciliation for --period (closed with meterctl close). md and csv print to \
            stdout unless --output is given; html includes a chart of daily usage (raw vs rolled up vs \
            invoiced events). Exit status 1 when any row is a MISMATCH. With a billing engine \
            (--billing-api-base or METER_BILLING_API_BASE) it first asks the engine again for the period's \
            usage (its meter event summaries; usage record summaries on the legacy API) and stores it in \
            meter.billing_usage: the "synced to engine" column (meterctl close --billing-api-base does the \
            same before closing). The report reads what the rollup folded (its ledger), never raw \
            events; --verify also recomputes every line from raw events (meter.reconciliation_verify: \
            seconds per million events) and prints what differs to stderr (exit status 1 if anything).
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Billing period, YYYY-MM.") var period: String
    @Option(help: "md | csv | html. Default: md") var format: String = "md"
    @Option(help: "Write the report to this file instead of stdout.") var output: String?
    @Flag(help: "Also recompute every line from raw events (meter.reconciliation_verify) and report differences.")
    var verify = false
    @OptionGroup var billing: BillingAPIOptions

    func validate() throws {
        guard ReconciliationReport.Format(rawValue: format) != nil else { throw ValidationError("--format must be md, csv or html; got \(format)") }
        guard period.range(of: #"^[0-9]{4}-(0[1-9]|1[0-2])$"#, options: .regularExpression) != nil else {
            throw ValidationError("--period must be YYYY-MM; got \(period)")
        }
    }

    func run() async throws {
        _ = global.bootstrapLogging(defaultLevel: .warning)
        let format = ReconciliationReport.Format(rawValue: format) ?? .md
        if billing.configured {
            let client = BillingClient(try billing.sync().api)
            let c = try PGConnection(conninfo: try global.conninfo())
            defer { c.close() }
            try await EngineUsage.fetch(c, client: client, period: period) {
                FileHandle.standardError.write(Data(($0 + "\n").utf8))
            }
        }
        let report: ReconciliationReport
        do {
            report = try global.withConnection { c in
                try ReconciliationReport.load(c, period: period, withChart: format == .html)
            }
        } catch let e as ReconciliationReport.NotClosed {
            throw ValidationError(e.description)
        }
        if let output { print(try report.write(format, to: output)) } else { print(report.render(format), terminator: "") }
        var failed = report.hasMismatch
        if verify {
            let v = try global.withConnection { c in try ReconciliationReport.verify(c, period: period) }
            FileHandle.standardError.write(Data((v.summary + "\n").utf8))
            for d in v.differences {
                FileHandle.standardError.write(Data("  \(d.customer) \(d.line) \(d.figure): ledger or rollup \(d.ledger), raw events \(d.raw)\n".utf8))
            }
            failed = failed || !v.differences.isEmpty
        }
        if failed { throw ExitCode(1) }
    }
}
