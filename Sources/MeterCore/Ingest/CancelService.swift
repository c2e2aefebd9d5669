/// Cancellations: `POST /v1/events/cancel`. Each element names a stored event by customer and
/// idempotency key; `meter.event_cancel()` (sql/functions/event_cancel.sql) decides, with the
/// primary key of meter.event_cancellations making it idempotent. The rollup subtracts it once.
import PGClient
import MeterWire


public struct CancelVerdict: Sendable, Equatable {
    public enum Status: String, Sendable { case cancelled, alreadyCancelled = "already_cancelled", rejected }
    public var index: Int
    public var status: Status
    public var eventID: Int64?
    public var error: FieldError?
}

public struct CancelRequest: Sendable, Equatable {
    public var customer: String
    public var idempotencyKey: String
    public var reason: String?

    package var sqlJSON: String {
        "{\"customer\":\(JSONWriter.quote(customer)),\"idempotency_key\":\(JSONWriter.quote(idempotencyKey)),"
            + "\"reason\":\(reason.map(JSONWriter.quote) ?? "null")}"
    }
}

public struct CancelService: Sendable {
    public let pool: PGPool
    public let limits: IngestLimits
    public let metrics: MeterMetrics
    /// Told after a commit that cancelled something (wakes the rollup; nil: nobody is told).
    public let notifier: EventsNotifier?
    package static let maxReasonLength = 1000
    package static let fields: Set<String> = ["customer", "idempotency_key", "reason"]

    public init(pool: PGPool, limits: IngestLimits, metrics: MeterMetrics, notifier: EventsNotifier? = nil) {
        self.pool = pool
        self.limits = limits
        self.metrics = metrics
        self.notifier = notifier
    }

    /// Checks one element's shape: {customer, idempotency_key, reason?}, nothing else.
    public static func decode(_ json: JSONValue, limits: IngestLimits) -> Result<CancelRequest, FieldError> {
        guard let members = json.objectValue else {
            return .failure(FieldError(code: "invalid_type", field: nil, message: "a cancellation must be a JSON object"))
        }
        do throws(FieldError) {
            try EventDecoder.onlyKnownMembers(members, fields)
            let customer = try EventDecoder.requiredString(json, "customer", limits: limits)
            let key = try EventDecoder.requiredString(json, "idempotency_key", limits: limits)
            var reason: String?
            if let r = json["reason"], !r.isNull {
                guard let s = r.stringValue else {
                    throw FieldError(code: "invalid_type", field: "reason", message: "reason must be a string")
                }
                try EventDecoder.checkText(s, field: "reason", max: maxReasonLength)
                reason = s
            }
            return .success(CancelRequest(customer: customer, idempotencyKey: key, reason: reason))
        } catch {
            return .failure(error)
        }
    }

    public enum Outcome: Sendable {
        case done([CancelVerdict])
        case unauthorized
        /// A live key without the cancel scope.
        case forbidden(String)
    }

    /// Authenticates `token` and cancels the valid elements in one statement (one transaction,
    /// committed before this returns). Invalid elements keep the verdict `decode` gave them.
    public func cancel(_ decoded: [Result<CancelRequest, FieldError>], token: String) async throws -> Outcome {
        var verdicts: [CancelVerdict?] = Array(repeating: nil, count: decoded.count)
        var items: [String] = []
        var positions: [Int] = []
        for (i, d) in decoded.enumerated() {
            switch d {
            case .failure(let e): verdicts[i] = CancelVerdict(index: i, status: .rejected, eventID: nil, error: e)
            case .success(let r): items.append(r.sqlJSON); positions.append(i)
            }
        }
        let body = "[" + items.joined(separator: ",") + "]"
        let rows: [PGRow]
        do {
            rows = try await pool.withConnection { conn in
                try conn.executePrepared("""
                    select ord, status, event_id, code, field, reason from meter.event_cancel($1::jsonb, $2::bytea)
                    """, [body, APIKeys.hashParameter(token)]).rows
            }
        } catch let e as PGError where e.sqlState == "28000" {
            return .unauthorized
        } catch let e as PGError where e.sqlState == "42501" {
            return .forbidden(e.message)
        }
        for r in rows {
            let i = positions[Int(try r.int("ord"))]
            var error: FieldError?
            if let code = try r.optionalString("code") {
                error = FieldError(code: code, field: try r.optionalString("field"), message: try r.optionalString("reason") ?? code)
            }
            verdicts[i] = CancelVerdict(index: i, status: CancelVerdict.Status(rawValue: try r.string("status")) ?? .rejected,
                                        eventID: try r.optionalInt("event_id"), error: error)
        }
        let out = verdicts.enumerated().map { i, v in
            v ?? CancelVerdict(index: i, status: .rejected, eventID: nil,
                               error: FieldError(code: "internal_inconsistency", field: nil, message: "no verdict; retry"))
        }
        for v in out {
            switch v.status {
            case .cancelled: metrics.cancelled.increment()
            case .alreadyCancelled: metrics.alreadyCancelled.increment()
            case .rejected: metrics.cancelRejected.increment()
            }
        }
        if out.contains(where: { $0.status == .cancelled }) { notifier?.committed() }
        return .done(out)
    }
}
