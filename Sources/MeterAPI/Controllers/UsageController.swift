import Foundation
import Hummingbird
import NIOCore
import PGClient
import MeterWire
import MeterCore

/// GET /v1/usage: usage from the hourly rollups, per bucket, with the same bearer keys as ingest.
package struct UsageController: Sendable {
    package let pool: PGPool
    package let ingest: IngestService

    package static let parameters: Set<String> = ["customer", "meter", "from", "to", "granularity", "group_by"]
    /// The default range on the database clock: from the start of the customer's current billing
    /// month in its billing timezone (UTC for an unknown customer, which meter.usage then refuses),
    /// floored to a UTC hour, to the start of the next UTC hour.
    package static let defaultsSQL = """
        with tz as (select coalesce((select c.billing_timezone from meter.customers c where c.external_id = $1), 'UTC') as name)
        select to_char(pg_catalog.date_bin(interval '1 hour',
                           pg_catalog.date_trunc('month', pg_catalog.now() at time zone tz.name) at time zone tz.name,
                           timestamptz '2000-01-01 00:00:00+00') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as f,
               to_char(pg_catalog.date_trunc('hour', pg_catalog.now() at time zone 'UTC') + interval '1 hour',
                       'YYYY-MM-DD"T"HH24:MI:SS"Z"') as t
        from tz
        """
    /// The longest interval one usage request may cover.
    package static let maxSpanMicros: Int64 = 366 * 86_400 * 1_000_000

    package func addRoutes(to router: Router<BasicRequestContext>) {
        router.get("/v1/usage", use: get)
    }

    /// Usage from the hourly rollups (`meter.usage()`), per bucket. `customer` is required;
    /// `meter` optional (all meters); `from`/`to` RFC 3339 on UTC hour boundaries, by default the
    /// customer's current billing month (its start in the customer's billing timezone, on the
    /// database clock, floored to a UTC hour) up to the start of the next hour; `granularity` hour,
    /// day (default) or month. With dimensions (meter required): `group_by=model,region` splits
    /// each bucket per value combination (`dimensions` in each item); `filter[model]=gpt-4o`
    /// keeps the usage of that value, repeated for several (`filter[model]=a&filter[model]=b`).
    @Sendable package func get(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        // The key, its read scope and its customers, in one round trip, before anything else.
        let named = query["customer"].map(String.init).flatMap { $0.isEmpty || $0.contains("\u{0}") ? nil : $0 }
        if let refused = await APIRequest.authorizeRead(request, context: context, ingest: ingest, customer: named, what: "usage") {
            return refused
        }
        func invalid(_ field: String, _ code: String, _ message: String) -> Response {
            APIResponse.error(.unprocessableContent, code: code, message: message, field: field)
        }
        var seen: Set<String> = []
        var filter: [String: [String]] = [:]
        for (k, v) in query {
            let name = String(k)
            if v.contains("\u{0}") {
                return invalid(name, "invalid_value", "\(name) must not contain NUL (%00)")
            }
            // (keys arrive percent-encoded: clients send filter%5Bmodel%5D for filter[model])
            if let key = name.removingPercentEncoding, key.hasPrefix("filter[") && key.hasSuffix("]") {
                let name = key
                let dimension = String(name.dropFirst(7).dropLast())
                guard APIRequest.isDimensionName(dimension) else {
                    return invalid(name, "invalid_value", "\(name): a dimension is a property name of 1-64 letters, digits, _ . : or -")
                }
                filter[dimension, default: []].append(String(v))
                continue
            }
            if !Self.parameters.contains(name) {
                return invalid(name, "unknown_parameter",
                               "unknown query parameter \"\(name)\"; expected \(Self.parameters.sorted().joined(separator: ", ")) or filter[<dimension>]")
            }
            if !seen.insert(name).inserted {
                return invalid(name, "repeated_parameter", "\(name) is given more than once")
            }
        }
        guard let customer = query["customer"].map(String.init), !customer.isEmpty else {
            return invalid("customer", "missing_field", "customer is required (the customer's external id)")
        }
        let meter = query["meter"].map(String.init).flatMap { $0.isEmpty ? nil : $0 }
        let groupBy = query["group_by"].map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        if let groupBy {
            guard groupBy.count <= 3, groupBy.allSatisfy({ APIRequest.isDimensionName(String($0)) }),
                  Set(groupBy).count == groupBy.count else {
                return invalid("group_by", "invalid_value", "group_by is 1 to 3 distinct dimension names separated by commas")
            }
        }
        if (groupBy != nil || !filter.isEmpty) && meter == nil {
            return invalid(groupBy != nil ? "group_by" : "filter", "missing_field", "group_by and filter need a meter")
        }
        let filterJSON: String? = filter.isEmpty ? nil
            : JSONValue.object(filter.sorted { $0.key < $1.key }.map { ($0.key, .array($0.value.map { .string($0) })) }).text
        let granularity = query["granularity"].map(String.init) ?? "day"
        guard ["hour", "day", "month"].contains(granularity) else {
            return invalid("granularity", "invalid_value", "granularity must be hour, day or month; got \(granularity)")
        }
        func hourBoundary(_ name: String) -> Result<RFC3339Timestamp?, FieldError> {
            guard let raw = query[Substring(name)].map(String.init) else { return .success(nil) }
            do throws(TimestampError) {
                let t = try RFC3339Timestamp(parsing: raw)
                if t.epochMicroseconds % 3_600_000_000 != 0 {
                    return .failure(FieldError(code: "not_hour_aligned", field: name,
                                               message: "\(name) must lie on a UTC hour boundary (rollups are hourly); got \(raw)"))
                }
                return .success(t)
            } catch {
                return .failure(FieldError(code: "invalid_timestamp", field: name, message: "\(name): \(error.reason)"))
            }
        }
        let from: RFC3339Timestamp?, to: RFC3339Timestamp?
        switch (hourBoundary("from"), hourBoundary("to")) {
        case (.failure(let e), _), (_, .failure(let e)):
            return invalid(e.field ?? "", e.code, e.message)
        case (.success(let f), .success(let t)):
            (from, to) = (f, t)
        }
        enum Outcome { case rows([PGRow]), refused(field: String, code: String, message: String) }
        let blame = query["to"] == nil ? "from" : "to"
        do {
            let outcome = try await pool.withConnection { conn -> Outcome in
                // The defaults are the database's: its clock, and the customer's billing month in
                // the customer's timezone (floored to a UTC hour), up to the start of the next hour.
                var (f, t) = (from, to)
                if f == nil || t == nil {
                    let d = try conn.executePrepared(Self.defaultsSQL, [customer]).single()
                    f = try f ?? RFC3339Timestamp(parsing: try d.string("f"))
                    t = try t ?? RFC3339Timestamp(parsing: try d.string("t"))
                }
                guard let f, let t else { return .refused(field: "from", code: "invalid_value", message: "no range") }
                if f >= t {
                    return .refused(field: blame, code: "invalid_range", message: "to (\(t.iso8601)) must be after from (\(f.iso8601))")
                }
                if t.epochMicroseconds - f.epochMicroseconds > Self.maxSpanMicros {
                    return .refused(field: blame, code: "range_too_large",
                                    message: "from (\(f.iso8601)) and to (\(t.iso8601)) may be at most 366 days apart")
                }
                return .rows(try conn.executePrepared("""
                    -- (materialized: the lag is read once per request, not once per output row)
                    with bounds as materialized (select $3::timestamptz as f, $4::timestamptz as t,
                                                        meter.rollup_lag_seconds() as lag)
                    select to_char(b.f at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as range_from,
                           to_char(b.t at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as range_to,
                           u.meter,
                           to_char(u.bucket_start at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as bucket_start,
                           to_char(u.bucket_end at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as bucket_end,
                           u.meter_version, u.aggregation, u.quantity::text as quantity, u.event_count,
                           u.dimensions::text as dimensions, b.lag::text as lag_seconds
                    from bounds b
                    left join lateral meter.usage($1, $2, b.f, b.t, $5, $6::text[], $7::jsonb) u on true
                    """, [customer, meter, f.utcString, t.utcString, granularity,
                          groupBy.map { "{" + $0.joined(separator: ",") + "}" }, filterJSON]).rows)
            }
            let rows: [PGRow]
            switch outcome {
            case .rows(let r): rows = r
            case .refused(let field, let code, let message): return invalid(field, code, message)
            }
            return APIResponse.usage(customer: customer, granularity: granularity, rows: rows)
        } catch let e as PGError where e.sqlState == "P0002" {
            // meter.usage() raises "no customer with ..." or "no meter with ..."
            let field = e.message.hasPrefix("no meter") ? "meter" : "customer"
            return APIResponse.error(.notFound, code: "\(field)_not_found", message: e.message, field: field)
        } catch let e as PGError where e.sqlState == "22023" {
            let field = e.message.contains("granularity") ? "granularity"
                : e.message.contains("dimension") ? (groupBy != nil ? "group_by" : "filter") : "from"
            return invalid(field, field == "group_by" || field == "filter" ? "unknown_dimension" : "invalid_value", e.message)
        } catch let e as PGError where e.sqlState == "0A000" {
            return invalid("group_by", "not_groupable", e.message)
        } catch {
            return APIResponse.unavailable(error, context: context, message: "usage is unavailable; retry later")
        }
    }
}

