// BillingSync.swift
//
// The billing sync: provisioning links, then sending outbox hours to the engine. The rules live
// in SQL (meter.sync_claim / sync_succeeded / sync_failed, meter.billing_unlinked /
// billing_link_record); this file makes the HTTP calls between them.
//
//   link:  for each (customer, meter) with outbox hours and no subscription item: a billing
//          customer (once per customer), then a subscription with the meter's price (the first
//          meter) or an item added to that subscription (the next ones). Every call carries an
//          Idempotency-Key derived from our ids, so a crash between the call and the record
//          replays the same object within the engine's 24 h instead of creating a second one.
//   send:  claim up to `batch` hours, POST each hour's absolute total (a meter event on the
//          meter's Billing Meter, or a legacy usage record with action=set), report each outcome.
//          Calls run `concurrency` at a time; one hour is never in flight twice (the claim).

import Foundation
import Logging
import PGClient
import MeterWire

public struct SyncConfiguration: Sendable {
    public var api: BillingAPIConfiguration
    public var worker = "meter-sync-\(ProcessInfo.processInfo.processIdentifier)"
    public var batch = 200
    public var concurrency = 8
    public var maxAttempts = 10
    public var backoffBase: Duration = .seconds(1)
    public var backoffCap: Duration = .seconds(300)
    /// An hour whose sends keep ending with an unknown outcome (timeouts, 5xx) is parked as dead
    /// once it has been unsynced this long (meter.sync_failed's give_up_after). 24 h, the life of
    /// the engine's idempotency keys, in production; shorter only to rehearse dead letters.
    public var giveUpAfter: Duration = .seconds(86_400)
    /// A claim not reported within this is handed out again (must exceed the request timeout).
    public var lease: Duration = .seconds(60)
    /// Longest wait between polls when no NOTIFY arrives.
    public var interval: Duration = .seconds(1)
    /// Customers are created on this test clock (tests and demos; never in production).
    public var testClock: String?
    /// Meter events go in batches of up to 100 through the v2 stream when the engine has it
    /// (else, or when false, one POST /v1/billing/meter_events each).
    public var meterEventStream = true
    /// Passes running side by side (serve's sync worker, bench sync): while one pass's sends are
    /// in flight another claims and reports, so the engine is not left idle between passes. Each
    /// sends up to `concurrency` at once. Claims never overlap (SKIP LOCKED; an hour in flight is
    /// not claimable), so the guarantees are those of several workers (decision 105).
    public var passes = 2
    public init(api: BillingAPIConfiguration) { self.api = api }
}

public struct SyncPassResult: Sendable {
    public var linked = 0
    public var claimed = 0
    public var succeeded = 0
    public var failed = 0
    public var dead = 0
    public var stale = 0
}

public enum BillingSync {
    package static func seconds(_ d: Duration) -> String {
        String(d.seconds) + " seconds"
    }

    // MARK: links

