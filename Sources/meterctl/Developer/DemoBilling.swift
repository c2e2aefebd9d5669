import ArgumentParser
import Foundation
import Logging
import PGClient
import MeterWire
import MeterCore
import BillingMock
import MeterDevKit

/// The billing part of `meterctl demo`: the mock engine in this process (its state persists in
/// the schema billing_mock, like the rest of the demo database), two priced meters, and at the
/// end the month's figures side by side: rollups → synced → engine.
struct DemoBilling {
    /// Billed through Billing Meters: (meter, cents per unit, value scale: storage has 2 decimals).
    static let pricedMeters = [("api_calls", "0.02", 0), ("storage_gb_hours", "1.5", 2)]
    let base: String
    let client: BillingClient
    let engine: InProcessServer
    let priced: String

    static func start(conninfo: String, sqlDir: String, logger: Logger) async throws -> DemoBilling {
        var config = BillingMockConfiguration()
        config.port = 0
        let engine = try await BillingMockServer.start(config: config, conninfo: conninfo, sqlDirectory: sqlDir, logger: logger)
        let base = "http://127.0.0.1:\(engine.port)"
        let client = BillingClient(BillingAPIConfiguration(baseURL: base, apiKey: "sk_test_meter_demo"))
        var notes: [String] = []
        do {
            let conn = try PGConnection(conninfo: conninfo)
            defer { conn.close() }
            for (meter, unit, scale) in pricedMeters {
                let existing = try conn.execute("""
                    select p.price_id from meter.billing_prices p join meter.meters m on m.id = p.meter_id where m.code = $1
                    """, [meter]).rows.first.map { try $0.string("price_id") }
                if let existing {
                    notes.append("\(meter) billed with \(existing)")
                    continue
                }
                let product = try await client.post("/v1/products", [("name", meter)], idempotencyKey: UUID().uuidString)
                let engineMeter = try await BillingMeters.ensure(client: client, eventName: meter, displayName: meter)
                let price = try await client.post("/v1/prices", [
                    ("currency", "usd"), ("product", product["id"]?.stringValue ?? ""),
                    ("unit_amount_decimal", BillingMeters.perScaledUnit(unit, scale: scale)),
                    ("recurring[interval]", "month"), ("recurring[usage_type]", "metered"), ("recurring[meter]", engineMeter),
                    ("metadata[meter_value_scale]", String(scale)), ("nickname", meter),
                ], idempotencyKey: UUID().uuidString)["id"]!.stringValue!
                // Only this month's hours: the engine bills calendar months from the 1st.
                try conn.execute("select meter.billing_price_set($1, $2, date_trunc('month', now(), 'UTC'), $1, $3)",
                                 [meter, price, scale])
                notes.append("\(meter) priced at \(unit) cent/unit (\(price))")
            }
        } catch {
            await engine.stop()
            throw error
        }
        return DemoBilling(base: base, client: client, engine: engine, priced: notes.joined(separator: ", "))
    }

    func stop() async {
        await engine.stop()
    }

    /// This month, per seeded customer and priced meter: the rolled-up total, what the outbox
    /// records as synced, and the engine's meter event summary for the month (its unit).
    func report(conninfo: String, customers: [String]) async throws {
        print("\n-- this month, rollups → synced → billing engine (count: events; sum: quantity) --")
        let conn = try PGConnection(conninfo: conninfo)
        defer { conn.close() }
        let rows = try conn.execute("""
            select c.external_id as customer, m.code as meter, l.subscription_item_id as item,
                   bc.billing_customer_id as cus, p.event_name, p.value_scale,
                   extract(epoch from date_trunc('month', now(), 'UTC'))::bigint as month_start,
                   extract(epoch from date_trunc('month', now(), 'UTC') + interval '1 month')::bigint as month_end,
                   trim_scale(sum(case v.aggregation when 'count' then r.event_count::numeric else r.quantity end))::text as rolled,
                   trim_scale(coalesce(sum(o.synced_quantity) filter (where o.synced_revision = o.revision), 0))::text as synced,
                   count(*) filter (where o.state = 'synced')::text || '/' || count(*)::text as hours
            from meter.rollup_hourly r
            join meter.customers c on c.id = r.customer_id
            join meter.meters m on m.id = r.meter_id
            join meter.billing_prices p on p.meter_id = r.meter_id
            join meter.meter_version_ranges v on v.meter_id = r.meter_id and r.hour >= v.effective_from and r.hour < v.effective_until
            left join meter.sync_outbox o
                   on o.customer_id = r.customer_id and o.meter_id = r.meter_id and o.hour = r.hour
            left join meter.billing_links l on l.customer_id = r.customer_id and l.meter_id = r.meter_id
            left join meter.billing_customers bc on bc.customer_id = r.customer_id
            where r.hour >= date_trunc('month', now(), 'UTC')
              and c.external_id = any($1::text[])
            group by c.external_id, m.code, l.subscription_item_id, bc.billing_customer_id, p.event_name, p.value_scale
            order by 1, 2
            """, [customers]).rows
        var table: [[String]] = []
        var differing = 0
        var engineMeters: [String: String] = [:]  // event name -> the engine meter's id, looked up once
        for r in rows {
            let rolled = try r.string("rolled"), synced = try r.string("synced")
            var engine = "-"
            if try r.optionalString("item") != nil, let cus = try r.optionalString("cus"), let event = try r.optionalString("event_name") {
                // The engine's value of this month for the customer, back in the meter's unit.
                if engineMeters[event] == nil {
                    engineMeters[event] = try await BillingMeters.find(client: client, eventName: event)?["id"]?.stringValue
                }
                if let id = engineMeters[event] {
                    let page = try await client.get("/v1/billing/meters/\(id)/event_summaries", query: [
                        ("customer", cus), ("start_time", String(try r.int("month_start"))), ("end_time", String(try r.int("month_end")))])
                    if let v = page["data"]?.arrayValue?.first?["aggregated_value"]?.numberLexeme.flatMap({ Decimal(string: $0) }) {
                        engine = "\(v / pow(Decimal(10), Int(try r.int("value_scale"))))"
                    }
                }
            }
            let same = Decimal(string: rolled) == Decimal(string: synced) && Decimal(string: synced) == Decimal(string: engine)
            if !same { differing += 1 }
            table.append([try r.string("customer"), try r.string("meter"), try r.string("hours"), rolled, synced, engine,
                          same ? "ok" : "DIFFERENT"])
        }
        printTable(["customer", "meter", "hours synced", "rolled up", "synced", "engine", ""], table)
        if differing > 0 {
            throw ValidationFailure(description: "\(differing) customer/meter pair(s) differ between rollups, the outbox and the engine")
        }
    }
}
