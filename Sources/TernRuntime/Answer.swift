import Synchronization

/// How a frontend's handler answers a request, for both frontends (HTTP's replies and gRPC's
/// outcomes are its `Reply`): at once, from async work, or from work that calls back on any
/// thread (the engine's `submit`). The event loop writes a `.now` reply without a thread hop, and
/// a `.callback` that answers before it returns (an inline run) just as fast, see `run`.
public enum Answer<Reply: Sendable>: Sendable {
    /// The reply, ready now.
    case now(Reply)
    /// Async work that produces the reply (run in a task).
    case later(@Sendable () async -> Reply)
    /// Work that calls back with the reply from any thread (no task on the way).
    case callback(@Sendable (@escaping @Sendable (Reply) -> Void) -> Void)

    /// Starts a `.callback`'s work: returns the reply when the work answered before returning (the
    /// engine ran the request inline); otherwise returns nil and `later` gets the reply.
    public static func run(
        _ work: @Sendable (@escaping @Sendable (Reply) -> Void) -> Void, later: @escaping @Sendable (Reply) -> Void
    ) -> Reply? {
        let box = SlotBox<Reply>()
        work { reply in
            let kept = box.slot.withLock { slot -> Bool in
                guard !slot.returned else { return false }
                slot.early = reply
                return true
            }
            if !kept { later(reply) }
        }
        return box.slot.withLock { slot in
            slot.returned = true
            return slot.early
        }
    }
}

/// Shares a `Mutex` between `Answer.run` and the callback it hands out.
private final class SlotBox<Reply: Sendable>: Sendable {
    let slot = Mutex<(returned: Bool, early: Reply?)>((false, nil))
}
