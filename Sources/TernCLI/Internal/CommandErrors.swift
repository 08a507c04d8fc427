import ArgumentParser
import Foundation
import GRPCCore
import NIOCore
import NIOPosix
import TernCore
import TernClient

/// A command's failure, printed as `Error: <description>` with exit status 1.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Turns what the libraries throw into one line a person can act on: a refused connection names
/// the address and asks whether `tern serve` runs there, instead of NIO's or gRPC's own dump.
enum CommandErrors {
    static let hint = " — is `tern serve` running there?"

    static func friendly(_ error: any Error) -> any Error {
        switch error {
        case let error as NIOConnectionError:
            let reason = error.connectionErrors.first.map { reasonText($0.error) } ?? error.dnsAError.map { "\($0)" } ?? "no address"
            return CommandFailure("cannot connect to \(error.host):\(error.port) (\(reason))\(hint)")
        case let error as IOError:
            return CommandFailure(reasonText(error))
        case ChannelError.connectTimeout(let timeout):
            return CommandFailure("timed out connecting after \(timeout)\(hint)")
        case let error as RPCError:
            // grpc-swift: "Could not establish a connection to [ipv4]127.0.0.1:8001."
            if error.code == .unavailable, let range = error.message.range(of: "connection to ") {
                let address = error.message[range.upperBound...].trimmingCharacters(in: CharacterSet(charactersIn: ". "))
                    .replacingOccurrences(of: "[ipv4]", with: "").replacingOccurrences(of: "[ipv6]", with: "")
                let cause = (error.cause as? IOError).map { " (\(reasonText($0)))" } ?? ""
                return CommandFailure("cannot connect to \(address)\(cause)\(hint)")
            }
            return CommandFailure("\(error.message) (gRPC \(error.code))")
        case let error as SocketError where error.description.hasPrefix("cannot connect"):
            return CommandFailure(error.description + hint)
        case let error as TernError where error.message.hasPrefix("cannot connect to "):
            // TernClient's words for a refused connection (both protocols).
            return CommandFailure(error.message + hint)
        case let error as TernError:
            return CommandFailure(error.message)
        default:
            return error
        }
    }

    /// `Connection refused` rather than `connection reset (error set): Connection refused) (errno: 111)`.
    static func reasonText(_ error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        return "\(error)"
    }
}
