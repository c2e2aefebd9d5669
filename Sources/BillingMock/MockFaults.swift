// MockFaults.swift: the failures the mock billing engine injects, settable at start (flags of
// `meterctl billing-mock`) and at run time (POST /admin/faults with a JSON object).

import Foundation
import Synchronization
import MeterWire

public struct MockFaults: Sendable, Equatable {
    /// Share of API calls answered with `errorStatus` without being applied (0...1).
    public var errorRate: Double = 0
    /// 500 or 503.
    public var errorStatus: Int = 503
    /// Added before each API call is processed.
    public var latencyMs: Int = 0
    /// Every API call answers 503 (a full outage); nothing is applied.
    public var outage = false
    /// Share of API calls applied and committed whose response is then dropped (the connection
    /// is closed without an answer: the caller sees a reset and cannot know it was applied).
    public var dropRate: Double = 0
    /// Share of webhook deliveries sent twice.
    public var webhookDuplicateRate: Double = 0
    /// Webhook deliveries of a batch go out in random order, each after a random delay (0-500 ms).
    public var webhookShuffle = false
    public init() {}

    /// Applies the members of a JSON object; unknown members and bad values are refused by name.
    public mutating func apply(_ json: JSONValue) throws(MockAPIError) {
        guard let members = json.objectValue else { throw .invalid("the body must be a JSON object") }
        func rate(_ v: JSONValue, _ k: String) throws(MockAPIError) -> Double {
            guard let s = v.numberLexeme, let d = Double(s), d >= 0, d <= 1 else {
                throw .invalid("\(k) must be a number between 0 and 1", param: k)
            }
            return d
        }
        for (k, v) in members {
            switch k {
            case "error_rate": errorRate = try rate(v, k)
            case "error_status":
                guard let s = v.numberLexeme, let n = Int(s), n == 500 || n == 503 else {
                    throw .invalid("error_status must be 500 or 503", param: k)
                }
                errorStatus = n
            case "latency_ms":
                guard let s = v.numberLexeme, let n = Int(s), n >= 0, n <= 120_000 else {
                    throw .invalid("latency_ms must be an integer between 0 and 120000", param: k)
                }
                latencyMs = n
            case "outage":
                guard let b = v.boolValue else { throw .invalid("outage must be true or false", param: k) }
                outage = b
            case "drop_rate": dropRate = try rate(v, k)
            case "webhook_duplicate_rate": webhookDuplicateRate = try rate(v, k)
            case "webhook_shuffle":
                guard let b = v.boolValue else { throw .invalid("webhook_shuffle must be true or false", param: k) }
                webhookShuffle = b
            default: throw .invalid("unknown fault \(k)", param: k)
            }
        }
    }

    public var json: JSONValue {
        .obj([
            "error_rate": .number(String(errorRate)), "error_status": .int(Int64(errorStatus)),
            "latency_ms": .int(Int64(latencyMs)), "outage": .bool(outage), "drop_rate": .number(String(dropRate)),
            "webhook_duplicate_rate": .number(String(webhookDuplicateRate)), "webhook_shuffle": .bool(webhookShuffle),
        ])
    }
}

/// The faults in force, shared by the HTTP handlers and the webhook sender.
public final class MockFaultState: Sendable {
    private let value: Mutex<MockFaults>
    public init(_ initial: MockFaults = .init()) { value = Mutex(initial) }
    public var current: MockFaults { value.withLock { $0 } }
    public func set(_ f: MockFaults) { value.withLock { $0 = f } }
}
