import Dispatch
import Foundation
import Synchronization
import TernCore

/// Runs a `SequenceQueue` for a stateful model: adds the control inputs (START, END, READY,
/// CORRID, with the config's false/true encodings) and the implicit state inputs to each row,
/// keeps each sequence's state outputs between its requests, and drops them when the sequence ends
/// or is released for idling.
final class SequenceScheduler: Sendable {
    struct Job: Sendable {
        var inputs: [Tensor]
        var outputs: [String]
        var completion: BatchScheduler.Completion
        var arrivalNs: UInt64 = 0
    }

    /// One control tensor: its input name, what it signals, and its encoding.
    struct Control: Sendable {
        enum Signal: Sendable { case start, end, ready, correlationID }
        var input: String
        var signal: Signal
        var dataType: DataType
        /// The false and true values for START/END/READY, as one element's bytes each.
        var falseTrue: (Data, Data)
    }

    /// One implicit state: fed from `input`, updated from `output`.
    struct StateSpec: Sendable {
        var input: String
        var output: String
        var dataType: DataType
        var dims: [Int64]
        var initial: Data
    }

    private struct State {
        var queue: SequenceQueue
        var jobs: [SequenceQueue.Ticket: Job] = [:]
        var results: [SequenceQueue.Ticket: Result<BatchScheduler.Outcome, TernError>] = [:]
        /// Each live sequence's state tensors (no batch dimension), by state input name.
        var states: [SequenceQueue.SequenceID: [String: Tensor]] = [:]
    }

    let batched: Bool
    private let instances: [any ModelInstance]
    private let queues: [DispatchQueue]
    private let controls: [Control]
    private let stateSpecs: [StateSpec]
    private let state: Mutex<State>
    private let gate: ExecutionGate?
    private let observer: BatchScheduler.ExecutionObserver

    init(
        instances: [any ModelInstance], config: ModelConfig, modelDirectory: URL?, label: String, gate: ExecutionGate? = nil,
        observer: @escaping BatchScheduler.ExecutionObserver
    ) throws(TernError) {
        self.gate = gate
        let sequencing = config.sequenceBatching
        self.batched = config.maxBatchSize > 0
        self.instances = instances
        self.queues = instances.indices.map { DispatchQueue(label: "tern.\(label).sequence\($0)", qos: .userInitiated) }
        self.controls = try Self.controls(sequencing, model: config.name)
        self.stateSpecs = try Self.states(sequencing, model: config.name, directory: modelDirectory)
        let configuration = SequenceQueue.Configuration(sequencing, maxBatchSize: config.maxBatchSize, instanceCount: instances.count)
        self.state = Mutex(State(queue: SequenceQueue(configuration: configuration, modelName: config.name)))
        self.observer = observer
    }

    var instanceCount: Int { instances.count }

    /// Queues a request of a sequence; `completion` runs when it has executed or was refused.
    func submit(_ job: Job, sequence: SequenceQueue.SequenceID?, start: Bool, end: Bool) {
        var job = job
        let now = BatchScheduler.nowNs()
        job.arrivalNs = now
        if case .text? = sequence, let corrid = controls.first(where: { $0.signal == .correlationID }), corrid.dataType != .bytes {
            return job.completion(.failure(.invalidArgument(
                "sequence id \(sequence!) is a string, but model's CORRID control '\(corrid.input)' is \(corrid.dataType.protocolName)")))
        }
        let (ticket, actions) = state.withLock { s in
            let (ticket, actions) = s.queue.enqueue(sequence: sequence, start: start, end: end, nowNs: now)
            if let ticket { s.jobs[ticket] = job }
            return (ticket, actions)
        }
        if ticket == nil {
            for case .reject(_, let message) in actions { job.completion(.failure(.invalidArgument(message))) }
            return
        }
        perform(actions)
    }

    private func perform(_ actions: [SequenceQueue.Action]) {
        for action in actions {
            switch action {
            case .reject(let ticket, let message):
                let job = state.withLock { $0.jobs.removeValue(forKey: ticket) }
                job?.completion(.failure(.invalidArgument(message)))
            case .dispatch(let batch):
                queues[batch.instance].async { self.execute(batch) }
            case .deliver(let tickets):
                let ready = state.withLock { s in
                    tickets.compactMap { ticket -> (Job, Result<BatchScheduler.Outcome, TernError>)? in
                        guard let job = s.jobs.removeValue(forKey: ticket), let result = s.results.removeValue(forKey: ticket) else { return nil }
                        return (job, result)
                    }
                }
                for (job, result) in ready { job.completion(result) }
            case .released(let ids):
                state.withLock { s in for id in ids { s.states[id] = nil } }
            case .wakeUp(let at):
                DispatchQueue.global().asyncAfter(deadline: DispatchTime(uptimeNanoseconds: at)) {
                    let actions = self.state.withLock { $0.queue.tick(nowNs: BatchScheduler.nowNs()) }
                    self.perform(actions)
                }
            }
        }
    }

