/// The one seeded random generator of the dev kit and the tests: SplitMix64, small, fast and the
/// same on every platform, so a workload (replay, chaos) or a failing test's data is replayed
/// exactly from its seed. Not for anything secret (API keys use SystemRandomNumberGenerator).
public struct SeededRandom: RandomNumberGenerator, Sendable {
    package var state: UInt64
    public init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1 }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in 0..<n (n ≥ 1; modulo bias below 2^-40 for the sizes used here).
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    /// True with probability p.
    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
}
