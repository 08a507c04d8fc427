import Foundation
import Testing
@testable import TernDevice

/// Real tegrastats lines (shared/jetson/tegrastats-samples.txt) and the documented variants.
@Suite struct TegrastatsParserTests {
    static let orinNano = "11-30-2025 13:26:01 RAM 2461/7620MB (lfb 3x2MB) SWAP 1243/3810MB (cached 5MB) CPU [19%@729,14%@729,22%@729,8%@729,15%@729,17%@729] EMC_FREQ 4%@2133 GR3D_FREQ 0%@[305] NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@46.531C soc2@47.312C soc0@46.593C gpu@48.218C tj@48.843C soc1@48.843C VDD_IN 5704mW/5704mW VDD_CPU_GPU_CV 831mW/831mW VDD_SOC 1624mW/1624mW"
    static let agxOrin = "04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C Tboard@32C SOC2@40.093C Tdiode@33C SOC0@41.093C CV1@-256C GPU@-256C tj@44.343C SOC1@41.25C CV2@-256C VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
    static let xavierNX = "RAM 2690/6854MB (lfb 6x1MB) SWAP 479/3427MB (cached 3MB) CPU [3%@1904,7%@1906,1%@1905,0%@1907,off,off] EMC_FREQ 0%@1600 GR3D_FREQ 0%@[510] VIC_FREQ 601 APE 150 AUX@39C CPU@39.5C AO@37.5C GPU@37.5C PMIC@50C VDD_IN 5079mW/5079mW VDD_CPU_GPU_CV 696mW/696mW VDD_SOC 1104mW/1104mW"
    static let mb: UInt64 = 1 << 20

    @Test func orinNanoJetPack6() throws {
        let s = try TegrastatsParser.parse(Self.orinNano)
        #expect(s.timestamp == "11-30-2025 13:26:01")
        #expect(s.memory?.usedBytes == 2461 * Self.mb)
        #expect(s.memory?.totalBytes == 7620 * Self.mb)
        #expect(s.memory?.largestFreeBlocks == 3)
        #expect(s.memory?.largestFreeBlockBytes == 2 * Self.mb)
        #expect(s.memory?.swapUsedBytes == 1243 * Self.mb)
        #expect(s.memory?.swapTotalBytes == 3810 * Self.mb)
        #expect(s.memory?.swapCachedBytes == 5 * Self.mb)
        #expect(s.cpus.map(\.loadPercent) == [19, 14, 22, 8, 15, 17])
        #expect(s.cpus.allSatisfy { $0.online && $0.frequencyMHz == 729 })
        #expect(s.emc == DeviceStats.Engine(name: "EMC_FREQ", loadPercent: 4, frequenciesMHz: [2133]))
        #expect(s.gpu == DeviceStats.Engine(name: "GR3D_FREQ", loadPercent: 0, frequenciesMHz: [305]))
        #expect(s.engines.map(\.name) == ["NVDEC", "NVJPG", "NVJPG1", "VIC", "OFA", "APE"])
        #expect(s.engines.prefix(5).allSatisfy { !$0.active })
        #expect(s.engines.last == DeviceStats.Engine(name: "APE", frequenciesMHz: [200]))
        #expect(s.temperatures.map(\.name) == ["cpu", "soc2", "soc0", "gpu", "tj", "soc1"])
        #expect(s.temperatures.map(\.celsius) == [46.531, 47.312, 46.593, 48.218, 48.843, 48.843])
        #expect(s.rails.map(\.name) == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"])
        #expect(s.rails.map(\.milliwatts) == [5704, 831, 1624])
        #expect(s.rails.map(\.averageMilliwatts) == [5704, 831, 1624])
        #expect(s.totalMilliwatts == 5704)  // VDD_IN is the board's input
        #expect(s.hottestCelsius == 48.843)
    }

