import Foundation
import Logging
import XCTest
import PGClient
import MeterWire
import MeterCore
import MeterDevKit

/// The rollup against real sessions and real commits: the commit-order race, a run terminated
/// mid-way, concurrent workers, late events, and a randomized interleaving checked against an
/// independent recomputation. Each test works in its own database (the watermark is global to a
/// database), created fresh and migrated.
final class RollupTests: XCTestCase {
    // MARK: the commit-order race

    /// Session 1 inserts and holds its transaction open (its event has the smaller id); session 2
    /// inserts and commits; a rollup runs; session 1 commits; a rollup runs. Both are counted once.
    func testEventCommittedAfterALaterOneWasRolledUpIsCountedOnce() throws {
        let db = try RollupDB.make("race")
        let s1 = try PGConnection(conninfo: db.info), s2 = try PGConnection(conninfo: db.info)
        let roll = try PGConnection(conninfo: db.info)

        try s1.execute("begin")
        let id1 = try db.ingest(s1, key: "early", hour: 3, value: "5")
        let id2 = try db.ingest(s2, key: "late", hour: 3, value: "7")
        XCTAssertLessThan(id1, id2, "session 1 took the smaller id")

        let first = try Rollup.run(roll)
        XCTAssertTrue(first.ran)
        XCTAssertEqual(first.eventsFolded, 0, "session 2's event waits: an older transaction is still open")
        let lag = try Rollup.lag(roll)
        XCTAssertEqual(lag.pendingEvents, 1, "only committed events are pending")
        XCTAssertEqual(lag.waitingOnHorizon, 1)
        XCTAssertEqual(lag.horizonHeldByPID, Int64(s1.backendPID), "rollup_lag names the session holding the horizon")

        try s1.execute("commit")
        let second = try Rollup.run(roll)
        XCTAssertEqual(second.eventsFolded, 2)
        XCTAssertEqual(try db.hour(roll, 3), .init(events: 2, quantity: "12", max: "7"))
        XCTAssertEqual(try Rollup.run(roll).eventsFolded, 0, "nothing is folded twice")
        XCTAssertEqual(try db.hour(roll, 3), .init(events: 2, quantity: "12", max: "7"))
        XCTAssertEqual(try db.verify(roll), [])
    }

    /// A transaction that rolls back never reaches the rollups, and does not block them after.
    func testRolledBackEventsAreNeverCounted() throws {
        let db = try RollupDB.make("rollback")
        let s1 = try PGConnection(conninfo: db.info), roll = try PGConnection(conninfo: db.info)
        try s1.execute("begin")
        _ = try db.ingest(s1, key: "ghost", hour: 2, value: "100")
        _ = try db.ingest(roll, key: "real", hour: 2, value: "1")
        XCTAssertEqual(try Rollup.run(roll).eventsFolded, 0)
        try s1.execute("rollback")
        XCTAssertEqual(try Rollup.run(roll).eventsFolded, 1)
        XCTAssertEqual(try db.hour(roll, 2), .init(events: 1, quantity: "1", max: "1"))
        XCTAssertEqual(try db.verify(roll), [])
    }

    // MARK: crash mid-run

