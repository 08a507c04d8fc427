import ArgumentParser
import Foundation
import Histogram
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import Synchronization
import TernCore
import TernClient
import TernGRPC
import TernHTTP
import TernONNXRuntime
import TernRuntime

/// Hands out worker slots 0, 1, 2, ... (from any thread).
final class SlotCounter: Sendable {
    private let counter = Atomic(0)
    func next() -> Int { counter.add(1, ordering: .relaxed).oldValue }
}
