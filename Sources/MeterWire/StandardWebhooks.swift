// StandardWebhooks.swift
//
// The Standard Webhooks signature (standardwebhooks.com), for meter's outgoing webhooks:
//   webhook-id:        the message id (msg_...), the receiver's dedup key
//   webhook-timestamp: Unix seconds of this attempt
//   webhook-signature: "v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>", several separated
//                      by spaces (one per secret during a rotation)
// The key is the base64 decoding of the secret after its "whsec_" prefix (unlike Stripe's scheme,
// WebhookSignature.swift, which keys with the whole string).

import Crypto
import Foundation

public enum StandardWebhooks {
    /// A new secret: whsec_ + base64 of 32 random bytes.
    public static func generateSecret() -> String {
        var g = SystemRandomNumberGenerator()
        return "whsec_" + Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &g) }).base64EncodedString()
    }

    /// The key bytes of a secret, or nil when it is not whsec_ + base64.
    public static func key(_ secret: String) -> [UInt8]? {
        guard secret.hasPrefix("whsec_"), let d = Data(base64Encoded: String(secret.dropFirst(6))), !d.isEmpty else { return nil }
        return Array(d)
    }

    /// The webhook-signature value for `body` signed with each of `secrets` (those that are valid).
    public static func signature(id: String, timestamp: Int64, body: [UInt8], secrets: [String]) -> String {
        secrets.compactMap { key($0) }.map { k in
            var h = HMAC<SHA256>(key: SymmetricKey(data: k))
            h.update(data: Array("\(id).\(timestamp).".utf8))
            h.update(data: body)
            return "v1," + Data(h.finalize()).base64EncodedString()
        }.joined(separator: " ")
    }
}
