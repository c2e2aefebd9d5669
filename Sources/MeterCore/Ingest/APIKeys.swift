import Crypto
import MeterWire
import PGClient

/// API key tokens: "mk_" + 40 characters of base62 from the system CSPRNG (~238 bits).
/// Only their SHA-256 is stored, and only their SHA-256 is ever sent to Postgres (with the first
/// 12 characters, the prefix shown in listings, when a key is created): no statement log,
/// `pg_stat_activity` or `pg_stat_statements` of any cluster can show a token.
public enum APIKeys {
    package static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

    public static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        return "mk_" + String((0..<40).map { _ in alphabet[Int(rng.next(upperBound: UInt64(alphabet.count)))] })
    }

    /// The SHA-256 of a token's UTF-8 bytes as a bytea parameter (`\x` + hex): what the functions
    /// meter.api_key_authenticate, event_ingest and event_cancel take.
    public static func hashParameter(_ token: String) -> String {
        "\\x" + SHA256.hash(data: Array(token.utf8)).map { Hex.byte($0) }.joined()
    }

    /// The prefix shown in listings.
    public static func prefix(_ token: String) -> String { String(token.prefix(12)) }

    /// The scopes a key may have: POST /v1/events, POST /v1/events/cancel, GET /v1/usage.
    public static let allScopes = ["ingest", "cancel", "read"]

    /// Registers `token` under `name` (meter.api_key_create: its hash and prefix) with `scopes`,
    /// for `customers` (external ids; nil = every customer); returns the id.
    @discardableResult
    public static func register(_ conn: PGConnection, name: String, token: String, scopes: [String] = allScopes,
                                customers: [String]? = nil) throws -> Int64 {
        try conn.execute("select meter.api_key_create($1, $2, $3::bytea, $4::text[], $5::text[]) as id",
                         [name, prefix(token), hashParameter(token), scopes, customers]).single().int("id")
    }
}
