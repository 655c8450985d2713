import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A small HTTP/1.1 server for probes and scraping (`/healthz`, `/readyz`, `/metrics`) and for
/// kube-proxy-style service health checks (one answer for every path).
public final class StatusHTTPServer: ServiceLifecycle.Service, Sendable {
    public struct Response: Sendable {
        public var status: HTTPResponseStatus
        public var contentType: String
        public var body: [UInt8]
        /// Sent besides Content-Type, Content-Length and Connection.
        public var headers: HTTPHeaders

        public init(_ status: HTTPResponseStatus, contentType: String, body: [UInt8], headers: HTTPHeaders = [:]) {
            self.status = status
            self.contentType = contentType
            self.body = body
            self.headers = headers
        }

        /// A UTF-8 plain-text answer.
        public static func text(_ status: HTTPResponseStatus, _ text: String) -> Response {
            Response(status, contentType: "text/plain; charset=utf-8", body: Array(text.utf8))
        }
    }

    /// Answers one path.
    public typealias Route = @Sendable () -> Response

    private let host: String
    private let port: Int
    private let routes: [String: Route]
    private let fallback: Route?
    private let logger: Logger
    private let bound = Mutex<SocketAddress?>(nil)
    private let boundSignal: AsyncStream<Void>.Continuation
    private let boundStream: AsyncStream<Void>

    /// `fallback` answers paths without a route (nil: 404).
    public init(host: String, port: Int, routes: [String: Route], fallback: Route? = nil, logger: Logger) {
        self.host = host
        self.port = port
        self.routes = routes
        self.fallback = fallback
        self.logger = logger
        (boundStream, boundSignal) = AsyncStream<Void>.makeStream()
    }

    /// The bound address, once listening (port 0 binds an ephemeral port).
    public func listeningAddress() async -> SocketAddress? {
        for await _ in boundStream { break }
        return bound.withLock { $0 }
    }

    public func run() async throws {
        let routes = self.routes
        let fallback = self.fallback
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(RouteHandler(routes: routes, fallback: fallback))
                }
            }
            .bind(host: host, port: port).get()
        bound.withLock { $0 = channel.localAddress }
        boundSignal.yield()
        boundSignal.finish()
        logger.info("status HTTP server listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        try? await gracefulShutdown()
        try await channel.close()
    }
}

private final class RouteHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: [String: StatusHTTPServer.Route]
    private let fallback: StatusHTTPServer.Route?
    private var path = ""
    private var keepAlive = false

    init(routes: [String: StatusHTTPServer.Route], fallback: StatusHTTPServer.Route?) {
        self.routes = routes
        self.fallback = fallback
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
            keepAlive = head.isKeepAlive
        case .body:
            break
        case .end:
            let response = (routes[path] ?? fallback)?() ?? .text(.notFound, "not found\n")
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: response.contentType)
            headers.add(name: "Content-Length", value: String(response.body.count))
            headers.add(contentsOf: response.headers)
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
            if keepAlive {
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            } else {
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}
