import Foundation
import Hummingbird
import NIOCore
import PGClient
import MeterWire
import MeterCore

/// GET /v1/customers/{customer}/limits/{meter}: "may this customer do one more?" The customer's
/// plan's limits on the meter in the open period (`meter.limit_check()`): per limit its filter,
/// limit, used (rollups plus what is committed but not rolled up yet, so an event ingested a
/// moment ago counts), remaining, whether it applies to the next event's dimension values
/// (`properties[model]=gpt-4o`) and whether `quantity` more (default 1) is allowed; `allowed` at
/// the top is true when every limit that applies allows it (and when there is none).
package struct LimitsController: Sendable {
    package let pool: PGPool
    package let ingest: IngestService

    package func addRoutes(to router: Router<BasicRequestContext>) {
        router.get("/v1/customers/:customer/limits/:meter", use: get)
    }

    @Sendable package func get(_ request: Request, context: BasicRequestContext) async throws -> Response {
        func decoded(_ name: String) -> String {
            let raw = context.parameters.get(name) ?? ""
            return raw.removingPercentEncoding ?? raw
        }
        let customer = decoded("customer"), meter = decoded("meter")
        let named = customer.isEmpty || customer.contains("\u{0}") ? nil : customer
        guard let token = APIRequest.bearerToken(request) else { return APIRequest.missingKey() }
        // A request that is not valid gets the key check alone first (a bad key is told before a
        // bad parameter); a valid one has its key checked in the same statement as the limits.
        func refusal(_ response: Response) async -> Response {
            if let refused = await APIRequest.authorizeRead(request, context: context, ingest: ingest, customer: named, what: "limits") {
                return refused
            }
            return response
        }
        func invalid(_ field: String, _ code: String, _ message: String) async -> Response {
            await refusal(APIResponse.error(.unprocessableContent, code: code, message: message, field: field))
        }
        guard let customer = named else { return await invalid("customer", "invalid_value", "customer must be a non-empty external id") }
        guard !meter.isEmpty, !meter.contains("\u{0}") else { return await invalid("meter", "invalid_value", "meter must be a non-empty code") }
        var seen: Set<String> = []
        var properties: [(String, JSONValue)] = []
        var asked = "1"
        for (k, v) in request.uri.queryParameters {
            let name = String(k).removingPercentEncoding ?? String(k)
            if v.contains("\u{0}") { return await invalid(name, "invalid_value", "\(name) must not contain NUL (%00)") }
            if name.hasPrefix("properties[") && name.hasSuffix("]") {
                let dimension = String(name.dropFirst(11).dropLast())
                guard APIRequest.isDimensionName(dimension) else {
                    return await invalid(name, "invalid_value", "\(name): a dimension is a property name of 1-64 letters, digits, _ . : or -")
                }
                if !seen.insert(name).inserted { return await invalid(name, "repeated_parameter", "\(name) is given more than once") }
                properties.append((dimension, .string(String(v))))
                continue
            }
            guard name == "quantity" else {
                return await invalid(name, "unknown_parameter", "unknown query parameter \"\(name)\"; expected quantity or properties[<dimension>]")
            }
            if !seen.insert(name).inserted { return await invalid(name, "repeated_parameter", "\(name) is given more than once") }
            asked = String(v)
        }
        let quantity = asked
        guard Self.isQuantity(quantity), quantity.contains(where: { $0 != "0" && $0 != "." }) else {
            return await invalid("quantity", "invalid_value", "quantity must be a positive decimal (at most 20 digits before the point and 12 after); got \(quantity)")
        }
        let dimensions: String? = properties.isEmpty ? nil : JSONValue.object(properties).text
        let keyHash = APIKeys.hashParameter(token)
        do {
            // the key check and the check, one statement (limit_check gives no row for a null
            // customer, which it gets when the key may not read)
            let rows = try await pool.withConnection { conn in
                try conn.executePrepared("""
                    select a.verdict, l.period, l.aggregation, l.filter::text as filter,
                           pg_catalog.trim_scale(l.limit_quantity)::text as lim,
                           l.used::text as used, l.remaining::text as remaining, l.applies, l.allowed
                    from (select meter.api_key_authorize($5::bytea, 'read', $1) as verdict) a
                    left join lateral meter.limit_check(case when a.verdict = 'ok' then $1 end, $2, $3::jsonb, $4::numeric) l on true
                    """, [customer, meter, dimensions, quantity, keyHash]).rows
            }
            let verdict = rows.first.flatMap({ (try? $0.optionalString("verdict")) ?? nil })
                .flatMap(IngestService.Authorization.init(rawValue:)) ?? .unauthorized
            if let refused = APIRequest.readRefusal(verdict, customer: customer, what: "limits") { return refused }
            return APIResponse.limits(customer: customer, meter: meter, rows: rows.filter { (try? $0.optionalString("filter")) != nil })
        } catch let e as PGError where e.sqlState == "P0002" {
            let (field, code) = e.message.hasPrefix("no meter") ? ("meter", "meter_not_found")
                : e.message.contains("has no plan") ? ("customer", "no_plan") : ("customer", "customer_not_found")
            return APIResponse.error(.notFound, code: code, message: e.message, field: field)
        } catch {
            return APIResponse.unavailable(error, context: context, message: "limits are unavailable; retry later")
        }
    }
}

extension LimitsController {
    /// A decimal quantity: 1-20 digits, optionally a point and 1-12 digits.
    static func isQuantity(_ s: String) -> Bool {
        let parts = s.utf8.split(separator: 0x2E, maxSplits: 1, omittingEmptySubsequences: false)
        func digits(_ p: Substring.UTF8View.SubSequence, _ max: Int) -> Bool {
            (1...max).contains(p.count) && p.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
        }
        guard let whole = parts.first, digits(whole, 20) else { return false }
        return parts.count == 1 || digits(parts[1], 12)
    }
}

extension APIResponse {
    package static func limits(customer: String, meter: String, rows: [PGRow]) -> Response {
        func text(_ r: PGRow, _ c: String) -> String? { (try? r.optionalString(c)) ?? nil }
        var items: [String] = []
        var allowed = true
        for r in rows {
            let applies = text(r, "applies") == "t", ok = text(r, "allowed") == "t"
            if applies && !ok { allowed = false }
            items.append("{\"filter\":\(text(r, "filter") ?? "{}")"
                + ",\"limit\":\(JSONWriter.quote(text(r, "lim") ?? "0"))"
                + ",\"used\":\(JSONWriter.quote(text(r, "used") ?? "0"))"
                + ",\"remaining\":\(JSONWriter.quote(text(r, "remaining") ?? "0"))"
                + ",\"applies\":\(applies),\"allowed\":\(ok)}")
        }
        var s = "{\"customer\":\(JSONWriter.quote(customer)),\"meter\":\(JSONWriter.quote(meter))"
        if let first = rows.first {
            s += ",\"period\":\(JSONWriter.quote(text(first, "period") ?? ""))"
            s += ",\"aggregation\":\(JSONWriter.quote(text(first, "aggregation") ?? ""))"
        } else {
            s += ",\"period\":null,\"aggregation\":null"
        }
        s += ",\"allowed\":\(allowed),\"limits\":[" + items.joined(separator: ",") + "]}"
        return json(.ok, s)
    }
}
