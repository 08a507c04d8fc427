/// Parses the lines `tegrastats` prints (and writes with `--logfile`) into `DeviceStats`.
///
/// Handles the formats of every JetPack from the TX1/Nano era to Orin and Thor: an optional
/// `MM-DD-YYYY HH:MM:SS` timestamp; `RAM used/totalMB (lfb NxSMB)`; `SWAP used/totalMB (cached
/// NMB)`; `IRAM used/totalkB(lfb NkB)`; `CPU [load%@MHz,...]` with `off` cores, or the older
/// `CPU [load%,...]@MHz`; engines as `x%@MHz`, `x%@[MHz,...]`, `@[MHz]`, `x%`, a bare MHz or
/// `off`; `MTS fg x% bg y%`; temperatures `name@tC` (`-256C` is an offline sensor) and
/// `name@t1C/t2C`; power rails `cur/avg` or `cur/avg/peak`, with or without `mW`.
/// A token it does not recognise is an error naming the token, never skipped.
public enum TegrastatsParser {
    /// Why a line could not be parsed: `column` is the 1-based character position of the token.
    public struct ParseError: Error, Equatable, CustomStringConvertible, Sendable {
        /// The 1-based character position in the line where the token starts.
        public var column: Int
        /// The token that could not be read.
        public var token: String
        /// What was expected instead, in words.
        public var reason: String
        /// The error as "column N: reason ('token')".
        public var description: String { "column \(column): \(reason) ('\(token)')" }
    }

    /// Parses one tegrastats line into a reading, throwing at the first token it does not recognise.
    public static func parse(_ line: String) throws(ParseError) -> DeviceStats {
        var tokens = Tokens(line)
        var stats = DeviceStats()
        if let date = tokens.peek(0), let time = tokens.peek(1), isDate(date.text), isTime(time.text) {
            stats.timestamp = date.text + " " + time.text
            tokens.advance(2)
        }
        while let token = tokens.next() {
            switch token.text {
            case "RAM": try parseRAM(&tokens, &stats, at: token)
            case "SWAP": try parseSwap(&tokens, &stats, at: token)
            case "IRAM": try parseIRAM(&tokens, &stats, at: token)
            case "CPU" where tokens.peek(0)?.text.hasPrefix("[") == true, "cpu" where tokens.peek(0)?.text.hasPrefix("[") == true:
                stats.cpus = try parseCPUs(tokens.next()!)
            case "MTS": try parseMTS(&tokens, &stats, at: token)
            default:
                if token.text.contains("@") {
                    stats.temperatures.append(try parseTemperature(token))
                } else if isName(token.text), let value = tokens.peek(0) {
                    tokens.advance(1)
                    if value.text.contains("/") {
                        stats.rails.append(try parseRail(name: token.text, value))
                    } else {
                        let engine = try parseEngine(name: token.text, value)
                        switch token.text {
                        case "GR3D_FREQ": stats.gpu = engine
                        case "EMC_FREQ": stats.emc = engine
                        default: stats.engines.append(engine)
                        }
                    }
                } else {
                    throw ParseError(column: token.column, token: token.text, reason: "unrecognised field")
                }
            }
        }
        if stats.memory == nil && stats.cpus.isEmpty && stats.temperatures.isEmpty && stats.rails.isEmpty {
            throw ParseError(column: 1, token: String(line.prefix(40)), reason: "not a tegrastats line (no RAM, CPU, temperature or power field)")
        }
        return stats
    }

    // MARK: Fields

