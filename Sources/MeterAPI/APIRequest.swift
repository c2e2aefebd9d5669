import Foundation
import Hummingbird
import NIOCore
import PGClient
import MeterWire
import MeterCore

/// What every endpoint reads from a request the same way: the bearer key, the media type, a
/// JSON body within the limits, and the key check before a request-level refusal.
package enum APIRequest {
    /// The bearer token of a request, or nil when there is none.
    package static func bearerToken(_ request: Request) -> String? {
        guard let auth = request.headers[.authorization], auth.lowercased().hasPrefix("bearer ") else { return nil }
        let token = String(auth.dropFirst(7)).trimmingCharacters(in: .whitespacesAndNewlines)
        return token.isEmpty ? nil : token
    }

    /// The read endpoints' gate (usage, invoice preview, limits): a bearer key with the read scope,
    /// allowed for `customer` (nil: no customer named), checked in one round trip before anything
    /// else. nil when the request may go on; else the response to send (401, 403, 503).
    package static func authorizeRead(_ request: Request, context: BasicRequestContext, ingest: IngestService,
                                      customer: String?, what: String) async -> Response? {
        guard let token = bearerToken(request) else { return missingKey() }
        do {
            return readRefusal(try await ingest.authorize(token: token, scope: "read", customer: customer),
                               customer: customer, what: what)
        } catch {
            return APIResponse.unavailable(error, context: context)
        }
    }

    /// The 401 of a request without a bearer key.
    package static func missingKey() -> Response {
        APIResponse.unauthorized(message: "missing API key: send Authorization: Bearer <key>")
    }

    /// What a read key's verdict answers: nil when it may read (`.ok`), else its 401 or 403.
    package static func readRefusal(_ verdict: IngestService.Authorization, customer: String?, what: String) -> Response? {
        switch verdict {
        case .ok: return nil
        case .unauthorized: return APIResponse.unauthorized()
        case .insufficientScope: return APIResponse.insufficientScope("this API key may not read \(what)")
        case .customerNotAllowed: return APIResponse.customerNotAllowed(customer ?? "")
        }
    }

    /// A dimension name: 1-64 of A-Z a-z 0-9 _ . : - (checked by hand: a regular expression is
    /// compiled on every call on Linux, and this runs on every read that names one).
    package static func isDimensionName(_ s: String) -> Bool {
        let u = s.utf8
        return (1...64).contains(u.count) && u.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                || b == 0x5F || b == 0x2E || b == 0x3A || b == 0x2D
        }
    }

    /// The media type of the request body, lower-cased, without parameters ("" when absent).
    package static func mediaType(_ request: Request) -> String {
        (request.headers[.contentType] ?? "").split(separator: ";").first
            .map { String($0).trimmingCharacters(in: .whitespacesAndNewlines).lowercased() } ?? ""
    }

    /// Before a body is read: one declared over the limit is refused (413, key checked first), and
    /// the key is checked (one round trip) unless the body is small (at most 4 KiB, length
    /// declared) and the key was authenticated in this process within the last 30 s (LiveKeys).
    /// So no body of an unknown key is parsed; a live key's single events keep their one round
    /// trip (the ingest call checks the key again, so revocation still acts at once); a batch pays
    /// one more, spread over its events.
    /// The largest body parsed on the strength of a recent authentication.
    package static let parseBeforeKeyBytes = 4_096

    package static func refuseLargeBodyEarly(_ request: Request, token: String, limits: IngestLimits,
                                             gate: KeyGate) async -> Response? {
        let declaredLength = request.headers[.contentLength].flatMap(Int.init)
        if let length = declaredLength, length > limits.maxBodyBytes {
            return await gate.refuse(APIResponse.tooLarge(limits))
        }
        let small = declaredLength.map { $0 <= Self.parseBeforeKeyBytes } ?? false
        if !(small && gate.live.contains(token)) {
            do {
                if try await gate.ingest.authenticate(token: token) == nil { return APIResponse.unauthorized() }
                gate.live.record(token)
            } catch {
                return APIResponse.unavailable(error, context: gate.context)
            }
        }
        return nil
    }

    /// A request body in a content coding (gzip, deflate, br...): none is supported, so it is
    /// refused as such (415, naming Content-Encoding) rather than read as malformed JSON.
    package static func unsupportedEncoding(_ request: Request) -> Response? {
        guard let encoding = request.headers[.contentEncoding]?.trimmingCharacters(in: .whitespaces).lowercased(),
              !encoding.isEmpty, encoding != "identity" else { return nil }
        return APIResponse.error(.unsupportedMediaType, code: "unsupported_content_encoding",
                                 message: "Content-Encoding \(encoding.prefix(40)) is not supported; send the body uncompressed",
                                 field: "Content-Encoding")
    }

    /// Checks the caller's key before a request-level refusal is sent: a bad key answers 401
    /// whatever else is wrong with the request (one round trip, only on the refusal path).
    package struct KeyGate {
        package let token: String
        package let ingest: IngestService
        package let context: BasicRequestContext
        /// Keys authenticated recently in this process (decides only what may be parsed first).
        package let live: LiveKeys

        package func refuse(_ response: Response) async -> Response {
            do {
                return try await ingest.authenticate(token: token) == nil ? APIResponse.unauthorized() : response
            } catch {
                return APIResponse.unavailable(error, context: context)
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
            return .failure(Refusal(response: await gate.refuse(APIResponse.tooLarge(limits))))
        }
        do {
            return .success(try JSONParser.parse(Array(buffer: body)))
        } catch {
            return .failure(Refusal(response: await gate.refuse(
                APIResponse.error(.badRequest, code: "malformed_json", message: "body is not valid JSON: \(error)"))))
        }
    }
}

/// The refusals every endpoint shares.
extension APIResponse {
    package static func unauthorized(message: String = "unknown or revoked API key") -> Response {
        APIResponse.error(.unauthorized, code: "unauthorized", message: message,
                          headers: [.wwwAuthenticate: message.hasPrefix("missing") ? "Bearer" : "Bearer error=\"invalid_token\""])
    }

    /// A live key without the scope the operation needs (403, stable code insufficient_scope).
    package static func insufficientScope(_ message: String) -> Response {
        error(.forbidden, code: "insufficient_scope", message: message)
    }

    /// A key restricted to other customers (403, customer_not_allowed, field customer).
    package static func customerNotAllowed(_ customer: String) -> Response {
        error(.forbidden, code: "customer_not_allowed", message: "this API key may not act for customer \(customer)", field: "customer")
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