    /// Provisions every unlinked (customer, meter) pair found (at most `limit`). Returns how many.
    public static func linkPending(pool: PGPool, client: BillingClient, config: SyncConfiguration, logger: Logger,
                                   limit: Int = 100) async throws -> Int {
        struct Pending: Sendable {
            let customerID: Int64, externalID: String, name: String?, meterID: Int64, meterCode: String, priceID: String
            /// The priced filter the item bills (its stored JSON text; "{}": the meter whole).
            let filter: String
            let billingCustomer: String?, subscription: String?
        }
        let rows = try await pool.withConnection { c in
            try c.execute("select *, price_filter::text as filter from meter.billing_unlinked($1)", [limit]).rows.map { r in
                Pending(customerID: try r.int("customer_id"), externalID: try r.string("customer_external_id"),
                        name: try r.optionalString("customer_name"), meterID: try r.int("meter_id"),
                        meterCode: try r.string("meter_code"), priceID: try r.string("price_id"), filter: try r.string("filter"),
                        billingCustomer: try r.optionalString("billing_customer_id"),
                        subscription: try r.optionalString("subscription_id"))
            }
        }
        var linked = 0
        // Pairs of one customer share its billing customer and subscription: in order, one by one.
        var known: [Int64: (customer: String, subscription: String?)] = [:]
        for p in rows {
            var cus = known[p.customerID]?.customer ?? p.billingCustomer
            var sub = known[p.customerID]?.subscription ?? p.subscription
            if cus == nil {
                var params = [("name", p.name ?? p.externalID), ("metadata[meter_customer]", p.externalID)]
                if let clock = config.testClock { params.append(("test_clock", clock)) }
                let v = try await client.post("/v1/customers", params, idempotencyKey: "meter-customer-\(p.customerID)")
                cus = v["id"]?.stringValue
                guard let id = cus else { throw BillingAPIError(status: nil, type: nil, code: nil, message: "customer without id") }
                try await record(pool, p.customerID, nil, id, nil, nil, nil, filter: "{}")
            }
            var item: String?
            if sub == nil {
                // Calendar-month periods in UTC, like the month close: started at the first of
                // this month (the engine's clock), renewing on the first of each month.
                let now = try await engineNow(client: client, config: config)
                let (start, anchor) = try await pool.withConnection { c in
                    let r = try c.execute("""
                        select extract(epoch from date_trunc('month', to_timestamp($1::bigint), 'UTC'))::bigint as s,
                               extract(epoch from date_trunc('month', to_timestamp($1::bigint), 'UTC') + interval '1 month')::bigint as a
                        """, [now]).single()
                    return (try r.int("s"), try r.int("a"))
                }
                let v = try await client.post("/v1/subscriptions", [
                    ("customer", cus!), ("items[0][price]", p.priceID), ("backdate_start_date", String(start)),
                    ("billing_cycle_anchor", String(anchor)), ("proration_behavior", "none"),
                    ("metadata[meter_customer]", p.externalID),
                ], idempotencyKey: "meter-subscription-\(p.customerID)")
                sub = v["id"]?.stringValue
                item = v["items"]?["data"]?.arrayValue?.first?["id"]?.stringValue
            } else {
                // (one item per priced filter of a meter: the filter's text is in the key)
                let v = try await client.post("/v1/subscription_items", [("subscription", sub!), ("price", p.priceID)],
                                              idempotencyKey: p.filter == "{}" ? "meter-item-\(p.customerID)-\(p.meterID)"
                                                  : BillingMeters.key("meter-item-\(p.customerID)-\(p.meterID)", [("filter", p.filter)]))
                item = v["id"]?.stringValue
            }
            guard let sub, let item else {
                throw BillingAPIError(status: nil, type: nil, code: nil, message: "subscription response without ids")
            }
            try await record(pool, p.customerID, p.meterID, cus!, sub, item, p.priceID, filter: p.filter)
            known[p.customerID] = (cus!, sub)
            linked += 1
            logger.info("sync.linked", metadata: ["customer": "\(p.externalID)", "meter": "\(p.meterCode)",
                                                  "filter": "\(p.filter)", "subscription_item": "\(item)"])
        }
        return linked
    }

    package static func record(_ pool: PGPool, _ customer: Int64, _ meter: Int64?, _ cus: String, _ sub: String?,
                       _ item: String?, _ price: String?, filter: String) async throws {
        try await pool.withConnection { c in
            _ = try c.execute("select meter.billing_link_record($1, $2, $3, $4, $5, $6, $7::jsonb)",
                              [customer, meter, cus, sub, item, price, filter])
        }
    }

    package static func engineNow(client: BillingClient, config: SyncConfiguration) async throws -> Int64 {
        if let clock = config.testClock {
            let v = try await client.get("/v1/test_helpers/test_clocks/\(clock)")
            if let t = v["frozen_time"]?.int64Value { return t }
        }
        return Int64(Date().timeIntervalSince1970)
    }

    // MARK: sending

    package struct Claimed: Sendable {
        package let customerID: Int64, meterID: Int64, hour: String, hourEpoch: Int64, quantity: String, key: String
        package let item: String, token: Int64, revision: Int64
        /// How the meter is billed (meter.billing_prices): meter events on a Billing Meter of
        /// `eventName` for `billingCustomer`, values times 10^valueScale; else usage records.
        package let eventName: String?, valueScale: Int, billingCustomer: String
        /// Meters priced per filter (meter._hour_lines): one meter event per filter, to the event
        /// name plus the filter's suffix, identifier = key plus suffix. Empty: the hour is one
        /// event (`quantity` to `eventName`, identifier `key`).
        package let lines: [(suffix: String, quantity: String)]
        /// What goes to the engine: (event name, identifier, quantity) per meter event.
        package var meterEvents: [(eventName: String, identifier: String, quantity: String)] {
            guard let eventName else { return [] }
            if lines.isEmpty { return [(eventName, key, quantity)] }
            return lines.map { (eventName + $0.suffix, key + $0.suffix, $0.quantity) }
        }
        /// Its meter event's timestamp: the hour's start plus the revision in seconds, so that of
        /// two revisions the newer is the newer event whatever order they land in (decision 100).
        package var eventTimestamp: Int64 { hourEpoch + min(revision, 3599) }
    }

