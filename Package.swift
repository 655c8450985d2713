// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "kube-proxy-swift",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "control-server", targets: ["control-server"]),
        .executable(name: "proxyctl", targets: ["proxyctl"]),
        .executable(name: "proxy-bench", targets: ["proxy-bench"]),
        .executable(name: "node-applier", targets: ["node-applier"]),
    ],
    dependencies: [
        .package(url: "https://github.com/grpc/grpc-swift-2", exact: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", exact: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
        // Default traits become -D flags whose order changes between build plans (see STACK.md).
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0", traits: []),
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
    ],
    targets: [
        .target(name: "ProxyModel", swiftSettings: strict),
        .target(
            name: "ProxyAPI",
            dependencies: ["ProxyModel", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: strict
        ),
        .target(
            name: "ProxyGRPC",
            dependencies: [
                "ProxyAPI",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "StateStore",
            dependencies: [
                "ProxyModel", "ProxyAPI",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "StatusHTTP",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .systemLibrary(name: "CNFTables", providers: [.apt(["libnftables-dev", "libnftnl-dev", "libmnl-dev"])]),
        .systemLibrary(name: "CMalloc"),
        .target(
            name: "NodeApplier",
            dependencies: [
                "ProxyModel", "ProxyAPI", "ProxyGRPC", "StatusHTTP", "CNFTables", "CMalloc",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "node-applier",
            dependencies: [
                "NodeApplier", "ProxyModel",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ControlServer",
            dependencies: [
                "ProxyModel", "ProxyAPI", "ProxyGRPC", "StateStore", "StatusHTTP", "CMalloc",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "control-server",
            dependencies: [
                "ControlServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ProxyCTL",
            dependencies: [
                "ProxyModel", "ProxyAPI", "ProxyGRPC",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "proxyctl", dependencies: ["ProxyCTL"], swiftSettings: strict),
        .executableTarget(
            name: "proxy-bench",
            dependencies: [
                "ProxyModel", "ProxyAPI", "ProxyGRPC", "NodeApplier", "StatusHTTP", "CMalloc",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NodeApplierTests",
            dependencies: ["NodeApplier", "ProxyAPI", "ProxyModel"],
            // Read by path (`UPDATE_GOLDEN=1` rewrites them in place), not bundled.
            exclude: ["Golden"],
            swiftSettings: strict
        ),
        .testTarget(name: "ProxyModelTests", dependencies: ["ProxyModel"], swiftSettings: strict),
        .testTarget(name: "StatusHTTPTests", dependencies: ["StatusHTTP"], swiftSettings: strict),
        .testTarget(name: "ProxyCTLTests", dependencies: ["ProxyCTL", "ProxyModel"], swiftSettings: strict),
        .testTarget(name: "ProxyAPITests", dependencies: ["ProxyAPI", "ProxyModel"], swiftSettings: strict),
        .testTarget(
            name: "StateStoreTests",
            dependencies: [
                "StateStore", "ProxyAPI", "ProxyModel",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            // Databases written by earlier releases, read by path.
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ControlServerTests",
            dependencies: [
                "ControlServer", "NodeApplier", "ProxyAPI", "ProxyGRPC", "ProxyModel", "StateStore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            ],
            swiftSettings: strict
        ),
    ]
)
