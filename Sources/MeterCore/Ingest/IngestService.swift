import Logging
import PGClient

/// One event's outcome, by its position in the request.
public struct IngestVerdict: Sendable, Equatable {
    public enum Status: String, Sendable { case accepted, duplicate, conflict, rejected }
    public var index: Int
    public var status: Status
    public var eventID: Int64?
    public var error: FieldError?
}

/// Calls `meter.event_ingest_arrays()` for the valid events of a request and merges its verdicts with
/// those decided before the database (syntax, limits). The SQL function is the single place
/// where idempotency is decided (the primary key of meter.event_keys); this type only moves data.
public struct IngestService: Sendable {
    public let pool: PGPool
    public let limits: IngestLimits
    public let metrics: MeterMetrics
    /// Told after a commit that stored events (wakes the rollup; nil: nobody is told).
    public let notifier: EventsNotifier?

    package let coalescer: IngestCoalescer

    public init(pool: PGPool, limits: IngestLimits, metrics: MeterMetrics, notifier: EventsNotifier? = nil) {
        self.pool = pool
        self.limits = limits
        self.metrics = metrics
        self.notifier = notifier
        self.coalescer = IngestCoalescer(pool: pool, sql: Self.ingestSQL,
                                         params: [limits.maxFutureSeconds, limits.maxPastSeconds], maxEvents: max(limits.maxBatchEvents, 1000), metrics: metrics)
    }

    package static let authenticateSQL = "select meter.api_key_authenticate($1::bytea) as id"
    package static let ingestSQL = """
        select ord, status, event_id, code, field, reason
        from meter.event_ingest_arrays($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::numeric[], $6::jsonb[],
                                       $8::bigint * interval '1 second', $9::bigint * interval '1 second', $7::bytea)
        """

    public enum Outcome: Sendable {
        case stored([IngestVerdict])
        case unauthorized
        /// A live key without the scope this needs (the message names it).
        case forbidden(String)
    }

    /// What meter.api_key_authorize answers for a key and a scope (and a customer, when named).
    public enum Authorization: String, Sendable {
        case ok, unauthorized
        case insufficientScope = "insufficient_scope"
        case customerNotAllowed = "customer_not_allowed"
    }

    package static let authorizeSQL = "select meter.api_key_authorize($1::bytea, $2, $3) as verdict"

    /// Whether `token` may use `scope` (ingest, cancel, read) for `customer` (nil: none named).
    public func authorize(token: String, scope: String, customer: String?) async throws -> Authorization {
        try await pool.withConnection { conn in
            let v = try conn.executePrepared(Self.authorizeSQL, [APIKeys.hashParameter(token), scope, customer]).single().string("verdict")
            return Authorization(rawValue: v) ?? .unauthorized
        }
    }

    /// The live API key id for a bearer token, or nil.
    public func authenticate(token: String) async throws -> Int64? {
        try await pool.withConnection { conn in
            try conn.executePrepared(Self.authenticateSQL, [APIKeys.hashParameter(token)]).single().optionalInt("id")
        }
    }

    /// Authenticates `token` and stores the valid events, in one round trip (one autocommit
    /// statement = one transaction, committed with synchronous_commit on before this returns);
    /// returns every element's verdict in order, or `.unauthorized` (nothing stored).
    public func ingest(_ decoded: [DecodedEvent], token: String) async throws -> Outcome {
        var verdicts: [IngestVerdict?] = Array(repeating: nil, count: decoded.count)
        var items: [NormalizedEvent] = []
        var positions: [Int] = []
        for (i, d) in decoded.enumerated() {
            switch d {
            case .invalid(let e):
                verdicts[i] = IngestVerdict(index: i, status: .rejected, eventID: nil, error: e)
            case .valid(let ev):
                items.append(ev)
                positions.append(i)
            }
        }
        if positions.isEmpty {
            // Nothing for the database to store; the key must still be valid, and may ingest.
            switch try await authorize(token: token, scope: "ingest", customer: nil) {
            case .unauthorized: return .unauthorized
            case .insufficientScope: return .forbidden("this API key may not ingest events")
            case .ok, .customerNotAllowed: break
            }
        } else {
            // Stored through the group-commit coalescer: alone when a connection is free, with
            // the other queued requests of the same key when all are busy.
            let rows: IngestCoalescer.Rows
            do {
                rows = try await coalescer.submit(token: APIKeys.hashParameter(token), items: items)
            } catch let e as PGError where e.sqlState == "28000" {
                return .unauthorized
            } catch let e as PGError where e.sqlState == "42501" {
                return .forbidden(e.message)
            }
            for (ord, r) in rows {
                let i = positions[ord]
                let status = IngestVerdict.Status(rawValue: try r.string("status")) ?? .rejected
                var error: FieldError?
                if let code = try r.optionalString("code") {
                    error = FieldError(code: code, field: try r.optionalString("field"),
                                       message: try r.optionalString("reason") ?? code)
                }
                verdicts[i] = IngestVerdict(index: i, status: status, eventID: try r.optionalInt("event_id"), error: error)
            }
        }
        let out = verdicts.enumerated().map { i, v in
            v ?? IngestVerdict(index: i, status: .rejected, eventID: nil,
                               error: FieldError(code: "internal_inconsistency", field: nil, message: "no verdict; retry"))
        }
        var counts: [IngestVerdict.Status: Int64] = [:]
        for v in out { counts[v.status, default: 0] += 1 }
        for (status, n) in counts { metrics.events(status).increment(by: n) }
        if counts[.accepted, default: 0] > 0 { notifier?.committed() }
        return .stored(out)
    }
}