    /// One pass: links (unless `link` is false: another pass loop provisions them), one claim of
    /// up to `batch` hours, their sends and reports.
    public static func pass(pool: PGPool, client: BillingClient, config: SyncConfiguration, metrics: SyncMetrics?,
                            logger: Logger, link: Bool = true) async throws -> SyncPassResult {
        var result = SyncPassResult()
        do {
            if link { result.linked = try await linkPending(pool: pool, client: client, config: config, logger: logger) }
        } catch {
            // Provisioning failures leave those pairs unlinked (their hours wait); the rest goes on.
            logger.warning("sync.link_failed", metadata: ["error": "\(error)"])
        }
        let worker = config.worker, batch = config.batch, lease = seconds(config.lease)
        let claimed = try await pool.withConnection { c in
            try c.execute("""
                select s.customer_id, s.meter_id, s.hour::text as hour, extract(epoch from s.hour)::bigint as epoch,
                       s.quantity::text as quantity, s.idempotency_key, s.subscription_item_id, s.claim_token, s.revision,
                       p.event_name, p.value_scale, b.billing_customer_id, s.lines::text as lines
                from meter.sync_claim($1, $2, $3::interval) s
                join meter.billing_prices p on p.meter_id = s.meter_id
                join meter.billing_customers b on b.customer_id = s.customer_id
                """, [worker, batch, lease]).rows.map { r in
                Claimed(customerID: try r.int("customer_id"), meterID: try r.int("meter_id"), hour: try r.string("hour"),
                        hourEpoch: try r.int("epoch"), quantity: try r.string("quantity"),
                        key: try r.string("idempotency_key"), item: try r.string("subscription_item_id"),
                        token: try r.int("claim_token"), revision: try r.int("revision"),
                        eventName: try r.optionalString("event_name"), valueScale: Int(try r.int("value_scale")),
                        billingCustomer: try r.string("billing_customer_id"),
                        lines: try (r.optionalString("lines").map { try JSONParser.parse($0).arrayValue ?? [] } ?? []).map {
                            ($0["suffix"]?.stringValue ?? "", $0["quantity"]?.stringValue ?? "0")
                        })
            }
        }
        result.claimed = claimed.count
        if claimed.isEmpty { return result }
        // Units of work: a batch of meter events for the v2 stream (up to 100), or one hour.
        var units: [[Claimed]] = []
        var streamed: [Claimed] = []
        let stream = config.meterEventStream ? !(await client.meterEventSession.unavailable) : false
        for h in claimed {
            if h.eventName != nil && stream {
                streamed.append(h)
            } else {
                units.append([h])
            }
        }
        let singles = units.count
        // Batches of at most eventsPerCall meter events (an hour of a meter priced per filter is
        // one event per filter; its events always travel together).
        var chunk: [Claimed] = [], events = 0
        for h in streamed {
            let n = h.meterEvents.count
            if events + n > MeterEventSession.eventsPerCall && !chunk.isEmpty { units.append(chunk); chunk = []; events = 0 }
            chunk.append(h); events += n
        }
        if !chunk.isEmpty { units.append(chunk) }
        let work = units.enumerated().map { (batch: $0.offset >= singles, hours: $0.element) }
        let outcomes = await withTaskGroup(of: [SendOutcome].self, returning: [SendOutcome].self) { group in
            var out: [SendOutcome] = []
            var next = 0
            func start(_ unit: (batch: Bool, hours: [Claimed])) {
                group.addTask {
                    if !unit.batch {
                        return [await send(unit.hours[0], pool: pool, client: client, config: config, metrics: metrics, logger: logger)]
                    }
                    return await sendBatch(unit.hours, pool: pool, client: client, config: config, metrics: metrics, logger: logger)
                }
            }
            while next < min(config.concurrency, work.count) { start(work[next]); next += 1 }
            for await o in group {
                out += o
                if next < work.count { start(work[next]); next += 1 }
            }
            return out
        }
        for o in outcomes {
            if o.state == "stale" { result.stale += 1 }
            else if o.sent { result.succeeded += 1 }
            else { result.failed += 1; if o.state == "dead" { result.dead += 1 } }
        }
        return result
    }

    /// Whether the engine acknowledged the send, and the hour's state after the report.
    package struct SendOutcome: Sendable { let sent: Bool; let state: String }

