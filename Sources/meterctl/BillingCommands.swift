import ArgumentParser
import Foundation
import Logging
import PGClient
import MeterCore

/// How to reach the billing engine: flags or environment, shared by every command that calls it
/// (serve, billing, sync, plans mirror, close).
struct BillingAPIOptions: ParsableArguments {
    @Option(name: .customLong("billing-api-base"), help: "Billing engine base URL (env METER_BILLING_API_BASE), e.g. http://127.0.0.1:12111")
    var apiBase: String?
    @Option(name: .customLong("billing-api-key"), help: "Billing engine secret key (env METER_BILLING_API_KEY), sk_test_...")
    var apiKey: String?
    @Option(name: .customLong("billing-timeout-seconds"), help: "Timeout of one billing API call, decimals allowed (env METER_BILLING_TIMEOUT_SECONDS). Default: 10")
    var timeoutSeconds: Double?
    @Option(name: .customLong("billing-test-clock"), help: "Create billing customers on this test clock (env METER_BILLING_TEST_CLOCK; tests and demos only)")
    var testClock: String?

    var configured: Bool { (apiBase ?? GlobalOptions.env["METER_BILLING_API_BASE"]) != nil }

    /// The engine to call; sync tuning at its defaults (commands that run the sync add SyncOptions).
    func sync() throws -> SyncConfiguration {
        let env = GlobalOptions.env
        guard let base = apiBase ?? env["METER_BILLING_API_BASE"] else {
            throw ValidationError("no billing engine: give --billing-api-base or METER_BILLING_API_BASE")
        }
        guard let key = apiKey ?? env["METER_BILLING_API_KEY"], !key.isEmpty else {
            throw ValidationError("no billing API key: give --billing-api-key or METER_BILLING_API_KEY")
        }
        guard base.hasPrefix("http://") || base.hasPrefix("https://") else {
            throw ValidationError("--billing-api-base must start with http:// or https://; got \(base)")
        }
        var api = BillingAPIConfiguration(baseURL: base, apiKey: key)
        if let s = try GlobalOptions.number(timeoutSeconds, "billing-timeout-seconds", "METER_BILLING_TIMEOUT_SECONDS", min: 0.1) {
            api.timeout = .milliseconds(Int64((s * 1000).rounded()))
        }
        var c = SyncConfiguration(api: api)
        c.testClock = testClock ?? env["METER_BILLING_TEST_CLOCK"]
        c.lease = max(c.lease, api.timeout * 3)
        return c
    }
}

/// Tuning of the billing sync loop: only on the commands that run it (serve, sync run).
struct SyncOptions: ParsableArguments {
    @Option(name: .customLong("sync-claim-hours"), help: "Hours claimed per sync pass (env METER_SYNC_CLAIM_HOURS). Default: 200")
    var claimHours: Int?
    @Option(name: .customLong("sync-concurrency"), help: "Usage sends in flight at once (env METER_SYNC_CONCURRENCY). Default: 8")
    var concurrency: Int?
    @Option(name: .customLong("sync-passes"), help: "Sync passes side by side in serve, each with --sync-concurrency sends: one claims and reports while another's sends are in flight (env METER_SYNC_PASSES). Default: 2")
    var passes: Int?
    @Option(name: .customLong("sync-max-attempts"), help: "Refusals (4xx) in a row before an hour is parked as dead; timeouts and 5xx park it only after 24 h unsynced (env METER_SYNC_MAX_ATTEMPTS). Default: 10")
    var maxAttempts: Int?
    @Option(name: .customLong("sync-backoff-cap-seconds"), help: "Longest wait between two attempts of an hour (env METER_SYNC_BACKOFF_CAP_SECONDS). Default: 300")
    var backoffCapSeconds: Int?
    @Option(name: .customLong("sync-lease-seconds"), help: "A claimed hour not reported within this is handed out again, e.g. after a crash; at least 3 × the call timeout (env METER_SYNC_LEASE_SECONDS). Default: 60")
    var leaseSeconds: Int?
    @Option(name: .customLong("sync-give-up-after-seconds"), help: "Park an hour as dead after this long unsynced with only unknown outcomes (timeouts, 5xx) (env METER_SYNC_GIVE_UP_AFTER_SECONDS). Default: 86400, the engine's idempotency-key lifetime; lower it only to rehearse dead letters")
    var giveUpAfterSeconds: Int?

    @Flag(name: .customLong("no-meter-event-stream"), help: "Send meter events one per call (POST /v1/billing/meter_events) instead of in batches of 100 through the v2 stream (env METER_SYNC_METER_EVENT_STREAM=off).")
    var noMeterEventStream = false

