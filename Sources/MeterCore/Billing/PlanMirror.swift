// PlanMirror.swift: our plans' prices as price objects of the billing engine (`meterctl plans
// mirror`, and the replay's setup). Customers linked afterwards get their plan's engine price
// (meter.billing_unlinked).
//
// Billing Meters (the default): each mirrored meter gets an engine Billing Meter of its code (a
// price on a filter of its dimensions one of its own: the code plus meter._line_suffix)
// (formula sum of hourly totals, or last of running maxima for a max meter), and the price is on
// it, per 10^-scale of the meter's unit when the meter is sent at a value scale (decision 101):
// unit amounts divided by 10^scale, package sizes and tier bounds multiplied by it. The scale is
// also kept in the price's metadata (meter_value_scale), where `meterctl billing price
// --price-id` reads it. Legacy usage records: aggregate_usage sum, or max for max meters.

import Crypto
import Foundation
import PGClient
import MeterWire

public enum PlanMirror {
    public enum EngineAPI: String, Sendable { case meterEvents = "meter-events", usageRecords = "usage-records" }

    public struct Failure: Error, CustomStringConvertible, Sendable { public let description: String }

    /// Every engine-billed plan price without a mirror gets an engine price (per_unit, package via
    /// transform_quantity, graduated and volume tiers), recorded with meter.plan_price_mirror_record.
    public static func mirror(_ c: PGConnection, client: BillingClient, engineMeters: [String],
                              api: EngineAPI = .meterEvents, scales: [String: Int] = [:]) async throws {
        let rows = try c.execute("""
            select p.code as plan, p.currency, m.code as meter, pp.filter::text as filter, meter._line_suffix(pp.filter) as suffix,
                   meter._filter_label(pp.filter, exists (select 1 from meter.plan_prices f
                                                          where f.plan_id = pp.plan_id and f.meter_id = pp.meter_id
                                                            and f.filter <> '{}')) as label,
                   pp.model, trim_scale(pp.unit_amount)::text as unit,
                   trim_scale(pp.package_size)::text as package, pp.tiers::text as tiers,
                   (select v.aggregation from meter.meter_version_ranges v where v.meter_id = m.id order by v.version desc limit 1) as aggregation
            from meter.plan_prices pp join meter.plans p on p.id = pp.plan_id join meter.meters m on m.id = pp.meter_id
            where pp.engine_price_id is null and m.code = any ($1::text[]) order by p.code, m.code, pp.filter::text
            """, [engineMeters]).rows
        for r in rows {
            let plan = try r.string("plan"), meter = try r.string("meter"), model = try r.string("model")
            let aggregation = try r.string("aggregation")
            // A priced filter of the meter's dimensions has an engine meter of its own (event name
            // plus meter._line_suffix; the default '{}' keeps the meter's), decision 110.
            let filter = try r.string("filter"), suffix = try r.string("suffix"), label = try r.string("label")
            let scale = api == .meterEvents ? scales[meter] ?? 0 : 0
            var params: [(String, String)] = [
                ("currency", try r.string("currency")), ("product_data[name]", "\(plan) \(meter)\(label)"), ("nickname", "\(plan)/\(meter)\(label)"),
                ("recurring[interval]", "month"), ("recurring[usage_type]", "metered"),
            ]
            if api == .meterEvents {
                let engineMeter = try await BillingMeters.ensure(client: client, eventName: meter + suffix, displayName: meter + label,
                                                                 formula: BillingMeters.formula(forAggregation: aggregation))
                params += [("recurring[meter]", engineMeter), ("metadata[meter_value_scale]", String(scale))]
            } else {
                params.append(("recurring[aggregate_usage]",
                               aggregation == "max" ? "max" : aggregation == "latest" ? "last_during_period" : "sum"))
            }
            /// A count of the meter's unit in the engine's unit (times 10^scale), which must be whole.
            func scaledCount(_ v: String, _ what: String) throws -> String {
                guard let s = try? MeterEventValue.scaled(v, scale: scale) else {
                    throw Failure(description: "plan \(plan), meter \(meter): \(what) \(v) is not whole at value scale \(scale)")
                }
                return s
            }
            switch model {
            case "per_unit": params.append(("unit_amount_decimal", BillingMeters.perScaledUnit(try r.string("unit"), scale: scale)))
            case "package":
                params += [("unit_amount_decimal", try r.string("unit")),
                           ("transform_quantity[divide_by]", try scaledCount(try r.string("package"), "the package size")),
                           ("transform_quantity[round]", "up")]
            default:
                params += [("billing_scheme", "tiered"), ("tiers_mode", model)]
                let tiers = try JSONParser.parse(try r.string("tiers")).arrayValue ?? []
                for (i, t) in tiers.enumerated() {
                    params.append(("tiers[\(i)][up_to]", try t["up_to"]?.numberLexeme.map { try scaledCount($0, "a tier bound") } ?? "inf"))
                    params.append(("tiers[\(i)][unit_amount_decimal]",
                                   BillingMeters.perScaledUnit(t["unit_amount"]?.numberLexeme ?? "0", scale: scale)))
                    if let f = t["flat_amount"]?.numberLexeme { params.append(("tiers[\(i)][flat_amount_decimal]", f)) }
                }
            }
            // The same parameters always give the same key (a retry replays, never duplicates).
            let price = try await client.post("/v1/prices", params, idempotencyKey: BillingMeters.key("meter-plan-price-\(plan)-\(meter)", params),
                                              version: api == .meterEvents ? client.configuration.apiVersion : nil)
            try c.execute("select meter.plan_price_mirror_record($1, $2, $3, $4::jsonb)", [plan, meter, price["id"]!.stringValue!, filter])
        }
    }

    /// Each of `meters` is billed from `since` (Unix seconds) with the engine mirror of `plan`'s
    /// price for it (meter.billing_price_set): the meters' hours enter the outbox. Mirror first,
    /// with the same `api` and `scales`.
    public static func billMeters(_ c: PGConnection, plan: String, meters: [String], since: Int64,
                                  api: EngineAPI = .meterEvents, scales: [String: Int] = [:]) throws {
        for m in meters {
            let price = try c.execute("""
                select pp.engine_price_id from meter.plan_prices pp join meter.plans p on p.id = pp.plan_id
                join meter.meters m on m.id = pp.meter_id where p.code = $1 and m.code = $2 and pp.engine_price_id is not null
                order by pp.filter = '{}' desc, pp.filter::text limit 1
                """, [plan, m]).single().string("engine_price_id")
            try c.execute("select meter.billing_price_set($1, $2, to_timestamp($3::bigint), $4, $5)",
                          [m, price, since, api == .meterEvents ? m : nil, api == .meterEvents ? scales[m] ?? 0 : 0])
        }
    }
}
