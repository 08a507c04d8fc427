import ArgumentParser
import Foundation
import TernDevice

/// `tern device`: the machine's telemetry and (on Jetson) its power modes.
struct DeviceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device", abstract: "Device telemetry and Jetson power modes.",
        subcommands: [DeviceStatsCommand.self, PowerModeCommand.self])
}

/// `tern device stats`: CPU, memory, GPU, temperatures and power, live or from a tegrastats log.
struct DeviceStatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show CPU, memory, GPU, temperatures and power rails.",
        discussion: """
            Live readings come from sysfs and procfs (on a machine that is not a Jetson, the GPU and
            power rails are reported as not available). With --tegrastats-log, every line of a log
            written by `tegrastats --logfile` is printed as one reading; a line that cannot be
            parsed is reported on stderr with its number (blank lines and lines starting with '#'
            are skipped), and the command then exits with status 1.
            """)

    @Flag(help: "Print JSON (one object per reading).") var json = false
    @Flag(help: "Refresh until interrupted.") var watch = false
    @Option(help: "Seconds between readings with --watch.") var interval: Double = 1
    @Option(name: .customLong("tegrastats-log"), help: "Read a tegrastats log instead of this machine.")
    var tegrastatsLog: String?
    @Option(name: .customLong("root"), help: ArgumentHelp("Filesystem root of sysfs/procfs (for recorded trees).", visibility: .hidden))
    var root: String = "/"

    func run() throws {
        if let tegrastatsLog { return try printLog(tegrastatsLog) }
        let telemetry = SystemTelemetry(root: root)
        _ = telemetry.read()  // CPU load needs a previous reading
        Thread.sleep(forTimeInterval: min(max(interval, 0.1), 0.5))
        repeat {
            let stats = telemetry.read()
            // Written unbuffered, so --watch shows each reading at once even through a pipe.
            if json {
                emit(try encode(stats, pretty: !watch))
            } else {
                emit((watch ? "\u{1B}[H\u{1B}[2J" : "") + DeviceStatsText.block(stats))
            }
            if watch { Thread.sleep(forTimeInterval: max(interval, 0.1)) }
        } while watch
    }

    private func printLog(_ path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("cannot read \(path)")
        }
        var failures = 0
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            do {
                let stats = try TegrastatsParser.parse(line)
                if json {
                    emit(#"{"line":\#(index + 1),"reading":\#(try encode(stats, pretty: false))}"#)
                } else {
                    emit(DeviceStatsText.line(stats, number: index + 1))
                }
            } catch {
                failures += 1
                FileHandle.standardError.write(Data("\(path):\(index + 1): \(error)\n".utf8))
            }
        }
        if failures > 0 {
            FileHandle.standardError.write(Data("\(failures) line(s) could not be parsed\n".utf8))
            throw ExitCode.failure
        }
    }

    private func encode(_ stats: DeviceStats, pretty: Bool) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        return String(decoding: try encoder.encode(stats), as: UTF8.self)
    }
}

/// `tern device power-mode list|get|set|restore`.
struct PowerModeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "power-mode", abstract: "Jetson power modes (nvpmodel), by the names in nvpmodel.conf.",
        subcommands: [List.self, Get.self, Set.self, Restore.self])

    struct Options: ParsableArguments {
        @Option(name: .customLong("nvpmodel-conf"), help: "The board's nvpmodel configuration.")
        var configuration = "/etc/nvpmodel.conf"
        @Option(name: .customLong("state-dir"), help: "Where the clocks and mode before Tern's first change are kept.")
        var stateDirectory = "/var/lib/tern"

        var manager: PowerModeManager {
            PowerModeManager(configurationPath: configuration, stateDirectory: stateDirectory)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the board's power modes.")
        @OptionGroup var options: Options
        func run() throws {
            let configuration = try reportingErrors { () throws(DeviceError) in try options.manager.configuration() }
            for mode in configuration.modes {
                print("\(mode.id)\t\(mode.name)\(mode.id == configuration.defaultID ? "\t(default)" : "")")
            }
        }
    }

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the power mode in force (nvpmodel -q).")
        @OptionGroup var options: Options
        func run() throws {
            let mode = try reportingErrors { () throws(DeviceError) in try options.manager.current() }
            print("\(mode.name)\t(id \(mode.id))")
        }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Switch to a power mode by name (jetson_clocks --store saves the clocks first).")
        @OptionGroup var options: Options
        @Argument(help: "A mode name from nvpmodel.conf.") var name: String
        func run() throws {
            let ran = try reportingErrors { () throws(DeviceError) in try options.manager.set(name) }
            print(ran.isEmpty ? "already in \(name)" : ran.map { $0.joined(separator: " ") }.joined(separator: "\n"))
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Undo Tern's changes: the mode before the first change, then jetson_clocks --restore.")
        @OptionGroup var options: Options
        func run() throws {
            let ran = try reportingErrors { () throws(DeviceError) in try options.manager.restore() }
            print(ran.map { $0.joined(separator: " ") }.joined(separator: "\n"))
        }
    }
}

private func emit(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

/// Runs a device operation; its error becomes a message on stderr and exit status 1.
private func reportingErrors<T>(_ body: () throws(DeviceError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        throw CommandFailure(error.description)
    }
}
