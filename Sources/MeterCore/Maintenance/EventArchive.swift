import Crypto
import Foundation
import PGClient
import MeterWire

/// Archiving a closed UTC month of events (`meterctl events archive`, decision 122): export its
/// partition to a file, verify the file, then let `meter.events_archive` keep the keys' content
/// digests, record the archive and drop the partition. Nothing is dropped unless every check
/// passed; a refusal leaves the database as it was (and the file, for inspection).
public enum EventArchive {
    public struct Options: Sendable {
        public var month: String
        public var directory: String
        /// Invoice lines whose events hash is recomputed from the file.
        public var sample = 100
        /// How long after the month's end late events may arrive (serve's largest past tolerance + clock allowance).
        public var lateWindowSeconds = 35 * 86_400 + 300
        public init(month: String, directory: String) { self.month = month; self.directory = directory }
    }

    public struct Result: Sendable {
        public var file: String
        public var sha256: String
        public var events: Int
        public var bytes: Int
        public var hashesChecked: Int
        public var periods: [String]
        public var unbilledEvents: Int64
    }

    /// Lowercase hex SHA-256 of bytes (a signed report's, for meter.period_signoffs).
    public static func sha256Hex(_ data: Data) -> String { SHA256.hash(data: data).map { Hex.byte($0) }.joined() }

    public struct Refused: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// The whole procedure; `progress` gets one line per step (and per 100,000 rows exported).
    public static func archive(_ conn: PGConnection, _ o: Options, progress: (String) -> Void) throws -> Result {
        // 1. May it be archived at all (attached, late window over, rolled up, closed, signed off)?
        let check = try conn.execute("""
            select partition_name, events, array_to_string(periods, ',') as periods, unbilled_events
            from meter.events_archive_check($1, make_interval(secs => $2::bigint))
            """, [o.month, String(o.lateWindowSeconds)]).single()
        let partition = try check.string("partition_name")
        let expected = Int(try check.int("events"))
        let periods = try check.string("periods").split(separator: ",").map(String.init)
        let unbilled = try check.int("unbilled_events")
        progress("check: meter.\(partition) may be archived: \(expected) events, billed in periods \(periods.joined(separator: ", "))"
                 + (unbilled > 0 ? "; \(unbilled) events of customers without a plan (unbilled)" : ""))

        // 2. Export, ordered by id, timestamps in UTC; the SHA-256 computed as the bytes go out.
        try FileManager.default.createDirectory(atPath: o.directory, withIntermediateDirectories: true)
        let name = "events-\(o.month).copy"
        let path = (o.directory as NSString).appendingPathComponent(name)
        guard !FileManager.default.fileExists(atPath: path) else {
            throw Refused(description: "\(path) exists already: move it away (an archive is never overwritten)")
        }
        let partial = path + ".partial"
        guard FileManager.default.createFile(atPath: partial, contents: nil),
              let out = FileHandle(forWritingAtPath: partial) else { throw Refused(description: "cannot write \(partial)") }
        var hasher = SHA256()
        var rows = 0, bytes = 0
        var buffer = Data(); buffer.reserveCapacity(1 << 20)
        try conn.execute("select pg_catalog.set_config('timezone', 'UTC', false), pg_catalog.set_config('datestyle', 'ISO, YMD', false)")
        let copied = try conn.copyOut("""
            copy (select id, customer_id, meter_id, idempotency_key, occurred_at, received_at, value, properties, xid
                  from meter.\(partition) order by id) to stdout
            """) { chunk in
            hasher.update(bufferPointer: chunk)
            buffer.append(contentsOf: chunk)
            rows += 1; bytes += chunk.count
            if buffer.count >= 1 << 20 { try out.write(contentsOf: buffer); buffer.removeAll(keepingCapacity: true) }
            if rows % 100_000 == 0 { progress("export: \(rows) / \(expected) rows") }
        }
        try out.write(contentsOf: buffer)
        try out.synchronize()
        try out.close()
        let sha = hasher.finalize().map { Hex.byte($0) }.joined()
        guard copied == expected else {
            throw Refused(description: "exported \(copied) rows where the check counted \(expected): run again")
        }
        try FileManager.default.moveItem(atPath: partial, toPath: path)
        try "\(sha)  \(name)\n".write(toFile: path + ".sha256", atomically: true, encoding: .utf8)
        try syncFile(path + ".sha256")
        try syncFile(o.directory)  // the directory: both names durable before anything is dropped
        progress("export: \(copied) rows, \(bytes) bytes to \(path), SHA-256 \(sha) (also in \(name).sha256)")

        // 3. Verify from the file as it is on disk: its SHA-256 again, then loaded back and
        // compared with the partition row for row, then a sample of invoice lines rehashed.
        guard let back = FileHandle(forReadingAtPath: path) else { throw Refused(description: "cannot read \(path)") }
        defer { try? back.close() }
        var rehash = SHA256()
        try conn.execute("""
            create temp table if not exists events_archive_file (
                id bigint, customer_id bigint, meter_id bigint, idempotency_key text, occurred_at timestamptz,
                received_at timestamptz, value numeric, properties jsonb, xid xid8)
            """)
        try conn.execute("truncate pg_temp.events_archive_file")
        let lines = FileLines(handle: back) { rehash.update(data: $0) }
        let loaded = try conn.copyIn("copy pg_temp.events_archive_file from stdin", chunks: lines)
        if let e = lines.readError { throw Refused(description: "reading \(path) back failed (\(e)): the partition is kept") }
        let shaBack = rehash.finalize().map { Hex.byte($0) }.joined()
        guard shaBack == sha else { throw Refused(description: "\(path) reads back with SHA-256 \(shaBack), written \(sha): the partition is kept") }
        guard loaded == expected else { throw Refused(description: "\(path) loads \(loaded) rows, expected \(expected): the partition is kept") }
        let differing = try conn.execute("""
            select (select count(*) from (select id, customer_id, meter_id, idempotency_key, occurred_at, received_at, value::text, properties, xid::text
                                          from meter.\(partition)
                                          except all
                                          select id, customer_id, meter_id, idempotency_key, occurred_at, received_at, value::text, properties, xid::text
                                          from pg_temp.events_archive_file) d) as missing
            """).single().int("missing")
        guard differing == 0 else {
            throw Refused(description: "\(differing) rows of meter.\(partition) are not in \(path) as they are: the partition is kept")
        }
        progress("verify: \(path) reads back with the same SHA-256 and holds the partition's \(loaded) rows exactly")
        let sample = try conn.execute("select * from meter.events_archive_sample($1, $2::integer)", [o.month, String(o.sample)])
        var bad: [String] = [], differsFromInvoice: [String] = []
        for r in sample.rows {
            let stored = try r.optionalString("events_hash"), file = try r.optionalString("hash_from_file"),
                db = try r.optionalString("hash_from_database")
            let line = "invoice \(try r.string("invoice_id")) line \(try r.string("line_no")) (\(try r.string("customer")) / \(try r.string("meter")), \(try r.string("period")))"
            if file != db {
                bad.append("\(line): file \(file ?? "null"), database \(db ?? "null")")
            } else if stored != file {
                differsFromInvoice.append("\(line): invoice \(stored ?? "null"), file and database \(file ?? "null")")
            }
        }
        guard bad.isEmpty else {
            throw Refused(description: "events hashes recomputed from the file differ from the database's, the partition is kept:\n  "
                          + bad.joined(separator: "\n  "))
        }
        progress("verify: \(sample.rows.count) invoice lines' events hashes recomputed from the file equal the database's; "
                 + "\(sample.rows.count - differsFromInvoice.count) of them also the invoice's")
        for d in differsFromInvoice {
            progress("warning: \(d) (the close hashes by the rollup watermark, the recipe by arrival time: an event in flight at the close)")
        }

        // 4. The keys' digests (their own transaction), then the record, detach and drop (one).
        let digests = try conn.execute("select meter.events_archive_digests($1) as n", [o.month]).single().int("n")
        progress("digests: \(digests) keys of \(o.month) keep their event's content digest")
        try conn.transaction { c in
            _ = try c.execute("""
                select * from meter.events_archive($1, $2, $3, $4::bigint, $5::integer, make_interval(secs => $6::bigint))
                """, [o.month, path, sha, String(expected), String(sample.rows.count), String(o.lateWindowSeconds)])
        }
        try conn.execute("drop table if exists pg_temp.events_archive_file")
        progress("archive: meter.\(partition) detached and dropped; its \(expected) keys keep their content digest (meter.event_archives)")
        return Result(file: path, sha256: sha, events: expected, bytes: bytes, hashesChecked: sample.rows.count,
                      periods: periods, unbilledEvents: unbilled)
    }
}

