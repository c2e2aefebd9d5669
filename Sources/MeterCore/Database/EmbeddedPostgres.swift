import Foundation
#if canImport(Glibc)
import Glibc
import PGClient
#endif

/// The embedded default Postgres: a private cluster of the machine's PostgreSQL 15 under
/// `.meter/pg` (or any directory), listening on a Unix socket only, started (or reused) on demand.
///
/// - Runs as the `postgres` OS user when we are root (Postgres refuses to run as root), as
///   ourselves otherwise. When the `postgres` user cannot reach the requested directory (e.g. a
///   checkout under /root), the cluster lives in /var/tmp/meter-pg/<hash> and the requested path
///   becomes a symlink to it.
/// - `listen_addresses = ''`: no TCP at all; `unix_socket_permissions = 0700`: only the cluster's
///   OS user (and root) can connect, which is what makes `trust` authentication safe here.
/// - Concurrent `start`s are serialized with an flock on `<dir>.lock`.
public struct EmbeddedPostgres: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
        package init(description: String) { self.description = description }
    }

    public let dataDir: String
    public let port: Int
    public let database: String
    public let superuser = "meter"

    public init(dataDir: String, port: Int, database: String = "meter") {
        self.dataDir = URL(fileURLWithPath: dataDir).standardizedFileURL.path
        self.port = port
        self.database = database
    }

    /// libpq conninfo for the embedded cluster (values quoted: checkout paths may hold spaces).
    public var conninfo: String { conninfo(database: database) }
    public func conninfo(database other: String) -> String {
        "host=\(Self.quoteConninfo(socketDir)) port=\(port) dbname=\(Self.quoteConninfo(other)) user=\(superuser)"
    }

    /// libpq conninfo quoting: plain when safe, else single quotes with \\ and \' escaped.
    package static func quoteConninfo(_ v: String) -> String {
        if !v.isEmpty, v.allSatisfy({ $0.isLetter || $0.isNumber || "/._-:".contains($0) }) { return v }
        return "'" + v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    /// postgresql.conf string literal.
    package static func quoteConf(_ v: String) -> String { "'" + v.replacingOccurrences(of: "'", with: "''") + "'" }
    public var psqlCommand: String { "psql \"\(conninfo)\"" }

    /// Socket directory: inside the cluster directory, unless that path is too long for a Unix
    /// socket (107 bytes), then a short one under /tmp.
    public var socketDir: String {
        let inside = realDataDir + "/run"
        if inside.utf8.count + 20 < 100 { return inside }
        return "/tmp/meter-sock-\(port)-\(Self.shortHash(dataDir))"
    }

    package var realDataDir: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: dataDir)) ?? dataDir
    }

    package static var isRoot: Bool { geteuid() == 0 }

    public static func binDir() throws -> String {
        if let env = ProcessInfo.processInfo.environment["METER_PG_BINDIR"], !env.isEmpty { return env }
        for v in ["15", "16", "17", "14"] {
            let d = "/usr/lib/postgresql/\(v)/bin"
            if FileManager.default.isExecutableFile(atPath: d + "/pg_ctl") { return d }
        }
        throw Failure(description: "no PostgreSQL server binaries found (install postgresql-15: scripts/setup.sh), or set METER_PG_BINDIR")
    }

    // MARK: lifecycle

    public func isRunning() throws -> Bool {
        guard FileManager.default.fileExists(atPath: realDataDir + "/PG_VERSION") else { return false }
        let r = try run(["pg_ctl", "status", "-D", realDataDir], check: false)
        // pg_ctl takes a zombie postmaster (killed, and PID 1 of a container reaps no orphans)
        // for a live one.
        return r.status == 0 && !(postmasterPID().map(Self.isDead) ?? false)
    }

    /// The PID of postmaster.pid; nil when there is none.
    package func postmasterPID() -> pid_t? {
        Self.lockFilePID(realDataDir + "/postmaster.pid")
    }

    /// The PID on a lock file's first line, only when it is a plain process id (> 1): a standalone
    /// backend writes -PID, which must never be taken for a dead server nor signalled as a group.
    private static func lockFilePID(_ path: String) -> pid_t? {
        guard let pid = (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: "\n").first.flatMap({ pid_t($0) }),
              pid > 1 else { return nil }
        return pid
    }

    /// Gone for sure: no such process (ESRCH), or a zombie.
    private static func isDead(_ pid: pid_t) -> Bool {
        if kill(pid, 0) != 0 { return errno == ESRCH }
        return isZombie(pid)
    }

    /// After a crash: a postmaster.pid whose process is gone (or a zombie) is removed, as the
    /// server itself would do for a dead PID.
    private func removeStaleLockFile(log: (String) -> Void) {
        for lock in [realDataDir + "/postmaster.pid", socketDir + "/.s.PGSQL.\(port).lock"] {
            guard let pm = Self.lockFilePID(lock) else { continue }
            if Self.isDead(pm) {
                log("removing the stale lock file \(lock) of dead process \(pm)")
                unlink(lock)
            }
        }
    }

    /// Initializes the cluster when needed, starts it unless running, creates the database.
    /// Returns true when it had to start the server.
    @discardableResult
    public func start(log: (String) -> Void = { _ in }) throws -> Bool {
        try FileManager.default.createDirectory(atPath: (dataDir as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        return try withLock {
            if try isRunning() {
                // Reused: the cluster is up, but its database may have been dropped meanwhile.
                try ensureDatabase(database)
                return false
            }
            try prepareDirectory()
            if !FileManager.default.fileExists(atPath: realDataDir + "/PG_VERSION") {
                log("initializing a PostgreSQL cluster in \(realDataDir)")
                try run(["initdb", "-D", realDataDir, "-U", superuser, "--auth=trust", "--encoding=UTF8",
                         "--locale=C.UTF-8", "--no-instructions"])
                let conf = """

                    # --- meter embedded defaults (written by meterctl) ---
                    listen_addresses = ''
                    unix_socket_permissions = 0700
                    max_connections = 200
                    shared_buffers = 256MB
                    synchronous_commit = on
                    fsync = on
                    wal_level = replica
                    max_wal_size = 2GB
                    timezone = 'UTC'
                    log_timezone = 'UTC'
                    log_min_duration_statement = 1000
                    log_line_prefix = '%m [%p] %q%u@%d '
                    # port and socket directory, rewritten at every start (the checkout may move)
                    include_if_exists = 'meter_runtime.conf'
                    """
                let confPath = realDataDir + "/postgresql.conf"
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: confPath))
                handle.seekToEndOfFile()
                handle.write(conf.data(using: .utf8)!)
                try handle.close()
            }
            try Self.secureDirectory(socketDir, mode: 0o700)
            let runtime = "port = \(port)\nunix_socket_directories = \(Self.quoteConf(socketDir))\n"
            try runtime.write(toFile: realDataDir + "/meter_runtime.conf", atomically: false, encoding: .utf8)
            if Self.isRoot {
                try chownToPostgres(socketDir)
                try chownToPostgres(realDataDir + "/meter_runtime.conf")
            }
            removeStaleLockFile(log: log)
            log("starting PostgreSQL on \(socketDir) port \(port)")
            let r = try run(["pg_ctl", "start", "-D", realDataDir, "-w", "-t", "60", "-l", realDataDir + "/server.log"],
                            check: false)
            if r.status != 0 {
                let tail = (try? String(contentsOfFile: realDataDir + "/server.log", encoding: .utf8))?
                    .split(separator: "\n").suffix(10).joined(separator: "\n") ?? ""
                throw Failure(description: "pg_ctl start failed (\(r.status)): \(r.output)\n\(tail)")
            }
            try ensureDatabase(database)
            return true
        }
    }

    public func stop() throws {
        guard try isRunning() else { return }
        try run(["pg_ctl", "stop", "-D", realDataDir, "-m", "fast", "-w", "-t", "60"])
    }

    /// A zombie (unreadable: taken as alive).
    package static func isZombie(_ pid: pid_t) -> Bool { procStat(pid)?.state == "Z" }

    /// State and parent of a process, from /proc/PID/stat: `pid (comm) state ppid ...` (comm may
    /// hold spaces and parentheses, hence the last ')').
    package static func procStat(_ pid: pid_t) -> (state: Substring, ppid: pid_t)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 1, let ppid = pid_t(fields[1]) else { return nil }
        return (fields[0], ppid)
    }

    /// Creates `name` when missing (connecting to the `postgres` database).
    public func ensureDatabase(_ name: String, template: String? = nil) throws {
        let conn = try PGConnection(conninfo: conninfo(database: "postgres"))
        defer { conn.close() }
        let exists = try conn.execute("select 1 from pg_catalog.pg_database where datname = $1", [name]).rows.count > 0
        if !exists {
            // Identifiers cannot be parameters; quote_ident does the quoting server-side.
            let stmt = try conn.execute("select 'create database ' || quote_ident($1)"
                                        + " || coalesce(' template ' || quote_ident($2), '') as s",
                                        [name, template]).single().string("s")
            do { try conn.execute(stmt) } catch let e where e.sqlState == "42P04" { /* created concurrently */ }
        }
    }

    // MARK: helpers

    private func prepareDirectory() throws {
        let fm = FileManager.default
        if !Self.isRoot {
            try fm.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
            chmod(dataDir, 0o700)
            return
        }
        // As root the server runs as `postgres`, which must be able to reach the directory.
        if !fm.fileExists(atPath: dataDir) {
            let parent = (dataDir as NSString).deletingLastPathComponent
            if try postgresCanReach(parent) {
                try fm.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
            } else {
                let relocated = "/var/tmp/meter-pg/\(Self.shortHash(dataDir))"
                try Self.secureDirectory("/var/tmp/meter-pg", mode: 0o755)
                try Self.secureDirectory(relocated, mode: 0o700)
                try fm.createSymbolicLink(atPath: dataDir, withDestinationPath: relocated)
            }
        }
        try chownToPostgres(realDataDir)
        chmod(realDataDir, 0o700)
    }

    private func postgresCanReach(_ dir: String) throws -> Bool {
        try run(["/usr/bin/test", "-x", dir], asPostgres: true, check: false).status == 0
    }

    private func chownToPostgres(_ path: String) throws {
        guard let pw = getpwnam("postgres") else {
            throw Failure(description: "running as root but there is no 'postgres' user (install postgresql-15)")
        }
        // lchown: never follow a symlink someone may have planted.
        guard lchown(path, pw.pointee.pw_uid, pw.pointee.pw_gid) == 0 else {
            throw Failure(description: "cannot hand \(path) to the postgres user (errno \(errno))")
        }
    }

    /// Creates a directory, or accepts an existing one only when it is a real directory (not a
    /// symlink) owned by us or by `postgres`: these paths live in world-writable /tmp and
    /// /var/tmp, where another local user could have prepared them.
    package static func secureDirectory(_ path: String, mode: mode_t) throws {
        var st = stat()
        if lstat(path, &st) == 0 {
            let isDir = (st.st_mode & S_IFMT) == S_IFDIR
            let pgUID = getpwnam("postgres")?.pointee.pw_uid
            guard isDir, st.st_uid == geteuid() || st.st_uid == pgUID else {
                throw Failure(description: "refusing to use \(path): not a directory owned by this user or postgres")
            }
            return
        }
        guard mkdir(path, mode) == 0 || errno == EEXIST else {
            throw Failure(description: "cannot create \(path) (errno \(errno))")
        }
        chmod(path, mode)
    }

    private func withLock<T>(_ body: () throws -> T) throws -> T {
        let lockPath = dataDir + ".lock"
        let fd = open(lockPath, O_CREAT | O_RDWR, 0o644)
        guard fd >= 0 else { throw Failure(description: "cannot open lock file \(lockPath)") }
        defer { close(fd) }
        flock(fd, LOCK_EX)
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    @discardableResult
    package func run(_ args: [String], asPostgres: Bool? = nil, check: Bool = true) throws -> Subprocess.Result {
        var argv = args
        if !argv[0].hasPrefix("/") { argv[0] = try Self.binDir() + "/" + argv[0] }
        var cwd: String?
        if asPostgres ?? Self.isRoot {
            let runuser = ["/usr/sbin/runuser", "/sbin/runuser"].first { FileManager.default.isExecutableFile(atPath: $0) }
            guard let runuser else { throw Failure(description: "running as root but runuser is not available") }
            argv = [runuser, "-u", "postgres", "--"] + argv
            cwd = "/tmp"  // postgres may not be allowed into our working directory
        }
        let r = try Subprocess.run(argv, workingDirectory: cwd)
        if check && r.status != 0 {
            throw Failure(description: "\(args.joined(separator: " ")) failed (\(r.status)): \(r.output)")
        }
        return r
    }

    package static func shortHash(_ s: String) -> String {
        var h: UInt64 = 0xcbf29ce484222325  // FNV-1a, only to derive short stable names
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        return String(h, radix: 16).prefix(10).description
    }
}
