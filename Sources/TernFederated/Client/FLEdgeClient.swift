import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import TernCore
import Synchronization
import TernTraining

/// A Tern device as a Flower client: it joins any Flower server (Flower's own, or Tern's
/// coordinator) over `FlowerService/Join`, trains the model's dense layers on its local data,
/// evaluates, reports its condition through `get_properties`, and reconnects with backoff when the
/// link drops. A `ReconnectIns` with seconds > 0 is a planned break (it waits and comes back);
/// with 0 the run is over.
public final class FLEdgeClient: Sendable {
    /// Where and how to connect, and what to train on.
    public struct Options: Sendable {
        /// The server's host.
        public var host: String
        /// The server's port.
        public var port: Int
        /// A PEM file of the CA that signed the server's certificate: TLS (plaintext without).
        public var rootCertificate: String?
        /// Connection attempts in a row before giving up (nil: never).
        public var maxRetries: Int?
        /// The first wait after a failed attempt; doubled each time up to `maxBackoff`.
        public var initialBackoff: Duration = .seconds(1)
        /// The longest wait between attempts.
        public var maxBackoff: Duration = .seconds(30)

        /// Options for `host:port`.
        public init(host: String, port: Int, rootCertificate: String? = nil, maxRetries: Int? = nil) {
            self.host = host
            self.port = port
            self.rootCertificate = rootCertificate
            self.maxRetries = maxRetries
        }
    }

    /// What the client did, for its final report.
    public struct Summary: Sendable, Codable, Equatable {
        /// Fit instructions trained.
        public var fits = 0
        /// Evaluations answered.
        public var evaluations = 0
        /// Sessions (connections that reached the server).
        public var sessions = 0
        /// Failed connection attempts.
        public var failedAttempts = 0
        /// The last local training loss.
        public var trainLoss: Double?
        /// The last evaluation's loss and accuracy.
        public var loss: Double?
        /// The last evaluation's accuracy.
        public var accuracy: Double?
        /// Whether the server ended the run (`ReconnectIns` 0) rather than the client giving up.
        public var completed = false
    }

    let options: Options
    let trainer: Trainer
    let data: TrainingSet
    let evaluation: TrainingSet
    let properties: @Sendable () -> [String: FLScalar]
    let power: @Sendable () -> Double?
    let logger: Logger
    private let state: Mutex<(weights: [ParameterArray], summary: Summary, lastEnergy: Double?)>

    /// A client training `network` (starting from `weights`) on `data`, evaluating on `evaluation`
    /// (the training data when nil). `properties` are its device's readings for `get_properties`;
    /// `power` the device's draw in watts when it can be read (the energy of a round is measured from it).
    public init(
        options: Options, network: DenseNetwork, weights: [ParameterArray], data: TrainingSet, evaluation: TrainingSet? = nil,
        properties: @escaping @Sendable () -> [String: FLScalar] = { [:] }, power: @escaping @Sendable () -> Double? = { nil },
        logger: Logger = Logger(label: "tern.fl.client")
    ) {
        self.options = options
        self.trainer = Trainer(network: network)
        self.data = data
        self.evaluation = evaluation ?? data
        self.properties = properties
        self.power = power
        self.logger = logger
        self.state = Mutex((weights, Summary(), nil))
    }

    /// The last global weights received (after the run: the final model, when the server evaluates it).
    public var weights: [ParameterArray] { state.withLock { $0.weights } }