    private func execute(_ batch: SequenceQueue.Batch) {
        let (jobs, stored) = state.withLock { s in
            (batch.rows.map { s.jobs[$0.ticket]! }, batch.rows.map { $0.start ? nil : s.states[$0.sequence] })
        }
        // Each row's full input list: the request's, the controls, the states.
        var rowsInputs: [[Tensor]] = []
        for (index, row) in batch.rows.enumerated() {
            var inputs = jobs[index].inputs
            for control in controls { inputs.append(tensor(for: control, row: row)) }
            for spec in stateSpecs {
                var value = stored[index]?[spec.input] ?? Tensor(name: spec.input, dataType: spec.dataType, shape: spec.dims, data: spec.initial)
                if batched { value.shape = [1] + value.shape }
                inputs.append(value)
            }
            rowsInputs.append(inputs)
        }
        var outcomes = [Result<BatchScheduler.Outcome, TernError>](repeating: .failure(.internalError("not executed")), count: batch.rows.count)
        var newStates: [(SequenceQueue.SequenceID, [String: Tensor])] = []
        // Rows whose inputs have other shapes run in their own execution.
        var groups: [[Int]] = []
        for index in rowsInputs.indices {
            let key = rowsInputs[index].map { $0.shape.dropFirst(batched ? 1 : 0) }
            if let group = groups.firstIndex(where: { rowsInputs[$0[0]].map { $0.shape.dropFirst(batched ? 1 : 0) } == key }) {
                groups[group].append(index)
            } else {
                groups.append([index])
            }
        }
        for group in groups {
            do throws(TernError) {
                let groupStart = BatchScheduler.nowNs()
                let inputs = try BatchAssembly.merge(group.map { rowsInputs[$0] })
                var wanted: [String] = stateSpecs.map(\.output)
                for index in group { for name in jobs[index].outputs where !wanted.contains(name) { wanted.append(name) } }
                let merged = BatchScheduler.nowNs()
                let outputs: [Tensor]
                do {
                    let instance = instances[batch.instance]
                    let run = { try instance.execute(inputs: inputs, outputNames: wanted) }
                    outputs = try gate.map { try $0.run(instance: batch.instance, run) } ?? run()
                } catch let error as TernError {
                    throw error
                } catch {
                    throw .internalError("\(error)", cause: error)
                }
                let executed = BatchScheduler.nowNs()
                let parts = batched ? try BatchAssembly.split(outputs, rows: group.map { _ in 1 }) : [outputs]
                let done = BatchScheduler.nowNs()
                observer(group.count, merged - groupStart, executed - merged, done - executed)
                for (position, index) in group.enumerated() {
                    let row = batch.rows[index]
                    var kept: [String: Tensor] = [:]
                    for spec in stateSpecs {
                        guard var value = parts[position].first(where: { $0.name == spec.output }) else {
                            throw .internalError("the model did not produce state output '\(spec.output)'")
                        }
                        value.name = spec.input
                        if batched { value.shape = Array(value.shape.dropFirst()) }
                        kept[spec.input] = value
                    }
                    if !row.end { newStates.append((row.sequence, kept)) }
                    outcomes[index] = .success(BatchScheduler.Outcome(
                        outputs: parts[position].filter { jobs[index].outputs.contains($0.name) },
                        queueNs: groupStart - min(groupStart, jobs[index].arrivalNs),
                        computeInputNs: merged - groupStart, computeInferNs: executed - merged, computeOutputNs: done - executed,
                        executionRows: group.count))
                }
            } catch {
                for index in group { outcomes[index] = .failure(error) }
            }
        }
        let actions = state.withLock { s in
            for (id, tensors) in newStates { s.states[id] = tensors }
            for (index, row) in batch.rows.enumerated() { s.results[row.ticket] = outcomes[index] }
            return s.queue.executionFinished(batch, nowNs: BatchScheduler.nowNs())
        }
        perform(actions)
    }

