import Foundation
import Logging
import TernCore

/// An `OrtEnv` whose log lines go to swift-log, plus the CPU memory description used to hand
/// request buffers to ORT. Freed in `deinit`.
final class ORTEnvironment: @unchecked Sendable {
    // @unchecked: `env` and `cpuMemoryInfo` are created once and only read afterwards; ORT's env
    // is thread-safe. `loggerBox` is retained for as long as ORT may call back with it.
    let library: ORTLibrary
    let env: ORTHandle
    let cpuMemoryInfo: ORTHandle
    private let loggerBox: Unmanaged<LoggerBox>

    final class LoggerBox: Sendable {
        let logger: Logger
        init(_ logger: Logger) { self.logger = logger }
    }

    init(library: ORTLibrary, logger: Logger) throws(TernError) {
        self.library = library
        let box = Unmanaged.passRetained(LoggerBox(logger))
        var env: ORTHandle?
        let level: ORTLoggingLevel =
            switch logger.logLevel {
            case .trace: .verbose
            case .debug: .info
            case .info, .notice, .warning: .warning
            case .error, .critical: .error
            }
        do {
            try library.check(
                library.function(.createEnvWithCustomLogger, as: ORTSignature.CreateEnvWithCustomLogger.self)(
                    ortLogSink, box.toOpaque(), level.rawValue, "tern", &env),
                "creating the ONNX Runtime environment")
        } catch {
            box.release()
            throw error
        }
        guard let env else { box.release(); throw .internalError("ONNX Runtime returned no environment") }
        var memoryInfo: ORTHandle?
        // OrtDeviceAllocator = 0, OrtMemTypeDefault = 0: plain CPU memory the caller owns.
        try library.check(
            library.function(.createCpuMemoryInfo, as: ORTSignature.CreateCpuMemoryInfo.self)(0, 0, &memoryInfo),
            "describing CPU memory")
        self.env = env
        self.cpuMemoryInfo = memoryInfo!
        self.loggerBox = box
    }

    deinit {
        library.function(.releaseMemoryInfo, as: ORTSignature.Release.self)(cpuMemoryInfo)
        library.function(.releaseEnv, as: ORTSignature.Release.self)(env)
        loggerBox.release()
    }
}

/// Receives ORT's own log lines and forwards them to the environment's Logger.
private let ortLogSink: ORTSignature.LoggingFunction = { param, severity, category, _, location, message in
    guard let param else { return }
    let logger = Unmanaged<ORTEnvironment.LoggerBox>.fromOpaque(param).takeUnretainedValue().logger
    let level: Logger.Level =
        switch ORTLoggingLevel(rawValue: severity) ?? .info {
        case .verbose: .trace
        case .info: .debug
        case .warning: .warning
        case .error: .error
        case .fatal: .critical
        }
    let text = message.map { String(cString: $0) } ?? ""
    logger.log(
        level: level, "\(text)",
        metadata: [
            "ort.category": .string(category.map { String(cString: $0) } ?? ""),
            "ort.location": .string(location.map { String(cString: $0) } ?? ""),
        ])
}
