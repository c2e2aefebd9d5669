// ChildProcess.swift: a long-running child (`meterctl serve`, `meterctl billing-mock`) that the
// chaos scenarios start, SIGKILL and start again, its output appended to one log file across
// restarts.

import Foundation
#if canImport(Glibc)
import Glibc
import MeterCore
#endif

public final class ChildProcess: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible { public let description: String }

    public let name: String
    public let argv: [String]
    /// Added to (or overriding) this process's environment.
    public var environment: [String: String]
    public let logPath: String
    private let lock = NSLock()
    private var _pid: pid_t = 0
    public private(set) var starts = 0

    public init(name: String, argv: [String], environment: [String: String] = [:], logPath: String) {
        self.name = name
        self.argv = argv
        self.environment = environment
        self.logPath = logPath
    }

    public var pid: pid_t { lock.withLock { _pid } }

    public func start() throws {
        // A clean meter configuration: the child's arguments decide, not a DATABASE_URL or a
        // METER_* setting of whoever runs the chaos scenario. (Our own sockets are close-on-exec:
        // LoadClient's and the proxy's; libpq's too.)
        var env = ProcessInfo.processInfo.environment.filter {
            !($0.key.hasPrefix("METER_") || $0.key.hasPrefix("BILLING_MOCK_") || $0.key == "DATABASE_URL")
        }
        for (k, v) in environment { env[k] = v }
        let pid: pid_t
        do {
            pid = try Subprocess.spawn(argv, output: logPath, append: true, environment: env)
        } catch {
            throw Failure(description: "cannot start \(name): \(error)")
        }
        lock.withLock { _pid = pid; starts += 1 }
    }

    /// Sends `signal`; with `wait`, reaps the process (it is gone when this returns).
    public func kill(_ signal: Int32, wait: Bool = true) {
        let pid = self.pid
        guard pid > 0 else { return }
        Glibc.kill(pid, signal)
        if wait { _ = waitExit() }
    }

    /// Waits for the child to end; its exit status (128 + signal when killed).
    @discardableResult
    public func waitExit() -> Int32 {
        let pid = self.pid
        guard pid > 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        lock.withLock { _pid = 0 }
        return Subprocess.exitCode(status)
    }

    /// True while the child runs (reaps it when it has ended by itself).
    public var isRunning: Bool {
        let pid = self.pid
        guard pid > 0 else { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { lock.withLock { _pid = 0 }; return false }
        return true
    }

    /// Stops it gracefully (SIGTERM), SIGKILL after `grace` seconds; its exit status (nil when it
    /// had to be killed or was not running).
    @discardableResult
    public func stop(grace: Double = 15) -> Int32? {
        let pid = self.pid
        guard pid > 0 else { return nil }
        Glibc.kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        var status: Int32 = 0
        while Date() < deadline {
            if waitpid(pid, &status, WNOHANG) == pid {
                lock.withLock { _pid = 0 }
                return Subprocess.exitCode(status)
            }
            usleep(20_000)
        }
        kill(SIGKILL)
        return nil
    }
}

/// Polls `GET path` on 127.0.0.1:`port` until it answers 200 (or `timeout` seconds pass).
public func waitForHTTP(port: Int, path: String = "/readyz", timeout: Double = 60) throws {
    let deadline = Date().addingTimeInterval(timeout)
    var last = "no answer"
    while Date() < deadline {
        let client = LoadClient(port: port, timeoutSeconds: 5)
        if let r = try? client.request("GET", path) {
            if r.status == 200 { return }
            last = "HTTP \(r.status): \(r.body.prefix(200))"
        }
        usleep(100_000)
    }
    throw ChildProcess.Failure(description: "127.0.0.1:\(port)\(path) not ready after \(Int(timeout)) s (\(last))")
}