extension APIResponse {
    package static func cancelObject(_ v: CancelVerdict, includeIndex: Bool) -> String {
        verdictObject(index: includeIndex ? v.index : nil, status: v.status.rawValue, id: v.eventID, error: v.error)
    }

    /// 200 cancelled / already_cancelled, 404 no such event or customer, 410 archived, 422 malformed.
    package static func cancelSingle(_ v: CancelVerdict) -> Response {
        let status: HTTPResponse.Status
        switch v.status {
        case .cancelled, .alreadyCancelled: status = .ok
        case .rejected:
            switch v.error?.code {
            case "event_not_found", "unknown_customer": status = .notFound
            case "customer_not_allowed": status = .forbidden
            case "event_archived": status = .gone
            default: status = .unprocessableContent
            }
        }
        return json(status, cancelObject(v, includeIndex: false))
    }

    package static func cancelBatch(_ verdicts: [CancelVerdict]) -> Response {
        var counts: [CancelVerdict.Status: Int] = [.cancelled: 0, .alreadyCancelled: 0, .rejected: 0]
        for v in verdicts { counts[v.status, default: 0] += 1 }
        var s = "{\"summary\":{\"received\":\(verdicts.count),\"cancelled\":\(counts[.cancelled]!),"
            + "\"already_cancelled\":\(counts[.alreadyCancelled]!),\"rejected\":\(counts[.rejected]!)},\"results\":["
        s += verdicts.map { cancelObject($0, includeIndex: true) }.joined(separator: ",")
        s += "]}"
        return json(counts[.rejected]! == 0 ? .ok : .init(code: 207, reasonPhrase: "Multi-Status"), s)
    }