    /// `base` (from BillingAPIOptions.sync()) with this tuning applied.
    func apply(to base: SyncConfiguration) throws -> SyncConfiguration {
        var c = base
        func int(_ v: Int?, _ flag: String, _ name: String, min: Int) throws -> Int? {
            try GlobalOptions.number(v.map(Double.init), flag, name, min: Double(min), whole: true).map { Int($0) }
        }
        if let n = try int(claimHours, "sync-claim-hours", "METER_SYNC_CLAIM_HOURS", min: 1) { c.batch = n }
        if let n = try int(concurrency, "sync-concurrency", "METER_SYNC_CONCURRENCY", min: 1) { c.concurrency = n }
        if let n = try int(passes, "sync-passes", "METER_SYNC_PASSES", min: 1) {
            guard n <= 16 else { throw ValidationError("--sync-passes (METER_SYNC_PASSES) must be at most 16; got \(n)") }
            c.passes = n
        }
        if let n = try int(maxAttempts, "sync-max-attempts", "METER_SYNC_MAX_ATTEMPTS", min: 1) { c.maxAttempts = n }
        if let n = try int(backoffCapSeconds, "sync-backoff-cap-seconds", "METER_SYNC_BACKOFF_CAP_SECONDS", min: 1) { c.backoffCap = .seconds(n) }
        if let n = try int(giveUpAfterSeconds, "sync-give-up-after-seconds", "METER_SYNC_GIVE_UP_AFTER_SECONDS", min: 1) {
            guard n <= 86_400 else {
                throw ValidationError("--sync-give-up-after-seconds (METER_SYNC_GIVE_UP_AFTER_SECONDS) must be at most 86400 (the engine keeps idempotency keys 24 h); got \(n)")
            }
            c.giveUpAfter = .seconds(n)
        }
        if let n = try int(leaseSeconds, "sync-lease-seconds", "METER_SYNC_LEASE_SECONDS", min: 1) { c.lease = .seconds(n) }
        // The lease must outlast a call, or a slow call's hour would be handed out again meanwhile.
        c.lease = max(c.lease, c.api.timeout * 3)
        if let v = GlobalOptions.env["METER_SYNC_METER_EVENT_STREAM"], !["on", "off"].contains(v) {
            throw ValidationError("METER_SYNC_METER_EVENT_STREAM must be on or off; got \(v)")
        }
        if noMeterEventStream || GlobalOptions.env["METER_SYNC_METER_EVENT_STREAM"] == "off" { c.meterEventStream = false }
        return c
    }
}

