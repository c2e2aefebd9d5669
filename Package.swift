// swift-tools-version:6.0
//
// meter: a metered-billing pipeline whose logic lives in Postgres (sql/) and whose thin Swift
// orchestrator lives here. Modules, each importing only those above it (the compiler enforces
// the direction; scripts/check-modules.sh checks that no product module reaches the mock engine
// or the dev kit):
//   CLibpq       system library over libpq (apt: libpq-dev), nothing else
//   PGClient     libpq connection, pool, listener, results and errors; blocking calls on own threads
//   MeterWire    the formats the service and the mock both speak: exact JSON, exact decimals,
//                RFC 3339 timestamps, form coding, hex, webhook signatures, Prometheus names
//   MeterCore    the product: ingest, rollup loop, billing sync, month close, reconciliation,
//                migrator, embedded Postgres, metrics, logging
//   MeterAPI     the service's HTTP API (Hummingbird): buildApplication, one controller per
//                resource, the server with graceful shutdown
//   BillingMock  the Stripe-compatible mock billing engine; nothing in the product imports it
//   MeterDevKit  developer tooling: replay, chaos harness, load client, TCP proxy, in-process
//                servers; imported only by meterctl's developer commands and the tests
//   meterctl     the one executable: operator CLI, the service (serve) and the developer tools
import PackageDescription

let package = Package(
    name: "meter",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "meterctl", targets: ["meterctl"]),
        .library(name: "MeterCore", targets: ["MeterCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"4.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibpq",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(
            name: "PGClient",
            dependencies: [
                "CLibpq",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "MeterWire",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "MeterCore",
            dependencies: [
                "PGClient",
                "MeterWire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "MeterAPI",
            dependencies: [
                "MeterCore",
                "PGClient",
                "MeterWire",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "BillingMock",
            dependencies: [
                "PGClient",
                "MeterWire",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .target(
            name: "MeterDevKit",
            dependencies: [
                "PGClient",
                "MeterWire",
                "MeterCore",
                "MeterAPI",
                "BillingMock",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "meterctl",
            dependencies: [
                "PGClient",
                "MeterWire",
                "MeterCore",
                "MeterAPI",
                "BillingMock",
                "MeterDevKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "MeterCoreTests",
            dependencies: [
                "PGClient",
                "MeterWire",
                "MeterCore",
                "MeterAPI",
                "BillingMock",
                "MeterDevKit",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
