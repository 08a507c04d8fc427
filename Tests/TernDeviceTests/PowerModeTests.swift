import Foundation
import Synchronization
import Testing
@testable import TernDevice

/// Records every command and answers `nvpmodel -q` from its current mode.
final class FakeJetsonTools: CommandRunner, Sendable {
    let calls = Mutex<[[String]]>([])
    let mode = Mutex<(Int, String)>((0, "MAXN"))
    let names: [Int: String]
    let installed: Set<String>
    let failSet: Bool

    init(names: [Int: String], installed: Set<String> = ["nvpmodel", "jetson_clocks"], failSet: Bool = false) {
        self.names = names
        self.installed = installed
        self.failSet = failSet
    }

    func isAvailable(_ tool: String) -> Bool { installed.contains(tool) }

    func run(_ argv: [String]) throws -> CommandOutput {
        calls.withLock { $0.append(argv) }
        switch Array(argv.prefix(2)) {
        case ["nvpmodel", "-q"]:
            let (id, name) = mode.withLock { $0 }
            return CommandOutput(status: 0, standardOutput: "NV Fan Mode:quiet\nNV Power Mode: \(name)\n\(id)\n")
        case ["nvpmodel", "-m"]:
            if failSet { return CommandOutput(status: 255, standardError: "NVPM ERROR: Permission denied") }
            let id = Int(argv[2])!
            mode.withLock { $0 = (id, names[id]!) }
            return CommandOutput(status: 0)
        default:
            return CommandOutput(status: 0)
        }
    }
}

@Suite struct PowerModeTests {
    /// The layout of an Orin Nano nvpmodel.conf (abridged): ids are the file's, not Tern's.
    static let conf = """
        < PARAM TYPE=FILE NAME=CPU_ONLINE >
        CORE_0 /sys/devices/system/cpu/cpu0/online
        < POWER_MODEL ID=0 NAME=15W >
        CPU_ONLINE CORE_0 1
        GPU_POWER_CONTROL_ENABLE GPU_PWR_CNTL_EN on
        < POWER_MODEL ID=1 NAME=7W >
        CPU_ONLINE CORE_0 1
        < POWER_MODEL ID=2 NAME=MAXN_SUPER >
        CPU_ONLINE CORE_0 1
        < PM_CONFIG DEFAULT=0 >
        """

    static func manager(_ tools: FakeJetsonTools) throws -> (PowerModeManager, String) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("tern-power-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try conf.write(to: folder.appendingPathComponent("nvpmodel.conf"), atomically: true, encoding: .utf8)
        let manager = PowerModeManager(runner: tools, configurationPath: folder.path + "/nvpmodel.conf", stateDirectory: folder.path + "/state")
        return (manager, folder.path)
    }

    @Test func parsesModesFromTheBoardsOwnFile() throws {
        let parsed = try NVPModelConfiguration(parsing: Self.conf)
        #expect(parsed.modes == [.init(id: 0, name: "15W"), .init(id: 1, name: "7W"), .init(id: 2, name: "MAXN_SUPER")])
        #expect(parsed.defaultID == 0)
        #expect(parsed.mode(named: "maxn_super")?.id == 2)
        #expect(throws: DeviceError.self) { try NVPModelConfiguration(parsing: "nothing here") }
    }

    @Test func parsesNvpmodelQuery() throws {
        #expect(try PowerModeManager.parseQuery("NV Power Mode: MODE_15W_6CORE\n2\n") == .init(id: 2, name: "MODE_15W_6CORE"))
        #expect(throws: DeviceError.self) { try PowerModeManager.parseQuery("garbage") }
    }

    @Test func setStoresClocksOnceThenChangesModeAndRestoreUndoesIt() throws {
        let tools = FakeJetsonTools(names: [0: "15W", 1: "7W", 2: "MAXN_SUPER"])
        tools.mode.withLock { $0 = (0, "15W") }
        let (manager, folder) = try Self.manager(tools)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let state = folder + "/state/jetson_clocks.conf"

        #expect(try manager.current() == .init(id: 0, name: "15W"))
        #expect(try manager.set("7W") == [["jetson_clocks", "--store", state], ["nvpmodel", "-m", "1"]])
        #expect(try manager.current().name == "7W")
        // The second change does not overwrite the stored original clocks.
        #expect(try manager.set("MAXN_SUPER") == [["nvpmodel", "-m", "2"]])
        #expect(try manager.set("maxn_super") == [])  // already there
        try "stored".write(toFile: state, atomically: true, encoding: .utf8)  // what jetson_clocks --store writes
        #expect(try manager.restore() == [["nvpmodel", "-m", "0"], ["jetson_clocks", "--restore", state]])
        #expect(try manager.current().name == "15W")
        #expect(throws: DeviceError.self) { try manager.restore() }  // nothing left to undo
        #expect(tools.calls.withLock { $0 }.filter { $0[0] == "nvpmodel" && $0[1] == "-m" }.map { $0[2] } == ["1", "2", "0"])
    }

    @Test func errorsSayWhatIsWrong() throws {
        let absent = FakeJetsonTools(names: [0: "15W"], installed: [])
        let (manager, folder) = try Self.manager(absent)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(throws: DeviceError.toolMissing("nvpmodel")) { try manager.current() }

        let denied = FakeJetsonTools(names: [0: "15W", 1: "7W"], failSet: true)
        let (strict, other) = try Self.manager(denied)
        defer { try? FileManager.default.removeItem(atPath: other) }
        denied.mode.withLock { $0 = (0, "15W") }
        let error = #expect(throws: DeviceError.self) { try strict.set("7W") }
        #expect(error?.description.contains("Permission denied") == true)
        #expect(error?.description.contains("run as root") == true)
        let unknown = #expect(throws: DeviceError.self) { try strict.set("TURBO") }
        #expect(unknown?.description.contains("15W, 7W, MAXN_SUPER") == true)

        let missing = PowerModeManager(runner: absent, configurationPath: "/nonexistent/nvpmodel.conf")
        #expect(throws: DeviceError.self) { try missing.configuration() }
    }
}
