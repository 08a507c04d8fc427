import Foundation
import SwiftProtobuf
import TernCore
import TernRuntime

/// `tern.experiments.v1.ExperimentService` (Protos/experiments.proto): the experiments API of
/// `ExperimentRoutes` over gRPC, served on the KServe gRPC port. Decode, call the manager, encode;
/// errors keep their kind (NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS, ...).
enum ExperimentGRPC {
    static let serviceName = "tern.experiments.v1.ExperimentService"

    static func service(_ manager: ExperimentManager) -> GRPCExtensionService {
        GRPCExtensionService(name: serviceName, group: "experiments", alsoRequire: { $0 == "PromoteExperiment" ? ["lifecycle"] : [] }) { method, message throws(TernError) in
            try await answer(method, message, manager)
        }
    }

    static func answer(_ method: String, _ message: Data, _ manager: ExperimentManager) async throws(TernError) -> Data {
        switch method {
        case "ListExperiments":
            _ = try decode(Tern_Experiments_V1_ListExperimentsRequest.self, message)
            var reply = Tern_Experiments_V1_ListExperimentsResponse()
            reply.experiments = try manager.all.map { experiment throws(TernError) in try describe(experiment) }
            return try encode(reply)
        case "CreateExperiment":
            let request = try decode(Tern_Experiments_V1_CreateExperimentRequest.self, message)
            let spec = try ExperimentSpec.parse(request.definition)
            try manager.create(spec)
            return try encode(try describe(try manager.experiment(spec.name)))
        case "GetExperiment":
            let request = try decode(Tern_Experiments_V1_ExperimentRequest.self, message)
            return try encode(try describe(try manager.experiment(request.name)))
        case "StopExperiment":
            let request = try decode(Tern_Experiments_V1_StopExperimentRequest.self, message)
            _ = try manager.stop(request.name, reason: request.reason.isEmpty ? "stopped through the API" : request.reason)
            return try encode(try describe(try manager.experiment(request.name)))
        case "PromoteExperiment":
            let request = try decode(Tern_Experiments_V1_PromoteExperimentRequest.self, message)
            _ = try await manager.promote(request.name, variant: request.variant.isEmpty ? nil : request.variant)
            return try encode(try describe(try manager.experiment(request.name)))
        case "DeleteExperiment":
            let request = try decode(Tern_Experiments_V1_ExperimentRequest.self, message)
            try manager.delete(request.name)
            var reply = Tern_Experiments_V1_DeleteExperimentResponse()
            reply.name = request.name
            return try encode(reply)
        case "GetExperimentReport":
            let request = try decode(Tern_Experiments_V1_ExperimentReportRequest.self, message)
            let report = try manager.report(request.name)
            var reply = Tern_Experiments_V1_ExperimentReportResponse()
            switch request.format {
            case "", "json": reply.json = try json(report)
            case "html": reply.html = ReportHTML.render(report)
            default: throw .invalidArgument("report format '\(request.format)': use \"json\" or \"html\"")
            }
            return try encode(reply)
        case "AddFeedback":
            let request = try decode(Tern_Experiments_V1_AddFeedbackRequest.self, message)
            guard !request.labels.isEmpty else { throw .invalidArgument("feedback needs at least one label") }
            let labels = try request.labels.map { entry throws(TernError) -> (requestID: String, label: String) in
                guard !entry.id.isEmpty else { throw .invalidArgument("every feedback label needs the request id it belongs to") }
                return (entry.id, entry.label)
            }
            var reply = Tern_Experiments_V1_AddFeedbackResponse()
            reply.received = Int64(labels.count)
            reply.matched = Int64(try manager.feedback(labels))
            return try encode(reply)
        default:
            throw TernError(.unimplemented, "Method not found: /\(serviceName)/\(method)")
        }
    }

    /// The message for an experiment: the common fields typed, and the whole status as the HTTP
    /// API writes it.
    static func describe(_ experiment: Experiment) throws(TernError) -> Tern_Experiments_V1_Experiment {
        let status = ExperimentStatus(experiment)
        var message = Tern_Experiments_V1_Experiment()
        message.name = status.name
        message.status = status.status.rawValue
        message.reason = status.reason ?? ""
        message.winner = status.winner ?? ""
        message.routingKey = status.routingKey
        message.hash = status.hash.rawValue
        message.salt = status.salt
        message.variants = status.variants.map { variant in
            var entry = Tern_Experiments_V1_Experiment.Variant()
            entry.name = variant.name
            entry.model = variant.model
            entry.version = variant.version ?? 0
            entry.weight = variant.weight
            entry.shadow = variant.shadow
            return entry
        }
        message.json = try json(status)
        return message
    }

    static func json<T: Encodable>(_ value: T) throws(TernError) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            return String(decoding: try encoder.encode(value), as: UTF8.self)
        } catch {
            throw .internalError("cannot encode the answer: \(error)")
        }
    }

    static func decode<M: SwiftProtobuf.Message>(_: M.Type, _ data: Data) throws(TernError) -> M { try GRPCMessage.decode(M.self, from: data) }
    static func encode<M: SwiftProtobuf.Message>(_ message: M) throws(TernError) -> Data { try GRPCMessage.encode(message) }
}