    private static func parseRAM(_ tokens: inout Tokens, _ stats: inout DeviceStats, at field: Token) throws(ParseError) {
        let usage = try expect(&tokens, after: field)
        let (used, total) = try amounts(usage, unitSuffixes: ["MB": 1 << 20, "kB": 1 << 10, "GB": 1 << 30])
        var memory = DeviceStats.Memory(totalBytes: total, usedBytes: used)
        if tokens.peek(0)?.text == "(lfb" {
            tokens.advance(1)
            let blocks = try expect(&tokens, after: field)
            // NxSMB) — N blocks of S.
            let body = blocks.text.hasSuffix(")") ? String(blocks.text.dropLast()) : blocks.text
            let parts = body.split(separator: "x", maxSplits: 1)
            guard parts.count == 2, let count = Int(parts[0]), let size = bytes(String(parts[1])) else {
                throw ParseError(column: blocks.column, token: blocks.text, reason: "expected NxSIZE) after (lfb")
            }
            memory.largestFreeBlocks = count
            memory.largestFreeBlockBytes = size
        }
        let swap = stats.memory
        stats.memory = memory
        if let swap { mergeSwap(from: swap, into: &stats) }
    }

    private static func parseSwap(_ tokens: inout Tokens, _ stats: inout DeviceStats, at field: Token) throws(ParseError) {
        let usage = try expect(&tokens, after: field)
        let (used, total) = try amounts(usage, unitSuffixes: ["MB": 1 << 20, "kB": 1 << 10, "GB": 1 << 30])
        var cached: UInt64?
        if tokens.peek(0)?.text == "(cached" {
            tokens.advance(1)
            let value = try expect(&tokens, after: field)
            let body = value.text.hasSuffix(")") ? String(value.text.dropLast()) : value.text
            guard let size = bytes(body) else {
                throw ParseError(column: value.column, token: value.text, reason: "expected SIZE) after (cached")
            }
            cached = size
        }
        var memory = stats.memory ?? DeviceStats.Memory(totalBytes: 0, usedBytes: 0)
        memory.swapTotalBytes = total
        memory.swapUsedBytes = used
        memory.swapCachedBytes = cached
        stats.memory = memory
    }

    /// SWAP printed before RAM (not seen in practice, but harmless to accept).
    private static func mergeSwap(from swap: DeviceStats.Memory, into stats: inout DeviceStats) {
        stats.memory?.swapTotalBytes = swap.swapTotalBytes
        stats.memory?.swapUsedBytes = swap.swapUsedBytes
        stats.memory?.swapCachedBytes = swap.swapCachedBytes
    }

    private static func parseIRAM(_ tokens: inout Tokens, _ stats: inout DeviceStats, at field: Token) throws(ParseError) {
        let usage = try expect(&tokens, after: field)
        let (used, total) = try amounts(usage, unitSuffixes: ["kB": 1 << 10, "MB": 1 << 20])
        stats.iramUsedBytes = used
        stats.iramTotalBytes = total
        if tokens.peek(0)?.text == "(lfb" {
            tokens.advance(1)
            let value = try expect(&tokens, after: field)
            let body = value.text.hasSuffix(")") ? String(value.text.dropLast()) : value.text
            guard bytes(body) != nil else {
                throw ParseError(column: value.column, token: value.text, reason: "expected SIZE) after (lfb")
            }
        }
    }

