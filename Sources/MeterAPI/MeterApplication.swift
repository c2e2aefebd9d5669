import Foundation
import Hummingbird
import Logging
import NIOCore
import PGClient
import MeterWire
import MeterCore

/// Everything `meterctl serve` needs to answer HTTP; shared by the executable and the tests.
public struct ServeConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var limits = IngestLimits()
    /// The OpenAPI document served at GET /openapi.yaml.
    public var openAPIPath: String?
    /// version → checksum of the migrations this build expects (for /readyz).
    public var expectedLedger: [Int: String] = [:]
    /// The rollup loop run beside the HTTP server; nil = none (e.g. a dedicated ingest tier).
    public var rollup: RollupWorker.Configuration? = .init()
    /// The billing sync loop; nil = none (no billing engine configured).
    public var sync: SyncConfiguration?
    /// Apply received webhooks in this process (WebhookProcessor).
    public var processWebhooks = true
    public init() {}
}

public enum MeterApplication {
    public static let contentTypes: [String: EventFormat] = [
        "application/json": .native,
        "application/cloudevents+json": .cloudEvent,
        "application/cloudevents-batch+json": .cloudEventBatch,
    ]

    public enum EventFormat: Sendable { case native, cloudEvent, cloudEventBatch }

    /// The routes of the API, exactly as docs/openapi.yaml lists them (a test compares the two).
    public static let routes: [(method: String, path: String)] = [
        ("POST", "/v1/events"),
        ("POST", "/v1/events/cancel"),
        ("GET", "/v1/usage"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.yaml"),
        ("POST", "/webhooks/billing"),
    ]

    public static func buildRouter(config: ServeConfiguration, pool: PGPool, metrics: MeterMetrics,
                                   logger: Logger, webhooks: WebhookProcessor? = nil,
                                   rollupWatchdog: LoopWatchdog? = nil,
                                   notifier: EventsNotifier? = nil) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: RequestIDMiddleware(metrics: metrics))
        let ingest = IngestService(pool: pool, limits: config.limits, metrics: metrics, notifier: notifier)
        let openAPI = config.openAPIPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) }

        let cancel = CancelService(pool: pool, limits: config.limits, metrics: metrics, notifier: notifier)
        router.post("/v1/events") { request, context in
            try await postEvents(request: request, context: context, ingest: ingest)
        }
        router.post("/v1/events/cancel") { request, context in
            try await postCancel(request: request, context: context, service: cancel, ingest: ingest)
        }
        router.get("/v1/usage") { request, context in
            try await getUsage(request: request, context: context, pool: pool, ingest: ingest)
        }
        router.get("/healthz") { _, _ in
            APIResponse.json(.ok, "{\"status\":\"ok\"}")
        }
        router.get("/readyz") { _, _ in
            let expected = config.expectedLedger
            do {
                let current = try await pool.withConnection { conn in
                    try Migrator.isCurrent(conn, expected: expected)
                }
                // A stalled rollup loop is reported, not made a reason to stop taking events
                // (ingest does not depend on it; the alert on meter_rollup_loop_stalled pages).
                var loop = ""
                if let status = rollupWatchdog?.status, status.stalled {
                    loop = ",\"rollup_loop\":\"stalled\",\"rollup_loop_idle_seconds\":\(Int(status.idle.seconds))"
                }
                return current
                    ? APIResponse.json(.ok, "{\"status\":\"ready\"\(loop)}")
                    : APIResponse.error(.serviceUnavailable, code: "migrations_pending",
                                        message: "the database schema does not match this build; run meterctl migrate")
            } catch {
                logger.warning("readyz.database_error", metadata: ["error": "\(error)"])
                return APIResponse.error(.serviceUnavailable, code: "database_unavailable",
                                         message: "database not reachable (details in the service log)")
            }
        }
        router.get("/metrics") { _, _ in
            metrics.update(pool: pool.stats)
            rollupWatchdog?.check()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(bytes: metrics.registry.emitToBuffer())))
        }
        router.post("/webhooks/billing") { request, context in
            try await postWebhook(request: request, pool: pool, metrics: metrics, processor: webhooks, logger: context.logger)
        }
        router.get("/openapi.yaml") { _, _ in
            guard let openAPI else {
                return APIResponse.error(.notFound, code: "not_found", message: "OpenAPI document not installed")
            }
            return Response(status: .ok, headers: [.contentType: "application/yaml"],
                            body: .init(byteBuffer: ByteBuffer(string: openAPI)))
        }
        return router
    }

    public static func buildApplication(config: ServeConfiguration, pool: PGPool, metrics: MeterMetrics,
                                        logger: Logger, webhooks: WebhookProcessor? = nil,
                                        rollupWatchdog: LoopWatchdog? = nil,
                                        notifier: EventsNotifier? = nil,
                                        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in })
        -> some ApplicationProtocol {
        let router = buildRouter(config: config, pool: pool, metrics: metrics, logger: logger, webhooks: webhooks,
                                 rollupWatchdog: rollupWatchdog, notifier: notifier)
        return Application(router: router,
                           configuration: .init(address: .hostname(config.host, port: config.port),
                                                serverName: "meter"),
                           onServerRunning: onServerRunning,
                           logger: logger)
    }

    // MARK: POST /v1/events

    package static func postEvents(request: Request, context: BasicRequestContext, ingest: IngestService) async throws -> Response {
        let limits = ingest.limits
        // 1. Who is calling. The key is checked before anything else is answered: inside the
        // ingest call itself for a valid request (one round trip), by `refuse` otherwise.
        guard let token = bearerToken(request) else {
            return unauthorized(message: "missing API key: send Authorization: Bearer <key>")
        }
        let gate = KeyGate(token: token, ingest: ingest, context: context)

        // 2. What it sent.
        let mediaType = mediaType(request)
        guard let format = contentTypes[mediaType] else {
            return await gate.refuse(APIResponse.error(.unsupportedMediaType, code: "unsupported_media_type",
                                     message: "Content-Type must be one of \(contentTypes.keys.sorted().joined(separator: ", ")); got \(mediaType.isEmpty ? "none" : mediaType)",
                                     field: "Content-Type"))
        }
        let declaredLength = request.headers[.contentLength].flatMap(Int.init)
        if let length = declaredLength, length > limits.maxBodyBytes {
            return await gate.refuse(tooLarge(limits))
        }
        // A large body from an unknown key is not worth reading: check the key first (one extra
        // round trip, only for bodies over 64 KiB or without a Content-Length).
        if declaredLength.map({ $0 > 65_536 }) ?? true {
            do {
                if try await ingest.authenticate(token: token) == nil { return unauthorized() }
            } catch {
                return unavailable(error, context: context)
            }
        }
        let json: JSONValue
        switch try await readJSON(request, limits: limits, gate: gate) {
        case .failure(let refusal): return refusal.response
        case .success(let j): json = j
        }

        // 3. One event or a batch.
        let elements: [JSONValue]
        let isBatch: Bool
        switch (format, json) {
        case (.native, .array(let a)), (.cloudEventBatch, .array(let a)):
            elements = a; isBatch = true
        case (.native, .object) where json["events"] != nil && json.objectValue?.count == 1:
            guard let a = json["events"]?.arrayValue else {
                return await gate.refuse(APIResponse.error(.badRequest, code: "invalid_body", message: "\"events\" must be an array", field: "events"))
            }
            elements = a; isBatch = true
        case (.native, .object), (.cloudEvent, .object):
            elements = [json]; isBatch = false
        case (.cloudEventBatch, _):
            return await gate.refuse(APIResponse.error(.badRequest, code: "invalid_body",
                                     message: "application/cloudevents-batch+json takes a JSON array of CloudEvents"))
        case (.cloudEvent, _):
            return await gate.refuse(APIResponse.error(.badRequest, code: "invalid_body",
                                     message: "application/cloudevents+json takes one CloudEvent object; send arrays as application/cloudevents-batch+json"))
        default:
            return await gate.refuse(APIResponse.error(.badRequest, code: "invalid_body",
                                     message: "body must be an event object, a JSON array of events, or {\"events\": [...]}"))
        }
        if let refusal = await batchSizeRefusal(elements.count, isBatch: isBatch, noun: "events", limits: limits, gate: gate) {
            return refusal
        }
        let decoded = elements.map { e in
            format == .native ? EventDecoder.decodeNative(e, limits: limits) : EventDecoder.decodeCloudEvent(e, limits: limits)
        }

        // 4. Store. Returns only after COMMIT (synchronous_commit on).
        var verdicts: [IngestVerdict]
        do {
            switch try await ingest.ingest(decoded, token: token) {
            case .unauthorized: return unauthorized()
            case .stored(let v): verdicts = v
            }
        } catch {
            return unavailable(error, context: context)
        }
        if format != .native {
            // Name the CloudEvents attribute the client actually sent.
            for i in verdicts.indices {
                if let f = verdicts[i].error?.field, let ce = cloudEventField[f] { verdicts[i].error?.field = ce }
            }
        }
        return isBatch ? APIResponse.batch(verdicts) : APIResponse.single(verdicts[0])
    }

    /// The media type of the request body, lower-cased, without parameters ("" when absent).
    package static func mediaType(_ request: Request) -> String {
        (request.headers[.contentType] ?? "").split(separator: ";").first
            .map { String($0).trimmingCharacters(in: .whitespacesAndNewlines).lowercased() } ?? ""
    }

    /// Checks the caller's key before a request-level refusal is sent: a bad key answers 401
    /// whatever else is wrong with the request (one round trip, only on the refusal path).
    package struct KeyGate {
        package let token: String
        package let ingest: IngestService
        package let context: BasicRequestContext

        package func refuse(_ response: Response) async -> Response {
            do {
                return try await ingest.authenticate(token: token) == nil ? unauthorized() : response
            } catch {
                return unavailable(error, context: context)
            }
        }
    }

    package struct Refusal: Error { let response: Response }

    /// An empty batch (400) or one over `limits.maxBatchEvents` elements (413), refused through `gate`.
    package static func batchSizeRefusal(_ count: Int, isBatch: Bool, noun: String, limits: IngestLimits,
                                 gate: KeyGate) async -> Response? {
        if isBatch && count == 0 {
            return await gate.refuse(APIResponse.error(.badRequest, code: "empty_batch", message: "the batch holds no \(noun)"))
        }
        if count > limits.maxBatchEvents {
            return await gate.refuse(APIResponse.error(.contentTooLarge, code: "batch_too_large",
                                                       message: "the batch holds \(count) \(noun); at most \(limits.maxBatchEvents) per request"))
        }
        return nil
    }

    /// Reads the body (at most `limits.maxBodyBytes`) and parses it as strict JSON; a body too
    /// large (413) or not JSON (400) is refused through `gate`.
    package static func readJSON(_ request: Request, limits: IngestLimits, gate: KeyGate) async throws -> Result<JSONValue, Refusal> {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: limits.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            return .failure(Refusal(response: await gate.refuse(tooLarge(limits))))
        }
        do {
            return .success(try JSONParser.parse(Array(buffer: body)))
        } catch {
            return .failure(Refusal(response: await gate.refuse(
                APIResponse.error(.badRequest, code: "malformed_json", message: "body is not valid JSON: \(error)"))))
        }
    }

    package static let cloudEventField = ["customer": "subject", "meter": "type", "occurred_at": "time",
                                  "idempotency_key": "id", "value": "data.value", "properties": "data"]

    package static func unauthorized(message: String = "unknown or revoked API key") -> Response {
        APIResponse.error(.unauthorized, code: "unauthorized", message: message,
                          headers: [.wwwAuthenticate: message.hasPrefix("missing") ? "Bearer" : "Bearer error=\"invalid_token\""])
    }

    package static func tooLarge(_ limits: IngestLimits) -> Response {
        APIResponse.error(.contentTooLarge, code: "body_too_large",
                          message: "request body exceeds \(limits.maxBodyBytes) bytes")
    }

    /// The database failed (not the client): 503, retryable with the same idempotency keys, when
    /// the connection or the pool failed; 500 for anything else (a bug on our side, logged).
    package static func unavailable(_ error: any Error, context: BasicRequestContext,
                            message: String = "the event store is unavailable; retry with the same idempotency keys") -> Response {
        context.logger.error("ingest.database_error", metadata: ["error": "\(error)"])
        if let pg = error as? PGError, !pg.isTransient, pg.kind != .poolClosed {
            return APIResponse.error(.internalServerError, code: "internal_error",
                                     message: "internal error (logged with this request's X-Request-Id)")
        }
        return APIResponse.error(.serviceUnavailable, code: "database_unavailable",
                                 message: message,
                                 headers: [.retryAfter: "1"])
    }
}

