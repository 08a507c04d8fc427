import ArgumentParser
import TernHybrid
import TernRuntime

/// `tern serve`'s side of edge-cloud hybrid serving: no options of its own (remote and hybrid
/// models are configured in their config.pbtxt), the two backends, and the remote connections'
/// service.
struct HybridServeOptions: ServePlugin {
    func prepare(_ context: ServeContext) throws -> PreparedPattern {
        let pattern = HybridPattern()
        return PreparedPattern(backends: pattern.backends) { _ in pattern }
    }
}
