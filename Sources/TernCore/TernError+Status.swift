extension TernError.Code {
    /// Triton's HTTP status code for each kind of failure (the HTTP frontend and every
    /// pattern's routes answer with it).
    public var httpStatusCode: Int {
        switch self {
        case .notFound: 404
        case .invalidArgument, .failedPrecondition, .alreadyExists: 400
        case .unavailable: 503
        case .unimplemented: 501
        case .permissionDenied: 403
        default: 500
        }
    }
}
