import ArgumentParser
import Foundation
import TernFederated
import TernRuntime

/// `tern serve`'s options for the federated-learning coordinator (`--fl-port`).
struct FederatedServeOptions: ServePlugin {
    @Option(name: .customLong("fl-port"), help: "Run a Flower-compatible federated-learning coordinator on this port.")
    var flPort: Int?

    @Option(name: .customLong("fl-config"), help: "The coordinator's YAML settings (as for `tern fl server --config`).")
    var flConfig: String?

    @Option(name: .customLong("fl-model"), help: "The served model to train: its initializers start the run; the global model becomes its next version, behind its gates.")
    var flModel: String?

    @Option(name: .customLong("fl-publish-every"), help: "Publish the global model every this many rounds too (default: after the last round only).")
    var flPublishEvery: Int?

    @Option(name: .customLong("fl-state-db"), help: "SQLite file of the coordinator's rounds (default: fl.sqlite in the state folder).")
    var flStateDB: String?

    @Option(name: .customLong("fl-run"), help: "The run's name in the state database.")
    var flRun = "default"

    func validate() throws {
        if flPort == nil, flConfig != nil || flModel != nil || flPublishEvery != nil {
            throw ValidationError("--fl-config, --fl-model and --fl-publish-every need --fl-port")
        }
        if let flPort, !(1...65535).contains(flPort) { throw ValidationError("--fl-port must be a port number") }
        if let flPublishEvery, flPublishEvery < 1 { throw ValidationError("--fl-publish-every must be at least 1") }
    }

    func prepare(_ context: ServeContext) throws -> PreparedPattern {
        guard let flPort else { return PreparedPattern { _ in nil } }
        var settings = try flConfig.map { try FLSettings.load(path: $0) } ?? FLSettings()
        let host = settings.address.split(separator: ":").dropLast().joined(separator: ":")
        settings.address = "\(host.isEmpty ? "0.0.0.0" : host):\(flPort)"
        try settings.validate()
        let options = FederatedService.Options(
            settings: settings, model: flModel, publishEvery: flPublishEvery,
            stateDB: flStateDB ?? URL(fileURLWithPath: context.stateDirectory).appendingPathComponent("fl.sqlite").path,
            run: flRun, stateDirectory: context.stateDirectory, reconnectSeconds: 5)
        let logger = context.logger
        return PreparedPattern { engine in
            FederatedPattern(service: FederatedService(options: options, engine: engine, logger: logger))
        }
    }
}