    /// Joins, serves the server's instructions, and comes back after breaks until the run ends
    /// or the retries run out (then it throws UNAVAILABLE).
    public func run() async throws(TernError) -> Summary {
        var failures = 0
        var backoff = options.initialBackoff
        while true {
            let outcome: SessionEnd
            do {
                outcome = try await session()
            } catch {
                failures += 1
                state.withLock { $0.summary.failedAttempts += 1 }
                if let limit = options.maxRetries, failures > limit {
                    throw .unavailable("cannot reach the Flower server at \(options.host):\(options.port) after \(failures) attempts: \(error)")
                }
                logger.warning("fl client: connection to \(options.host):\(options.port) failed (\(error)); retrying in \(backoff)")
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, options.maxBackoff)
                continue
            }
            failures = 0
            backoff = options.initialBackoff
            switch outcome {
            case .finished:
                state.withLock { $0.summary.completed = true }
                return state.withLock { $0.summary }
            case .reconnect(let seconds):
                logger.info("fl client: the server asked to reconnect in \(seconds) s")
                try? await Task.sleep(for: .seconds(seconds))
            case .dropped:
                logger.warning("fl client: the stream ended; reconnecting in \(backoff)")
                try? await Task.sleep(for: backoff)
            }
        }
    }

    enum SessionEnd: Sendable {
        case finished
        case reconnect(Int64)
        case dropped
    }

    private func transport() throws -> HTTP2ClientTransport.Posix {
        let security: HTTP2ClientTransport.Posix.TransportSecurity
        if let root = options.rootCertificate {
            security = .tls { $0.trustRoots = .certificates([.file(path: root, format: .pem)]) }
        } else {
            security = .plaintext
        }
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.connection.maxIdleTime = nil
        config.http2.targetWindowSize = 64 << 20  // bulk transfers of model weights
        config.http2.maxFrameSize = 1 << 20
        let isAddress = options.host.split(separator: ".").count == 4 && options.host.split(separator: ".").allSatisfy { UInt8($0) != nil }
        let target: any ResolvableTarget = isAddress ? .ipv4(address: options.host, port: options.port) : .dns(host: options.host, port: options.port)
        return try HTTP2ClientTransport.Posix(target: target, transportSecurity: security, config: config)
    }

    /// One connection: answers instructions until the server ends or breaks the stream.
    private func session() async throws -> SessionEnd {
        try await withGRPCClient(transport: try transport()) { client in
            let flower = Flwr_Proto_FlowerService.Client(wrapping: client)
            var callOptions = CallOptions.defaults
            callOptions.waitForReady = false
            callOptions.maxResponseMessageBytes = Int(Int32.max)
            callOptions.maxRequestMessageBytes = Int(Int32.max)
            let (replies, repliesIn) = AsyncStream<Flwr_Proto_ClientMessage>.makeStream()
            let end = try await flower.join(options: callOptions) { writer in
                for await reply in replies { try await writer.write(reply) }
            } onResponse: { response in
                var first = true
                for try await message in response.messages {
                    if first {
                        first = false
                        self.state.withLock { $0.summary.sessions += 1 }
                    }
                    if case .reconnectIns(let ins)? = message.msg {
                        var disconnect = Flwr_Proto_ClientMessage()
                        var res = Flwr_Proto_ClientMessage.DisconnectRes()
                        res.reason = ins.seconds > 0 ? .reconnect : .ack
                        disconnect.disconnectRes = res
                        repliesIn.yield(disconnect)
                        repliesIn.finish()
                        return ins.seconds > 0 ? SessionEnd.reconnect(min(ins.seconds, 3600)) : .finished
                    }
                    repliesIn.yield(self.answer(message))
                }
                repliesIn.finish()
                return SessionEnd.dropped
            }
            client.beginGracefulShutdown()
            return end
        }
    }

    /// The answer to one instruction.
    func answer(_ message: Flwr_Proto_ServerMessage) -> Flwr_Proto_ClientMessage {
        var reply = Flwr_Proto_ClientMessage()
        switch message.msg {
        case .getParametersIns?:
            var res = Flwr_Proto_ClientMessage.GetParametersRes()
            do {
                res.parameters = try FLWire.parameters(weights)
                res.status.code = .ok
            } catch {
                res.status = FLWire.failed(.getParameters, error.message)
            }
            reply.getParametersRes = res
        case .getPropertiesIns?:
            var res = Flwr_Proto_ClientMessage.GetPropertiesRes()
            var properties = self.properties()
            properties[UpdateCompression.propertyKey] = .string(UpdateCompression.allCases.map(\.rawValue).joined(separator: ","))
            if let energy = state.withLock({ $0.lastEnergy }) { properties["energy_j"] = .double(energy) }
            res.properties = FLScalar.proto(properties)
            res.status.code = .ok
            reply.getPropertiesRes = res
        case .fitIns(let ins)?:
            reply.fitRes = fit(ins)
        case .evaluateIns(let ins)?:
            reply.evaluateRes = evaluate(ins)
        default:
            break
        }
        return reply
    }

    func fit(_ ins: Flwr_Proto_ServerMessage.FitIns) -> Flwr_Proto_ClientMessage.FitRes {
        var res = Flwr_Proto_ClientMessage.FitRes()
        do {
            let global = try received(ins.parameters)
            let config = FLScalar.map(ins.config)
            let options = trainingOptions(config)
            let started = ContinuousClock.now
            let watts = power()
            let (trained, loss) = try trainer.train(weights: global, data: data, options: options)
            let elapsed = ContinuousClock.now - started
            let seconds = elapsed.seconds
            var energy: Double?
            if let before = watts, let after = power() { energy = (before + after) / 2 * seconds }
            state.withLock {
                $0.weights = global
                $0.summary.fits += 1
                $0.summary.trainLoss = loss
                $0.lastEnergy = energy
            }
            if case .string(let name)? = config[UpdateCompression.propertyKey], let compression = UpdateCompression(rawValue: name) {
                res.parameters = try compression.update(trained: trained, base: global)
            } else {
                res.parameters = try FLWire.parameters(trained)
            }
            res.numExamples = Int64(data.count)
            var metrics: [String: FLScalar] = ["train_loss": .double(loss), "train_seconds": .double(seconds)]
            if let energy { metrics["energy_j"] = .double(energy) }
            res.metrics = FLScalar.proto(metrics)
            res.status.code = .ok
        } catch {
            res.status = FLWire.failed(.fit(round: 0), error.message)
            logger.error("fl client: fit failed: \(error.message)")
        }
        return res
    }

    func evaluate(_ ins: Flwr_Proto_ServerMessage.EvaluateIns) -> Flwr_Proto_ClientMessage.EvaluateRes {
        var res = Flwr_Proto_ClientMessage.EvaluateRes()
        do {
            let global = try received(ins.parameters)
            let (loss, accuracy) = try trainer.evaluate(weights: global, data: evaluation)
            state.withLock {
                $0.weights = global
                $0.summary.evaluations += 1
                $0.summary.loss = loss
                $0.summary.accuracy = accuracy
            }
            res.loss = Float(loss)
            res.numExamples = Int64(evaluation.count)
            res.metrics = FLScalar.proto(["accuracy": .double(accuracy)])
            res.status.code = .ok
        } catch {
            res.status = FLWire.failed(.evaluate(round: 0), error.message)
        }
        return res
    }

    /// The global weights of an instruction, checked against the model's layout.
    private func received(_ parameters: Flwr_Proto_Parameters) throws(TernError) -> [ParameterArray] {
        let global: [ParameterArray]
        switch FLWire.weights(parameters) {
        case .success(let arrays): global = arrays
        case .failure: throw .invalidArgument("the server's parameters do not decode as .npy arrays")
        }
        let model = weights
        if let mismatch = global.layoutMismatch(expected: model) { throw .invalidArgument("the server's parameters do not fit the model: \(mismatch)") }
        // A compressed global model arrives in float16: train in the model's own types.
        return zip(global, model).map { $0.converted(to: $1.dataType) }
    }

    /// Flower's usual config keys as training options. Numbers out of range (a negative, infinite
    /// or absurd epoch count) are clamped instead of trusted; `train` refuses what is left wrong.
    func trainingOptions(_ config: [String: FLScalar]) -> TrainingOptions {
        func count(_ value: Double?, limit: Double) -> Int? {
            guard let value, value.isFinite else { return nil }
            return Int(min(max(value, 0), limit))
        }
        var options = TrainingOptions()
        if let epochs = count(config["local_epochs"]?.number ?? config["epochs"]?.number, limit: 10_000) { options.epochs = epochs }
        if let rate = config["learning_rate"]?.number ?? config["lr"]?.number { options.learningRate = rate }
        if let batch = count(config["batch_size"]?.number, limit: 16_777_216) { options.batchSize = batch }
        if let mu = config["proximal_mu"]?.number, mu.isFinite, mu >= 0 { options.proximalMu = mu }
        if let momentum = config["momentum"]?.number, momentum.isFinite { options.momentum = momentum }
        if case .string(let name)? = config["optimizer"], let optimizer = TrainingOptions.Optimizer(rawValue: name.lowercased()) {
            options.optimizer = optimizer
        }
        if let seed = count(config["seed"]?.number, limit: 9e15) {
            options.seed = UInt64(seed)
        } else {
            options.seed = UInt64(state.withLock { $0.summary.fits } + 1)
        }
        return options
    }
}
