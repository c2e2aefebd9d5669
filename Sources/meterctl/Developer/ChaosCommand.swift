import ArgumentParser
import Foundation
import MeterDevKit

/// `meterctl chaos <scenario>|all`: the chaos scenarios of chaos/ (chaos/README.md). Each starts
/// its own Postgres cluster (.meter/chaos/pg), billing mock and service (child processes of this
/// one), injects its faults while an at-least-once client sends events, and prints one verdict.
/// Unbuffered (progress must show at once when piped, as in CI logs).
private func out(_ s: String) { FileHandle.standardOutput.write(Data((s + "\n").utf8)) }

struct Chaos: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a chaos scenario: ingest-restart, billing-outage, clock-skew, postgres-crash, db-network, or all.",
        discussion: """
            Prints progress, then the verdict: distinct events sent, acknowledged, stored, rolled up and \
            billed, each fault injected, and each check; exit status 0 only on PASS. The same seed gives \
            the same events, deliveries and fault schedule (the moments of kills depend on timing). \
            Without --quick the full settings of chaos/README.md apply.
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Scenario name, or all.") var scenario: String
    @Option(help: "Seed of the events, deliveries and fault schedule.") var seed: UInt64 = 1
    @Flag(help: "The shorter settings the test suite uses.") var quick = false
    @Option(help: "Distinct events of the main load (default: the scenario's).") var events: Int?
    @Option(help: "Events per second offered (0 = unpaced; default: the scenario's).") var rate: Int?
    @Option(help: "Service SIGKILLs (ingest-restart) or Postgres crashes before the close (postgres-crash).") var kills: Int?
    @Option(name: .customLong("phase-seconds"), help: "Length of each fault phase (billing-outage, db-network).") var phaseSeconds: Double?
    @Option(help: "Customers.") var customers: Int?
    @Option(name: .customLong("work-dir"), help: "Where the cluster, logs and verdicts go. Default: .meter/chaos") var workDir = ".meter/chaos"
    @Flag(help: .hidden) var sabotage = false
    @Option(name: .customLong("chaos-pg-port"), help: "Port of the chaos cluster (socket only). Default: 54369") var chaosPgPort = 54369

    func run() async throws {
        let logger = global.bootstrapLogging(defaultLevel: .warning)
        let names = scenario == "all" ? ChaosScenarios.names : [scenario]
        guard names.allSatisfy(ChaosScenarios.names.contains) else {
            throw ValidationError("unknown scenario \(scenario); one of \(ChaosScenarios.names.joined(separator: ", ")), all")
        }
        let sqlDir = try global.target.locateSQL()
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var failed: [String] = []
        for name in names {
            var o = ChaosScenarios.defaults(name, quick: quick)
            o.seed = seed
            if let events { o.events = events }
            if let rate { o.rate = rate }
            if let kills { o.kills = kills }
            if let phaseSeconds { o.phaseSeconds = phaseSeconds }
            if let customers { o.customers = customers }
            o.workDir = workDir
            o.pgPort = chaosPgPort
            o.meterctl = exe
            o.sqlDir = sqlDir
            o.sabotage = sabotage
            out("== chaos \(name): seed \(seed), \(o.events) events at \(o.rate)/s, \(o.customers) customers")
            let started = ContinuousClock.now
            let verdict: ChaosVerdict
            do {
                verdict = try await ChaosScenarios.run(name, options: o, logger: logger, say: { out($0) })
            } catch {
                verdict = ChaosVerdict(pass: false, lines: ["chaos \(name) (seed \(seed)): FAIL", "  error: \(error)",
                                                            "  logs: \(workDir)/\(name)/service.log, \(workDir)/\(name)/billing-mock.log"])
            }
            let text = verdict.lines.joined(separator: "\n") + String(format: "\n  took %.1f s\n", (ContinuousClock.now - started).seconds)
            out(text)
            try? text.write(toFile: "\(workDir)/\(name)/verdict.txt", atomically: true, encoding: .utf8)
            if !verdict.pass { failed.append(name) }
        }
        if names.count > 1 {
            out("chaos: \(names.count - failed.count) of \(names.count) scenarios PASS" + (failed.isEmpty ? "" : "; FAIL: " + failed.joined(separator: ", ")))
        }
        if !failed.isEmpty { throw ExitCode(1) }
    }
}
