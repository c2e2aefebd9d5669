/// API key tokens: "mk_" + 40 characters of base62 from the system CSPRNG (~238 bits).
/// Only their SHA-256 is stored (meter.api_key_create); the first 12 characters are the prefix
/// shown in listings.
public enum APIKeys {
    package static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

    public static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        return "mk_" + String((0..<40).map { _ in alphabet[Int(rng.next(upperBound: UInt64(alphabet.count)))] })
    }
}
