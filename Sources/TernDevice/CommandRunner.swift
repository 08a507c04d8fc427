import Foundation

/// Runs an external tool (`nvpmodel`, `jetson_clocks`). Injected so tests check the exact argv
/// without a Jetson.
public protocol CommandRunner: Sendable {
    /// Whether `tool` can be run here (found on the search path).
    func isAvailable(_ tool: String) -> Bool
    /// Runs `argv` (tool first) and returns its exit status and output.
    func run(_ argv: [String]) throws -> CommandOutput
}

/// What a finished command printed.
public struct CommandOutput: Sendable, Equatable {
    /// The command's exit status (0 on success).
    public var status: Int32
    /// Everything the command wrote to standard output, as UTF-8 text.
    public var standardOutput: String
    /// Everything the command wrote to standard error, as UTF-8 text.
    public var standardError: String

    /// Makes an output from an exit status and the text on each stream.
    public init(status: Int32, standardOutput: String = "", standardError: String = "") {
        self.status = status
        self.standardOutput = standardOutput
        self.standardError = standardError
    }
}

/// Runs commands with Foundation's `Process`, finding tools on `PATH` and in the sbin folders
/// where JetPack installs them.
public struct ProcessRunner: CommandRunner {
    /// Makes a runner that finds tools on `PATH` and in the sbin and bin folders.
    public init() {}

    static func locate(_ tool: String) -> String? {
        if tool.contains("/") { return FileManager.default.isExecutableFile(atPath: tool) ? tool : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let folders = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        return folders.map { $0 + "/" + tool }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Whether `tool` is an executable path, or an executable on `PATH` or in the sbin and bin folders.
    public func isAvailable(_ tool: String) -> Bool { Self.locate(tool) != nil }

    /// Runs `argv` to completion with no standard input and returns its status and both outputs; throws when the tool
    /// is not found.
    public func run(_ argv: [String]) throws -> CommandOutput {
        guard let tool = argv.first, let executable = Self.locate(tool) else {
            throw DeviceError.toolMissing(argv.first ?? "")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(argv.dropFirst())
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Read before waiting so a chatty tool cannot fill the pipe and block.
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return CommandOutput(
            status: process.terminationStatus, standardOutput: String(decoding: out, as: UTF8.self),
            standardError: String(decoding: err, as: UTF8.self))
    }
}

/// Failures of the device commands, with messages meant for a person at a terminal.
public struct DeviceError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The message for the person at the terminal.
    public var description: String

    /// Makes an error with the given message.
    public init(_ description: String) { self.description = description }

    /// The error for a tool that is not installed, naming it and JetPack as where it comes from.
    public static func toolMissing(_ tool: String) -> DeviceError {
        DeviceError("\(tool) is not installed here (it ships with JetPack on NVIDIA Jetson boards)")
    }
}
