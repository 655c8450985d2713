import GRPCCore
import ProxyModel
import StateStore

// The one place where domain errors become gRPC status codes.

extension StoreError: RPCErrorConvertible {
    public var rpcErrorCode: RPCError.Code {
        switch self {
        case .invalid: .invalidArgument
        case .notFound: .notFound
        case .conflict: .failedPrecondition
        case .alreadyAllocated: .alreadyExists
        case .exhausted: .resourceExhausted
        case .compacted: .outOfRange
        case .listingExpired: .aborted
        case .storage: .internalError
        case .full: .resourceExhausted
        }
    }

    public var rpcErrorMessage: String { description }
}

extension ValidationError: RPCErrorConvertible {
    public var rpcErrorCode: RPCError.Code { .invalidArgument }
    public var rpcErrorMessage: String { description }
}

extension RPCError {
    static func invalid(_ field: String, _ message: String) -> RPCError {
        RPCError(code: .invalidArgument, message: "\(field): \(message)")
    }
}
