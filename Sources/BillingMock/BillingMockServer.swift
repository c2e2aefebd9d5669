// BillingMockServer.swift
//
// `meterctl billing-mock`: the HTTP side of the mock billing engine. Around each API call
// (MockEngine) it adds, in this order: fault injection (outage, errors, latency), Stripe's
// authentication (Authorization: Bearer sk_test_...), form decoding, and idempotency keys
// (kept 24 h, saved in the same transaction as the call's effect: a replay returns the saved
// response with Idempotent-Replayed: true; the same key with other parameters is a 400
// idempotency_error). "Apply then drop" commits the call, then closes the connection unanswered.
//
// Beside the HTTP server run the webhook sender (MockWebhookSender) and a ticker that bills the
// periods of subscriptions on real time (no test clock) when they end.

import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import PGClient
import MeterWire

/// A request context that keeps the connection, so that "apply then drop" can close it.
public struct MockRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    package let channel: any Channel
    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

public struct BillingMockConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 12111
    public var faults = MockFaults()
    /// First retry of a failed webhook delivery after this; doubled per attempt up to the cap.
    public var webhookRetryBase: Duration = .seconds(1)
    public var webhookRetryCap: Duration = .seconds(60)
    public var webhookPoll: Duration = .milliseconds(200)
    public var periodTick: Duration = .seconds(10)
    public init() {}
}

public final class BillingMockMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    package func requests(_ status: Int) -> Counter {
        registry.meterCounter(name: "billing_mock_requests_total", labels: [("status", String(status))],
                             help: "API calls answered, by HTTP status")
    }
    package let replays: Counter
    package let faults: @Sendable (String) -> Counter
    package let deliveries: @Sendable (String) -> Counter
    public init() {
        let registry = self.registry
        replays = registry.meterCounter(name: "billing_mock_idempotent_replays_total", help: "Responses replayed for a known Idempotency-Key")
        faults = { kind in registry.meterCounter(name: "billing_mock_faults_injected_total", labels: [("kind", kind)],
                                                help: "Faults injected, by kind") }
        deliveries = { result in registry.meterCounter(name: "billing_mock_webhook_deliveries_total", labels: [("result", result)],
                                                      help: "Webhook delivery attempts, by result") }
    }
}

public enum BillingMockServer {
    public static let schemaLock = "select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('billing_mock.schema'))"

    /// Creates or updates the mock's schema (idempotent): sql/billing_mock/schema.sql, then
    /// sql/billing_mock/functions/*.sql in name order.
    public static func prepareSchema(conninfo: String, sqlDirectory: String) throws {
        let dir = sqlDirectory + "/billing_mock"
        let files = try ["schema.sql"] + FileManager.default.contentsOfDirectory(atPath: dir + "/functions")
            .filter { $0.hasSuffix(".sql") }.sorted().map { "functions/" + $0 }
        let conn = try PGConnection(conninfo: conninfo)
        defer { conn.close() }
        _ = try conn.execute("set client_min_messages = warning")
        try conn.transaction { c in
            _ = try c.execute(schemaLock)
            for f in files { try c.executeScript(try String(contentsOfFile: dir + "/" + f, encoding: .utf8)) }
        }
    }

