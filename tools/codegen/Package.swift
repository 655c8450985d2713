// swift-tools-version:6.1
// Builds the two protoc plugins used by `scripts/generate-proto.sh`.
// Kept apart from the main package so that ordinary builds never compile protoc plugins.
import PackageDescription

let package = Package(
    name: "codegen",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0", traits: []),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
        .package(url: "https://github.com/grpc/grpc-swift-2", exact: "2.4.3"),
    ],
    targets: []
)