    /// A run is terminated (pg_terminate_backend) while blocked inside it: after folding events
    /// into rollup_hourly but before its cancellations, and while folding events. The next run
    /// counts every event and cancellation exactly once.
    func testRunTerminatedMidwayRollsBackAndTheNextRunCountsOnce() throws {
        for blockedTable in ["meter.rollup_hourly", "meter.event_cancellations", "meter.rollup_hourly_unique"] {
            let db = try RollupDB.make("crash")
            let c = try PGConnection(conninfo: db.info)
            for i in 0..<20 { _ = try db.ingest(c, key: "a\(i)", hour: i % 4, value: "\(i)", user: "u\(i % 3)") }
            XCTAssertEqual(try Rollup.run(c).eventsFolded, 20)
            for i in 0..<10 { _ = try db.ingest(c, key: "b\(i)", hour: i % 4, value: "\(i + 100)", user: "u\(i % 5)") }
            try db.cancel(c, keys: ["a1", "a2", "b3"])

            // The blocker holds a lock the run needs at one point of its work.
            let blocker = try PGConnection(conninfo: db.info)
            try blocker.execute("begin")
            try blocker.execute("lock table \(blockedTable) in share mode")
            let victim = try PGConnection(conninfo: db.info)
            let victimPID = victim.backendPID
            let outcome = RollupDB.Box<Result<Rollup.RunResult, any Error>>()
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                outcome.value = Result { try Rollup.run(victim) }
                done.signal()
            }
            try RollupDB.waitUntil("the run blocks on \(blockedTable)") {
                try c.execute("select wait_event_type from pg_stat_activity where pid = $1", [Int(victimPID)])
                    .rows.first?.optionalString("wait_event_type") == "Lock"
            }
            try c.execute("select pg_terminate_backend($1)", [Int(victimPID)])
            done.wait()
            guard case .failure = outcome.value else {
                return XCTFail("the terminated run must fail, got \(String(describing: outcome.value))")
            }
            try blocker.execute("rollback")

            XCTAssertEqual(try Rollup.lag(c).pendingEvents, 10, "the terminated run left the watermark where it was")
            let next = try Rollup.run(c)
            XCTAssertEqual(next.eventsFolded, 10, blockedTable)
            XCTAssertEqual(next.cancellationsFolded, 3, blockedTable)
            XCTAssertEqual(try db.verify(c), [], blockedTable)
            XCTAssertEqual(try db.totals(c), try db.expectedTotals(c), blockedTable)
        }
    }

    // MARK: concurrent workers

    func testASecondCallerReturnsAtOnceReportingItDidNothing() throws {
        let db = try RollupDB.make("lock")
        let a = try PGConnection(conninfo: db.info), b = try PGConnection(conninfo: db.info)
        _ = try db.ingest(a, key: "x", hour: 1, value: "1")
        try a.execute("begin")
        let held = try a.execute("select events_folded from meter.rollup_run()").single().int("events_folded")
        XCTAssertEqual(held, 1)
        let started = Date()
        let second = try Rollup.run(b)
        XCTAssertFalse(second.ran, "the lock is held by the open transaction of the first run")
        XCTAssertEqual(second.eventsFolded, 0)
        XCTAssertLessThan(Date().timeIntervalSince(started), 5, "it does not wait for the lock")
        XCTAssertThrowsError(try Rollup.drain(b, lockWait: 0.3), "drain gives up on a lock held too long") { error in
            XCTAssertTrue(error is Rollup.LockHeld, "\(error)")
        }
        try a.execute("commit")
        XCTAssertTrue(try Rollup.run(b).ran)
        XCTAssertEqual(try db.hour(b, 1).events, 1)
    }

    /// Four workers drain in a loop while two writers ingest and cancel: every event once.
    func testConcurrentWorkersAndWritersNeverDoubleCount() throws {
        let db = try RollupDB.make("workers")
        let stop = RollupDB.Box<Bool>(false)
        let group = DispatchGroup()
        let failures = RollupDB.Box<[String]>([])
        for w in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let c = try PGConnection(conninfo: db.info)
                    while !(stop.value ?? false) { _ = try Rollup.run(c, maxEvents: 7 + w * 13) }
                } catch { failures.mutate { $0?.append("worker \(w): \(error)") } }
            }
        }
        for wr in 0..<2 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let c = try PGConnection(conninfo: db.info)
                    for i in 0..<150 {
                        _ = try db.ingest(c, key: "w\(wr)-\(i)", hour: i % 6, value: "\(i % 17)", user: "u\(i % 11)")
                        if i % 10 == 9 { try db.cancel(c, keys: ["w\(wr)-\(i - 4)"]) }
                    }
                } catch { failures.mutate { $0?.append("writer \(wr): \(error)") } }
            }
        }
        // Let the writers finish, then stop the workers.
        Thread.sleep(forTimeInterval: 0.2)
        let c = try PGConnection(conninfo: db.info)
        try RollupDB.waitUntil("both writers finished", timeout: 60) {
            try c.execute("select count(*) as n from meter.events").single().int("n") == 300
        }
        stop.value = true
        group.wait()
        XCTAssertEqual(failures.value ?? [], [])
        try Rollup.drain(c)
        XCTAssertEqual(try db.verify(c), [])
        XCTAssertEqual(try db.totals(c), try db.expectedTotals(c))
        XCTAssertEqual(try c.execute("select sum(event_count) as n from meter.rollup_hourly").single().int("n"), 300 - 30)
    }

    // MARK: shards (decision 125)

    /// Three shards: workers run single shards (and one runs them all) while two writers ingest
    /// and cancel for three customers; a shard held by an open run is skipped, not waited for, and
    /// the others run. At the end every event is counted once, hours and period rows agree.
    func testShardsFoldAtOnceAndCountEveryEventOnce() throws {
        let db = try RollupDB.make("shards")
        let c = try PGConnection(conninfo: db.info)
        for cu in ["acme2", "acme3"] { try c.execute("select meter.customer_upsert($1)", [cu]) }
        try c.execute("select meter.rollup_shards_set(3)")
        XCTAssertEqual(try Rollup.shardCount(c), 3)
        let customers = ["acme", "acme2", "acme3"]
        @Sendable func put(_ conn: PGConnection, _ customer: String, _ key: String, _ hour: Int, _ value: Int) throws {
            let at = RFC3339Timestamp(epochMicroseconds: Int64(db.base.timeIntervalSince1970 - Double(hour) * 3600 + 17 * 60) * 1_000_000).iso8601
            let status = try conn.execute("select status from meter.event_ingest($1::jsonb)", [
                #"[{"customer":"\#(customer)","meter":"gb","idempotency_key":"\#(key)","occurred_at":"\#(at)","value":"\#(value)"}]"#,
            ]).single().string("status")
            precondition(status == "accepted", "\(key): \(status)")
        }

        // A shard held by an open run: the others run, that one is skipped at once.
        try put(c, "acme", "first", 1, 1)
        let holder = try PGConnection(conninfo: db.info)
        try holder.execute("begin")
        XCTAssertTrue(try holder.execute("select ran from meter.rollup_run(1000, 1)").single().bool("ran"))
        let started = Date()
        XCTAssertFalse(try Rollup.run(c, shard: 1).ran, "shard 1 is held by the open transaction")
        XCTAssertTrue(try Rollup.run(c, shard: 0).ran, "shard 0 is not")
        XCTAssertTrue(try Rollup.run(c, shard: 2).ran, "nor shard 2")
        XCTAssertFalse(try Rollup.run(c).ran, "every shard in turn: not all of them ran")
        XCTAssertLessThan(Date().timeIntervalSince(started), 5, "nobody waits for a held shard")
        try holder.execute("commit")

        let stop = RollupDB.Box<Bool>(false)
        let failures = RollupDB.Box<[String]>([])
        let group = DispatchGroup()
        for w in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let conn = try PGConnection(conninfo: db.info)
                    while !(stop.value ?? false) {
                        _ = try Rollup.run(conn, maxEvents: 5 + w * 7, shard: w == 3 ? nil : w)
                    }
                } catch { failures.mutate { $0?.append("worker \(w): \(error)") } }
            }
        }
        for wr in 0..<2 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let conn = try PGConnection(conninfo: db.info)
                    for i in 0..<120 {
                        let customer = customers[(i + wr) % 3]
                        try put(conn, customer, "w\(wr)-\(i)", i % 5, i % 13)
                        if i % 10 == 9 {
                            let victim = customers[(i - 3 + wr) % 3]
                            _ = try conn.execute("select status from meter.event_cancel($1::jsonb)", [
                                #"[{"customer":"\#(victim)","idempotency_key":"w\#(wr)-\#(i - 3)"}]"#,
                            ])
                        }
                    }
                } catch { failures.mutate { $0?.append("writer \(wr): \(error)") } }
            }
        }
        try RollupDB.waitUntil("both writers finished", timeout: 60) {
            try c.execute("select count(*) as n from meter.events").single().int("n") == 241
        }
        stop.value = true
        group.wait()
        XCTAssertEqual(failures.value ?? [], [])
        try Rollup.drainParallel(conninfo: db.info)
        XCTAssertEqual(try db.verify(c), [])
        XCTAssertEqual(try Rollup.periodVerify(c), [])
        XCTAssertEqual(try db.totals(c), try db.expectedTotals(c))
        XCTAssertEqual(try c.execute("select count(distinct customer_id) as n from meter.rollup_hourly").single().int("n"), 3)
        XCTAssertEqual(try Rollup.lag(c).pendingEvents, 0)
        XCTAssertEqual(try Rollup.lag(c).shards, 3)
    }

    // MARK: late events, cancellations

    func testLateEventUpdatesItsHourAndCancellationSubtractsOnce() throws {
        let db = try RollupDB.make("late")
        let c = try PGConnection(conninfo: db.info)
        _ = try db.ingest(c, key: "on-time", hour: 30, value: "2")
        try Rollup.drain(c)
        let before = try c.execute("select revision from meter.rollup_hourly").single().int("revision")
        _ = try db.ingest(c, key: "late", hour: 30, value: "9")    // 30 hours old, same hour
        _ = try db.ingest(c, key: "other", hour: 1, value: "4")
        XCTAssertEqual(try Rollup.run(c).hoursTouched, 2)
        XCTAssertEqual(try db.hour(c, 30), .init(events: 2, quantity: "11", max: "9"))
        XCTAssertEqual(try c.execute("select revision from meter.rollup_hourly where hour = $1::timestamptz",
                                     [db.hourStart(30)]).single().int("revision"), before + 1)

        try db.cancel(c, keys: ["late"])          // after its rollup: subtracted, max recomputed
        try db.cancel(c, keys: ["late"])          // again: nothing more
        try Rollup.drain(c)
        try Rollup.drain(c)
        XCTAssertEqual(try db.hour(c, 30), .init(events: 1, quantity: "2", max: "2"))

        _ = try db.ingest(c, key: "doomed", hour: 1, value: "50")
        try db.cancel(c, keys: ["doomed"])        // before its rollup: added and subtracted in one run
        let r = try Rollup.run(c)
        XCTAssertEqual(r.eventsFolded, 1)
        XCTAssertEqual(r.cancellationsFolded, 1)
        XCTAssertEqual(try db.hour(c, 1), .init(events: 1, quantity: "4", max: "4"))
        XCTAssertEqual(try db.verify(c), [])
    }

    // MARK: randomized interleaving

    /// Several connections interleave ingest (some inside transactions held open across other
    /// operations, some rolled back), redeliveries, cancellations and rollup runs with small
    /// max_events, in random order. Then: rollup_verify is empty, and the rollups equal totals
    /// recomputed here from what the database acknowledged (not from the database's own tables).
    func testRandomizedInterleavingMatchesAnIndependentRecomputation() throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["METER_TEST_SEED"] ?? "") ?? UInt64.random(in: 1...1_000_000)
        print("randomized rollup test seed: \(seed) (rerun with METER_TEST_SEED=\(seed))")
        var rng = SeededRandom(seed: seed)
        let db = try RollupDB.make("random")
        let conns = try (0..<4).map { _ in try PGConnection(conninfo: db.info) }
        var open: [Int: [(key: String, hour: Int, cents: Int, user: String)]] = [:]   // connection -> uncommitted events
        var committed: [String: (hour: Int, cents: Int, user: String)] = [:]
        var cancelled: Set<String> = []
        var nextKey = 0

        for _ in 0..<400 {
            let ci = Int(rng.next() % 4)
            let c = conns[ci]
            switch rng.next() % 10 {
            case 0...3:  // ingest 1-5 events, maybe redelivering a committed key
                var batch: [(key: String, hour: Int, cents: Int, user: String)] = []
                for _ in 0..<(1 + Int(rng.next() % 5)) {
                    if !committed.isEmpty && rng.next() % 5 == 0 {
                        let k = committed.keys.sorted()[Int(rng.next() % UInt64(committed.count))]
                        let e = committed[k]!
                        batch.append((k, e.hour, e.cents, e.user))  // a duplicate: must not count again
                    } else {
                        nextKey += 1
                        batch.append(("k\(nextKey)", Int(rng.next() % 48), Int(rng.next() % 100_000), "u\(rng.next() % 9)"))
                    }
                }
                let statuses = try db.ingestBatch(c, batch.map { ($0.key, $0.hour, $0.cents, $0.user) })
                let fresh = zip(batch, statuses).filter { $0.1 == "accepted" }.map { $0.0 }
                if c.isIdle {
                    for e in fresh { committed[e.key] = (e.hour, e.cents, e.user) }
                } else {
                    open[ci, default: []].append(contentsOf: fresh)
                }
            case 4:  // open a transaction (its events stay uncommitted across other operations)
                if c.isIdle { try c.execute("begin") }
            case 5:  // end it: commit or roll back
                if !c.isIdle {
                    if rng.next() % 3 == 0 {
                        try c.execute("rollback")
                    } else {
                        try c.execute("commit")
                        for e in open[ci] ?? [] { committed[e.key] = (e.hour, e.cents, e.user) }
                    }
                    open[ci] = nil
                }
            case 6:  // cancel a committed key (sometimes one already cancelled)
                if c.isIdle, !committed.isEmpty {
                    let k = committed.keys.sorted()[Int(rng.next() % UInt64(committed.count))]
                    try db.cancel(c, keys: [k])
                    cancelled.insert(k)
                }
            default:  // a rollup run with a small max_events, from whichever connection is idle
                if let idle = conns.first(where: { $0.isIdle }) {
                    _ = try Rollup.run(idle, maxEvents: 1 + Int(rng.next() % 20))
                }
            }
        }
        for (ci, c) in conns.enumerated() where !c.isIdle {
            try c.execute("commit")
            for e in open[ci] ?? [] { committed[e.key] = (e.hour, e.cents, e.user) }
        }
        let c = conns[0]
        try Rollup.drain(c)
        XCTAssertEqual(try db.verify(c), [], "seed \(seed)")

        // The expected rollups, from the acknowledged events and cancellations only.
        var expected: [Int: RollupDB.Hour] = [:]
        var users: [Int: Set<String>] = [:]
        for (k, e) in committed where !cancelled.contains(k) {
            var h = expected[e.hour] ?? .init(events: 0, quantity: "0", max: nil)
            h.events += 1
            h.cents += e.cents
            h.maxCents = max(h.maxCents ?? 0, e.cents)
            expected[e.hour] = h
            users[e.hour, default: []].insert(e.user)
        }
        for hour in 0..<48 {
            let got = try db.hour(c, hour)
            let want = expected[hour]
            XCTAssertEqual(got.events, want?.events ?? 0, "hour \(hour), seed \(seed)")
            XCTAssertEqual(got.quantity, RollupDB.decimal(cents: want?.cents ?? 0), "hour \(hour), seed \(seed)")
            XCTAssertEqual(got.max, want?.maxCents.map { RollupDB.decimal(cents: $0) }, "hour \(hour), seed \(seed)")
            XCTAssertEqual(try db.uniqueUsers(c, hour), users[hour] ?? [], "hour \(hour), seed \(seed)")
        }
    }
}

