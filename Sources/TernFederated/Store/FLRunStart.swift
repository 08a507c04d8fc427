import Foundation
import Logging
import TernCore
import TernTraining

/// How a coordinator begins a run, the same for `tern fl server` and `tern serve --fl-port`: with
/// a state database and a checkpoint of the run it resumes after the last completed round; a run
/// that already completed all its rounds is refused (start another under a new name); otherwise a
/// new engine starts from `initialWeights()` (empty: one client's `get_parameters`).
public enum FLRunStart {
    /// The engine to run and the rounds already completed; the run is recorded as (re)started.
    public static func begin(
        run: String, settings: FLSettings, store: FLStore?, command: String, logger: Logger,
        initialWeights: () throws(TernError) -> FLWeights
    ) throws(TernError) -> (engine: RoundEngine, earlier: [FLRoundSummary]) {
        let engine: RoundEngine
        var earlier: [FLRoundSummary] = []
        if let store, let checkpoint = try store.latestCheckpoint(run: run) {
            guard checkpoint.round < settings.rounds else {
                throw TernError(.failedPrecondition, "run '\(run)' finished all \(checkpoint.round) rounds; start another with a new run name")
            }
            engine = try RoundEngine(settings: settings, resuming: checkpoint)
            earlier = try store.summaries(run: run)
            logger.info("fl: resuming run '\(run)' after round \(checkpoint.round) of \(settings.rounds)")
        } else {
            engine = try RoundEngine(settings: settings, initialWeights: try initialWeights())
        }
        try store?.begin(run: run, settings: command, rounds: settings.rounds, restarting: !earlier.isEmpty)
        return (engine, earlier)
    }
}
