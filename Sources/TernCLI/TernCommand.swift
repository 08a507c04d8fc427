import ArgumentParser
import Foundation
import TernRuntime

/// `tern`: the command-line entry point; each subcommand lives in its own file.
public struct TernCommand: AsyncParsableCommand {
    /// The root command's name, description, version and subcommands (serve, infer, perf, model, device, ab, fl).
    public static let configuration = CommandConfiguration(
        commandName: "tern",
        abstract: "An edge inference server speaking Triton's KServe v2 protocol over HTTP and gRPC, on ONNX Runtime.",
        version: TernVersion.current,
        subcommands: [ServeCommand.self, InferCommand.self, PerfCommand.self, ModelCommand.self, DeviceCommand.self, ABCommand.self, FLCommand.self])

    /// Makes the root command, which has no options of its own (ArgumentParser calls this when parsing).
    public init() {}

    /// Parses the process arguments and runs the chosen subcommand; a failure is printed as one
    /// `Error:` line (see `CommandErrors`) with a non-zero status.
    public static func start() async {
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch let error as ValidationError {
            // A usage error found while running: point at the subcommand's own help, not tern's.
            FileHandle.standardError.write(Data("Error: \(error.message)\n  See '\(commandPath()) --help' for more information.\n".utf8))
            Foundation.exit(exitCode(for: error).rawValue)
        } catch {
            exit(withError: CommandErrors.friendly(error))
        }
    }

    /// `tern model promote` for `tern model promote x --version 3`: the subcommands named by the
    /// process arguments.
    static func commandPath() -> String {
        var path = [configuration.commandName ?? "tern"]
        var level: [any ParsableCommand.Type] = configuration.subcommands
        for argument in CommandLine.arguments.dropFirst() {
            guard let next = level.first(where: { $0.configuration.commandName == argument }) else { break }
            path.append(argument)
            level = next.configuration.subcommands
        }
        return path.joined(separator: " ")
    }
}
