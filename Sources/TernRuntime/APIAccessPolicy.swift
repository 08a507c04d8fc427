import Foundation
import TernCore

/// Which API groups need a key, and which key: Triton's restricted APIs
/// (`--http-restricted-api=model-repository,shared-memory:admin-key=SECRET`,
/// `--grpc-restricted-protocol=...`) plus Tern's own groups. A request to a restricted group must
/// carry the header (for gRPC the metadata key `triton-grpc-protocol-<key>`) with the value; the
/// frontends check before the engine is touched and answer 403 / PERMISSION_DENIED naming the group.
public struct APIAccessPolicy: Sendable {
    /// One restriction: the groups it covers and the header that opens them.
    public struct Restriction: Sendable {
        /// The API groups this restriction covers, e.g. `model-repository` or `shared-memory`.
        public var groups: Set<String>
        /// The header (lowercased) the request must carry.
        public var header: String
        /// The name the key was given on the command line (recorded as who made a change).
        public var keyName: String
        fileprivate var value: [UInt8]
    }

    /// The restrictions in force, one per option value; no group is in more than one.
    public private(set) var restrictions: [Restriction]
    /// How a refusal names the header in its message ("header" for HTTP, "metadata" for gRPC).
    public var headerWord = "header"

    /// No group restricted.
    public static let open = APIAccessPolicy(restrictions: [])

    /// Triton's API groups.
    public static let tritonGroups = [
        "health", "metadata", "inference", "shared-memory", "model-config", "model-repository", "statistics", "trace", "logging",
    ]
    /// Tern's own groups (its extensions and patterns).
    public static let ternGroups = ["experiments", "lifecycle", "device", "fl", "learning", "agent", "dashboard"]
    /// Every API group a restriction may name: Triton's followed by Tern's.
    public static var allGroups: [String] { tritonGroups + ternGroups }

    /// Makes a policy from the given restrictions (`parse` builds them from the command-line options).
    public init(restrictions: [Restriction]) {
        self.restrictions = restrictions
    }

    /// Parses the option values, each `GROUP[,GROUP...]:KEY=VALUE`. VALUE may be `file:PATH` (the
    /// file's content, surrounding whitespace dropped) or `env:NAME` (an environment variable), so a
    /// key need not appear in the process list. `headerPrefix` goes before KEY (gRPC's
    /// `triton-grpc-protocol-`). A group restricted twice is refused, as Triton does.
    public static func parse(
        _ options: [String], option: String, headerPrefix: String = "",
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(TernError) -> APIAccessPolicy {
        var restrictions: [Restriction] = []
        var seen: Set<String> = []
        for text in options {
            func fail(_ problem: String) -> TernError {
                .invalidArgument("\(option) \(text.split(separator: "=").first.map(String.init) ?? text)=…: \(problem)")
            }
            guard let colon = text.firstIndex(of: ":") else { throw fail("expected GROUP[,GROUP...]:KEY=VALUE") }
            let groups = text[..<colon].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            let assignment = text[text.index(after: colon)...]
            guard let equals = assignment.firstIndex(of: "=") else { throw fail("expected KEY=VALUE after the groups") }
            let key = assignment[..<equals].trimmingCharacters(in: .whitespaces)
            var value = String(assignment[assignment.index(after: equals)...])
            guard !groups.isEmpty else { throw fail("names no API group") }
            for group in groups {
                guard allGroups.contains(group) else {
                    throw fail("unknown API group '\(group)' (groups: \(allGroups.joined(separator: ", ")))")
                }
                guard seen.insert(group).inserted else { throw fail("API group '\(group)' is restricted twice") }
            }
            guard !key.isEmpty, key.utf8.allSatisfy({ isHeaderNameByte($0) }) else {
                throw fail("the key name '\(key)' must be a non-empty header name (letters, digits, '-', '_', '.')")
            }
            if value.hasPrefix("file:") {
                let path = String(value.dropFirst(5))
                guard let contents = FileManager.default.contents(atPath: path), let string = String(data: contents, encoding: .utf8) else {
                    throw fail("cannot read the key file \(path)")
                }
                value = string.trimmingCharacters(in: .whitespacesAndNewlines)
            } else if value.hasPrefix("env:") {
                let name = String(value.dropFirst(4))
                guard let variable = environment[name] else { throw fail("environment variable \(name) is not set") }
                value = variable
            }
            guard !value.isEmpty else { throw fail("the key's value is empty") }
            restrictions.append(
                Restriction(groups: Set(groups), header: (headerPrefix + key).lowercased(), keyName: key, value: Array(value.utf8)))
        }
        return APIAccessPolicy(restrictions: restrictions)
    }

    /// The restriction covering `group`, if any.
    public func restriction(for group: String) -> Restriction? {
        restrictions.first { $0.groups.contains(group) }
    }

    /// Why a request to `group` is refused (nil: allowed). `header` returns a request header's
    /// value by lowercased name. The key is compared in constant time.
    public func refusal(group: String, header: (String) -> String?) -> TernError? {
        guard !restrictions.isEmpty, let restriction = restriction(for: group) else { return nil }
        if let given = header(restriction.header), Self.constantTimeEqual(Array(given.utf8), restriction.value) { return nil }
        return .permissionDenied(
            "This API is restricted: the '\(group)' group needs the \(headerWord) '\(restriction.header)' with its key")
    }

    /// The name of the key that opened `group` for a request, for the lifecycle history's record
    /// of who made a change (nil when the group is not restricted).
    public func keyName(for group: String) -> String? { restriction(for: group)?.keyName }

    /// Equal bytes, in time that depends only on the lengths.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt(bitPattern: a.count ^ b.count)
        let count = max(a.count, b.count)
        for index in 0..<count {
            let x = index < a.count ? a[index] : 0
            let y = index < b.count ? b[index] : 0
            difference |= UInt(x ^ y)
        }
        return difference == 0
    }

    private static func isHeaderNameByte(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
    }
}