    private func tensor(for control: Control, row: SequenceQueue.Row) -> Tensor {
        let shape: [Int64] = batched ? [1, 1] : [1]
        switch control.signal {
        case .start: return Tensor(name: control.input, dataType: control.dataType, shape: shape, data: row.start ? control.falseTrue.1 : control.falseTrue.0)
        case .end: return Tensor(name: control.input, dataType: control.dataType, shape: shape, data: row.end ? control.falseTrue.1 : control.falseTrue.0)
        case .ready: return Tensor(name: control.input, dataType: control.dataType, shape: shape, data: control.falseTrue.1)
        case .correlationID:
            switch row.sequence {
            case .text(let text): return Tensor(name: control.input, shape: shape, strings: [Data(text.utf8)])
            case .number(let n):
                let data: Data
                switch control.dataType {
                case .int32: data = withUnsafeBytes(of: Int32(truncatingIfNeeded: n)) { Data($0) }
                case .uint32: data = withUnsafeBytes(of: UInt32(truncatingIfNeeded: n)) { Data($0) }
                case .int64: data = withUnsafeBytes(of: Int64(bitPattern: n)) { Data($0) }
                case .bytes: return Tensor(name: control.input, shape: shape, strings: [Data(String(n).utf8)])
                default: data = withUnsafeBytes(of: n) { Data($0) }
                }
                return Tensor(name: control.input, dataType: control.dataType, shape: shape, data: data)
            }
        }
    }

    // MARK: - Reading the config

    private static func controls(_ sequencing: Inference_ModelSequenceBatching, model: String) throws(TernError) -> [Control] {
        var result: [Control] = []
        for input in sequencing.controlInput {
            for control in input.control {
                let field = "sequence_batching.control_input '\(input.name)'"
                let signal: Control.Signal
                switch control.kind {
                case .controlSequenceStart: signal = .start
                case .controlSequenceEnd: signal = .end
                case .controlSequenceReady: signal = .ready
                case .controlSequenceCorrid: signal = .correlationID
                case .UNRECOGNIZED(let value): throw .invalidArgument("model '\(model)': \(field): unknown control kind \(value)")
                }
                if signal == .correlationID {
                    guard let type = DataType(configType: control.dataType),
                        [.int32, .uint32, .int64, .uint64, .bytes].contains(type)
                    else { throw .invalidArgument("model '\(model)': \(field): CORRID needs data_type TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 or TYPE_STRING") }
                    result.append(Control(input: input.name, signal: signal, dataType: type, falseTrue: (Data(), Data())))
                } else if control.fp32FalseTrue.count == 2 {
                    result.append(Control(
                        input: input.name, signal: signal, dataType: .fp32,
                        falseTrue: (withUnsafeBytes(of: control.fp32FalseTrue[0]) { Data($0) }, withUnsafeBytes(of: control.fp32FalseTrue[1]) { Data($0) })))
                } else if control.int32FalseTrue.count == 2 {
                    result.append(Control(
                        input: input.name, signal: signal, dataType: .int32,
                        falseTrue: (withUnsafeBytes(of: control.int32FalseTrue[0]) { Data($0) }, withUnsafeBytes(of: control.int32FalseTrue[1]) { Data($0) })))
                } else if control.boolFalseTrue.count == 2 {
                    result.append(Control(
                        input: input.name, signal: signal, dataType: .bool,
                        falseTrue: (Data([control.boolFalseTrue[0] ? 1 : 0]), Data([control.boolFalseTrue[1] ? 1 : 0]))))
                } else {
                    throw .invalidArgument("model '\(model)': \(field): a control needs fp32_false_true, int32_false_true or bool_false_true with two values")
                }
            }
        }
        return result
    }

    private static func states(_ sequencing: Inference_ModelSequenceBatching, model: String, directory: URL?) throws(TernError) -> [StateSpec] {
        try sequencing.state.map { state throws(TernError) -> StateSpec in
            let field = "model '\(model)': sequence_batching.state '\(state.inputName)'"
            guard let type = DataType(configType: state.dataType), let size = type.elementSize else {
                throw .invalidArgument("\(field): data_type must be a fixed-size numeric type")
            }
            guard state.dims.allSatisfy({ $0 > 0 }) else { throw .invalidArgument("\(field): dims must be positive (fixed)") }
            let bytes = Tensor.elementCount(of: state.dims) * size
            var initial = Data(count: bytes)
            if let first = state.initialState.first, case .dataFile(let file)? = first.stateData {
                guard let directory else { throw .invalidArgument("\(field): initial_state data_file needs the model directory") }
                let url = directory.appendingPathComponent("initial_state").appendingPathComponent(file)
                guard let data = try? Data(contentsOf: url), data.count == bytes else {
                    throw .invalidArgument("\(field): initial_state data_file \(url.path) must hold exactly \(bytes) bytes")
                }
                initial = data
            }
            return StateSpec(input: state.inputName, output: state.outputName, dataType: type, dims: state.dims, initial: initial)
        }
    }
}