/// fsync(2) of a file or a directory (its entries).
func syncFile(_ path: String) throws {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw EventArchive.Refused(description: "cannot open \(path) to sync it") }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw EventArchive.Refused(description: "fsync of \(path) failed (errno \(errno))") }
}

/// A file read in chunks that end at a newline (COPY text rows are never split across chunks,
/// and never in the middle of a UTF-8 character), each chunk's bytes also handed to `seen`.
final class FileLines: Sequence, IteratorProtocol {
    let handle: FileHandle
    let seen: (Data) -> Void
    var carry = Data()
    var done = false
    var readError: String?

    init(handle: FileHandle, seen: @escaping (Data) -> Void) { self.handle = handle; self.seen = seen }

    func next() -> String? {
        while !done {
            let data: Data?
            do { data = try handle.read(upToCount: 1 << 20) } catch {
                // a read error ends the rows early: the SHA-256 and row count checks then refuse
                readError = "\(error)"
                data = nil
            }
            guard let data, !data.isEmpty else {
                done = true
                if carry.isEmpty { return nil }
                defer { carry = Data() }
                return String(decoding: carry, as: UTF8.self)
            }
            seen(data)
            carry.append(data)
            if let last = carry.lastIndex(of: UInt8(ascii: "\n")) {
                let chunk = carry[carry.startIndex...last]
                carry = Data(carry[carry.index(after: last)...])
                return String(decoding: chunk, as: UTF8.self)
            }
        }
        return nil
    }
}