    @Test func agxOrinWithOfflineSensorsAndUnconnectedRails() throws {
        let s = try TegrastatsParser.parse(Self.agxOrin)
        #expect(s.timestamp == "04-11-2025 10:36:27")
        #expect(s.memory?.usedBytes == 4321 * Self.mb)
        #expect(s.memory?.totalBytes == 62801 * Self.mb)
        #expect(s.memory?.largestFreeBlocks == 1759)
        #expect(s.memory?.largestFreeBlockBytes == 4 * Self.mb)
        #expect(s.memory?.swapUsedBytes == 19 * Self.mb)
        #expect(s.memory?.swapTotalBytes == 31400 * Self.mb)
        #expect(s.memory?.swapCachedBytes == 0)
        #expect(s.cpus.count == 12)
        #expect(s.cpus.allSatisfy { $0.online && $0.loadPercent == 0 && $0.frequencyMHz == 729 })
        #expect(s.gpu?.loadPercent == 0)
        #expect(s.gpu?.frequenciesMHz == [0, 0])  // one per GPC
        #expect(s.emc?.frequenciesMHz == [2133])
        #expect(s.engines == [.init(name: "VIC_FREQ", frequenciesMHz: [729]), .init(name: "APE", frequenciesMHz: [174])])
        #expect(s.temperatures.map(\.name) == ["CV0", "CPU", "Tboard", "SOC2", "Tdiode", "SOC0", "CV1", "GPU", "tj", "SOC1", "CV2"])
        #expect(s.temperatures.map(\.celsius) == [nil, 44.562, 32, 40.093, 33, 41.093, nil, nil, 44.343, 41.25, nil])
        #expect(s.rails.map(\.name) == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "NC", "VDDQ_VDD2_1V8AO", "NC"])
        #expect(s.rails.map(\.milliwatts) == [2340, 390, 4025, 0, 301, 0])
        #expect(s.rails.map(\.connected) == [true, true, true, false, true, false])
        // No input rail on the AGX Orin module: the total is the sum of the connected rails.
        let sum: Double = 2340 + 390 + 4025 + 301
        #expect(s.totalMilliwatts == sum)
        #expect(s.hottestCelsius == 44.562)
    }

    @Test func xavierNXWithOfflineCores() throws {
        let s = try TegrastatsParser.parse(Self.xavierNX)
        #expect(s.timestamp == nil)
        #expect(s.memory?.usedBytes == 2690 * Self.mb)
        #expect(s.memory?.totalBytes == 6854 * Self.mb)
        #expect(s.memory?.largestFreeBlocks == 6)
        #expect(s.memory?.largestFreeBlockBytes == 1 * Self.mb)
        #expect(s.memory?.swapUsedBytes == 479 * Self.mb)
        #expect(s.memory?.swapCachedBytes == 3 * Self.mb)
        #expect(s.cpus.map(\.online) == [true, true, true, true, false, false])
        #expect(s.cpus.map(\.loadPercent) == [3, 7, 1, 0, nil, nil])
        #expect(s.cpus.map(\.frequencyMHz) == [1904, 1906, 1905, 1907, nil, nil])
        #expect(s.cpuLoadPercent == 2.75)
        #expect(s.emc == .init(name: "EMC_FREQ", loadPercent: 0, frequenciesMHz: [1600]))
        #expect(s.gpu == .init(name: "GR3D_FREQ", loadPercent: 0, frequenciesMHz: [510]))
        #expect(s.temperatures.map(\.name) == ["AUX", "CPU", "AO", "GPU", "PMIC"])
        #expect(s.temperatures.map(\.celsius) == [39, 39.5, 37.5, 37.5, 50])
        #expect(s.rails.map(\.milliwatts) == [5079, 696, 1104])
        #expect(s.totalMilliwatts == 5079)
    }

    @Test func olderBoardsWithIRAMAndPOMRails() throws {
        // Jetson Nano, JetPack 4: IRAM glued to its "(lfb", single GPU frequency, POM_ rails without mW.
        let line = "RAM 1014/3956MB (lfb 579x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [5%@102,3%@102,1%@102,off] EMC_FREQ 3%@1600 GR3D_FREQ 0%@76 APE 25 PLL@28C CPU@31C PMIC@100C GPU@29.5C AO@37.5C thermal@30.25C POM_5V_IN 1270/1270 POM_5V_GPU 0/0 POM_5V_CPU 166/166"
        let s = try TegrastatsParser.parse(line)
        #expect(s.iramUsedBytes == 0)
        #expect(s.iramTotalBytes == 252 * 1024)
        #expect(s.cpus.map(\.online) == [true, true, true, false])
        #expect(s.gpu == .init(name: "GR3D_FREQ", loadPercent: 0, frequenciesMHz: [76]))
        #expect(s.rails.map(\.name) == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"])
        #expect(s.rails.map(\.milliwatts) == [1270, 0, 166])
        #expect(s.totalMilliwatts == 1270)
        #expect(s.temperatures.count == 6)
        // The policy ignores PMIC's fixed 100 °C by default.
        #expect(s.hottestCelsius == 100)
        #expect(ThermalPolicy(settings: .init()).watchedCelsius(s) == 37.5)
    }

