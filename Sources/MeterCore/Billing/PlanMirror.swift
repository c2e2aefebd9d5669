// PlanMirror.swift: our plans' prices as price objects of the billing engine (`meterctl plans
// mirror`, and the replay's setup). Customers linked afterwards get their plan's engine price
// (meter.billing_unlinked).

import Crypto
import Foundation
import PGClient
import MeterWire

public enum PlanMirror {
    /// Every engine-billed plan price without a mirror gets an engine price (per_unit, package via
    /// transform_quantity, graduated and volume tiers), recorded with meter.plan_price_mirror_record.
    public static func mirror(_ c: PGConnection, client: BillingClient, engineMeters: [String]) async throws {
        let rows = try c.execute("""
            select p.code as plan, p.currency, m.code as meter, pp.model, trim_scale(pp.unit_amount)::text as unit,
                   trim_scale(pp.package_size)::text as package, pp.tiers::text as tiers,
                   (select v.aggregation from meter.meter_version_ranges v where v.meter_id = m.id order by v.version desc limit 1) as aggregation
            from meter.plan_prices pp join meter.plans p on p.id = pp.plan_id join meter.meters m on m.id = pp.meter_id
            where pp.engine_price_id is null and m.code = any ($1::text[]) order by p.code, m.code
            """, [engineMeters]).rows
        for r in rows {
            let plan = try r.string("plan"), meter = try r.string("meter"), model = try r.string("model")
            var params: [(String, String)] = [
                ("currency", try r.string("currency")), ("product_data[name]", "\(plan) \(meter)"), ("nickname", "\(plan)/\(meter)"),
                ("recurring[interval]", "month"), ("recurring[usage_type]", "metered"),
                ("recurring[aggregate_usage]", try r.string("aggregation") == "max" ? "max" : "sum"),
            ]
            switch model {
            case "per_unit": params.append(("unit_amount_decimal", try r.string("unit")))
            case "package":
                params += [("unit_amount_decimal", try r.string("unit")), ("transform_quantity[divide_by]", try r.string("package")),
                           ("transform_quantity[round]", "up")]
            default:
                params += [("billing_scheme", "tiered"), ("tiers_mode", model)]
                let tiers = try JSONParser.parse(try r.string("tiers")).arrayValue ?? []
                for (i, t) in tiers.enumerated() {
                    params.append(("tiers[\(i)][up_to]", t["up_to"]?.numberLexeme ?? "inf"))
                    params.append(("tiers[\(i)][unit_amount_decimal]", t["unit_amount"]?.numberLexeme ?? "0"))
                    if let f = t["flat_amount"]?.numberLexeme { params.append(("tiers[\(i)][flat_amount_decimal]", f)) }
                }
            }
            // The same parameters always give the same key (a retry replays, never duplicates).
            let digest = SHA256.hash(data: Array(params.map { $0.0 + "=" + $0.1 }.joined(separator: "&").utf8))
            let key = "meter-plan-price-\(plan)-\(meter)-" + digest.prefix(8).map { Hex.byte($0) }.joined()
            let price = try await client.post("/v1/prices", params, idempotencyKey: key)
            try c.execute("select meter.plan_price_mirror_record($1, $2, $3)", [plan, meter, price["id"]!.stringValue!])
        }
    }

    /// Each of `meters` is billed from `since` (Unix seconds) with the engine mirror of `plan`'s
    /// price for it (meter.billing_price_set): the meters' hours enter the outbox. Mirror first.
    public static func billMeters(_ c: PGConnection, plan: String, meters: [String], since: Int64) throws {
        for m in meters {
            let price = try c.execute("""
                select pp.engine_price_id from meter.plan_prices pp join meter.plans p on p.id = pp.plan_id
                join meter.meters m on m.id = pp.meter_id where p.code = $1 and m.code = $2 and pp.engine_price_id is not null
                """, [plan, m]).single().string("engine_price_id")
            try c.execute("select meter.billing_price_set($1, $2, to_timestamp($3::bigint))", [m, price, since])
        }
    }
}
