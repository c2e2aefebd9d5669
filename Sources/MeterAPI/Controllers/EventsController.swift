import Foundation
import Hummingbird
import NIOCore
import PGClient
import MeterWire
import MeterCore

/// POST /v1/events and POST /v1/events/cancel: events in (native JSON or CloudEvents), and
/// cancellations of events already stored. Both answer a verdict per element, after COMMIT.
package struct EventsController: Sendable {
    package let ingest: IngestService
    package let cancellations: CancelService
    /// Keys seen authenticated lately: their small bodies are parsed before the key is checked again.
    package let live = LiveKeys()

    /// The request body formats of POST /v1/events, by media type.
    package static let contentTypes: [String: EventFormat] = [
        "application/json": .native,
        "application/cloudevents+json": .cloudEvent,
        "application/cloudevents-batch+json": .cloudEventBatch,
    ]

    package enum EventFormat: Sendable { case native, cloudEvent, cloudEventBatch }

    /// Our field names and the CloudEvents attributes they come from, for the client's errors.
    package static let cloudEventField = ["customer": "subject", "meter": "type", "occurred_at": "time",
                                          "idempotency_key": "id", "value": "data.value", "properties": "data"]

    package func addRoutes(to router: Router<BasicRequestContext>) {
        router.post("/v1/events", use: post)
        router.post("/v1/events/cancel", use: cancel)
    }

    // MARK: POST /v1/events

    @Sendable package func post(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let limits = ingest.limits
        // 1. Who is calling. The key is checked before anything else is answered: inside the
        // ingest call itself for a valid request (one round trip), by `refuse` otherwise.
        guard let token = APIRequest.bearerToken(request) else {
            return APIRequest.missingKey()
        }
        let gate = APIRequest.KeyGate(token: token, ingest: ingest, context: context, live: live)

        // 2. What it sent.
        let mediaType = APIRequest.mediaType(request)
        guard let format = Self.contentTypes[mediaType] else {
            return await gate.refuse(APIResponse.error(.unsupportedMediaType, code: "unsupported_media_type",
                                     message: "Content-Type must be one of \(Self.contentTypes.keys.sorted().joined(separator: ", ")); got \(mediaType.isEmpty ? "none" : mediaType)",
                                     field: "Content-Type"))
        }
        if let refusal = APIRequest.unsupportedEncoding(request) { return await gate.refuse(refusal) }
        if let refusal = await APIRequest.refuseLargeBodyEarly(request, token: token, limits: limits, gate: gate) {
            return refusal
        }
        let json: JSONValue
        switch try await APIRequest.readJSON(request, limits: limits, gate: gate) {
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
        if let refusal = await APIRequest.batchSizeRefusal(elements.count, isBatch: isBatch, noun: "events", limits: limits, gate: gate) {
            return refusal
        }
        let decoded = elements.map { e in
            format == .native ? EventDecoder.decodeNative(e, limits: limits) : EventDecoder.decodeCloudEvent(e, limits: limits)
        }

        // 4. Store. Returns only after COMMIT (synchronous_commit on).
        var verdicts: [IngestVerdict]
        do {
            switch try await ingest.ingest(decoded, token: token) {
            case .unauthorized: return APIResponse.unauthorized()
            case .forbidden(let message): return APIResponse.insufficientScope(message)
            case .stored(let v): verdicts = v; live.record(token)
            }
        } catch {
            return APIResponse.unavailable(error, context: context)
        }
        if format != .native {
            // Name the CloudEvents attribute the client actually sent.
            for i in verdicts.indices {
                if let f = verdicts[i].error?.field, let ce = Self.cloudEventField[f] { verdicts[i].error?.field = ce }
            }
        }
        return isBatch ? APIResponse.batch(verdicts) : APIResponse.single(verdicts[0])
    }

    // MARK: POST /v1/events/cancel

    /// One cancellation {customer, idempotency_key, reason?}, a JSON array of them, or
    /// {"cancellations": [...]}. Single: 200 cancelled or already_cancelled, 404 when no such
    /// event (or customer), 422 when malformed. Batch: 200 when every element is cancelled or
    /// already cancelled, else 207 with each element's verdict; valid elements are applied either way.
    @Sendable package func cancel(_ request: Request, context: BasicRequestContext) async throws -> Response {
        guard let token = APIRequest.bearerToken(request) else {
            return APIRequest.missingKey()
        }
        let gate = APIRequest.KeyGate(token: token, ingest: ingest, context: context, live: live)
        let mediaType = APIRequest.mediaType(request)
        guard mediaType == "application/json" else {
            return await gate.refuse(APIResponse.error(.unsupportedMediaType, code: "unsupported_media_type",
                                                  message: "Content-Type must be application/json; got \(mediaType.isEmpty ? "none" : mediaType)",
                                                  field: "Content-Type"))
        }
        if let refusal = APIRequest.unsupportedEncoding(request) { return await gate.refuse(refusal) }
        let limits = cancellations.limits
        if let refusal = await APIRequest.refuseLargeBodyEarly(request, token: token, limits: limits, gate: gate) {
            return refusal
        }
        let json: JSONValue
        switch try await APIRequest.readJSON(request, limits: limits, gate: gate) {
        case .failure(let refusal): return refusal.response
        case .success(let j): json = j
        }
        let elements: [JSONValue]
        let isBatch: Bool
        switch json {
        case .array(let a):
            elements = a; isBatch = true
        case .object where json["cancellations"] != nil && json.objectValue?.count == 1:
            guard let a = json["cancellations"]?.arrayValue else {
                return await gate.refuse(APIResponse.error(.badRequest, code: "invalid_body",
                                                      message: "\"cancellations\" must be an array", field: "cancellations"))
            }
            elements = a; isBatch = true
        case .object:
            elements = [json]; isBatch = false
        default:
            return await gate.refuse(APIResponse.error(.badRequest, code: "invalid_body",
                                                  message: "body must be a cancellation object, a JSON array of them, or {\"cancellations\": [...]}"))
        }
        if let refusal = await APIRequest.batchSizeRefusal(elements.count, isBatch: isBatch, noun: "cancellations", limits: limits, gate: gate) {
            return refusal
        }
        let decoded = elements.map { CancelService.decode($0, limits: limits) }
        let verdicts: [CancelVerdict]
        do {
            switch try await cancellations.cancel(decoded, token: token) {
            case .unauthorized: return APIResponse.unauthorized()
            case .forbidden(let message): return APIResponse.insufficientScope(message)
            case .done(let v): verdicts = v; live.record(token)
            }
        } catch {
            return APIResponse.unavailable(error, context: context)
        }
        return isBatch ? APIResponse.cancelBatch(verdicts) : APIResponse.cancelSingle(verdicts[0])
    }
}
