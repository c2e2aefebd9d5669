import Foundation
#if canImport(Glibc)
import Glibc
import MeterCore
#endif

/// Crashes of the embedded cluster, for chaos/postgres-crash. Not in the product: an operator stops
/// Postgres with `meterctl db stop` (a fast shutdown).
extension EmbeddedPostgres {
    /// Stops the server without a shutdown checkpoint (`pg_ctl stop -m immediate`): the next start
    /// runs crash recovery.
    package func stopImmediately() throws {
        try run(["pg_ctl", "stop", "-D", realDataDir, "-m", "immediate", "-w", "-t", "60"])
    }

    /// SIGKILL to the postmaster and every process of the cluster at once, like a host losing power
    /// (killing the postmaster alone would leave its children holding the shared memory). Returns
    /// how many processes were killed, once all of them are gone.
    @discardableResult
    package func killAll() throws -> Int {
        guard let pm = postmasterPID() else {
            throw EmbeddedPostgres.Failure(description: "no postmaster.pid in \(realDataDir): is the server running?")
        }
        // Only our postmaster: a stale postmaster.pid may name a reused PID.
        guard let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pm)/cwd"),
              URL(fileURLWithPath: cwd).standardizedFileURL.path == URL(fileURLWithPath: realDataDir).standardizedFileURL.path else {
            throw EmbeddedPostgres.Failure(description: "process \(pm) of postmaster.pid is not a server of \(realDataDir)")
        }
        // Frozen first (SIGSTOP: it forks no more), its children listed (once the postmaster
        // is gone they belong to PID 1), then all of them SIGKILLed at once.
        kill(pm, SIGSTOP)
        var pids: [pid_t] = [pm]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            if let pid = pid_t(entry), Self.procStat(pid)?.ppid == pm { pids.append(pid) }
        }
        for pid in pids { kill(pid, SIGKILL) }
        let deadline = ContinuousClock.now + .seconds(30)  // monotonic: a clock step cannot stretch it
        while pids.contains(where: { kill($0, 0) == 0 && !Self.isZombie($0) }) && ContinuousClock.now < deadline { usleep(20_000) }
        return pids.count
    }
}
