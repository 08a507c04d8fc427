import ArgumentParser
import Foundation
import Logging
import TernCore
import TernExperiments
import TernRuntime

/// `tern serve`'s options for A/B experiments, shadows and canaries.
struct ExperimentsServeOptions: ServePlugin {
    @Option(name: .customLong("experiments-db"), help: "SQLite file of the A/B experiments' metrics (default: experiments.sqlite in the repository's state folder; 'none' keeps it in memory).")
    var experimentsDatabase: String?

    @Option(name: .customLong("experiments-buffer"), help: "Experiment records held before the writer catches up (a quarter in each of 4 shards); beyond it records are dropped and counted, never delaying requests.")
    var experimentsBuffer: Int = 16_384

    func validate() throws {
        guard experimentsBuffer >= 4 else { throw ValidationError("--experiments-buffer must be at least 4") }
    }

    func prepare(_ context: ServeContext) throws -> PreparedPattern {
        let logger = context.logger
        let store: ExperimentStore
        if experimentsDatabase == "none" {
            store = try ExperimentStore(path: nil)
        } else {
            let path = experimentsDatabase ?? context.stateDirectory + "/experiments.sqlite"
            do {
                store = try ExperimentStore(path: path)
            } catch where experimentsDatabase == nil {
                logger.warning("experiment metrics kept in memory only: cannot open \(path): \(error) (set --experiments-db PATH)")
                store = try ExperimentStore(path: nil)
            } catch {
                throw CommandFailure("cannot open the experiments database \(path): \(error) (use --experiments-db PATH or none)")
            }
        }
        let buffer = experimentsBuffer
        return PreparedPattern { engine in
            let manager = ExperimentManager(
                engine: engine, recorder: ExperimentRecorder(store: store, capacity: buffer, logger: logger),
                repositoryPath: context.repositoryPath, logger: logger)
            return ExperimentsPattern(manager: manager)
        }
    }
}
