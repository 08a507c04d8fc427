#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// What the network frontends allow one client: how many connections the server holds at once
/// (all ports together), and how long a connection may take to send a request head, between two
/// pieces of a body, or sit idle. `tern serve` sets them from its options; both frontends and the
/// metrics port share one `ConnectionGate`, so the total stays below the descriptor limit and
/// `/v2/health/ready` keeps answering under a flood.
public struct ConnectionLimits: Sendable {
    /// Connections held at once over every port; a further one is answered and closed.
    public var maxConnections: Int
    /// Time from the first byte of an HTTP request head to its end (slowloris clients).
    public var headerTimeout: Duration
    /// Longest pause between two pieces of a request body.
    public var bodyTimeout: Duration
    /// A connection with no request in progress is closed after this long.
    public var idleTimeout: Duration
    /// HTTP/2 streams (gRPC calls) one connection may have open at once.
    public var maxConcurrentStreams: Int
    /// Unanswered pipelined HTTP/1.1 bytes held before the connection stops reading.
    public var maxBufferedRequestBytes: Int
    /// The counter every connection passes through.
    public let gate: ConnectionGate

    /// Makes limits from the given counts and timeouts, raising connections and streams to at least 1 and the
    /// pipelining buffer to at least 4096 bytes, with a fresh `ConnectionGate` sized to `maxConnections`.
    public init(
        maxConnections: Int = ConnectionLimits.defaultMaxConnections, headerTimeout: Duration = .seconds(30),
        bodyTimeout: Duration = .seconds(60), idleTimeout: Duration = .seconds(300), maxConcurrentStreams: Int = 128,
        maxBufferedRequestBytes: Int = 1 << 20
    ) {
        self.maxConnections = max(maxConnections, 1)
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.idleTimeout = idleTimeout
        self.maxConcurrentStreams = max(maxConcurrentStreams, 1)
        self.maxBufferedRequestBytes = max(maxBufferedRequestBytes, 4096)
        self.gate = ConnectionGate(limit: self.maxConnections)
    }

    /// 1024, or fewer when the process may open fewer descriptors (room is left for model
    /// files, the databases and ONNX Runtime's own).
    public static var defaultMaxConnections: Int {
        var limit = rlimit()
        #if os(Linux)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return 1024 }
        let soft = limit.rlim_cur >= rlim_t(Int32.max) ? 1 << 20 : Int(limit.rlim_cur)
        return max(8, min(1024, soft - 128))
    }
}

/// Counts the connections open over every port, refusing entry beyond the limit.
public final class ConnectionGate: Sendable {
    /// The most connections the gate lets in at once.
    public let limit: Int
    private let open = Atomic<Int>(0)
    private let refusedCount = Atomic<Int>(0)

    /// Makes a gate with no connections in that admits at most `limit` at once.
    public init(limit: Int) { self.limit = limit }

    /// Takes a place for a new connection; false (nothing taken) when all are held.
    public func enter() -> Bool {
        let now = open.add(1, ordering: .relaxed).newValue
        if now > limit {
            open.subtract(1, ordering: .relaxed)
            refusedCount.add(1, ordering: .relaxed)
            return false
        }
        return true
    }

    /// Gives back a place taken by `enter`.
    public func leave() { open.subtract(1, ordering: .relaxed) }

    /// Connections open now.
    public var current: Int { open.load(ordering: .relaxed) }
    /// Connections refused since start.
    public var refused: Int { refusedCount.load(ordering: .relaxed) }
}

/// A frontend whose connections a drained shutdown empties after its listener has closed.
public protocol DrainableFrontend: Sendable {
    /// What the frontend serves, for the shutdown's log ("HTTP", "gRPC", "metrics").
    var role: String { get }
    /// Asks every open connection to finish the requests it has read and close; closes those still
    /// open after `timeout`. Returns how many had to be closed.
    func drainConnections(timeout: Duration) async -> Int
}
