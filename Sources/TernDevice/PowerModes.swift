import Foundation

/// A power mode of a Jetson board as `/etc/nvpmodel.conf` defines it. Ids differ per board and
/// JetPack release, so Tern always looks them up by name in the board's own file.
public struct PowerMode: Sendable, Equatable, Codable {
    /// The mode's number in this board's nvpmodel.conf (what `nvpmodel -m` takes).
    public var id: Int
    /// The mode's name in nvpmodel.conf, e.g. "MAXN" or "15W".
    public var name: String

    /// Makes a mode from its nvpmodel id and name.
    public init(id: Int, name: String) {
        self.id = id
        self.name = name
    }
}

/// The modes of an `nvpmodel.conf`, and its default.
public struct NVPModelConfiguration: Sendable, Equatable {
    /// The modes in the order the file defines them.
    public var modes: [PowerMode]
    /// The id of the default mode (`PM_CONFIG DEFAULT`), nil when the file names none.
    public var defaultID: Int?

    /// Reads `< POWER_MODEL ID=n NAME=name >` headers and `< PM_CONFIG DEFAULT=n >`.
    public init(parsing text: String) throws(DeviceError) {
        var modes: [PowerMode] = []
        var defaultID: Int?
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard line.hasPrefix("<"), line.hasSuffix(">") else { continue }
            let words = line.dropFirst().dropLast().split(separator: " ")
            guard let kind = words.first else { continue }
            var fields: [String: String] = [:]
            for word in words.dropFirst() {
                let pair = word.split(separator: "=", maxSplits: 1)
                if pair.count == 2 { fields[String(pair[0])] = String(pair[1]) }
            }
            if kind == "POWER_MODEL" {
                guard let id = fields["ID"].flatMap({ Int($0) }), let name = fields["NAME"] else {
                    throw DeviceError("nvpmodel.conf: a POWER_MODEL line without ID and NAME: \(line)")
                }
                modes.append(PowerMode(id: id, name: name))
            } else if kind == "PM_CONFIG", let value = fields["DEFAULT"].flatMap({ Int($0) }) {
                defaultID = value
            }
        }
        guard !modes.isEmpty else { throw DeviceError("nvpmodel.conf defines no POWER_MODEL") }
        self.modes = modes
        self.defaultID = defaultID
    }

    /// The mode called `name` (case-insensitive).
    public func mode(named name: String) -> PowerMode? {
        modes.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }
    }
}

/// `tern device power-mode`: lists, reads and sets the board's power mode through `nvpmodel`,
/// saving the clocks with `jetson_clocks --store` before the first change so `restore` can undo
/// every change Tern made (clocks with `jetson_clocks --restore`, then the original mode).
public struct PowerModeManager: Sendable {
    /// Runs `nvpmodel` and `jetson_clocks` (a fake one in tests).
    public var runner: any CommandRunner
    /// Path of the board's nvpmodel.conf.
    public var configurationPath: String
    /// Where the clocks and the mode before Tern's first change are kept.
    public var stateDirectory: String

    /// Makes a manager that runs tools with `runner`, reads modes from `configurationPath` and keeps its saved state in
    /// `stateDirectory`.
    public init(runner: any CommandRunner = ProcessRunner(), configurationPath: String = "/etc/nvpmodel.conf",
                stateDirectory: String = "/var/lib/tern") {
        self.runner = runner
        self.configurationPath = configurationPath
        self.stateDirectory = stateDirectory
    }

    var clocksFile: String { stateDirectory + "/jetson_clocks.conf" }
    var modeFile: String { stateDirectory + "/nvpmodel.original" }

    /// The modes the board's nvpmodel.conf defines, or an error when the file cannot be read or holds no mode.
    public func configuration() throws(DeviceError) -> NVPModelConfiguration {
        guard let text = try? String(contentsOfFile: configurationPath, encoding: .utf8) else {
            throw DeviceError("cannot read \(configurationPath): not a Jetson, or nvpmodel is not installed")
        }
        return try NVPModelConfiguration(parsing: text)
    }

