import Foundation
import TernCore
import TernRuntime

/// The experiments API under `/v2/experiments` (decode, call the manager, encode):
///
/// - `GET /v2/experiments`, `POST /v2/experiments` (body: the experiment, YAML or JSON)
/// - `GET|DELETE /v2/experiments/{name}`
/// - `GET /v2/experiments/{name}/report` (`?format=html` for the page)
/// - `POST /v2/experiments/{name}/stop` (`{"reason": ...}`), `.../promote` (`{"variant": ...}`)
/// - `POST /v2/experiments/feedback` (`{"labels": [{"id": ..., "label": ...}]}`)
enum ExperimentRoutes {
    static func routes(_ manager: ExperimentManager) -> HTTPExtensionRoutes {
        HTTPExtensionRoutes(
            prefix: "/v2/experiments", group: "experiments",
            alsoRequire: { method, path in method == "POST" && path.split(separator: "?").first?.hasSuffix("/promote") == true ? ["lifecycle"] : [] }
        ) { request in
            do throws(TernError) {
                return try await answer(request, manager)
            } catch {
                return .error(error)
            }
        }
    }

    static func answer(_ request: HTTPExtensionRequest, _ manager: ExperimentManager) async throws(TernError) -> HTTPExtensionResponse {
        switch (request.method, request.path.count) {
        case ("GET", 0):
            return .json(manager.all.map(ExperimentStatus.init))
        case ("POST", 0):
            let spec = try ExperimentSpec.parse(String(decoding: request.body, as: UTF8.self))
            try manager.create(spec)
            return .json(ExperimentStatus(try manager.experiment(spec.name)))
        case ("POST", 1) where request.path[0] == "feedback":
            let labels = try feedbackLabels(request.body)
            let matched = try manager.feedback(labels)
            return .json(["received": labels.count, "matched": matched])
        case ("GET", 1):
            return .json(ExperimentStatus(try manager.experiment(request.path[0])))
        case ("DELETE", 1):
            try manager.delete(request.path[0])
            return .json(["deleted": request.path[0]])
        case ("GET", 2) where request.path[1] == "report":
            let report = try manager.report(request.path[0])
            if request.query["format"] == "html" {
                return HTTPExtensionResponse(contentType: "text/html; charset=utf-8", body: Data(ReportHTML.render(report).utf8))
            }
            return .json(report)
        case ("POST", 2) where request.path[1] == "stop":
            let reason = (try object(request.body)["reason"] as? String) ?? "stopped through the API"
            _ = try manager.stop(request.path[0], reason: reason)
            return .json(ExperimentStatus(try manager.experiment(request.path[0])))
        case ("POST", 2) where request.path[1] == "promote":
            let variant = try object(request.body)["variant"] as? String
            _ = try await manager.promote(request.path[0], variant: variant)
            return .json(ExperimentStatus(try manager.experiment(request.path[0])))
        default:
            throw .notFound("no route for \(request.method) /v2/experiments/\(request.path.joined(separator: "/"))")
        }
    }

    static func object(_ body: Data) throws(TernError) -> [String: Any] {
        guard !body.isEmpty else { return [:] }
        guard let object = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] else {
            throw .invalidArgument("the body must be a JSON object")
        }
        return object
    }

    /// `{"labels": [{"id": "...", "label": ...}]}`; labels may be strings or integers.
    static func feedbackLabels(_ body: Data) throws(TernError) -> [(requestID: String, label: String)] {
        guard let entries = try object(body)["labels"] as? [[String: Any]], !entries.isEmpty else {
            throw .invalidArgument(#"feedback needs {"labels": [{"id": "<request id>", "label": <label>}, ...]}"#)
        }
        return try entries.map { entry throws(TernError) in
            guard let id = entry["id"] as? String, !id.isEmpty, let raw = entry["label"] else {
                throw .invalidArgument("every feedback entry needs an 'id' and a 'label'")
            }
            let label: String
            if let text = raw as? String {
                label = text
            } else if let number = raw as? NSNumber, number.doubleValue == number.doubleValue.rounded() {
                label = String(number.int64Value)
            } else {
                throw .invalidArgument("feedback label for '\(id)' must be a string or an integer")
            }
            return (id, label)
        }
    }
}