    /// Sends one claimed hour and reports the outcome.
    package static func send(_ h: Claimed, pool: PGPool, client: BillingClient, config: SyncConfiguration, metrics: SyncMetrics?,
                     logger: Logger) async -> SendOutcome {
        let started = ContinuousClock.now
        var error: BillingAPIError?
        do {
            if h.eventName != nil {
                // A Billing Meter pre-aggregated by hour keeps the newest event of each hour: the
                // hour's absolute total, as action=set did. (Per filter: one event each, in turn;
                // the hour is acknowledged when all were, and a repeat is deduplicated.)
                for e in h.meterEvents {
                    do {
                        _ = try await client.post("/v1/billing/meter_events", [
                            ("event_name", e.eventName), ("payload[stripe_customer_id]", h.billingCustomer),
                            ("payload[value]", try MeterEventValue.scaled(e.quantity, scale: h.valueScale)),
                            ("identifier", e.identifier), ("timestamp", String(h.eventTimestamp)),
                        ], idempotencyKey: e.identifier, version: client.configuration.apiVersion)
                    } catch let x where x.code == "duplicate_meter_event" {
                        continue
                    }
                }
            } else {
                _ = try await client.post("/v1/subscription_items/\(h.item)/usage_records", [
                    ("quantity", h.quantity), ("timestamp", String(h.hourEpoch)), ("action", "set"),
                ], idempotencyKey: h.key)
            }
        } catch let e {
            // Our identifier names (customer, meter, hour, revision) and a revision's total never
            // changes: "already submitted" means this very event was applied (a repeat after the
            // engine forgot the Idempotency-Key), so the hour is synced.
            error = h.eventName != nil && e.code == "duplicate_meter_event" ? nil : e
        }
        metrics?.sendDuration.record(ContinuousClock.now - started)
        return await report(h, failure: error, pool: pool, config: config, metrics: metrics, logger: logger)
    }

    /// Sends claimed hours as one call of the v2 meter event stream (answered at once; refusals
    /// come later as error reports, meter.sync_refused) and reports each hour's outcome. A value
    /// that cannot be sent is reported alone; an expired session is renewed once.
    package static func sendBatch(_ hours: [Claimed], pool: PGPool, client: BillingClient, config: SyncConfiguration,
                                  metrics: SyncMetrics?, logger: Logger) async -> [SendOutcome] {
        var outcomes: [SendOutcome] = []
        var events: [JSONValue] = []
        var sendable: [Claimed] = []
        for h in hours {
            do {
                var these: [JSONValue] = []
                for e in h.meterEvents {
                    let value = try MeterEventValue.scaled(e.quantity, scale: h.valueScale)
                    these.append(.obj([
                        "event_name": .string(e.eventName), "identifier": .string(e.identifier),
                        "timestamp": .string(RFC3339Timestamp(epochMicroseconds: h.eventTimestamp * 1_000_000).iso8601),
                        "payload": .obj(["stripe_customer_id": .string(h.billingCustomer), "value": .string(value)]),
                    ]))
                }
                events += these
                sendable.append(h)
            } catch {
                outcomes.append(await report(h, failure: error, pool: pool, config: config, metrics: metrics, logger: logger))
            }
        }
        if sendable.isEmpty { return outcomes }
        let started = ContinuousClock.now
        var failure: BillingAPIError?
        do {
            try await client.meterEventSession.stream(events, client: client,
                                                      idempotencyKey: BillingMeters.key("meter-stream", sendable.map { ("id", $0.key) }))
        } catch {
            failure = error
        }
        metrics?.sendDuration.record(ContinuousClock.now - started)
        if failure == nil {
            // Every hour of the batch acknowledged: one round trip reports them all, locking the
            // outbox rows in key order (as the rollup writes them), so that the two never wait on
            // each other in a cycle; the states come back in the batch's order.
            let acknowledged = sendable
            do {
                let states = try await pool.withConnection { c in
                    try c.execute("""
                        select k.s from (
                            select u.n, meter.sync_succeeded(u.c, u.m, u.h, u.t) as s
                            from (select * from unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::bigint[])
                                                with ordinality as x(c, m, h, t, n)
                                  order by x.c, x.m, x.h offset 0) u
                            offset 0) k
                        order by k.n
                        """, [acknowledged.map(\.customerID), acknowledged.map(\.meterID), acknowledged.map(\.hour),
                              acknowledged.map(\.token)])
                        .rows.map { try $0.string("s") }
                }
                metrics?.sends("ok").increment(by: Int64(sendable.count))
                return outcomes + states.map { SendOutcome(sent: true, state: $0) }
            } catch {
                // The reports did not reach Postgres: the claims' leases expire and the same
                // events are sent again, which the engine deduplicates by identifier.
                logger.warning("sync.report_failed", metadata: ["hours": "\(sendable.count)", "error": "\(error)"])
                return outcomes + sendable.map { _ in SendOutcome(sent: true, state: "unreported") }
            }
        }
        for h in sendable {
            outcomes.append(await report(h, failure: failure, pool: pool, config: config, metrics: metrics, logger: logger))
        }
        return outcomes
    }