    /// The mode in force, from `nvpmodel -q` ("NV Power Mode: NAME" then the id).
    public func current() throws(DeviceError) -> PowerMode {
        let output = try run(["nvpmodel", "-q"])
        return try Self.parseQuery(output.standardOutput)
    }

    static func parseQuery(_ text: String) throws(DeviceError) -> PowerMode {
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let index = lines.firstIndex(where: { $0.hasPrefix("NV Power Mode:") }) else {
            throw DeviceError("unexpected nvpmodel -q output: \(text)")
        }
        let name = lines[index].dropFirst("NV Power Mode:".count).trimmingCharacters(in: .whitespaces)
        let id = lines.dropFirst(index + 1).lazy.compactMap { Int($0) }.first
        guard let id else { throw DeviceError("nvpmodel -q printed no mode id: \(text)") }
        return PowerMode(id: id, name: name)
    }

    /// Switches to the mode called `name`. Returns the commands it ran (none when already there).
    @discardableResult
    public func set(_ name: String) throws(DeviceError) -> [[String]] {
        let configuration = try configuration()
        guard let target = configuration.mode(named: name) else {
            throw DeviceError("no power mode '\(name)' in \(configurationPath); modes: \(configuration.modes.map(\.name).joined(separator: ", "))")
        }
        let now = try current()
        guard now.id != target.id else { return [] }
        var ran: [[String]] = []
        if !FileManager.default.fileExists(atPath: modeFile) {
            do {
                try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
                try Data(now.name.utf8).write(to: URL(fileURLWithPath: modeFile), options: .atomic)
            } catch {
                throw DeviceError("cannot save the current power mode in \(stateDirectory): \(error.localizedDescription)")
            }
            if runner.isAvailable("jetson_clocks") {
                let store = ["jetson_clocks", "--store", clocksFile]
                try run(store)
                ran.append(store)
            }
        }
        let change = ["nvpmodel", "-m", String(target.id)]
        try run(change)
        ran.append(change)
        return ran
    }

    /// Undoes Tern's changes: restores the stored clocks and the mode before the first change.
    @discardableResult
    public func restore() throws(DeviceError) -> [[String]] {
        guard let original = try? String(contentsOfFile: modeFile, encoding: .utf8) else {
            throw DeviceError("nothing to restore: Tern has not changed the power mode (no \(modeFile))")
        }
        var ran: [[String]] = []
        if let mode = try configuration().mode(named: original.trimmingCharacters(in: .whitespacesAndNewlines)) {
            let change = ["nvpmodel", "-m", String(mode.id)]
            try run(change)
            ran.append(change)
        }
        if FileManager.default.fileExists(atPath: clocksFile), runner.isAvailable("jetson_clocks") {
            let restore = ["jetson_clocks", "--restore", clocksFile]
            try run(restore)
            ran.append(restore)
        }
        try? FileManager.default.removeItem(atPath: modeFile)
        try? FileManager.default.removeItem(atPath: clocksFile)
        return ran
    }

    @discardableResult
    private func run(_ argv: [String]) throws(DeviceError) -> CommandOutput {
        guard runner.isAvailable(argv[0]) else { throw .toolMissing(argv[0]) }
        let output: CommandOutput
        do {
            output = try runner.run(argv)
        } catch let error as DeviceError {
            throw error
        } catch {
            throw DeviceError("\(argv.joined(separator: " ")) could not run: \(error.localizedDescription)")
        }
        guard output.status == 0 else {
            let detail = (output.standardError + output.standardOutput).trimmingCharacters(in: .whitespacesAndNewlines)
            throw DeviceError("\(argv.joined(separator: " ")) failed with status \(output.status)\(detail.isEmpty ? "" : ": " + detail)"
                + (output.status != 0 && detail.lowercased().contains("permission") ? " (run as root)" : ""))
        }
        return output
    }
}