    public static func run(config: BillingMockConfiguration, conninfo: String, sqlDirectory: String, logger: Logger,
                           handleSignals: Bool = true, onGroup: @Sendable (ServiceGroup) async -> Void = { _ in },
                           onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        try prepareSchema(conninfo: conninfo, sqlDirectory: sqlDirectory)
        let pool = PGPool(conninfo: conninfo, maxConnections: 8, statementTimeout: "30s",
                          applicationName: "billing-mock", logger: logger)
        let faults = MockFaultState(config.faults)
        let metrics = BillingMockMetrics()
        let router = buildRouter(pool: pool, faults: faults, metrics: metrics, logger: logger)
        let app = Application(router: router,
                              configuration: .init(address: .hostname(config.host, port: config.port), serverName: "billing-mock"),
                              onServerRunning: { channel in
                                  let port = channel.localAddress?.port ?? config.port
                                  logger.info("billing_mock.listening", metadata: ["host": "\(config.host)", "port": "\(port)"])
                                  await onRunning(port)
                              },
                              logger: logger)
        let sender = MockWebhookSender(pool: pool, faults: faults, metrics: metrics, config: config, logger: logger)
        let ticker = PeriodTicker(pool: pool, every: config.periodTick, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [sender, ticker, app],
                                                      gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
                                                      logger: logger))
        await onGroup(group)
        do { try await group.run() } catch { await pool.shutdown(); throw error }
        logger.info("billing_mock.stopped")
        await pool.shutdown()
    }

    package static func json(_ status: Int, _ body: String, replayed: Bool = false, retry: Bool? = nil,
                     idempotencyKey: String? = nil) -> Response {
        var h: HTTPFields = [.contentType: "application/json"]
        if let idempotencyKey { h[.init("Idempotency-Key")!] = idempotencyKey }
        h[.init("Request-Id")!] = "req_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(14).lowercased()
        if replayed { h[.init("Idempotent-Replayed")!] = "true" }
        if let retry { h[.init("Stripe-Should-Retry")!] = retry ? "true" : "false" }
        return Response(status: .init(code: status), headers: h, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    package static func error(_ e: MockAPIError) -> Response {
        json(e.status, e.json.text, retry: e.status >= 500 || e.status == 409 || e.status == 429)
    }

    public static func buildRouter(pool: PGPool, faults: MockFaultState, metrics: BillingMockMetrics,
                                   logger: Logger) -> Router<MockRequestContext> {
        let router = Router(context: MockRequestContext.self)
        typealias Call = @Sendable (Request, MockRequestContext, PGPool, MockFaultState, BillingMockMetrics, Logger) async throws -> Response
        // Every API call, v1 (form bodies) or v2 (JSON): counted by status and logged.
        func api(_ call: @escaping Call) -> @Sendable (Request, MockRequestContext) async throws -> Response {
            { request, context in
                let response = try await call(request, context, pool, faults, metrics, logger)
                metrics.requests(response.status.code).increment()
                logger.info("billing_mock.request", metadata: [
                    "method": "\(request.method)", "path": "\(request.uri.path)", "status": "\(response.status.code)",
                ])
                return response
            }
        }
        let v1 = api { try await apiCall($0, $1, pool: $2, faults: $3, metrics: $4, logger: $5) }
        let v2 = api { try await apiCallV2($0, $1, pool: $2, faults: $3, metrics: $4, logger: $5) }
        router.post("/v1/**", use: v1)
        router.get("/v1/**", use: v1)
        router.post("/v2/**", use: v2)
        router.get("/v2/**", use: v2)
        router.get("/admin/faults") { _, _ in json(200, faults.current.json.text) }
        router.post("/admin/faults") { request, _ in
            let body = try await request.body.collect(upTo: 64 * 1024)
            do {
                var f = faults.current
                try f.apply(try JSONParser.parse(Array(body.readableBytesView)))
                faults.set(f)
                logger.notice("billing_mock.faults", metadata: ["faults": "\(f.json.text)"])
                return json(200, f.json.text)
            } catch let e as MockAPIError {
                return error(e)
            } catch {
                return Self.error(.invalid("the body must be a JSON object: \(error)"))
            }
        }
        // Per-hour usage as applied, for tests and audits (not part of Stripe's API).
        router.get("/admin/usage_records") { request, _ in
            guard let item = request.uri.queryParameters.get("subscription_item") else {
                return error(.missing("subscription_item"))
            }
            let rows = try await pool.withConnection { c in
                try c.execute("""
                    select u.ts, u.quantity::text as q, u.writes,
                           (select count(*) from billing_mock.usage_record_log l
                            where l.subscription_item = u.subscription_item and l.ts = u.ts) as applied,
                           (select count(*) - count(distinct l.idempotency_key) from billing_mock.usage_record_log l
                            where l.subscription_item = u.subscription_item and l.ts = u.ts) as keys_applied_twice
                    from billing_mock.usage_records u where u.subscription_item = $1 order by u.ts
                    """, [item]).rows
            }
            let data = try rows.map { r in
                JSONValue.obj(["timestamp": .int(try r.int("ts")), "quantity": .number(try r.string("q")),
                               "writes": .int(try r.int("writes")), "keys_applied_twice": .int(try r.int("keys_applied_twice"))])
            }
            return json(200, JSONValue.obj(["object": "list", "data": .array(data)]).text)
        }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: metrics.registry.emitToBuffer())))
        }
        router.get("/healthz") { _, _ in json(200, "{\"status\":\"ok\"}") }
        return router
    }

    /// An injected outage or error (or latency, then nil): what every API call meets first.
    package static func injectedFault(_ f: MockFaults, metrics: BillingMockMetrics) async throws -> Response? {
        if f.outage {
            metrics.faults("outage").increment()
            return error(MockAPIError(status: 503, type: "api_error", code: nil, message: "The billing engine is unavailable (injected outage).", param: nil))
        }
        if f.latencyMs > 0 { try await Task.sleep(for: .milliseconds(f.latencyMs)) }
        if f.errorRate > 0, Double.random(in: 0..<1) < f.errorRate {
            metrics.faults("error").increment()
            return error(MockAPIError(status: f.errorStatus, type: "api_error", code: nil,
                                      message: "An error occurred on the billing engine (injected).", param: nil))
        }
        return nil
    }

    /// The bearer token, if the request has one.
    package static func bearer(_ request: Request) -> String? {
        guard let auth = request.headers[.authorization], auth.hasPrefix("Bearer ") else { return nil }
        let token = String(auth.dropFirst(7))
        return token.isEmpty ? nil : token
    }

    package static func secretKey(_ request: Request) -> String? {
        guard let key = bearer(request), key.hasPrefix("sk_test_"), key.count > 8 else { return nil }
        return key
    }

    package static let invalidKey = MockAPIError(status: 401, type: "invalid_request_error", code: nil,
                                                 message: "Invalid API Key provided: send Authorization: Bearer sk_test_...", param: nil)

    package static func apiCall(_ request: Request, _ context: MockRequestContext, pool: PGPool, faults: MockFaultState,
                        metrics: BillingMockMetrics, logger: Logger) async throws -> Response {
        let f = faults.current
        if let fault = try await injectedFault(f, metrics: metrics) { return fault }
        // Authentication: Stripe's secret test keys.
        guard let key = secretKey(request) else { return error(invalidKey) }
        let version = request.headers[.init("Stripe-Version")!] ?? MockEngine.accountDefaultVersion
        let method = request.method == .post ? "POST" : "GET"
        let path = Array(request.uri.path.split(separator: "/").map(String.init).dropFirst())  // without "v1"
        let bodyText: String
        if method == "POST" {
            let body = try await request.body.collect(upTo: 1 << 20)
            bodyText = String(buffer: body)
        } else {
            bodyText = request.uri.query ?? ""
        }
        let form: FormNode
        do { form = try FormCoding.decode(bodyText) } catch {
            return Self.error(.invalid("Invalid request body: \(error.message)"))
        }
        let idemKey = method == "POST" ? request.headers[.init("Idempotency-Key")!] : nil
        if let k = idemKey, k.count > 255 || k.isEmpty {
            return error(.invalid("Idempotency-Key must be 1-255 characters", param: "Idempotency-Key"))
        }
        // The request's fingerprint: method, path and its parameters, sorted.
        let fingerprint: String = {
            let pairs = (try? FormCoding.pairs(bodyText)) ?? []
            return method + " " + request.uri.path + "?" + pairs.sorted { ($0.0, $0.1) < ($1.0, $1.1) }
                .map { $0.0 + "=" + $0.1 }.joined(separator: "&")
        }()
        return try await respond(request, context, faults: f, idempotencyKey: idemKey, metrics: metrics, logger: logger) {
            try await applyOnce(pool: pool, apiKey: key, idempotencyKey: idemKey, fingerprint: fingerprint) { c in
                try MockEngine.handle(c, method: method, path: path, form: form, version: version)
            }
        }
    }

    /// Runs the call and answers it: its saved or fresh response, an error envelope, or (the
    /// drop fault) nothing at all after the call was applied and committed.
    package static func respond(_ request: Request, _ context: MockRequestContext, faults f: MockFaults, idempotencyKey: String?,
                                metrics: BillingMockMetrics, logger: Logger,
                                _ call: () async throws -> (status: Int, body: String, replayed: Bool)) async throws -> Response {
        let outcome: (status: Int, body: String, replayed: Bool)
        do {
            outcome = try await call()
        } catch let e as MockAPIError {
            return error(e)
        } catch {
            return internalError(error, logger: logger)
        }
        if outcome.replayed { metrics.replays.increment() }
        if request.method == .post, f.dropRate > 0, Double.random(in: 0..<1) < f.dropRate {
            // Applied and committed; the caller never hears of it.
            metrics.faults("drop").increment()
            logger.info("billing_mock.response_dropped", metadata: ["path": "\(request.uri.path)", "key": "\(idempotencyKey ?? "")"])
            try? await context.channel.close()
            throw CancellationError()
        }
        return json(outcome.status, outcome.body, replayed: outcome.replayed, idempotencyKey: idempotencyKey)
    }
}

