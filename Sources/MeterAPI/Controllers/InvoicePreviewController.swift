import Foundation
import Hummingbird
import NIOCore
import PGClient
import MeterWire
import MeterCore

/// GET /v1/customers/{customer}/invoice_preview: the customer's invoice for a period as the close
/// would write it now (`meter.invoice_preview()`: the close's own pricing), or as it was written
/// once closed; by default the open period in the customer's billing timezone. With the read
/// scope, as usage. The figures are as fresh as the rollups: `rollup_lag_seconds` says how far.
package struct InvoicePreviewController: Sendable {
    package let pool: PGPool
    package let ingest: IngestService

    package func addRoutes(to router: Router<BasicRequestContext>) {
        router.get("/v1/customers/:customer/invoice_preview", use: get)
    }

    @Sendable package func get(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let raw = context.parameters.get("customer") ?? ""
        let customer = raw.removingPercentEncoding ?? raw
        let named = customer.isEmpty || customer.contains("\u{0}") ? nil : customer
        if let refused = await APIRequest.authorizeRead(request, context: context, ingest: ingest, customer: named, what: "usage or invoices") {
            return refused
        }
        func invalid(_ field: String, _ code: String, _ message: String) -> Response {
            APIResponse.error(.unprocessableContent, code: code, message: message, field: field)
        }
        guard let customer = named else { return invalid("customer", "invalid_value", "customer must be a non-empty external id") }
        let query = request.uri.queryParameters
        var seen: Set<String> = []
        for (k, _) in query {
            let name = String(k)
            guard name == "period" else {
                return invalid(name, "unknown_parameter", "unknown query parameter \"\(name)\"; expected period")
            }
            if !seen.insert(name).inserted { return invalid(name, "repeated_parameter", "\(name) is given more than once") }
        }
        let period = query["period"].map(String.init)
        if let period, period.range(of: #"^[0-9]{4}-(0[1-9]|1[0-2])$"#, options: .regularExpression) == nil {
            return invalid("period", "invalid_value", "period must be YYYY-MM, got \(period)")
        }
        do {
            let rows = try await pool.withConnection { conn in
                try conn.executePrepared("""
                    with lag as materialized (select meter.rollup_lag_seconds() as s)
                    select p.period, p.status, p.currency, p.invoice_id,
                           to_char(p.period_start at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as period_start,
                           to_char(p.period_end at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as period_end,
                           p.line_no, p.kind, p.meter, p.line, p.price_filter::text as filter, p.adjusts_period,
                           p.event_count, pg_catalog.trim_scale(p.quantity)::text as quantity, p.amount,
                           lag.s::text as lag_seconds
                    from lag cross join meter.invoice_preview($1, $2) p
                    order by p.line_no
                    """, [customer, period]).rows
            }
            return APIResponse.invoicePreview(customer: customer, rows: rows)
        } catch let e as PGError where e.sqlState == "P0002" {
            let noPlan = e.message.contains("has no plan")
            return APIResponse.error(.notFound, code: noPlan ? "no_plan" : "customer_not_found", message: e.message,
                                     field: noPlan ? "period" : "customer")
        } catch let e as PGError where e.sqlState == "22023" {
            return invalid("period", "invalid_value", e.message)
        } catch {
            return APIResponse.unavailable(error, context: context, message: "the invoice preview is unavailable; retry later")
        }
    }
}

extension APIResponse {
    /// The preview's JSON: the period and its status, then one item per line (none for a plan
    /// without prices), and the subtotal of their amounts (minor units).
    package static func invoicePreview(customer: String, rows: [PGRow]) -> Response {
        let first = rows.first
        func text(_ r: PGRow?, _ c: String) -> String? { (try? r?.optionalString(c)) ?? nil }
        var s = "{\"customer\":\(JSONWriter.quote(customer))"
        s += ",\"period\":\(JSONWriter.quote(text(first, "period") ?? ""))"
        s += ",\"status\":\(JSONWriter.quote(text(first, "status") ?? ""))"
        s += ",\"period_start\":\(JSONWriter.quote(text(first, "period_start") ?? ""))"
        s += ",\"period_end\":\(JSONWriter.quote(text(first, "period_end") ?? ""))"
        s += ",\"currency\":\(JSONWriter.quote(text(first, "currency") ?? ""))"
        s += ",\"invoice_id\":" + (text(first, "invoice_id") ?? "null")
        s += ",\"rollup_lag_seconds\":" + (text(first, "lag_seconds") ?? "0")
        var items: [String] = []
        var subtotal: Int64 = 0
        for r in rows {
            guard let lineNo = text(r, "line_no") else { continue }
            let amount = Int64(text(r, "amount") ?? "0") ?? 0
            subtotal += amount
            items.append("{\"line_no\":\(lineNo)"
                + ",\"kind\":\(JSONWriter.quote(text(r, "kind") ?? ""))"
                + ",\"meter\":\(JSONWriter.quote(text(r, "meter") ?? ""))"
                + ",\"line\":\(JSONWriter.quote(text(r, "line") ?? ""))"
                // {dimension: [values]} of a price per filter, {} for the meter's (default) price
                + ",\"filter\":\(text(r, "filter") ?? "{}")"
                + ",\"adjusts_period\":" + (text(r, "adjusts_period").map { JSONWriter.quote($0) } ?? "null")
                + ",\"events\":\(text(r, "event_count") ?? "0")"
                + ",\"quantity\":\(JSONWriter.quote(text(r, "quantity") ?? "0"))"
                + ",\"amount\":\(amount)}")
        }
        s += ",\"subtotal\":\(subtotal),\"lines\":[" + items.joined(separator: ",") + "]}"
        return json(.ok, s)
    }
}