    @Test func documentedVariants() throws {
        // Shared CPU frequency after the list, MTS, GPU load without frequency, EMC without one,
        // frequency-only GPU, JetPack 7's three power values and two-value temperatures.
        let old = try TegrastatsParser.parse("RAM 3468/3983MB (lfb 48x4MB) CPU [17%,13%,off,5%]@408 EMC_FREQ 0% GR3D_FREQ 39% MTS fg 0% bg 7%")
        #expect(old.cpus.map(\.loadPercent) == [17, 13, nil, 5])
        #expect(old.cpus.map(\.frequencyMHz) == [408, 408, nil, 408])
        #expect(old.emc == .init(name: "EMC_FREQ", loadPercent: 0))
        #expect(old.gpu == .init(name: "GR3D_FREQ", loadPercent: 39))
        #expect(old.engines == [.init(name: "MTS_FG", loadPercent: 0), .init(name: "MTS_BG", loadPercent: 7)])

        let thor = try TegrastatsParser.parse("12-01-2025 08:00:00 RAM 9000/125000MB (lfb 10x4MB) CPU [1%@972,2%@972] GR3D_FREQ @[1575] cpu@45.2C/47.1C tj@46C/-256C VDD_GPU 3200mW/3100mW/4000mW VIN 20000/19500/26000")
        #expect(thor.gpu == .init(name: "GR3D_FREQ", loadPercent: nil, frequenciesMHz: [1575]))
        #expect(thor.temperatures == [.init(name: "cpu", celsius: 45.2, extraCelsius: [47.1]), .init(name: "tj", celsius: 46)])
        #expect(thor.rails == [
            .init(name: "VDD_GPU", milliwatts: 3200, averageMilliwatts: 3100, peakMilliwatts: 4000),
            .init(name: "VIN", milliwatts: 20000, averageMilliwatts: 19500, peakMilliwatts: 26000),
        ])
        #expect(thor.totalMilliwatts == 20000)
    }

    @Test func badTokensAreReportedWithTheirColumn() {
        #expect(throws: TegrastatsParser.ParseError(column: 1, token: "RAM", reason: "RAM without a value")) {
            try TegrastatsParser.parse("RAM")
        }
        #expect(throws: TegrastatsParser.ParseError(column: 5, token: "12/x", reason: "expected used/total with a unit (MB or kB)")) {
            try TegrastatsParser.parse("RAM 12/x")
        }
        let error = #expect(throws: TegrastatsParser.ParseError.self) {
            try TegrastatsParser.parse("RAM 1/2MB CPU [1%@2] GR3D_FREQ 5%@[x] ")
        }
        #expect(error?.column == 32)
        #expect(error?.token == "5%@[x]")
        #expect(throws: TegrastatsParser.ParseError.self) { try TegrastatsParser.parse("cpu@hotC RAM 1/2MB") }
        #expect(throws: TegrastatsParser.ParseError.self) { try TegrastatsParser.parse("RAM 1/2MB VDD_IN 1/2/3/4") }
        #expect(throws: TegrastatsParser.ParseError.self) { try TegrastatsParser.parse("hello world") }
        #expect(throws: TegrastatsParser.ParseError.self) { try TegrastatsParser.parse("") }
    }

    /// Every line of the shared sample file parses (where the file is present).
    /// Found by `make fuzz` (FuzzTegrastats): a memory amount whose byte count overflows trapped.
    @Test func amountsTooLargeForBytesAreRefusedNotTrapped() throws {
        let line = "11-30-2025 13:26:01 RAM 2461/7620MB (lfb 3x2MB) SWAP 12111111111111143/3810MB (cached 5MB) CPU [19%@729]"
        #expect(throws: TegrastatsParser.ParseError.self) { try TegrastatsParser.parse(line) }
        let lfb = "11-30-2025 13:26:01 RAM 2461/7620MB (lfb 3x99999999999999999MB) CPU [19%@729]"
        _ = try? TegrastatsParser.parse(lfb)  // must not trap; refused or the block size left out
    }

    @Test func sharedSampleFileParses() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../shared/jetson/tegrastats-samples.txt")
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return }
        let lines = text.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }
        #expect(lines.count >= 3)
        for line in lines { _ = try TegrastatsParser.parse(String(line)) }
    }
}