    /// `[19%@729,off,...]` or the older `[17%,13%,off]@408`.
    static func parseCPUs(_ token: Token) throws(ParseError) -> [DeviceStats.CPUCore] {
        guard let close = token.text.lastIndex(of: "]") else {
            throw ParseError(column: token.column, token: token.text, reason: "CPU list without ']'")
        }
        let inner = token.text[token.text.index(after: token.text.startIndex)..<close]
        let after = token.text[token.text.index(after: close)...]
        var sharedMHz: Double?
        if !after.isEmpty {
            guard after.hasPrefix("@"), let mhz = Double(after.dropFirst()) else {
                throw ParseError(column: token.column, token: token.text, reason: "expected @MHz after the CPU list")
            }
            sharedMHz = mhz
        }
        var cores: [DeviceStats.CPUCore] = []
        for (index, entry) in inner.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            let text = String(entry.filter { $0 != " " })
            if text == "off" {
                cores.append(.init(index: index, online: false))
                continue
            }
            let parts = text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
            guard let loadText = parts.first, loadText.hasSuffix("%"), let load = Double(loadText.dropLast()) else {
                throw ParseError(column: token.column, token: token.text, reason: "CPU core \(index): expected load% or off, got '\(text)'")
            }
            var mhz = sharedMHz
            if parts.count == 2 {
                guard let value = Double(parts[1]) else {
                    throw ParseError(column: token.column, token: token.text, reason: "CPU core \(index): bad frequency '\(parts[1])'")
                }
                mhz = value
            }
            cores.append(.init(index: index, online: true, loadPercent: load, frequencyMHz: mhz))
        }
        return cores
    }

    private static func parseMTS(_ tokens: inout Tokens, _ stats: inout DeviceStats, at field: Token) throws(ParseError) {
        // MTS fg x% bg y% (Denver cores' foreground/background time on TX2 and Xavier).
        for name in ["fg", "bg"] {
            guard let label = tokens.next(), label.text == name, let value = tokens.next(), value.text.hasSuffix("%"),
                let percent = Double(value.text.dropLast())
            else {
                throw ParseError(column: field.column, token: field.text, reason: "expected MTS fg x% bg y%")
            }
            stats.engines.append(.init(name: "MTS_" + name.uppercased(), loadPercent: percent))
        }
    }

    /// `x%@MHz`, `x%@[MHz,...]`, `@[MHz,...]`, `x%`, `MHz` or `off`.
    static func parseEngine(name: String, _ value: Token) throws(ParseError) -> DeviceStats.Engine {
        if value.text == "off" { return .init(name: name, active: false) }
        let parts = value.text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        var engine = DeviceStats.Engine(name: name)
        let bad = ParseError(column: value.column, token: value.text, reason: "\(name): expected load%, load%@MHz, load%@[MHz,...], @[MHz] or off")
        if parts.count == 1 {
            let text = parts[0]
            if text.hasSuffix("%") {
                guard let load = Double(text.dropLast()) else { throw bad }
                engine.loadPercent = load
            } else {
                guard let mhz = Double(text) else { throw bad }
                engine.frequenciesMHz = [mhz]
            }
            return engine
        }
        if !parts[0].isEmpty {
            guard parts[0].hasSuffix("%"), let load = Double(parts[0].dropLast()) else { throw bad }
            engine.loadPercent = load
        }
        var frequencies = Substring(parts[1])
        if frequencies.hasPrefix("[") {
            guard frequencies.hasSuffix("]") else { throw bad }
            frequencies = frequencies.dropFirst().dropLast()
        }
        for item in frequencies.split(separator: ",") {
            guard let mhz = Double(item) else { throw bad }
            engine.frequenciesMHz.append(mhz)
        }
        guard !engine.frequenciesMHz.isEmpty else { throw bad }
        return engine
    }

    /// `name@45.5C`, `name@-256C` (offline) or `name@45.5C/47C`.
    static func parseTemperature(_ token: Token) throws(ParseError) -> DeviceStats.Temperature {
        let parts = token.text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty else {
            throw ParseError(column: token.column, token: token.text, reason: "expected name@temperatureC")
        }
        var values: [Double] = []
        for item in parts[1].split(separator: "/", omittingEmptySubsequences: false) {
            guard item.hasSuffix("C"), let celsius = Double(item.dropLast()) else {
                throw ParseError(column: token.column, token: token.text, reason: "expected a temperature like 45.5C")
            }
            values.append(celsius)
        }
        let current = values[0] <= -255 ? nil : values[0]
        return .init(name: String(parts[0]), celsius: current, extraCelsius: Array(values.dropFirst()).filter { $0 > -255 })
    }

    /// `cur/avg` or `cur/avg/peak`, each with or without `mW`.
    static func parseRail(name: String, _ value: Token) throws(ParseError) -> DeviceStats.PowerRail {
        var numbers: [Double] = []
        for item in value.text.split(separator: "/", omittingEmptySubsequences: false) {
            let digits = item.hasSuffix("mW") ? item.dropLast(2) : item
            guard let milliwatts = Double(digits) else {
                throw ParseError(column: value.column, token: value.text, reason: "\(name): expected power as cur/avg[/peak] in mW")
            }
            numbers.append(milliwatts)
        }
        guard numbers.count == 2 || numbers.count == 3 else {
            throw ParseError(column: value.column, token: value.text, reason: "\(name): expected 2 or 3 power values")
        }
        return .init(name: name, milliwatts: numbers[0], averageMilliwatts: numbers[1], peakMilliwatts: numbers.count == 3 ? numbers[2] : nil)
    }

    // MARK: Helpers

    private static func expect(_ tokens: inout Tokens, after field: Token) throws(ParseError) -> Token {
        guard let token = tokens.next() else {
            throw ParseError(column: field.column, token: field.text, reason: "\(field.text) without a value")
        }
        return token
    }

    /// `used/totalUNIT` → bytes.
    private static func amounts(_ token: Token, unitSuffixes: [String: UInt64]) throws(ParseError) -> (UInt64, UInt64) {
        for (suffix, scale) in unitSuffixes where token.text.hasSuffix(suffix) {
            let parts = token.text.dropLast(suffix.count).split(separator: "/")
            if parts.count == 2, let used = UInt64(parts[0]), let total = UInt64(parts[1]) {
                let (usedBytes, usedOverflow) = used.multipliedReportingOverflow(by: scale)
                let (totalBytes, totalOverflow) = total.multipliedReportingOverflow(by: scale)
                guard !usedOverflow, !totalOverflow else {
                    throw ParseError(column: token.column, token: token.text, reason: "amount too large to be a memory size")
                }
                return (usedBytes, totalBytes)
            }
        }
        throw ParseError(column: token.column, token: token.text, reason: "expected used/total with a unit (MB or kB)")
    }

    /// `4MB`, `252kB`, `5MB` → bytes.
    private static func bytes(_ text: String) -> UInt64? {
        for (suffix, scale) in [("kB", UInt64(1) << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("B", 1)] where text.hasSuffix(suffix) {
            if let value = UInt64(text.dropLast(suffix.count)) {
                let (bytes, overflow) = value.multipliedReportingOverflow(by: scale)
                return overflow ? nil : bytes
            }
        }
        return nil
    }

    private static func isName(_ text: String) -> Bool {
        !text.isEmpty && text.allSatisfy { $0.isUppercase || $0.isNumber || $0 == "_" } && text.first!.isLetter
    }

    private static func isDate(_ text: String) -> Bool {
        let parts = text.split(separator: "-")
        return parts.count == 3 && parts.allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isNumber) }
    }

    private static func isTime(_ text: String) -> Bool {
        let parts = text.split(separator: ":")
        return parts.count == 3 && parts.allSatisfy { !$0.isEmpty && $0.allSatisfy { $0.isNumber || $0 == "." } }
    }
}

/// A whitespace-separated token and the 1-based column where it starts.
struct Token: Sendable, Equatable {
    var text: String
    var column: Int
}

/// The tokens of a line. A `(` glued to the previous token (`252kB(lfb`) starts a new token.
struct Tokens {
    private var items: [Token] = []
    private var position = 0

    init(_ line: String) {
        var current = ""
        var start = 0
        for (offset, character) in line.enumerated() {
            if character == " " || character == "\t" || character == "\r" || character == "\n" {
                if !current.isEmpty { items.append(Token(text: current, column: start + 1)) }
                current = ""
            } else if character == "(" && !current.isEmpty {
                items.append(Token(text: current, column: start + 1))
                current = "("
                start = offset
            } else {
                if current.isEmpty { start = offset }
                current.append(character)
            }
        }
        if !current.isEmpty { items.append(Token(text: current, column: start + 1)) }
    }

    func peek(_ ahead: Int) -> Token? {
        position + ahead < items.count ? items[position + ahead] : nil
    }

    mutating func advance(_ count: Int) { position += count }

    mutating func next() -> Token? {
        defer { position += 1 }
        return peek(0)
    }
}
