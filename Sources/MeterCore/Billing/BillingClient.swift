// BillingClient.swift: the product's client for the billing engine's API (Stripe conventions:
// form-encoded POST bodies with bracket notation, Bearer secret key, Idempotency-Key on every
// POST, the error envelope). Used by the sync worker and `meterctl billing`.
//
// Every failure is classified for the outbox: `definitive` when the engine answered that it did
// not apply the request (4xx other than 409 and 429), otherwise the outcome is unknown (timeout,
// reset, 5xx, 409 "a request with this key is in flight", 429) and the caller must repeat the
// very same request.

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import MeterWire

public struct BillingAPIConfiguration: Sendable {
    public var baseURL: String
    public var apiKey: String
    public var timeout: Duration = .seconds(10)
    /// The API version every call pins (Stripe-Version): the one the sync is written for.
    public var apiVersion = BillingAPIConfiguration.targetVersion
    /// Where the v2 meter event stream lives: Stripe's meter events host for api.stripe.com,
    /// else the API's own base (the mock serves both).
    public var meterEventsBaseURL: String
    /// The Stripe API version the sync targets (the one stripe-python 16.1.0 pins).
    public static let targetVersion = "2026-10-28.endive"
    public init(baseURL: String, apiKey: String) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.apiKey = apiKey
        self.meterEventsBaseURL = self.baseURL == "https://api.stripe.com" ? "https://meter-events.stripe.com" : self.baseURL
    }
}

public struct BillingAPIError: Error, CustomStringConvertible, Sendable {
    public let status: Int?
    public let type: String?
    public let code: String?
    public let message: String
    /// Refused here, before sending (e.g. a value the engine cannot take): never sent, definitive.
    public var notSent = false
    /// The engine said it did not apply the request, or it was never sent: repeating it as is
    /// cannot help.
    public var definitive: Bool {
        if notSent { return true }
        guard let s = status else { return false }
        return (400..<500).contains(s) && s != 409 && s != 429
    }
    public var description: String {
        if notSent { return "not sent" + (code.map { " \($0)" } ?? "") + ": " + message }
        return (status.map { "HTTP \($0)" } ?? "no response") + (code.map { " \($0)" } ?? "") + ": " + message
    }
}

public final class BillingClient: Sendable {
    public let configuration: BillingAPIConfiguration
    package let http: HTTPClient
    /// The v2 meter event stream's session, shared by every send of this client.
    public let meterEventSession = MeterEventSession()

    public init(_ configuration: BillingAPIConfiguration) {
        self.configuration = configuration
        // The process-wide client (keep-alive pool, no shutdown to forget); each call carries its
        // own deadline (`configuration.timeout`).
        self.http = HTTPClient.shared
    }

    /// POST with form parameters (names in bracket form) and an Idempotency-Key. `version` pins
    /// Stripe-Version (the Billing Meters calls pin the version the sync targets); nil: the
    /// account's default, which is what the legacy usage-records path relies on.
    public func post(_ path: String, _ params: [(String, String)], idempotencyKey: String,
                     version: String? = nil) async throws(BillingAPIError) -> JSONValue {
        try await call(.POST, path, body: FormCoding.encode(params), idempotencyKey: idempotencyKey, version: version)
    }

    public func get(_ path: String, query: [(String, String)] = [], version: String? = nil) async throws(BillingAPIError) -> JSONValue {
        try await call(.GET, query.isEmpty ? path : path + "?" + FormCoding.encode(query), body: nil, idempotencyKey: nil,
                       version: version)
    }

    /// An API v2 POST: a JSON body, authenticated by `bearer` (a meter event session token) or
    /// the secret key, on `baseURL` (the meter events host) or the API's.
    public func postJSON(_ path: String, _ body: JSONValue, bearer: String? = nil, baseURL: String? = nil,
                         idempotencyKey: String?) async throws(BillingAPIError) -> JSONValue {
        try await call(.POST, path, body: body.text, idempotencyKey: idempotencyKey, contentType: "application/json",
                       bearer: bearer, baseURL: baseURL, version: configuration.apiVersion)
    }

    private func call(_ method: HTTPMethod, _ path: String, body: String?, idempotencyKey: String?,
                      contentType: String = "application/x-www-form-urlencoded", bearer: String? = nil,
                      baseURL: String? = nil, version: String? = nil) async throws(BillingAPIError) -> JSONValue {
        var request = HTTPClientRequest(url: (baseURL ?? configuration.baseURL) + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer " + (bearer ?? configuration.apiKey))
        request.headers.add(name: "User-Agent", value: "meter-billing-sync/1")
        if let version { request.headers.add(name: "Stripe-Version", value: version) }
        if let idempotencyKey { request.headers.add(name: "Idempotency-Key", value: idempotencyKey) }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(string: body))
        }
        let status: Int
        let bytes: ByteBuffer
        do {
            let response = try await http.execute(request, timeout: .init(configuration.timeout))
            status = Int(response.status.code)
            bytes = try await response.body.collect(upTo: 4 << 20)
        } catch {
            throw BillingAPIError(status: nil, type: nil, code: nil, message: "\(error)")
        }
        let json = try? JSONParser.parse(Array(bytes.readableBytesView))
        guard (200..<300).contains(status) else {
            let e = json?["error"]
            throw BillingAPIError(status: status, type: e?["type"]?.stringValue, code: e?["code"]?.stringValue,
                                  message: e?["message"]?.stringValue ?? String(buffer: bytes).prefix(300).description)
        }
        guard let json else {
            throw BillingAPIError(status: status, type: nil, code: nil, message: "the engine answered \(status) with a body that is not JSON")
        }
        return json
    }
}

extension BillingClient {
    /// Registers `url` (our POST /webhooks/billing) for invoice.created, invoice.finalized,
    /// invoice.paid and the meter error reports; the endpoint's id and signing secret. The same
    /// key returns the same endpoint.
    public func registerWebhookEndpoint(url: String, idempotencyKey: String) async throws -> (id: String?, secret: String) {
        let v = try await post("/v1/webhook_endpoints", [
            ("url", url), ("enabled_events[0]", "invoice.created"), ("enabled_events[1]", "invoice.finalized"),
            ("enabled_events[2]", "invoice.paid"),
            // the v2 stream's asynchronous refusals (thin events; Stripe: an event destination)
            ("enabled_events[3]", "v1.billing.meter.error_report_triggered"),
            ("enabled_events[4]", "v1.billing.meter.no_meter_found"),
        ], idempotencyKey: idempotencyKey)
        guard let secret = v["secret"]?.stringValue else {
            throw BillingAPIError(status: nil, type: nil, code: nil, message: "the engine returned a webhook endpoint without a secret")
        }
        return (v["id"]?.stringValue, secret)
    }
}

extension TimeAmount {
    package init(_ d: Duration) {
        self = .nanoseconds(d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000)
    }
}
