import Foundation
import Hummingbird
import MeterCore

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
            // A path we serve, asked with a method it does not take: 405 with the methods it does
            // (RFC 9110), not 404.
            let allowed = MeterApplication.routes.filter { MeterApplication.path(request.uri.path, matches: $0.path) }.map(\.method)
            if error.status == .notFound, !allowed.isEmpty {
                response = APIResponse.error(.methodNotAllowed, code: "method_not_allowed",
                                             message: "\(request.uri.path) takes \(allowed.joined(separator: ", ")); got \(request.method)",
                                             headers: [.allow: allowed.joined(separator: ", ")])
            } else {
                response = APIResponse.error(error.status, code: error.status == .notFound ? "not_found" : "http_error",
                                             message: "\(error.status.code) \(error.status.reasonPhrase)")
            }
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
