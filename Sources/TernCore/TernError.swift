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
        /// Something to be created already exists, such as a shared-memory region or an experiment name (400).
        public static let alreadyExists = Code(.alreadyExists)
        /// The server does not support what was asked, such as CUDA shared memory or an unknown method (501).
        public static let unimplemented = Code(.unimplemented)
        /// The caller lacks the key or permission the API asks for (403, PERMISSION_DENIED).
        public static let permissionDenied = Code(.permissionDenied)
        /// A failure inside Tern or a backend (500).
        public static let internalError = Code(.internalError)

        /// The code in words, as it appears in logs and messages, e.g. "invalid argument".
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

    /// The kind of failure, which picks the HTTP or gRPC status.
    public var code: Code
    /// The explanation sent to the client.
    public var message: String
    /// The underlying error that led to this one, if any; it is not part of the message.
    public var cause: (any Error)?

    /// Makes an error from its code, client-facing message and optional underlying cause.
    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// The message alone, as the client sees it.
    public var description: String { message }

    /// An invalid-argument error with the given message.
    public static func invalidArgument(_ message: String) -> TernError { TernError(.invalidArgument, message) }
    /// A not-found error with the given message.
    public static func notFound(_ message: String) -> TernError { TernError(.notFound, message) }
    /// An unavailable error with the given message.
    public static func unavailable(_ message: String) -> TernError { TernError(.unavailable, message) }
    /// A listener that could not be opened (a port taken, an address not on this host).
    public static func listenFailed(_ role: String, host: String, port: Int, reason: String) -> TernError {
        TernError(.unavailable, "cannot listen for \(role) on \(host):\(port): \(reason)")
    }
    /// A permission-denied error with the given message.
    public static func permissionDenied(_ message: String) -> TernError { TernError(.permissionDenied, message) }
    /// An internal error with the given message and optional underlying cause.
    public static func internalError(_ message: String, cause: (any Error)? = nil) -> TernError {
        TernError(.internalError, message, cause: cause)
    }
}
