import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs a program to completion with posix_spawn + waitpid, its stdout and stderr captured in a
/// temporary file. Not Foundation.Process: daemonizing children (pg_ctl start) and its SIGCHLD
/// monitor do not mix reliably on Linux, and a pipe would be held open by the daemon.
public enum Subprocess {
    public struct Result: Sendable {
        public let status: Int32
        public let output: String
    }

    public static func run(_ argv: [String], workingDirectory: String? = nil) throws -> Result {
        let outPath = NSTemporaryDirectory() + "meter-sub-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log"
        defer { unlink(outPath) }
        // coreutils env -C changes directory portably (posix_spawn's addchdir is not imported).
        let argv = workingDirectory.map { ["/usr/bin/env", "-C", $0] + argv } ?? argv
        let pid = try spawn(argv, output: outPath)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let output = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        return Result(status: exitCode(status), output: output)
    }

    /// Starts `argv` (an absolute path first) with stdin from /dev/null and stdout and stderr to
    /// `output` (appended to with `append`), default signal handling and an empty signal mask
    /// whatever thread of ours spawns it, and `environment` (nil: ours). Returns its pid.
    public static func spawn(_ argv: [String], output: String, append: Bool = false,
                             environment: [String: String]? = nil) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGTERM, SIGINT, SIGPIPE, SIGHUP] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        var cenv: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer { cargs.forEach { free($0) }; cenv?.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = cenv == nil ? posix_spawn(&pid, argv[0], &actions, &attr, &cargs, environ)
                             : posix_spawn(&pid, argv[0], &actions, &attr, &cargs, &cenv!)
        guard rc == 0 else {
            throw EmbeddedPostgres.Failure(description: "cannot run \(argv[0]): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    /// A waitpid status as a shell does: the exit code, or 128 + the signal that ended it
    /// (WIFEXITED / WEXITSTATUS by hand: the macros are not imported).
    public static func exitCode(_ status: Int32) -> Int32 {
        (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}
