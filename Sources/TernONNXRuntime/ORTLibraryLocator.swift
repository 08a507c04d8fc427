import Foundation
import TernCore

/// Finds the ONNX Runtime shared library: an explicit path, then `TERN_ONNXRUNTIME_LIBRARY`, then
/// the pip-installed `onnxruntime` package, then system library paths. When none is found the
/// error names every place that was tried.
public struct ORTLibraryLocator: Sendable {
    /// The environment variable that names the library's path, checked after an explicit path.
    public static let environmentVariable = "TERN_ONNXRUNTIME_LIBRARY"

    /// A path given on the command line (`--onnxruntime-library`); when set it must exist, and nothing else is tried.
    public var explicitPath: String?
    /// The environment read for `TERN_ONNXRUNTIME_LIBRARY` and for the Python package paths (`VIRTUAL_ENV`, `HOME`,
    /// `PYENV_ROOT`).
    public var environment: [String: String]

    /// Makes a locator from an optional explicit library path and the environment to search (the process's by default).
    public init(explicitPath: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.explicitPath = explicitPath
        self.environment = environment
    }

    /// The first library path that exists, or an error listing every place tried.
    public func locate() throws(TernError) -> String {
        var tried: [String] = []
        func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

        if let explicitPath {
            if exists(explicitPath) { return explicitPath }
            throw .invalidArgument("--onnxruntime-library \(explicitPath): no such file")
        }
        if let fromEnvironment = environment[Self.environmentVariable], !fromEnvironment.isEmpty {
            if exists(fromEnvironment) { return fromEnvironment }
            tried.append("\(Self.environmentVariable)=\(fromEnvironment) (no such file)")
        } else {
            tried.append("\(Self.environmentVariable) (not set)")
        }
        for directory in pythonPackageDirectories() {
            let capi = directory + "/onnxruntime/capi"
            if let library = Self.library(in: capi) { return library }
            tried.append(capi)
        }
        for directory in Self.systemDirectories {
            if let library = Self.library(in: directory) { return library }
            tried.append(directory)
        }
        throw .internalError(
            "cannot find the ONNX Runtime library (libonnxruntime.so). Install it with 'pip install onnxruntime', "
                + "or pass --onnxruntime-library PATH or set \(Self.environmentVariable). Tried: "
                + tried.joined(separator: ", "))
    }

    static let systemDirectories = [
        "/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
        "/opt/onnxruntime/lib",
    ]

    /// The newest `libonnxruntime.so*` in `directory`.
    static func library(in directory: String) -> String? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return nil }
        let candidates = names.filter { $0 == "libonnxruntime.so" || $0.hasPrefix("libonnxruntime.so.") || $0 == "libonnxruntime.dylib" }
        return candidates.sorted().last.map { directory + "/" + $0 }
    }

    /// site-packages folders where pip may have put onnxruntime: the active virtualenv, pyenv
    /// installations, the user site and the system ones. Globbed, so no Python process starts.
    func pythonPackageDirectories() -> [String] {
        var patterns: [String] = []
        if let venv = environment["VIRTUAL_ENV"] { patterns.append(venv + "/lib/python3*/site-packages") }
        let home = environment["HOME"] ?? NSHomeDirectory()
        let pyenvRoot = environment["PYENV_ROOT"] ?? home + "/.pyenv"
        patterns += [
            pyenvRoot + "/versions/*/lib/python3*/site-packages",
            home + "/.local/lib/python3*/site-packages",
            "/usr/local/lib/python3*/site-packages", "/usr/local/lib/python3*/dist-packages",
            "/usr/lib/python3/dist-packages", "/usr/lib/python3*/site-packages",
        ]
        return patterns.flatMap(Self.glob)
    }

    static func glob(_ pattern: String) -> [String] {
        var result = glob_t()
        defer { globfree(&result) }
        guard Foundation.glob(pattern, 0, nil, &result) == 0 else { return [] }
        return (0..<Int(result.gl_pathc)).compactMap { result.gl_pathv[$0].map { String(cString: $0) } }
    }
}
