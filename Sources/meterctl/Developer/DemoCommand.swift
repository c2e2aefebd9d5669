import ArgumentParser
import Foundation
import Logging
import PGClient
import MeterWire
import MeterCore
import MeterAPI
import MeterDevKit

struct Demo: AsyncParsableCommand {
    /// The UTC hour `offset` hours from now, as RFC 3339 (whole hour).
    static func hourText(_ offset: Int) -> String {
        let h = (Date().timeIntervalSince1970 / 3600).rounded(.down) * 3600 + Double(offset) * 3600
        return RFC3339Timestamp(epochMicroseconds: Int64(h) * 1_000_000).iso8601.replacingOccurrences(of: ".000000Z", with: "Z")
    }

    static let configuration = CommandConfiguration(
        abstract: "A short tour of the API: embedded Postgres, migrations, seed, the API, a sample ingested, cancelled and rolled up.",
        discussion: """
            Starts (or reuses) the embedded Postgres, migrates it, seeds examples/seed.json, creates an API \
            key, starts the service on a free loopback port, then sends a sample over HTTP: batches of \
            events, the same batches again (all duplicates), a conflict, a batch with invalid events, and \
            CloudEvents, then cancellations. The service's rollup loop folds it all into hourly rollups; \
            the demo reads them back through GET /v1/usage, compares them with raw events and runs \
            meter.rollup_verify. The mock billing engine runs in this process too: api_calls and \
            storage_gb_hours are priced there, the service's sync loop links the customers and sends every \
            changed hour, and the demo compares, per customer and meter, this month's rolled-up total, \
            what the outbox recorded as synced, and the engine's usage summary. Prints each response's \
            verdicts and then what the database holds.
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var service: ServiceOptions
    @Option(help: "Events in the sample. Default: 3000") var events: Int = 3000

    func run() async throws {
        let logger = global.bootstrapLogging(defaultLevel: .warning)
        let sqlDir = try global.target.locateSQL()
        let root = URL(fileURLWithPath: sqlDir).deletingLastPathComponent().path
        print("== meter demo ==")
        let conninfo = try global.conninfo(migrate: true)
        let seedPath = root + "/examples/seed.json"
        let seed = try SeedFile.load(path: seedPath)
        let token = APIKeys.generate()
        try {
            let conn = try PGConnection(conninfo: conninfo)
            defer { conn.close() }
            try seed.apply(conn)
            try APIKeys.register(conn, name: "demo", token: token)
        }()
        print("database:   \(global.target.isEmbedded ? global.target.embedded.psqlCommand : "DATABASE_URL")")
        print("seeded:     \(seed.customers.count) customers, \(seed.meters.count) meters (\(seedPath))")

        // The mock billing engine, in this process, and the two meters billed through it.
        let billing = try await DemoBilling.start(conninfo: conninfo, sqlDir: sqlDir, logger: logger)
        print("billing:    mock engine at \(billing.base) (schema billing_mock); \(billing.priced)")

        var config = service.configuration(sqlDir: sqlDir)
        config.port = service.port ?? 0
        config.expectedLedger = try MeterServer.expectedLedger(conninfo: conninfo, sqlDir: sqlDir)
        var sync = SyncConfiguration(api: billing.client.configuration)
        sync.interval = .milliseconds(200)
        sync.backoffCap = .seconds(5)
        config.sync = sync
        let started = try await MeterServer.start(config: config, conninfo: conninfo, poolSize: service.pool, logger: logger)
        let (port, server) = (started.port, started.stop)
        print("service:    http://127.0.0.1:\(port) (POST /v1/events), its rollup loop and billing sync")
        let n = events
        let customers = seed.customers.map(\.externalID)
        let runID = String(Int(Date().timeIntervalSince1970))
        try await onDedicatedThread {
            let client = LoadClient(port: port)
            let auth = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
            func show(_ label: String, _ r: LoadClient.Response) {
                let summary = r.body.range(of: "\"summary\":").map { r.body[$0.upperBound...].prefix(while: { $0 != "}" }) + "}" }
                print("  \(label.padding(toLength: 44, withPad: " ", startingAt: 0)) HTTP \(r.status)  \(summary.map(String.init) ?? String(r.body.prefix(160)))")
            }
            print("\n-- sending \(n) events in batches of 500, then every batch again --")
            let now = Date().timeIntervalSince1970
            var batches: [String] = []
            var i = 0
            while i < n {
                var items: [String] = []
                for j in i..<min(i + 500, n) {
                    let customer = customers[j % customers.count]
                    let t = RFC3339Timestamp(epochMicroseconds: Int64((now - Double(j % 7200)) * 1_000_000)).iso8601
                    switch j % 4 {
                    case 0: items.append(#"{"customer":\#(JSONWriter.quote(customer)),"meter":"api_calls","idempotency_key":"demo-\#(runID)-\#(j)","occurred_at":"\#(t)"}"#)
                    case 1: items.append(#"{"customer":\#(JSONWriter.quote(customer)),"meter":"storage_gb_hours","idempotency_key":"demo-\#(runID)-\#(j)","occurred_at":"\#(t)","value":"\#(j % 10).25"}"#)
                    case 2: items.append(#"{"customer":\#(JSONWriter.quote(customer)),"meter":"peak_seats","idempotency_key":"demo-\#(runID)-\#(j)","occurred_at":"\#(t)","value":\#(j % 50)}"#)
                    default: items.append(#"{"customer":\#(JSONWriter.quote(customer)),"meter":"active_users","idempotency_key":"demo-\#(runID)-\#(j)","occurred_at":"\#(t)","properties":{"user_id":"u\#(j % 37)","plan":"pro"}}"#)
                    }
                }
                batches.append("[" + items.joined(separator: ",") + "]")
                i += 500
            }
            for (k, b) in batches.enumerated() { show("batch \(k + 1) (first delivery)", try client.request("POST", "/v1/events", headers: auth, body: b)) }
            for (k, b) in batches.enumerated() { show("batch \(k + 1) (redelivery)", try client.request("POST", "/v1/events", headers: auth, body: b)) }

            print("\n-- single events --")
            let t0 = RFC3339Timestamp(epochMicroseconds: Int64(now * 1_000_000)).iso8601
            let single = #"{"customer":"acme","meter":"api_calls","idempotency_key":"demo-\#(runID)-single","occurred_at":"\#(t0)"}"#
            show("new event", try client.request("POST", "/v1/events", headers: auth, body: single))
            show("same event again (duplicate)", try client.request("POST", "/v1/events", headers: auth, body: single))
            show("same key, other value (conflict)", try client.request("POST", "/v1/events", headers: auth,
                body: single.replacingOccurrences(of: "}", with: #","value":2}"#)))
            show("unknown customer", try client.request("POST", "/v1/events", headers: auth,
                body: #"{"customer":"nobody","meter":"api_calls","idempotency_key":"x","occurred_at":"\#(t0)"}"#))
            show("no API key", try client.request("POST", "/v1/events", headers: [("Content-Type", "application/json")], body: single))

            print("\n-- a mixed batch: 2 valid, 3 invalid --")
            let mixed = "[" + [
                #"{"customer":"globex","meter":"api_calls","idempotency_key":"demo-\#(runID)-m1","occurred_at":"\#(t0)"}"#,
                #"{"customer":"globex","meter":"api_calls","idempotency_key":"demo-\#(runID)-m2","occurred_at":"not a time"}"#,
                #"{"customer":"globex","meter":"storage_gb_hours","idempotency_key":"demo-\#(runID)-m3","occurred_at":"\#(t0)","value":-1}"#,
                #"{"customer":"globex","meter":"api_calls","idempotency_key":"demo-\#(runID)-m4","occurred_at":"2020-01-01T00:00:00Z"}"#,
                #"{"customer":"globex","meter":"api_calls","idempotency_key":"demo-\#(runID)-m5","occurred_at":"\#(t0)"}"#,
            ].joined(separator: ",") + "]"
            let r = try client.request("POST", "/v1/events", headers: auth, body: mixed)
            show("mixed batch", r)
            print("  response: \(r.body)")

            print("\n-- CloudEvents (as OpenMeter clients send them) --")
            let ce = #"{"specversion":"1.0","id":"demo-\#(runID)-ce1","source":"demo","type":"storage_gb_hours","subject":"initech","time":"\#(t0)","data":{"value":"12.5","region":"eu"}}"#
            show("application/cloudevents+json", try client.request("POST", "/v1/events",
                headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/cloudevents+json")], body: ce))
            show("application/cloudevents-batch+json", try client.request("POST", "/v1/events",
                headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/cloudevents-batch+json")],
                body: "[" + ce.replacingOccurrences(of: "ce1", with: "ce2") + "," + ce + "]"))

            print("\n-- cancellations (POST /v1/events/cancel): the rollup subtracts each once --")
            let cancels = "[" + (0..<3).map { j in
                #"{"customer":\#(JSONWriter.quote(customers[j % customers.count])),"idempotency_key":"demo-\#(runID)-\#(j)","reason":"demo refund"}"#
            }.joined(separator: ",") + "]"
            show("cancel 3 events", try client.request("POST", "/v1/events/cancel", headers: auth, body: cancels))
            show("cancel the same 3 again", try client.request("POST", "/v1/events/cancel", headers: auth, body: cancels))
        }

        print("\n-- hourly rollups: the service's rollup loop, woken by NOTIFY --")
        let waitStart = ContinuousClock.now
        while true {
            let lag = try {
                let c = try PGConnection(conninfo: conninfo)
                defer { c.close() }
                return try Rollup.lag(c)
            }()
            if lag.pendingEvents == 0 && lag.pendingCancellations == 0 {
                print("  caught up \(ContinuousClock.now - waitStart) after the last request: watermark \(lag.position), \(lag.runsTotal) runs so far")
                break
            }
            if ContinuousClock.now - waitStart > .seconds(30) {
                throw ValidationFailure(description: "the rollup loop did not catch up in 30 s (pending \(lag.pendingEvents))")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let usagePath = "/v1/usage?customer=acme&granularity=hour&from=\(Self.hourText(-3))&to=\(Self.hourText(1))"
        let usage = try await onDedicatedThread {
            try LoadClient(port: port).request("GET", usagePath, headers: [("Authorization", "Bearer \(token)")])
        }
        print("  GET \(usagePath): HTTP \(usage.status)")
        if let json = try? JSONParser.parse(usage.body), let data = json["data"]?.arrayValue {
            for row in data {
                print("    \((row["from"]?.stringValue ?? "").padding(toLength: 22, withPad: " ", startingAt: 0)) "
                      + "\((row["meter"]?.stringValue ?? "").padding(toLength: 18, withPad: " ", startingAt: 0)) "
                      + "\((row["aggregation"]?.stringValue ?? "").padding(toLength: 13, withPad: " ", startingAt: 0)) "
                      + "quantity \(row["quantity"]?.stringValue ?? "?") (\(row["events"]?.numberLexeme ?? "?") events)")
            }
        }
        print("\n-- billing sync: the outbox drains to the engine (meter.sync_status) --")
        let syncStart = ContinuousClock.now
        while true {
            let left = try {
                let c = try PGConnection(conninfo: conninfo)
                defer { c.close() }
                return try c.execute("select pending + in_flight as n from meter.sync_backlog").single().int("n")
            }()
            if left == 0 {
                print("  outbox drained \(ContinuousClock.now - syncStart) after the rollups caught up")
                break
            }
            if ContinuousClock.now - syncStart > .seconds(30) {
                print("  \(left) hour(s) still pending after 30 s (see meterctl sync status)")
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        await server()
        try await billing.report(conninfo: conninfo, customers: seed.customers.map(\.externalID))
        await billing.stop()

        print("\n-- what the database holds for this run (meter.events, meter.event_redeliveries) --")
        let conn = try PGConnection(conninfo: conninfo)
        defer { conn.close() }
        let rows = try conn.execute("""
            select c.external_id as customer, m.code as meter, count(*) as events, sum(e.value)::text as total,
                   (select count(*) from meter.event_redeliveries r join meter.events e2 on e2.id = r.event_id
                     where e2.customer_id = c.id and e2.meter_id = m.id and e2.idempotency_key like $1) as redeliveries
            from meter.events e join meter.customers c on c.id = e.customer_id join meter.meters m on m.id = e.meter_id
            where e.idempotency_key like $1
            group by c.id, c.external_id, m.id, m.code order by 1, 2
            """, ["demo-\(runID)-%"]).rows
        printTable(["customer", "meter", "events", "total value", "redeliveries"],
                   try rows.map { [try $0.string("customer"), try $0.string("meter"), try $0.string("events"),
                                   try $0.string("total"), try $0.string("redeliveries")] })
        let total = try conn.execute("select count(*) as n from meter.events where idempotency_key like $1",
                                     ["demo-\(runID)-%"]).single().int("n")
        let expected = n + 1 + 2 + 2
        print("\nstored \(total) distinct events for this run (expected \(expected): \(n) sample + 1 single + 2 valid of the mixed batch + 2 CloudEvents)")
        if total != expected { throw ValidationFailure(description: "stored \(total) events, expected \(expected)") }

        print("\n-- raw events vs rollups, last 4 hours, the seeded customers (and meter.rollup_verify over everything) --")
        let window = try conn.execute("""
            with w as (select date_trunc('hour', now(), 'UTC') - interval '3 hours' as f,
                              date_trunc('hour', now(), 'UTC') + interval '1 hour' as t),
            raw as (
                select e.customer_id, e.meter_id, count(*) as n, sum(e.value) as q
                from meter.events e, w
                where e.occurred_at >= w.f and e.occurred_at < w.t
                  and not exists (select 1 from meter.event_cancellations x where x.event_id = e.id)
                group by 1, 2),
            rolled as (
                select r.customer_id, r.meter_id, sum(r.event_count) as n, sum(r.quantity) as q
                from meter.rollup_hourly r, w where r.hour >= w.f and r.hour < w.t
                group by 1, 2)
            select c.external_id as customer, m.code as meter,
                   coalesce(raw.n, 0)::text as raw_n, coalesce(rolled.n, 0)::text as rolled_n,
                   trim_scale(coalesce(raw.q, 0))::text as raw_q, trim_scale(coalesce(rolled.q, 0))::text as rolled_q,
                   (coalesce(raw.n, 0) = coalesce(rolled.n, 0) and coalesce(raw.q, 0) = coalesce(rolled.q, 0)) as same
            from raw full join rolled using (customer_id, meter_id)
            join meter.customers c on c.id = customer_id join meter.meters m on m.id = meter_id
            where c.external_id in (select jsonb_array_elements_text($1::jsonb))
            order by 1, 2
            """, ["[" + seed.customers.map { JSONWriter.quote($0.externalID) }.joined(separator: ",") + "]"]).rows
        printTable(["customer", "meter", "raw events", "rolled up", "raw sum", "rolled-up sum", ""],
                   try window.map { [try $0.string("customer"), try $0.string("meter"), try $0.string("raw_n"),
                                     try $0.string("rolled_n"), try $0.string("raw_q"), try $0.string("rolled_q"),
                                     try $0.bool("same") ? "ok" : "DIFFERENT"] })
        let diffs = try Rollup.verify(conn, from: "-infinity", to: "infinity")
        print("rollup_verify: \(diffs.isEmpty ? "no differing hour" : "\(diffs.count) differing hours")")
        let differing = try window.filter { try !$0.bool("same") }.count
        if !diffs.isEmpty || differing > 0 {
            throw ValidationFailure(description: "rollups differ from raw events")
        }
        print("open the database with: \(global.target.isEmbedded ? global.target.embedded.psqlCommand : "psql \"$DATABASE_URL\"")")
    }
}