/// Gives every request an id (the caller's X-Request-Id when it sends a sane one), echoes it in
/// the response, puts it in every log line of the request, and records count and latency.
package struct RequestIDMiddleware: RouterMiddleware {
    package typealias Context = BasicRequestContext
    package let metrics: MeterMetrics

    package func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var context = context
        let incoming = request.headers[.init("X-Request-Id")!]
        let id = incoming.flatMap { $0.count <= 128 && $0.allSatisfy { $0.isASCII && !$0.isWhitespace } ? $0 : nil }
            ?? UUID().uuidString.lowercased()
        context.logger[metadataKey: "request_id"] = .string(id)
        let route = context.endpointPath ?? "unmatched"
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as HTTPResponseError {
            response = APIResponse.error(error.status, code: error.status == .notFound ? "not_found" : "http_error",
                                         message: "\(error.status.code) \(error.status.reasonPhrase)")
        } catch {
            context.logger.error("http.unhandled", metadata: ["error": "\(error)"])
            response = APIResponse.error(.internalServerError, code: "internal_error", message: "internal error")
        }
        response.headers[.init("X-Request-Id")!] = id
        let elapsed = ContinuousClock.now - start
        metrics.request(route: route, status: response.status.code).increment()
        metrics.latency(route: route).record(elapsed)
        context.logger.info("http.request", metadata: [
            "method": "\(request.method)", "path": "\(request.uri.path)", "status": "\(response.status.code)",
            "duration_ms": "\(Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)",
        ])
        return response
    }
}