/// `meterctl billing price|link|endpoint|webhook-secret`: what connects meter to the engine.
struct BillingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "billing",
        abstract: "Price meters in the billing engine, link customers, register the webhook endpoint.",
        subcommands: [Price.self, Link.self, Endpoint.self, WebhookSecret.self])

    struct Price: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bill a meter with a price of the engine (created here unless --price-id is given).",
            discussion: """
                Billing Meters (the default, Stripe's API since 2025-03-31.basil): creates the engine's \
                Billing Meter (event name = --event-name, pre-aggregated by hour: the sum of hourly totals, \
                or for a max meter the last of the hours' running maxima of the month) and \
                a monthly metered price on it, unless --price-id names an existing price on such a meter. \
                Meter events carry whole numbers: each hour's total is sent times 10^--value-scale, and the \
                created price is per that unit. With --engine-api usage-records (accounts pinned to an \
                older API version), a legacy metered price and usage records (action=set) instead. Then \
                records it (meter.billing_price_set): the meter's hours enter the billing outbox from now \
                on, and the hours it already has are enqueued (those from --since on, if given).
                """)
        @OptionGroup var global: GlobalOptions
        @OptionGroup var billing: BillingAPIOptions
        @Option(help: "Meter code.") var meter: String
        @Option(name: .customLong("price-id"), help: "An existing price of the engine.") var priceID: String?
        @Option(name: .customLong("unit-amount-decimal"), help: "Price per unit of the meter in minor units (e.g. 0.5 = half a cent).")
        var unitAmountDecimal: String?
        @Option(help: "ISO currency, lower case. Default: usd") var currency = "usd"
        @Option(name: .customLong("engine-api"), help: "meter-events (Billing Meters) or usage-records (legacy). Default: meter-events; with --price-id, what the price is on (read from the engine)")
        var engineAPI: String?
        @Option(name: .customLong("event-name"), help: "The engine Billing Meter's event name (meter-events). Default: the meter code")
        var eventName: String?
        @Option(name: .customLong("value-scale"), help: "Meter events carry whole numbers: send each hour's total times 10^N (0-12; e.g. 3 for GB with 3 decimals). Default: 0; with --price-id, the price's metadata[meter_value_scale]")
        var valueScaleOption: Int?
        var valueScale: Int { valueScaleOption ?? 0 }
        @Option(name: .customLong("aggregate-usage"), help: "usage-records only: sum|max|last_during_period|last_ever. Default: max for max meters, else sum")
        var aggregateUsage: String?
        @Option(help: "Enqueue existing hours from this instant on (RFC 3339). Default: all") var since: String?

        func validate() throws {
            if (priceID == nil) == (unitAmountDecimal == nil) {
                throw ValidationError("give exactly one of --price-id or --unit-amount-decimal")
            }
            if let api = engineAPI, !["meter-events", "usage-records"].contains(api) {
                throw ValidationError("--engine-api must be meter-events or usage-records; got \(api)")
            }
            guard (0...12).contains(valueScale) else { throw ValidationError("--value-scale must be between 0 and 12; got \(valueScale)") }
            if engineAPI == "usage-records" && (eventName != nil || valueScaleOption != nil) {
                throw ValidationError("--event-name and --value-scale are for --engine-api meter-events")
            }
            if engineAPI != "usage-records" && priceID == nil && aggregateUsage != nil {
                throw ValidationError("--aggregate-usage is for --engine-api usage-records (a Billing Meter sums its hourly totals)")
            }
            if priceID != nil && aggregateUsage != nil {
                throw ValidationError("--aggregate-usage is for a price created here (without --price-id)")
            }
            if let u = unitAmountDecimal, u.range(of: #"^[0-9]{1,20}(\.[0-9]{1,12})?$"#, options: .regularExpression) == nil {
                throw ValidationError("--unit-amount-decimal must be a non-negative decimal (at most 12 decimals); got \(u)")
            }
        }

        func run() async throws {
            let logger = global.bootstrapLogging(defaultLevel: .warning)
            let conninfo = try global.conninfo(migrate: global.target.isEmbedded)
            var price = priceID
            var event = engineAPI == "usage-records" ? nil : (eventName ?? meter)
            var scale = valueScale
            if let priceID {
                // The price says which API it bills: a price on a Billing Meter (recurring.meter)
                // takes meter events of that meter's event name; any other, usage records.
                if billing.configured {
                    let client = BillingClient(try billing.sync().api)
                    let p = try await client.get("/v1/prices/\(priceID)")
                    if let engineMeter = p["recurring"]?["meter"]?.stringValue {
                        guard engineAPI != "usage-records" else {
                            throw ValidationError("price \(priceID) is on the Billing Meter \(engineMeter): it takes meter events, not usage records")
                        }
                        let m = try await client.get("/v1/billing/meters/\(engineMeter)")
                        guard let name = m["event_name"]?.stringValue else { throw ValidationError("the engine's meter \(engineMeter) has no event_name") }
                        if let given = eventName, given != name {
                            throw ValidationError("price \(priceID) is on the meter of event name \(name), not \(given)")
                        }
                        event = name
                        if valueScaleOption == nil, let s = p["metadata"]?["meter_value_scale"]?.stringValue, let n = Int(s), (0...12).contains(n) {
                            scale = n
                        }
                    } else {
                        guard engineAPI != "meter-events" && eventName == nil && valueScaleOption == nil else {
                            throw ValidationError("price \(priceID) is a legacy metered price (no recurring.meter): it takes usage records")
                        }
                        event = nil
                    }
                } else if engineAPI == nil {
                    throw ValidationError("with --price-id and no engine to read the price from, say --engine-api meter-events (with --event-name) or usage-records")
                }
            }
            if price == nil {
                let sync = try billing.sync()
                let client = BillingClient(sync.api)
                let pool = PGPool(conninfo: conninfo, maxConnections: 1, logger: logger)
                let aggregation = try await pool.withConnection { c in
                    try c.execute("""
                        select v.aggregation from meter.meters m join meter.meter_version_ranges v on v.meter_id = m.id
                        where m.code = $1 order by v.version desc limit 1
                        """, [meter]).rows.first.map { try $0.string("aggregation") }
                }
                await pool.shutdown()
                guard let aggregation else { throw ValidationError("unknown meter \(meter)") }
                let product = try await client.post("/v1/products", [("name", meter), ("metadata[meter]", meter)],
                                                    idempotencyKey: "meter-product-\(meter)-\(unitAmountDecimal!)-\(currency)-\(event ?? "usage-records")-\(scale)")
                var params: [(String, String)] = [
                    ("currency", currency), ("product", product["id"]?.stringValue ?? ""), ("nickname", meter),
                    ("recurring[interval]", "month"), ("recurring[usage_type]", "metered"),
                ]
                if let event {
                    let engineMeter = try await BillingMeters.ensure(client: client, eventName: event, displayName: meter,
                                                                     formula: BillingMeters.formula(forAggregation: aggregation))
                    params += [("recurring[meter]", engineMeter), ("metadata[meter_value_scale]", String(scale)),
                               ("unit_amount_decimal", BillingMeters.perScaledUnit(unitAmountDecimal!, scale: scale))]
                } else {
                    let agg = aggregateUsage ?? (aggregation == "max" ? "max" : "sum")
                    params += [("unit_amount_decimal", unitAmountDecimal!), ("recurring[aggregate_usage]", agg)]
                }
                let v = try await client.post("/v1/prices", params, idempotencyKey: BillingMeters.key("meter-price-\(meter)", params),
                                              version: event != nil ? client.configuration.apiVersion : nil)
                price = v["id"]?.stringValue
            }
            let n = try global.withConnection { c in
                try c.execute("select meter.billing_price_set($1, $2, $3::timestamptz, $4, $5) as n",
                              [meter, price!, since, event, event == nil ? 0 : scale]).single().int("n")
            }
            print("meter \(meter) billed with \(price!)"
                  + (event.map { " (meter events \($0), value scale \(scale))" } ?? " (usage records)")
                  + "; \(n) existing hour(s) enqueued")
        }
    }

    struct Link: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Provision billing customers, subscriptions and items for every unlinked customer/meter with usage.",
            discussion: "The sync worker does the same on its own; this runs it now and prints what was linked.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var billing: BillingAPIOptions
        func run() async throws {
            let logger = global.bootstrapLogging(defaultLevel: .warning)
            let sync = try billing.sync()
            let conninfo = try global.conninfo(migrate: global.target.isEmbedded)
            let pool = PGPool(conninfo: conninfo, maxConnections: 2, logger: logger)
            let client = BillingClient(sync.api)
            do {
                var total = 0
                while true {
                    let n = try await BillingSync.linkPending(pool: pool, client: client, config: sync, logger: logger)
                    total += n
                    if n == 0 { break }
                    print("linked \(total) customer/meter pair(s)")
                }
                print("link: \(total) pair(s) linked")
            } catch {
                await pool.shutdown(); throw error
            }
            await pool.shutdown()
        }
    }

    struct Endpoint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register our webhook URL with the engine and store its signing secret.",
            discussion: "Subscribes to invoice.created, invoice.finalized and invoice.paid; the returned whsec_ secret is added to meter.webhook_secrets.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var billing: BillingAPIOptions
        @Option(help: "Our public URL of POST /webhooks/billing.") var url: String
        @Option(name: .customLong("rotation"), help: "Register another endpoint for this URL, for a secret rotation named by this label (e.g. 2026-11); running it again with the same label returns the same endpoint (retire the old secret and disable the old endpoint afterwards).")
        var rotation: String?
        func run() async throws {
            _ = global.bootstrapLogging(defaultLevel: .warning)
            let sync = try billing.sync()
            let client = BillingClient(sync.api)
            // The key is the URL's (and the rotation's): a retry within the engine's 24 h returns the
            // same endpoint and secret instead of registering another one.
            let key = rotation.map { "meter-endpoint-\(url)-rotation-\($0)" } ?? "meter-endpoint-\(url)"
            let (id, secret) = try await client.registerWebhookEndpoint(url: url, idempotencyKey: key)
            let active = try global.withConnection { c in
                _ = try c.execute("insert into meter.webhook_secrets (secret) values ($1) on conflict (secret) do nothing", [secret])
                return try c.execute("select active from meter.webhook_secrets where secret = $1", [secret]).single().bool("active")
            }
            if active {
                print("endpoint \(id ?? "?") -> \(url); secret stored (active)")
            } else {
                // A retired secret is never reactivated behind the operator's back.
                print("endpoint \(id ?? "?") -> \(url); its secret was retired earlier and stays retired: use --rotation LABEL for a new endpoint and secret")
                throw ExitCode(1)
            }
        }
    }

    struct WebhookSecret: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "webhook-secret",
            abstract: "Add, list or retire webhook signing secrets (several may be active during a rotation).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "add <whsec_...> | list | retire <id>") var action: String
        @Argument(help: "The secret (add) or its id (retire).") var value: String?
        func run() throws {
            _ = global.bootstrapLogging(defaultLevel: .warning)
            try global.withConnection { c in
                switch (action, value) {
                case ("add", let s?):
                    _ = try c.execute("insert into meter.webhook_secrets (secret) values ($1) on conflict (secret) do update set active = true, retired_at = null", [s])
                    print("secret added (active)")
                case ("list", nil):
                    for r in try c.execute("select id, left(secret, 10) || '…' as s, active, created_at::text as c from meter.webhook_secrets order by id").rows {
                        print("\(try r.int("id"))  \(try r.string("s"))  \(try r.bool("active") ? "active " : "retired")  \(try r.string("c"))")
                    }
                case ("retire", let id?):
                    guard let n = Int64(id) else { throw ValidationError("retire needs the secret's numeric id (see list)") }
                    let k = try c.execute("update meter.webhook_secrets set active = false, retired_at = now() where id = $1 and active", [n]).affectedRows
                    guard k == 1 else { throw ValidationError("no active secret with id \(n)") }
                    print("secret \(n) retired")
                default:
                    throw ValidationError("usage: webhook-secret add <whsec_...> | list | retire <id>")
                }
            }
        }
    }
}

