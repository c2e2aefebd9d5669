// WebhookSignature.swift
//
// Stripe's webhook signature scheme, both sides:
//   Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key: secret, message: "<t>.<payload>")>
// The key is the whole secret string including its "whsec_" prefix (as stripe-python does).
// A header may carry several v1 entries (the engine signs with every secret of an endpoint during
// a rotation); the receiver may hold several secrets (our side of a rotation). Verification is
// constant-time per comparison and refuses timestamps more than `tolerance` from now, either way.

import Crypto
import Foundation

public enum WebhookSignature {
    public static func sign(payload: [UInt8], secret: String, timestamp: Int64) -> String {
        "t=\(timestamp),v1=" + hex(mac(payload: payload, secret: secret, timestamp: timestamp))
    }

    package static func mac(payload: [UInt8], secret: String, timestamp: Int64) -> [UInt8] {
        var h = HMAC<SHA256>(key: SymmetricKey(data: Array(secret.utf8)))
        h.update(data: Array("\(timestamp).".utf8))
        h.update(data: payload)
        return Array(h.finalize())
    }

    package static func hex(_ bytes: [UInt8]) -> String {
        bytes.map(Hex.byte).joined()
    }

    public enum Failure: Error, Equatable, Sendable {
        case missingHeader, malformedHeader, noSignatureMatches, timestampOutsideTolerance
        /// Stable error code for the API.
        public var code: String {
            switch self {
            case .missingHeader: "signature_missing"
            case .malformedHeader: "signature_malformed"
            case .noSignatureMatches: "signature_mismatch"
            case .timestampOutsideTolerance: "signature_expired"
            }
        }
        public var message: String {
            switch self {
            case .missingHeader: "the Stripe-Signature header is missing"
            case .malformedHeader: "the Stripe-Signature header is not t=<unix time>,v1=<hex>[,v1=...]"
            case .noSignatureMatches: "no v1 signature matches the payload with any active secret"
            case .timestampOutsideTolerance: "the signature's timestamp is outside the tolerance (replayed or clock skew)"
            }
        }
    }

    /// The timestamp and the candidate signatures of a Stripe-Signature header: what can be checked
    /// before the payload is read or any secret looked up (missing or malformed header).
    public static func parseHeader(_ header: String?) throws(Failure) -> (timestamp: Int64, signatures: [[UInt8]]) {
        guard let header, !header.isEmpty else { throw .missingHeader }
        var timestamp: Int64?
        var signatures: [[UInt8]] = []
        for part in header.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2 else { throw .malformedHeader }
            let k = kv[0].trimmingCharacters(in: .whitespaces), v = kv[1].trimmingCharacters(in: .whitespaces)
            if k == "t" {
                guard let t = Int64(v) else { throw .malformedHeader }
                timestamp = t
            } else if k == "v1" {
                guard let bytes = unhex(v), bytes.count == 32 else { continue }  // not a SHA-256 MAC: cannot match
                signatures.append(bytes)
            }
        }
        guard let t = timestamp, !signatures.isEmpty || header.contains("v1=") else { throw .malformedHeader }
        return (t, signatures)
    }

    /// Checks a Stripe-Signature header. Returns the index of the secret that matched.
    @discardableResult
    public static func verify(payload: [UInt8], header: String?, secrets: [String], tolerance: Int64 = 300,
                              now: Int64 = Int64(Date().timeIntervalSince1970)) throws(Failure) -> Int {
        let (t, signatures) = try parseHeader(header)
        var matched: Int?
        for (i, secret) in secrets.enumerated() {
            let expected = mac(payload: payload, secret: secret, timestamp: t)
            for s in signatures where constantTimeEqual(s, expected) { matched = matched ?? i }
        }
        guard let i = matched else { throw .noSignatureMatches }
        // Checked after the MAC: a stale but authentic delivery is told apart from a forgery.
        // Overflow-safe: t comes from the header and may be any Int64 (Int64.min: abs would trap).
        let (skew, overflow) = now.subtractingReportingOverflow(t)
        guard !overflow, skew != .min, abs(skew) <= tolerance else { throw .timestampOutsideTolerance }
        return i
    }

    package static func unhex(_ s: String) -> [UInt8]? {
        let u = Array(s.utf8)
        guard u.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let h = Hex.digit(u[i]), let l = Hex.digit(u[i + 1]) else { return nil }
            out.append(UInt8(h * 16 + l))
            i += 2
        }
        return out
    }

    /// Equal lengths compared without an early exit.
    package static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}
