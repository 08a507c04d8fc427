/// The one error type of Tern's engine: a code that frontends map to an HTTP or gRPC status, a
/// message meant for the client, and the underlying error where there is one.
public struct TernError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is; frontends choose the status code from it.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Wrapped: Hashable, Sendable {
            case invalidArgument, notFound, unavailable, failedPrecondition, alreadyExists
            case unimplemented, internalError, permissionDenied
        }
        private let wrapped: Wrapped
        private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

        /// The client sent something wrong: shape, type, missing input, bad JSON, ... (400).
        public static let invalidArgument = Code(.invalidArgument)
        /// Unknown model or version, or a model with no loaded version (404).
        public static let notFound = Code(.notFound)
        /// The server cannot take the request now: queue full, timed out, shutting down (503).
        public static let unavailable = Code(.unavailable)
        /// The request is valid but the server is not in a state to serve it (400).
        public static let failedPrecondition = Code(.failedPrecondition)
        public static let alreadyExists = Code(.alreadyExists)
        public static let unimplemented = Code(.unimplemented)
        /// The caller lacks the key or permission the API asks for (403, PERMISSION_DENIED).
        public static let permissionDenied = Code(.permissionDenied)
        /// A failure inside Tern or a backend (500).
        public static let internalError = Code(.internalError)

        public var description: String {
            switch wrapped {
            case .invalidArgument: "invalid argument"
            case .notFound: "not found"
            case .unavailable: "unavailable"
            case .failedPrecondition: "failed precondition"
            case .alreadyExists: "already exists"
            case .unimplemented: "unimplemented"
            case .internalError: "internal error"
            case .permissionDenied: "permission denied"
            }
        }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { message }

    public static func invalidArgument(_ message: String) -> TernError { TernError(.invalidArgument, message) }
    public static func notFound(_ message: String) -> TernError { TernError(.notFound, message) }
    public static func unavailable(_ message: String) -> TernError { TernError(.unavailable, message) }
    /// A listener that could not be opened (a port taken, an address not on this host).
    public static func listenFailed(_ role: String, host: String, port: Int, reason: String) -> TernError {
        TernError(.unavailable, "cannot listen for \(role) on \(host):\(port): \(reason)")
    }
    public static func permissionDenied(_ message: String) -> TernError { TernError(.permissionDenied, message) }
    public static func internalError(_ message: String, cause: (any Error)? = nil) -> TernError {
        TernError(.internalError, message, cause: cause)
    }
}