    /// Records one hour's send outcome (meter.sync_succeeded / meter.sync_failed).
    package static func report(_ h: Claimed, failure: BillingAPIError?, pool: PGPool, config: SyncConfiguration,
                               metrics: SyncMetrics?, logger: Logger) async -> SendOutcome {
        let error = failure
        let (maxAttempts, base, cap) = (config.maxAttempts, seconds(config.backoffBase), seconds(config.backoffCap))
        let giveUp = seconds(config.giveUpAfter)
        do {
            let state: String = try await pool.withConnection { c in
                if let e = failure {
                    return try c.execute("""
                        select meter.sync_failed($1, $2, $3::timestamptz, $4, $5, $6, $7, $8::interval, $9::interval, $10::interval) as s
                        """, [h.customerID, h.meterID, h.hour, h.token, e.description, e.definitive, maxAttempts, base, cap, giveUp])
                        .single().string("s")
                }
                return try c.execute("select meter.sync_succeeded($1, $2, $3::timestamptz, $4) as s",
                                     [h.customerID, h.meterID, h.hour, h.token]).single().string("s")
            }
            if let e = error {
                metrics?.sends(e.definitive ? "rejected" : "failed").increment()
                logger.info("sync.send_failed", metadata: [
                    "key": "\(h.key)", "error": "\(e.description.prefix(200))", "definitive": "\(e.definitive)", "state": "\(state)",
                ])
                if state == "dead" {
                    metrics?.deadLettered.increment()
                    logger.warning("sync.dead_letter", metadata: ["key": "\(h.key)", "error": "\(e.description.prefix(200))"])
                }
            } else {
                metrics?.sends("ok").increment()
            }
            return SendOutcome(sent: failure == nil, state: state)
        } catch {
            // The report did not reach Postgres: the claim's lease expires and the same request is
            // repeated (same key), which the engine replays. Nothing is lost or doubled.
            logger.warning("sync.report_failed", metadata: ["key": "\(h.key)", "error": "\(error)"])
            return SendOutcome(sent: failure == nil, state: "unreported")
        }
    }

    /// Passes until nothing is due (for `meterctl sync run` and tests).
    public static func drain(pool: PGPool, client: BillingClient, config: SyncConfiguration, logger: Logger,
                             progress: (SyncPassResult) -> Void = { _ in }) async throws -> SyncPassResult {
        var total = SyncPassResult()
        while true {
            let r = try await pass(pool: pool, client: client, config: config, metrics: nil, logger: logger)
            total.linked += r.linked; total.claimed += r.claimed; total.succeeded += r.succeeded
            total.failed += r.failed; total.dead += r.dead; total.stale += r.stale
            progress(total)
            if r.claimed == 0 && r.linked == 0 { return total }
        }
    }
}

/// Meter events carry whole numbers (at most 15 digits): an hour's exact total times 10^scale.
public enum MeterEventValue {
    /// The value to send for `quantity` (a plain decimal, as Postgres prints numeric), or a
    /// definitive refusal naming the scale to use when it is not whole at this one.
    public static func scaled(_ quantity: String, scale: Int) throws(BillingAPIError) -> String {
        let negative = quantity.hasPrefix("-")
        let digits = negative ? String(quantity.dropFirst()) : quantity
        let parts = digits.split(separator: ".", omittingEmptySubsequences: false)
        let whole = String(parts.first ?? "0")
        var fraction = parts.count > 1 ? String(parts[1]) : ""
        while fraction.hasSuffix("0") { fraction.removeLast() }
        guard fraction.count <= scale else {
            throw BillingAPIError(status: nil, type: nil, code: "meter_value_not_whole",
                                  message: "the hour's total \(quantity) has \(fraction.count) decimal(s): a meter event takes whole numbers; bill the meter with --value-scale \(fraction.count) or more",
                                  notSent: true)
        }
        var value = whole + fraction + String(repeating: "0", count: scale - fraction.count)
        while value.count > 1 && value.hasPrefix("0") { value.removeFirst() }
        guard value.count <= 15 else {
            throw BillingAPIError(status: nil, type: nil, code: "meter_value_too_many_digits",
                                  message: "the hour's total \(quantity) at value scale \(scale) has more than 15 digits",
                                  notSent: true)
        }
        return (negative && value != "0" ? "-" : "") + value
    }
}
