import Foundation
import Hummingbird
import HummingbirdCore
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
    /// A connection that sends nothing for this long is closed: an idle keep-alive connection, or
    /// a request sent halfway and stalled (it would otherwise hold a socket and the SIGTERM drain).
    public var idleTimeoutSeconds = 60
    /// Connections served at once; beyond, new ones wait in the listen backlog (not accepted).
    public var maxConnections = 1024
    /// Requests of one API key in flight at once (0 = no cap); beyond: 429.
    public var keyMaxConcurrentRequests = 256
    /// Requests of one API key per second (0 = no cap); beyond: 429 with Retry-After.
    public var keyRequestsPerSecond = 10_000.0
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
    /// Hourly retention pass (RetentionWorker); nil = none (`meterctl prune` by hand).
    public var retention: Retention.Policy? = .init()
    /// Outgoing webhooks' delivery loop (WebhookDeliveryWorker); nil = none in this process.
    public var webhookDelivery: WebhookDeliveryConfiguration? = .init()
    public init() {}
}

/// The service's HTTP application: one controller per resource (Controllers/), the request-id
/// middleware, and the route list the OpenAPI test compares with docs/openapi.yaml.
public enum MeterApplication {
    /// The routes of the API, exactly as docs/openapi.yaml lists them (a test compares the two).
    public static let routes: [(method: String, path: String)] = [
        ("POST", "/v1/events"),
        ("POST", "/v1/events/cancel"),
        ("GET", "/v1/usage"),
        ("GET", "/v1/customers/{customer}/invoice_preview"),
        ("GET", "/v1/customers/{customer}/limits/{meter}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.yaml"),
        ("POST", "/webhooks/billing"),
    ]

    /// Whether a request path is an instance of a route's path ("{name}" stands for one
    /// non-empty segment).
    package static func path(_ path: String, matches template: String) -> Bool {
        let p = path.split(separator: "/", omittingEmptySubsequences: false)
        let t = template.split(separator: "/", omittingEmptySubsequences: false)
        return p.count == t.count && zip(p, t).allSatisfy { a, b in a == b || (b.hasPrefix("{") && b.hasSuffix("}") && !a.isEmpty) }
    }

    package static func buildRouter(config: ServeConfiguration, pool: PGPool, metrics: MeterMetrics,
                                    logger: Logger, webhooks: WebhookProcessor? = nil,
                                    rollupWatchdog: LoopWatchdog? = nil,
                                    notifier: EventsNotifier? = nil) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: RequestIDMiddleware(metrics: metrics))
        if config.keyMaxConcurrentRequests > 0 || config.keyRequestsPerSecond > 0 {
            let limiter = KeyLimiter(.init(maxConcurrent: config.keyMaxConcurrentRequests, perSecond: config.keyRequestsPerSecond))
            router.add(middleware: KeyLimitMiddleware(limiter: limiter, metrics: metrics))
        }
        let ingest = IngestService(pool: pool, limits: config.limits, metrics: metrics, notifier: notifier)
        let cancellations = CancelService(pool: pool, limits: config.limits, metrics: metrics, notifier: notifier)
        EventsController(ingest: ingest, cancellations: cancellations).addRoutes(to: router)
        UsageController(pool: pool, ingest: ingest).addRoutes(to: router)
        InvoicePreviewController(pool: pool, ingest: ingest).addRoutes(to: router)
        LimitsController(pool: pool, ingest: ingest).addRoutes(to: router)
        WebhooksController(pool: pool, metrics: metrics, processor: webhooks).addRoutes(to: router)
        OpsController(config: config, pool: pool, metrics: metrics, rollupWatchdog: rollupWatchdog,
                      openAPI: config.openAPIPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) },
                      logger: logger).addRoutes(to: router)
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
                           server: .http1(configuration: .init(idleTimeout: .seconds(Int64(config.idleTimeoutSeconds)))),
                           configuration: .init(address: .hostname(config.host, port: config.port),
                                                serverName: "meter",
                                                availableConnectionsDelegate: MaximumAvailableConnections(config.maxConnections)),
                           onServerRunning: onServerRunning,
                           logger: logger)
    }
}
