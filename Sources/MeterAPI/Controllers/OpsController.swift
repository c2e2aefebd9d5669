import Foundation
import Hummingbird
import Logging
import NIOCore
import PGClient
import MeterCore

/// What operators and their tools call: GET /healthz (the process answers), GET /readyz (the
/// database is reachable and its schema is this build's), GET /metrics (Prometheus), and
/// GET /openapi.yaml (the API's description).
package struct OpsController: Sendable {
    package let config: ServeConfiguration
    package let pool: PGPool
    package let metrics: MeterMetrics
    package let rollupWatchdog: LoopWatchdog?
    package let openAPI: String?
    package let logger: Logger

    package func addRoutes(to router: Router<BasicRequestContext>) {
        let (config, pool, metrics, rollupWatchdog, openAPI, logger) = (config, pool, metrics, rollupWatchdog, openAPI, logger)
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
        router.get("/openapi.yaml") { _, _ in
            guard let openAPI else {
                return APIResponse.error(.notFound, code: "not_found", message: "OpenAPI document not installed")
            }
            return Response(status: .ok, headers: [.contentType: "application/yaml"],
                            body: .init(byteBuffer: ByteBuffer(string: openAPI)))
        }
    }
}