    /// {"customer","from","to","granularity","rollup_lag_seconds","data":[{meter, from, to,
    /// meter_version, aggregation, quantity (exact decimal string), events}]}
    package static func usage(customer: String, granularity: String, rows: [PGRow]) -> Response {
        let first = rows.first
        var s = "{\"customer\":\(JSONWriter.quote(customer))"
        s += ",\"from\":\(JSONWriter.quote((try? first?.string("range_from")) ?? ""))"
        s += ",\"to\":\(JSONWriter.quote((try? first?.string("range_to")) ?? ""))"
        s += ",\"granularity\":\(JSONWriter.quote(granularity))"
        s += ",\"rollup_lag_seconds\":\(((try? first?.optionalString("lag_seconds")) ?? nil) ?? "0")"
        s += ",\"data\":["
        var items: [String] = []
        for r in rows {
            guard let meter = try? r.optionalString("meter") else { continue }
            let version = (try? r.int("meter_version")) ?? 0
            let events = (try? r.int("event_count")) ?? 0
            items.append("{\"meter\":\(JSONWriter.quote(meter))"
                + ",\"from\":\(JSONWriter.quote((try? r.string("bucket_start")) ?? ""))"
                + ",\"to\":\(JSONWriter.quote((try? r.string("bucket_end")) ?? ""))"
                + ",\"meter_version\":\(version)"
                + ",\"aggregation\":\(JSONWriter.quote((try? r.string("aggregation")) ?? ""))"
                + ",\"quantity\":\(JSONWriter.quote((try? r.string("quantity")) ?? "0"))"
                + ",\"events\":\(events)"
                // {dimension: value or null}, as Postgres printed the jsonb (with group_by only)
                + (((try? r.optionalString("dimensions")) ?? nil).map { ",\"dimensions\":\($0)" } ?? "")
                + "}")
        }
        s += items.joined(separator: ",") + "]}"
        return json(.ok, s)
    }
}