/// `meterctl sync run|retry|status`: the billing outbox by hand.
struct SyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Run, re-drive and inspect the billing sync (the outbox of hourly usage).",
        subcommands: [Run.self, Retry.self, Status.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Link and send every due hour now, until nothing is due; prints progress.",
            discussion: "Safe beside `meterctl serve`: both claim hours with SKIP LOCKED, never the same hour at once.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var billing: BillingAPIOptions
        @OptionGroup var tuning: SyncOptions
        func run() async throws {
            let logger = global.bootstrapLogging(defaultLevel: .warning)
            var sync = try tuning.apply(to: billing.sync())
            sync.worker = "meterctl-sync-run-\(ProcessInfo.processInfo.processIdentifier)"
            let conninfo = try global.conninfo(migrate: global.target.isEmbedded)
            let pool = PGPool(conninfo: conninfo, maxConnections: sync.concurrency + 1, logger: logger)
            let client = BillingClient(sync.api)
            let started = ContinuousClock.now
            let total: SyncPassResult
            do {
                total = try await BillingSync.drain(pool: pool, client: client, config: sync, logger: logger) { t in
                    print("linked \(t.linked), claimed \(t.claimed): \(t.succeeded) sent, \(t.failed) failed (\(t.dead) dead)")
                }
            } catch { await pool.shutdown(); throw error }
            await pool.shutdown()
            let s = (ContinuousClock.now - started).seconds
            print("sync: \(total.succeeded) hour(s) sent, \(total.failed) failed, \(total.dead) dead in " + String(format: "%.2f s", s))
        }
    }

    struct Retry: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-drive dead hours (meter.sync_retry), optionally of one customer and/or meter.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "External customer id.") var customer: String?
        @Option(help: "Meter code.") var meter: String?
        func run() throws {
            _ = global.bootstrapLogging(defaultLevel: .warning)
            let n = try global.withConnection { c in
                try c.execute("select meter.sync_retry($1, $2) as n", [customer, meter]).single().int("n")
            }
            print("\(n) dead hour(s) back to pending")
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the sync backlog and, per customer and meter, meter.sync_status.")
        @OptionGroup var global: GlobalOptions
        func run() throws {
            _ = global.bootstrapLogging(defaultLevel: .warning)
            try global.withConnection { c in
                let b = try c.execute("select * from meter.sync_backlog").single()
                print("pending \(try b.int("pending")), in flight \(try b.int("in_flight")), dead \(try b.int("dead")), "
                      + "oldest unsynced \(try b.string("oldest_unsynced_seconds")) s, unprocessed webhooks \(try b.int("webhooks_unprocessed"))")
                print("customer              meter                 linked  pending  in_flight  synced  dead  closed  oldest_unsynced")
                for r in try c.execute("""
                    select customer, meter, linked, pending, in_flight, synced, dead, closed,
                           coalesce(to_char(oldest_unsynced_age, 'HH24:MI:SS'), '-') as age
                    from meter.sync_status order by customer, meter
                    """).rows {
                    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
                    print(pad(try r.string("customer"), 22) + pad(try r.string("meter"), 22) + pad(try r.bool("linked") ? "yes" : "no", 8)
                          + pad(String(try r.int("pending")), 9) + pad(String(try r.int("in_flight")), 11)
                          + pad(String(try r.int("synced")), 8) + pad(String(try r.int("dead")), 6)
                          + pad(String(try r.int("closed")), 8) + (try r.string("age")))
                }
            }
        }
    }
}