extension BillingMockServer {
    /// Runs `body` in one transaction, once per Idempotency-Key (kept 24 h): the same key with the
    /// same fingerprint replays the saved response, with other parameters it is a 400
    /// idempotency_error. Applying and remembering commit together.
    package static func applyOnce(pool: PGPool, apiKey: String, idempotencyKey: String?, fingerprint: String,
                                  _ body: @escaping @Sendable (PGConnection) throws -> (Int, JSONValue)) async throws
        -> (status: Int, body: String, replayed: Bool) {
        try await pool.withConnection { c in
            try c.transaction { c in
                if let k = idempotencyKey {
                    _ = try c.execute("select pg_catalog.set_config('billing_mock.idempotency_key', $1, true)", [k])
                    _ = try c.execute("""
                        delete from billing_mock.idempotency
                        where api_key = $1 and key = $2 and created_at <= pg_catalog.now() - interval '24 hours'
                        """, [apiKey, k])
                    // A concurrent request with the same key waits here for the first to
                    // commit, then replays its response.
                    let inserted = try c.execute("""
                        insert into billing_mock.idempotency (api_key, key, fingerprint, status, body)
                        values ($1, $2, $3, 0, '') on conflict do nothing
                        """, [apiKey, k, fingerprint]).affectedRows
                    if inserted == 0 {
                        let saved = try c.execute("select fingerprint, status, body from billing_mock.idempotency where api_key = $1 and key = $2",
                                                  [apiKey, k]).single()
                        if try saved.string("fingerprint") != fingerprint {
                            throw MockAPIError(status: 400, type: "idempotency_error", code: nil,
                                               message: "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '\(k)' if you meant to execute a different request.",
                                               param: nil)
                        }
                        return (Int(try saved.int("status")), try saved.string("body"), true)
                    }
                }
                let (status, json) = try body(c)
                let text = json.text
                if let k = idempotencyKey {
                    _ = try c.execute("update billing_mock.idempotency set status = $3, body = $4 where api_key = $1 and key = $2",
                                      [apiKey, k, status, text])
                }
                return (status, text, false)
            }
        }
    }