/// A fresh database per rollup test, with one customer and a sum meter whose unique_count twin
/// tracks the `user` property of the same events.
struct RollupDB: Sendable {
    let info: String
    /// The hour all test hours count back from (hour n = n hours before it).
    let base: Date

    static func make(_ tag: String) throws -> RollupDB {
        let info = try TestDatabase.freshDatabase("\(tag)_\(UInt16.random(in: 0...UInt16.max))")
        let c = try PGConnection(conninfo: info)
        defer { c.close() }
        try Migrator(sqlDirectory: TestDatabase.sqlDir).migrate(c)
        try c.execute("select meter.customer_upsert('acme')")
        try c.execute("select meter.meter_upsert('gb', 'sum')")
        try c.execute("select meter.meter_upsert('users', 'unique_count', 'user')")
        // Hour 0 is the last complete hour, so no test event lies in the future.
        let now = Date().timeIntervalSince1970
        return RollupDB(info: info, base: Date(timeIntervalSince1970: (now / 3600).rounded(.down) * 3600 - 3600))
    }

    func hourStart(_ n: Int) -> String {
        RFC3339Timestamp(epochMicroseconds: Int64(base.timeIntervalSince1970 - Double(n) * 3600) * 1_000_000).iso8601
    }

    /// One event in hour n (at minute 17), for both meters when `user` is given.
    @discardableResult
    func ingest(_ c: PGConnection, key: String, hour: Int, value: String, user: String? = nil) throws -> Int64 {
        let at = RFC3339Timestamp(epochMicroseconds: Int64(base.timeIntervalSince1970 - Double(hour) * 3600 + 17 * 60) * 1_000_000).iso8601
        let meter = user == nil ? "gb" : "users"
        let props = user.map { #"{"user":"\#($0)"}"# } ?? "{}"
        let r = try c.execute("select status, event_id from meter.event_ingest($1::jsonb)", [
            #"[{"customer":"acme","meter":"\#(meter)","idempotency_key":"\#(key)","occurred_at":"\#(at)","value":"\#(value)","properties":\#(props)}]"#,
        ]).single()
        let status = try r.string("status")
        precondition(status == "accepted", "ingest of \(key): \(status)")
        return try r.int("event_id")
    }

    /// A batch of events of the unique_count meter; value = cents / 100. Returns the statuses.
    func ingestBatch(_ c: PGConnection, _ events: [(key: String, hour: Int, cents: Int, user: String)]) throws -> [String] {
        let items = events.map { e in
            let at = RFC3339Timestamp(epochMicroseconds: Int64(base.timeIntervalSince1970 - Double(e.hour) * 3600 + 59 * 60) * 1_000_000).iso8601
            return #"{"customer":"acme","meter":"users","idempotency_key":"\#(e.key)","occurred_at":"\#(at)","value":"\#(Self.decimal(cents: e.cents))","properties":{"user":"\#(e.user)"}}"#
        }
        return try c.execute("select status from meter.event_ingest($1::jsonb) order by ord",
                             ["[" + items.joined(separator: ",") + "]"]).rows.map { try $0.string("status") }
    }

    func cancel(_ c: PGConnection, keys: [String]) throws {
        let items = keys.map { #"{"customer":"acme","idempotency_key":"\#($0)"}"# }
        for r in try c.execute("select status from meter.event_cancel($1::jsonb)", ["[" + items.joined(separator: ",") + "]"]).rows {
            let status = try r.string("status")
            precondition(["cancelled", "already_cancelled"].contains(status), status)
        }
    }

    struct Hour: Equatable, CustomStringConvertible {
        var events: Int64
        var quantity: String
        var max: String?
        var cents = 0
        var maxCents: Int?
        init(events: Int64, quantity: String, max: String?) { self.events = events; self.quantity = quantity; self.max = max }
        static func == (a: Hour, b: Hour) -> Bool { a.events == b.events && a.quantity == b.quantity && a.max == b.max }
        var description: String { "events \(events) quantity \(quantity) max \(max ?? "null")" }
    }

    /// The rollup of hour n, summed over both meters (tests use one meter per hour).
    func hour(_ c: PGConnection, _ n: Int) throws -> Hour {
        let r = try c.execute("""
            select coalesce(sum(event_count), 0) as events, trim_scale(coalesce(sum(quantity), 0))::text as quantity,
                   trim_scale(max(max_value))::text as max
            from meter.rollup_hourly where hour = $1::timestamptz
            """, [hourStart(n)]).single()
        return Hour(events: try r.int("events"), quantity: try r.string("quantity"), max: try r.optionalString("max"))
    }

    func uniqueUsers(_ c: PGConnection, _ n: Int) throws -> Set<String> {
        Set(try c.execute("select unique_value from meter.rollup_hourly_unique where hour = $1::timestamptz and event_count > 0",
                          [hourStart(n)]).rows.map { try $0.string("unique_value") })
    }

    func verify(_ c: PGConnection) throws -> [String] {
        try Rollup.verify(c, from: "-infinity", to: "infinity").map(\.description)
    }

    /// Rollup totals over all hours: events, quantity.
    func totals(_ c: PGConnection) throws -> [String] {
        let r = try c.execute("""
            select coalesce(sum(event_count), 0)::text as n, trim_scale(coalesce(sum(quantity), 0))::text as q
            from meter.rollup_hourly
            """).single()
        return [try r.string("n"), try r.string("q")]
    }

    /// The same totals straight from raw events minus cancellations (a different query path).
    func expectedTotals(_ c: PGConnection) throws -> [String] {
        let r = try c.execute("""
            select count(*)::text as n, trim_scale(coalesce(sum(value), 0))::text as q
            from meter.events e
            where not exists (select 1 from meter.event_cancellations x where x.event_id = e.id)
            """).single()
        return [try r.string("n"), try r.string("q")]
    }

    static func decimal(cents: Int) -> String {
        let s = "\(cents / 100)" + (cents % 100 == 0 ? "" : (cents % 10 == 0 ? ".\((cents % 100) / 10)" : String(format: ".%02d", cents % 100)))
        return s
    }

    static func waitUntil(_ what: String, timeout: TimeInterval = 20, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw ValidationFailure("timed out waiting until \(what)")
    }

    struct ValidationFailure: Error { let message: String; init(_ m: String) { message = m } }

    /// A value shared between test threads.
    final class Box<T>: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: T?
        init(_ v: T? = nil) { stored = v }
        var value: T? {
            get { lock.withLock { stored } }
            set { lock.withLock { stored = newValue } }
        }
        func mutate(_ f: (inout T?) -> Void) { lock.withLock { f(&stored) } }
    }
}

/// The serve loop itself under connection loss: its database connection is terminated again and
/// again while events arrive; the loop reconnects on its own, and every event is counted once.
final class RollupWorkerRecoveryTests: XCTestCase {
    func testLoopSurvivesTerminatedConnectionsAndCountsEveryEventOnce() async throws {
        let db = try RollupDB.make("worker")
        var config = RollupWorker.Configuration()
        config.interval = .milliseconds(100)
        config.minGap = .milliseconds(10)
        config.maxEvents = 25
        let metrics = MeterMetrics()
        let worker = RollupWorker(conninfo: db.info, configuration: config, metrics: metrics, logger: TestDatabase.logger)
        let loop = Task { try await worker.run() }

        let writer = Task.detached { () throws -> Int in
            let c = try PGConnection(conninfo: db.info)
            for i in 0..<400 {
                try db.ingest(c, key: "w\(i)", hour: i % 5, value: "\(i % 13)", user: "u\(i % 7)")
                if i % 50 == 49 { try db.cancel(c, keys: ["w\(i - 10)"]) }
                if i % 20 == 0 { try await Task.sleep(for: .milliseconds(5)) }
            }
            return 400
        }
        // Meanwhile, terminate the worker's connection whenever it shows up.
        let admin = try PGConnection(conninfo: db.info)
        var kills = 0
        let deadline = Date().addingTimeInterval(20)
        while kills < 8 && Date() < deadline {
            let r = try admin.execute("""
                select pg_terminate_backend(pid) as killed from pg_stat_activity
                where application_name = 'meter-rollup' and datname = current_database()
                """)
            kills += r.rows.filter { (try? $0.bool("killed")) == true }.count
            try await Task.sleep(for: .milliseconds(30))
        }
        XCTAssertGreaterThanOrEqual(kills, 8, "the worker's connection was terminated repeatedly")
        _ = try await writer.value

        // The loop catches up on its own after the last kill.
        try RollupDB.waitUntil("the loop caught up", timeout: 30) {
            let lag = try Rollup.lag(admin)
            return lag.pendingEvents == 0 && lag.pendingCancellations == 0
        }
        loop.cancel()
        _ = try? await loop.value
        XCTAssertEqual(try db.verify(admin), [])
        XCTAssertEqual(try db.totals(admin), try db.expectedTotals(admin))
        XCTAssertEqual(try admin.execute("select sum(event_count) as n from meter.rollup_hourly").single().int("n"), 400 - 8)
        let text = String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self)
        XCTAssertTrue(text.contains("meter_rollup_events_total 400"), "every event folded once by the loop:\n\(text)")
    }
}
