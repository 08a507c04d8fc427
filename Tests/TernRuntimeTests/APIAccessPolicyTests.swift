import Foundation
import Testing
import TernCore
@testable import TernRuntime

/// Restricted API groups: Triton's option syntax, keys from files and the environment, refusals
/// that name the group, and the constant-time comparison.
@Suite struct APIAccessPolicyTests {
    @Test func parsesTritonsSyntaxAndRefusesWithoutTheKey() throws {
        let policy = try APIAccessPolicy.parse(["model-repository,shared-memory:admin-key=SECRET", "lifecycle:ops=OPS"], option: "--http-restricted-api")
        let none: (String) -> String? = { _ in nil }
        #expect(policy.refusal(group: "inference", header: none) == nil)
        let refusal = try #require(policy.refusal(group: "model-repository", header: none))
        #expect(refusal.code == .permissionDenied)
        #expect(refusal.message.contains("'model-repository'") && refusal.message.contains("'admin-key'"))
        #expect(policy.refusal(group: "shared-memory", header: { $0 == "admin-key" ? "SECRET" : nil }) == nil)
        #expect(policy.refusal(group: "shared-memory", header: { $0 == "admin-key" ? "SECRET2" : nil }) != nil)
        #expect(policy.refusal(group: "lifecycle", header: { $0 == "ops" ? "OPS" : nil }) == nil)
        #expect(policy.refusal(group: "lifecycle", header: { $0 == "admin-key" ? "SECRET" : nil }) != nil, "each group opens only with its own key")
        #expect(policy.keyName(for: "lifecycle") == "ops")
    }

    @Test func grpcKeysCarryTritonsPrefix() throws {
        let policy = try APIAccessPolicy.parse(["inference:k=v"], option: "--grpc-restricted-protocol", headerPrefix: "triton-grpc-protocol-")
        #expect(policy.refusal(group: "inference", header: { $0 == "triton-grpc-protocol-k" ? "v" : nil }) == nil)
        #expect(policy.refusal(group: "inference", header: { $0 == "k" ? "v" : nil }) != nil)
    }

    @Test func keysComeFromFilesAndTheEnvironment() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("tern-key-\(UUID().uuidString)")
        try "FROMFILE\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let policy = try APIAccessPolicy.parse(
            ["health:a=file:\(file.path)", "metadata:b=env:TERN_KEY"], option: "--x", environment: ["TERN_KEY": "FROMENV"])
        #expect(policy.refusal(group: "health", header: { $0 == "a" ? "FROMFILE" : nil }) == nil)
        #expect(policy.refusal(group: "metadata", header: { $0 == "b" ? "FROMENV" : nil }) == nil)
    }

    @Test func badOptionsAreRefusedNamingTheProblem() {
        for (option, expected) in [
            ("bogus:k=v", "unknown API group 'bogus'"), ("health", "expected GROUP"), ("health:k", "KEY=VALUE"),
            ("health:k=", "empty"), ("health:k=env:TERN_NOT_SET_ANYWHERE", "not set"), ("health:k=file:/nonexistent/key", "cannot read"),
        ] {
            do {
                _ = try APIAccessPolicy.parse([option], option: "--http-restricted-api", environment: [:])
                Issue.record("\(option) was accepted")
            } catch {
                #expect(error.message.contains(expected), "\(option): \(error.message)")
            }
        }
        #expect(throws: TernError.self) { try APIAccessPolicy.parse(["health:a=1", "health:b=2"], option: "--x") }
    }

    @Test func comparisonIsExactAndLengthAware() {
        #expect(APIAccessPolicy.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!APIAccessPolicy.constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        #expect(!APIAccessPolicy.constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!APIAccessPolicy.constantTimeEqual([], Array("a".utf8)))
        // 256 bytes apart in length must not compare equal through the truncated length byte.
        #expect(!APIAccessPolicy.constantTimeEqual(Array(repeating: 0, count: 256), []))
    }
}
