import ArgumentParser
import TernRuntime

/// `tern`: the command-line entry point; each subcommand lives in its own file.
public struct TernCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tern",
        abstract: "An edge inference server speaking Triton's KServe v2 protocol over HTTP and gRPC, on ONNX Runtime.",
        version: TernVersion.current,
        subcommands: [ServeCommand.self, InferCommand.self, PerfCommand.self, ModelCommand.self, DeviceCommand.self, ABCommand.self])

    public init() {}

    /// Parses the process arguments and runs the chosen subcommand.
    public static func start() async { await main() }
}
