import Foundation
import TernCore

/// Reads a Triton-style model repository: `<repo>/<model>/config.pbtxt` and numbered version
/// folders `<repo>/<model>/<version>/`.
struct ModelRepository: Sendable {
    let root: URL

    /// Names of the model folders, sorted.
    /// The model folders. `experiments/` without a config.pbtxt holds A/B experiment files, not
    /// a model.
    func modelNames() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return names.filter { name in
            var isDirectory: ObjCBool = false
            if name == "experiments", !FileManager.default.fileExists(atPath: configFile(name).path) { return false }
            return !name.hasPrefix(".")
                && FileManager.default.fileExists(atPath: root.appendingPathComponent(name).path, isDirectory: &isDirectory)
                && isDirectory.boolValue
        }.sorted()
    }

    func modelDirectory(_ name: String) -> URL { root.appendingPathComponent(name, isDirectory: true) }

    func configFile(_ name: String) -> URL { modelDirectory(name).appendingPathComponent("config.pbtxt") }

    /// The config.pbtxt text, or nil when the model has none.
    func configText(_ name: String) throws(TernError) -> String? {
        let file = configFile(name)
        guard FileManager.default.fileExists(atPath: file.path) else { return nil }
        let data: Data
        do {
            data = try Data(contentsOf: file)
        } catch {
            throw .invalidArgument("\(file.path): cannot read: \(error.localizedDescription)")
        }
        guard data.count <= 16 << 20 else {
            throw .invalidArgument("\(file.path): \(data.count) bytes is too large for a model configuration (at most 16 MiB)")
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            let offset = Self.firstInvalidUTF8(data)
            throw .invalidArgument("\(file.path): not UTF-8 text (invalid byte 0x\(String(data[data.startIndex + offset], radix: 16)) at byte offset \(offset)); a config.pbtxt is protobuf text format")
        }
        if let nul = data.firstIndex(of: 0) {
            throw .invalidArgument("\(file.path): holds a NUL byte at byte offset \(nul - data.startIndex); a config.pbtxt is protobuf text format")
        }
        return text
    }

    /// Offset of the first byte at which `data` stops being valid UTF-8.
    static func firstInvalidUTF8(_ data: Data) -> Int {
        var parser = Unicode.UTF8.ForwardParser()
        var bytes = data.makeIterator()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &bytes) {
            case .valid(let encoded): offset += encoded.count
            case .error: return min(offset, data.count - 1)
            case .emptyInput: return max(data.count - 1, 0)
            }
        }
    }

    /// Version numbers present as folders, ascending.
    func versions(of name: String) -> [Int64] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: modelDirectory(name).path)) ?? []
        return entries.compactMap { entry -> Int64? in
            guard let number = Int64(entry), number > 0, String(number) == entry else { return nil }
            var isDirectory: ObjCBool = false
            let path = modelDirectory(name).appendingPathComponent(entry).path
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue ? number : nil
        }.sorted()
    }

    /// A value that changes when the model's config or files change (used by poll mode).
    func fingerprint(of name: String) -> String {
        var parts: [String] = []
        let base = modelDirectory(name)
        guard let walker = FileManager.default.enumerator(at: base, includingPropertiesForKeys: [.contentModificationDateKey, .fileSizeKey]) else { return "" }
        for case let url as URL in walker {
            let values = try? url.resourceValues(forKeys: [.contentModificationDateKey, .fileSizeKey])
            parts.append("\(url.path)|\(values?.fileSize ?? -1)|\(values?.contentModificationDate?.timeIntervalSince1970 ?? 0)")
        }
        return parts.sorted().joined(separator: "\n")
    }

    /// The versions a config's version policy selects among those present.
    static func selectVersions(_ available: [Int64], policy: Inference_ModelVersionPolicy) -> [Int64] {
        switch policy.policyChoice {
        case .all?: return available
        case .specific(let specific)?: return specific.versions.sorted()
        case .latest(let latest)?: return Array(available.suffix(Int(max(latest.numVersions, 1))))
        case nil: return Array(available.suffix(1))
        }
    }
}
