import Foundation
import Hummingbird
import Logging
import HummingbirdTesting
import NIOCore
import XCTest
import PGClient
import MeterCore
import MeterAPI
import MeterDevKit

/// Health, readiness, metrics, the OpenAPI document against the routes, request ids, and a live
/// server that drains an in-flight request on shutdown.
final class ServiceTests: XCTestCase {
    typealias T = APIHarness

    func testHealthReadinessAndMetrics() async throws {
        try await T.withApp { client, fx in
            let h = try await client.execute(uri: "/healthz", method: .get)
            XCTAssertEqual(h.status, .ok)
            let r = try await client.execute(uri: "/readyz", method: .get)
            XCTAssertEqual(r.status, .ok)
            XCTAssertEqual(String(buffer: r.body), #"{"status":"ready"}"#)
            let once = T.event(fx, key: "m1")
            _ = try await T.post(client, once, token: fx.token)
            _ = try await T.post(client, once, token: fx.token)
            _ = try await T.post(client, T.event(fx, key: "m2", value: "-1"), token: fx.token)
            let m = try await client.execute(uri: "/metrics", method: .get)
            XCTAssertEqual(m.status, .ok)
            let text = String(buffer: m.body)
            XCTAssertTrue(text.contains(#"meter_ingest_events_total{status="accepted"} 1"#), text)
            XCTAssertTrue(text.contains(#"meter_ingest_events_total{status="duplicate"} 1"#), text)
            XCTAssertTrue(text.contains(#"meter_ingest_events_total{status="rejected"} 1"#), text)
            XCTAssertTrue(text.contains(#"meter_http_request_duration_seconds_bucket{route="/v1/events""#), text)
            XCTAssertTrue(text.contains(#"meter_db_pool_connections{state="open"}"#), text)
        }
    }

    func testReadinessFailsWhenTheSchemaIsNotWhatThisBuildExpects() async throws {
        try await T.withApp({ $0.expectedLedger[9999] = "not-applied" }) { client, _ in
            let r = try await client.execute(uri: "/readyz", method: .get)
            XCTAssertEqual(r.status, .serviceUnavailable)
            XCTAssertTrue(String(buffer: r.body).contains("migrations_pending"))
        }
    }

    func testRequestIDIsEchoedOrGenerated() async throws {
        try await T.withApp { client, _ in
            let given = try await client.execute(uri: "/healthz", method: .get, headers: [.init("X-Request-Id")!: "abc-123"])
            XCTAssertEqual(given.headers[.init("X-Request-Id")!], "abc-123")
            let made = try await client.execute(uri: "/healthz", method: .get)
            XCTAssertEqual(made.headers[.init("X-Request-Id")!]?.count, 36)
            let missing = try await client.execute(uri: "/nope", method: .get)
            XCTAssertEqual(missing.status, .notFound)
            XCTAssertTrue(String(buffer: missing.body).contains(#""code":"not_found""#))
        }
    }

    /// docs/openapi.yaml lists exactly the routes the router serves, and every one is routed.
    func testOpenAPIDocumentAgreesWithTheRoutes() async throws {
        let yaml = try String(contentsOfFile: TestDatabase.repoRoot + "/docs/openapi.yaml", encoding: .utf8)
        var documented: Set<String> = []
        var inPaths = false
        var current: String?
        for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("paths:") { inPaths = true; continue }
            if inPaths, let f = line.first, !f.isWhitespace, f != "#" { inPaths = false }
            guard inPaths else { continue }
            let t = line.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("  /"), !line.hasPrefix("   "), t.hasSuffix(":") { current = String(t.dropLast()) }
            if line.hasPrefix("    "), !line.hasPrefix("     "), let p = current,
               let m = ["get", "post", "put", "patch", "delete"].first(where: { t == "\($0):" }) {
                documented.insert("\(m.uppercased()) \(p)")
            }
        }
        let served = Set(MeterApplication.routes.map { "\($0.method) \($0.path)" })
        XCTAssertEqual(documented, served)
        try await T.withApp { client, _ in
            for route in MeterApplication.routes {
                let r = try await client.execute(uri: route.path, method: .init(route.method)!)
                XCTAssertNotEqual(r.status, .notFound, "\(route) is documented but not routed")
            }
            let doc = try await client.execute(uri: "/openapi.yaml", method: .get)
            XCTAssertEqual(String(buffer: doc.body), yaml)
        }
    }

    /// A request sent halfway and then stalled holds its socket only until the idle timeout: the
    /// server closes the connection (no read timeout let such sockets pile up and stall the drain).
    func testAStalledHalfRequestIsClosedAfterTheIdleTimeout() async throws {
        let fx = try T.makeFixture()
        var config = ServeConfiguration()
        config.idleTimeoutSeconds = 1
        let server = try await RunningServer.start(config, conninfo: fx.conninfo, poolSize: 2)
        let port = server.port
        let (closedAfter, _) = try await Self.sendHalf(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"customer\"", port: port)
        try await server.stop()
        XCTAssertGreaterThanOrEqual(closedAfter, 0.5, "closed at once or never (\(closedAfter))")
        XCTAssertLessThan(closedAfter, 5, "the stalled request was not closed by the idle timeout")
    }

    /// Sends `text` (a request cut short) on a raw socket and reads until the server closes the
    /// connection or 10 s pass: seconds until the close (-2 = still open) and what was received.
    static func sendHalf(_ text: String, port: Int) async throws -> (Double, String) {
        try await onDedicatedThread { () -> (Double, String) in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard ok == 0 else { return (-1, "") }
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            _ = text.withCString { send(fd, $0, strlen($0), 0) }
            let start = Date()
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 512)
            while true {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n == 0 { return (Date().timeIntervalSince(start), String(decoding: received, as: UTF8.self)) }  // closed
                if n < 0 { return (-2, String(decoding: received, as: UTF8.self)) }                                  // open after 10 s
                received += buffer[0..<n]
            }
        }
    }

    /// No body of an unknown key is parsed, however small: a request whose 100-byte body never
    /// comes is answered 401 at once (before #13 a body of at most 4 KiB was read and parsed
    /// first, so this request waited for the idle timeout and got no answer). A key just
    /// authenticated waits for its body as it should.
    func testAnUnknownKeyIsRefusedBeforeItsSmallBodyIsRead() async throws {
        let fx = try T.makeFixture()
        var config = ServeConfiguration()
        config.idleTimeoutSeconds = 3
        let server = try await RunningServer.start(config, conninfo: fx.conninfo, poolSize: 2)
        let half = { (token: String) in
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
                + "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"customer\""
        }
        let (_, unknown) = try await Self.sendHalf(half("mk_NoSuchKey0123456789ABCDEFGHIJKLMNOPQRSTUV"), port: server.port)
        XCTAssertTrue(unknown.hasPrefix("HTTP/1.1 401"), "an unknown key must be refused before its body: \(unknown.prefix(200))")
        XCTAssertTrue(unknown.contains("\"unauthorized\""), String(unknown.prefix(400)))

        // A live key: its body is awaited (and the stalled request closed by the idle timeout).
        let (closedAfter, live) = try await Self.sendHalf(half(fx.token), port: server.port)
        try await server.stop()
        XCTAssertFalse(live.hasPrefix("HTTP/1.1 401"), String(live.prefix(200)))
        XCTAssertGreaterThanOrEqual(closedAfter, 2, "a live key's body was not waited for (\(closedAfter))")
    }

    /// A real listening server: a request held up inside the database is still answered (and its
    /// event committed) after shutdown was requested; then the server stops.
    func testShutdownDrainsInFlightRequests() async throws {
        let fx = try T.makeFixture()
        let server = try await RunningServer.start(ServeConfiguration(), conninfo: fx.conninfo, poolSize: 4)
        let (port, handle) = (server.port, server.handle)

        // Block ingest: hold a lock that the insert into meter.events must wait for.
        let blocker = try PGConnection(conninfo: fx.conninfo)
        try blocker.execute("begin")
        try blocker.execute("lock table meter.events in share row exclusive mode")
        let body = T.event(fx, key: "inflight")
        let token = fx.token
        let reply = Task {
            try await onDedicatedThread {
                try LoadClient(port: port).request("POST", "/v1/events",
                                                   headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")],
                                                   body: body)
            }
        }
        try await Task.sleep(for: .milliseconds(500))
        let stopping = Task { await handle.stop() }
        try await Task.sleep(for: .milliseconds(300))
        try blocker.execute("commit")
        let r = try await reply.value
        XCTAssertEqual(r.status, 201, r.body)
        await stopping.value
        try await server.task.value
        XCTAssertEqual(try T.count(fx), 1)
        // And it no longer listens.
        XCTAssertThrowsError(try LoadClient(port: port).request("GET", "/healthz"))
    }

    /// The rollup loop's watchdog (issue 12): a loop that finishes no run for longer than its
    /// bound is reported by the metric, an error log line and /readyz (which stays 200: ingest
    /// does not depend on the loop), and clears when the loop turns again. The loop is stalled
    /// for real, no clock tricks: a session holds the watermark row the run must lock.
    func testAStalledRollupLoopIsReportedAndClears() async throws {
        let fx = try T.makeFixture()
        var config = ServeConfiguration()
        var rollup = RollupWorker.Configuration()
        rollup.interval = .milliseconds(100)
        rollup.minGap = .milliseconds(20)
        rollup.stallAfter = .seconds(1)
        config.rollup = rollup
        config.expectedLedger = try MeterServer.expectedLedger(conninfo: fx.conninfo, sqlDir: TestDatabase.sqlDir)
        let logs = CapturedLogs()
        let logger = Logger(label: "meter.test.watchdog") { _ in CapturingLogHandler(sink: logs) }
        let server = try await RunningServer.start(config, conninfo: fx.conninfo, poolSize: 2, logger: logger)
        let port = server.port
        do {
            func get(_ path: String) async throws -> LoadClient.Response {
                try await onDedicatedThread { try LoadClient(port: port).request("GET", path) }
            }
            /// The value of an unlabelled gauge in the /metrics text (its sample line, not its HELP).
            func stalled() async throws -> Double? {
                let text = try await get("/metrics").body
                return text.split(separator: "\n").first { $0.hasPrefix("meter_rollup_loop_stalled ") }
                    .flatMap { Double($0.split(separator: " ").last ?? "") }
            }
            /// Polls until `done` holds, 10 s at most.
            func eventually(_ what: String, _ done: () async throws -> Bool) async throws {
                let deadline = ContinuousClock.now + .seconds(10)
                while ContinuousClock.now < deadline {
                    if try await done() { return }
                    try await Task.sleep(for: .milliseconds(100))
                }
                XCTFail("not within 10 s: \(what)")
            }
            try await eventually("the loop runs (stalled = 0, runs counted)") {
                let text = try await get("/metrics").body
                let ran = text.split(separator: "\n").first { $0.hasPrefix(#"meter_rollup_runs_total{result="ran"} "#) }
                    .flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
                return try await stalled() == 0 && ran > 0
            }
            let readyBefore = try await get("/readyz").body
            XCTAssertEqual(readyBefore, #"{"status":"ready"}"#)

            let blocker = try PGConnection(conninfo: fx.conninfo)
            defer { blocker.close() }
            try blocker.execute("begin")
            try blocker.execute("select 1 from meter.rollup_watermark where name = 'events' for update")
            try await eventually("the metric says stalled") { try await stalled() == 1 }
            let ready = try await get("/readyz")
            XCTAssertEqual(ready.status, 200, "a stalled rollup loop does not stop ingest")
            XCTAssertTrue(ready.body.contains(#""rollup_loop":"stalled""#), ready.body)
            try await eventually("the log says rollup.loop_stalled") { logs.messages.contains("rollup.loop_stalled") }
            XCTAssertTrue(logs.lines.contains { $0.level == .error && $0.message == "rollup.loop_stalled" })

            try blocker.execute("rollback")
            try await eventually("the metric clears") { try await stalled() == 0 }
            let readyAfter = try await get("/readyz").body
            XCTAssertEqual(readyAfter, #"{"status":"ready"}"#)
            XCTAssertTrue(logs.messages.contains("rollup.loop_resumed"), "\(logs.messages)")
        } catch {
            try? await server.stop()  // never leave the server running into the next test
            throw error
        }
        try await server.stop()
    }

    /// With the database unreachable: liveness stays up, readiness and ingest answer 503 (ingest
    /// with Retry-After and the advice to retry with the same keys), never 500.
    func testDatabaseDownIsA503NotA500() async throws {
        let pool = PGPool(conninfo: "host=/nonexistent-meter-socket port=1 dbname=meter user=meter connect_timeout=2",
                          maxConnections: 2, logger: TestDatabase.logger)
        let router = MeterApplication.buildRouter(config: ServeConfiguration(), pool: pool, metrics: MeterMetrics(),
                                                  logger: TestDatabase.logger)
        let app = Application(router: router, logger: TestDatabase.logger)
        try await app.test(.router) { client in
            let h = try await client.execute(uri: "/healthz", method: .get)
            XCTAssertEqual(h.status, .ok)
            let r = try await client.execute(uri: "/readyz", method: .get)
            XCTAssertEqual(r.status, .serviceUnavailable)
            XCTAssertTrue(String(buffer: r.body).contains("database_unavailable"))
            let body = #"{"customer":"c","meter":"m","idempotency_key":"k","occurred_at":"\#(T.now())"}"#
            let e = try await client.execute(uri: "/v1/events", method: .post,
                                             headers: [.authorization: "Bearer mk_x", .contentType: "application/json"],
                                             body: ByteBuffer(string: body))
            XCTAssertEqual(e.status, .serviceUnavailable)
            XCTAssertEqual(e.headers[.retryAfter], "1")
            XCTAssertTrue(String(buffer: e.body).contains(#""code":"database_unavailable""#))
            // Refusals that need no database are answered without one: a webhook without a
            // signature header, or with a malformed one, never reaches the pool for the secrets.
            for (header, code) in [(nil, "signature_missing"), ("t=abc,v1=00", "signature_malformed")] as [(String?, String)] {
                var headers: HTTPFields = [.contentType: "application/json"]
                if let header { headers[.init("Stripe-Signature")!] = header }
                let w = try await client.execute(uri: "/webhooks/billing", method: .post, headers: headers,
                                                 body: ByteBuffer(string: #"{"id":"evt_x"}"#))
                XCTAssertEqual(w.status, .badRequest, String(buffer: w.body))
                XCTAssertTrue(String(buffer: w.body).contains(#""code":"\#(code)""#), String(buffer: w.body))
            }
            // A path we serve, asked with a method it does not take: 405 naming the methods.
            let m = try await client.execute(uri: "/v1/events", method: .get)
            XCTAssertEqual(m.status, .methodNotAllowed)
            XCTAssertEqual(m.headers[.allow], "POST")
            // ... also for a path with parameters ({customer}, {meter} stand for one segment each)
            let p = try await client.execute(uri: "/v1/customers/acme/limits/calls", method: .post)
            XCTAssertEqual(p.status, .methodNotAllowed)
            XCTAssertEqual(p.headers[.allow], "GET")
            let deeper = try await client.execute(uri: "/v1/customers/acme/limits/calls/more", method: .post)
            XCTAssertEqual(deeper.status, .notFound)
        }
        await pool.shutdown()
    }
}

/// Log lines kept in memory, for tests that assert what the service logged.
final class CapturedLogs: @unchecked Sendable {
    private let lock = NSLock()
    private var kept: [(level: Logger.Level, message: String)] = []
    func add(_ level: Logger.Level, _ message: String) { lock.withLock { kept.append((level, message)) } }
    var lines: [(level: Logger.Level, message: String)] { lock.withLock { kept } }
    var messages: [String] { lines.map(\.message) }
}

struct CapturingLogHandler: LogHandler {
    let sink: CapturedLogs
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) { sink.add(event.level, event.message.description) }
}