    package static func internalError(_ error: any Error, logger: Logger) -> Response {
        if error is JSONParseError {
            logger.error("billing_mock.corrupt_document", metadata: ["error": "\(error)"])
        } else {
            logger.error("billing_mock.database_error", metadata: ["error": "\(error)"])
        }
        return Self.error(MockAPIError(status: 500, type: "api_error", code: nil, message: "internal error", param: nil))
    }

    /// API v2 (JSON bodies): Billing Meters' session, stream and single events, and v2 events.
    /// The stream is authenticated by a session token, everything else by the secret key.
    package static func apiCallV2(_ request: Request, _ context: MockRequestContext, pool: PGPool, faults: MockFaultState,
                                  metrics: BillingMockMetrics, logger: Logger) async throws -> Response {
        let f = faults.current
        if let fault = try await injectedFault(f, metrics: metrics) { return fault }
        let method = request.method == .post ? "POST" : "GET"
        let path = Array(request.uri.path.split(separator: "/").map(String.init).dropFirst())  // without "v2"
        let isStream = path == ["billing", "meter_event_stream"]
        guard let key = isStream ? bearer(request) : secretKey(request) else { return error(invalidKey) }
        var body: JSONValue?
        var bodyText = ""
        if method == "POST" {
            let bytes = try await request.body.collect(upTo: 1 << 20)
            bodyText = String(buffer: bytes)
            if !bodyText.isEmpty {
                do { body = try JSONParser.parse(Array(bytes.readableBytesView)) } catch {
                    return Self.error(.invalid("Invalid JSON body: \(error)"))
                }
            }
        }
        let idemKey = method == "POST" ? request.headers[.init("Idempotency-Key")!] : nil
        if let k = idemKey, k.count > 255 || k.isEmpty {
            return error(.invalid("Idempotency-Key must be 1-255 characters", param: "Idempotency-Key"))
        }
        let parsed = body
        return try await respond(request, context, faults: f, idempotencyKey: idemKey, metrics: metrics, logger: logger) {
            if isStream {
                try await pool.withConnection { c in try MockEngine.authorizeStream(c, token: key) }
            }
            return try await applyOnce(pool: pool, apiKey: key, idempotencyKey: idemKey,
                                       fingerprint: method + " " + request.uri.path + " " + bodyText) { c in
                try MockEngine.handleV2(c, method: method, path: path, body: parsed, apiKey: key)
            }
        }
    }
}

/// Bills the periods of subscriptions on real time as they end (test-clock subscriptions are
/// billed when their clock is advanced).
package final class PeriodTicker: Service, @unchecked Sendable {
    package let pool: PGPool
    package let every: Duration
    package let logger: Logger
    package init(pool: PGPool, every: Duration, logger: Logger) { self.pool = pool; self.every = every; self.logger = logger }
    package func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            while !Task.isCancelled {
                do {
                    let n = try await pool.withConnection { c in
                        try c.execute("select billing_mock.close_periods(null, extract(epoch from now())::bigint) as n").single().int("n")
                    }
                    if n > 0 { logger.info("billing_mock.periods_closed", metadata: ["invoices": "\(n)"]) }
                } catch {
                    logger.warning("billing_mock.period_tick_failed", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: every)
            }
        }
    }
}
