import Foundation
import SwiftProtobuf
import TernCore

/// A gRPC service that a program embedding Tern serves on the KServe gRPC port next to
/// `inference.GRPCInferenceService` (the experiments service). Unary methods only: `handle` gets
/// the method name and the serialized request message and returns the serialized response; it
/// runs off the event loop. A `TernError` becomes the call's status (NOT_FOUND, INVALID_ARGUMENT,
/// ...); throw `TernError(.unimplemented, ...)` for a method the service does not have.
public struct GRPCExtensionService: Sendable {
    /// The fully qualified service name, e.g. `tern.experiments.v1.ExperimentService`.
    public let name: String
    /// The API group the service belongs to (what `--grpc-restricted-protocol` names to guard it).
    public let group: String
    /// Further groups a method needs (an experiment's promote swaps a model: `lifecycle`).
    public let alsoRequire: @Sendable (_ method: String) -> [String]
    /// Answers one unary call: takes the method name and the serialized request and returns the serialized response,
    /// throwing a `TernError` that becomes the call's status.
    public let handle: @Sendable (_ method: String, _ message: Data) async throws(TernError) -> Data

    /// Makes a service from its fully qualified name, its API group, the further groups each method needs (none by
    /// default) and its call handler.
    public init(
        name: String, group: String, alsoRequire: @escaping @Sendable (_ method: String) -> [String] = { _ in [] },
        handle: @escaping @Sendable (_ method: String, _ message: Data) async throws(TernError) -> Data
    ) {
        self.name = name
        self.group = group
        self.alsoRequire = alsoRequire
        self.handle = handle
    }
}

/// Protobuf messages in and out of a gRPC call, with the errors every service of this server
/// gives: a request that does not decode is INVALID_ARGUMENT, an answer that does not encode
/// INTERNAL.
public enum GRPCMessage {
    /// Returns the message `decode` makes, throwing INVALID_ARGUMENT naming the message type when it fails.
    public static func decode<M: SwiftProtobuf.Message>(_: M.Type, _ decode: () throws -> M) throws(TernError) -> M {
        do {
            return try decode()
        } catch {
            throw .invalidArgument("cannot decode \(M.protoMessageName): \(error)")
        }
    }

    /// Decodes an `M` from its serialized bytes `data`, throwing INVALID_ARGUMENT when they do not decode.
    public static func decode<M: SwiftProtobuf.Message>(_: M.Type, from data: Data) throws(TernError) -> M {
        try decode(M.self) { try M(serializedBytes: data) }
    }

    /// Serializes `message` into `Bytes`, throwing INTERNAL when it does not encode.
    public static func encode<M: SwiftProtobuf.Message, Bytes: SwiftProtobufContiguousBytes>(_ message: M) throws(TernError) -> Bytes {
        do {
            return try message.serializedBytes()
        } catch {
            throw .internalError("cannot encode \(M.protoMessageName): \(error)")
        }
    }
}
