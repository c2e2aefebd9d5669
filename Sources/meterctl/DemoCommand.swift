import ArgumentParser
import Foundation
import Logging
import MeterCore

/// Starts a server in this process on a free port and returns it with a way to stop it.
func startInProcessServer(config: ServeConfiguration, conninfo: String, poolSize: Int,
                          logger: Logger) async throws -> (port: Int, stop: @Sendable () async -> Void) {
    let (stream, cont) = AsyncStream.makeStream(of: Int.self)
    let handle = MeterServer.Handle()
    let task = Task {
        try await MeterServer.run(config: config, conninfo: conninfo, poolSize: poolSize, logger: logger,
                                  handleSignals: false, handle: handle,
                                  onRunning: { port in cont.yield(port); cont.finish() })
    }
    for await port in stream {
        return (port, { await handle.stop(); _ = try? await task.value })
    }
    _ = try await task.value
    throw ValidationFailure(description: "server stopped before listening")
}

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The main job: embedded Postgres, migrations, seed, the API, a sample ingested over HTTP.",
        discussion: """
            Starts (or reuses) the embedded Postgres, migrates it, seeds examples/seed.json, creates an API \
            key, starts the service on a free loopback port, then sends a sample over HTTP: batches of \
            events, the same batches again (all duplicates), a conflict, a batch with invalid events, and \
            CloudEvents. Prints each response's verdicts and then what the database holds.
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var service: ServiceOptions
    @Option(help: "Events in the sample. Default: 3000") var events: Int = 3000

    func run() async throws {
        if global.logLevel == nil && GlobalOptions.env["LOG_LEVEL"] == nil {
            LoggingBootstrap.once(format: "json", level: .warning)
        }
        let logger = global.bootstrapLogging()
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
            try conn.execute("select meter.create_api_key($1, $2)", ["demo", token])
        }()
        print("database:   \(global.target.isEmbedded ? global.target.embedded.psqlCommand : "DATABASE_URL")")
        print("seeded:     \(seed.customers.count) customers, \(seed.meters.count) meters (\(seedPath))")

        var config = service.configuration(sqlDir: sqlDir)
        config.port = service.port ?? 0
        config.expectedLedger = try MeterServer.expectedLedger(conninfo: conninfo, sqlDir: sqlDir)
        let (port, server) = try await startInProcessServer(config: config, conninfo: conninfo,
                                                            poolSize: service.pool, logger: logger)
        print("service:    http://127.0.0.1:\(port) (POST /v1/events)")
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
        }
        await server()

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
        print("open the database with: \(global.target.isEmbedded ? global.target.embedded.psqlCommand : "psql \"$DATABASE_URL\"")")
    }
}
