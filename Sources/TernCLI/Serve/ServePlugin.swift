import ArgumentParser
import Foundation
import Logging
import Metrics
import TernCore
import TernDevice
import TernRuntime

/// What every plug-in of `tern serve` is given.
struct ServeContext {
    let logger: Logger
    /// The Prometheus exporter's factory, for patterns that publish metrics.
    let metricsFactory: any MetricsFactory
    /// The repository's state folder (default databases go there).
    let stateDirectory: String
    let repositoryPath: URL
    /// NVIDIA's management library when the box has one (`--nvml-library`): the GPU metrics and
    /// the memory admission of GPU instances read it.
    let nvml: NVML?
}

/// A pattern's side of `tern serve`: its options (an `@OptionGroup` of `ServeCommand`, checked by
/// ArgumentParser's `validate()`), the backends it adds to the engine, and then the pattern
/// itself once the engine exists. To add a pattern to the command: write one of these next to
/// the others, add it as an `@OptionGroup` of `ServeCommand` and to `ServeCommand.plugins`
/// (see docs/architecture.md, "How to add a pattern").
protocol ServePlugin: ParsableArguments {
    /// Prepares the pattern: what the engine needs before it is built, and how to make the rest.
    func prepare(_ context: ServeContext) throws -> PreparedPattern
}

/// A plug-in's backends (needed to build the engine) and the step that makes its pattern once
/// the engine exists (nil when the options turned the pattern off).
struct PreparedPattern {
    var backends: [any Backend] = []
    var make: (InferenceServer) throws -> (any ServerPattern)?
}
