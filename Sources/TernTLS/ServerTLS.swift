import Foundation
import NIOCore
import NIOSSL
import Synchronization
import TernCore

/// Where a listener's certificate, key and (for mutual TLS) client CA live, as Triton's
/// `--grpc-server-cert`, `--grpc-server-key`, `--grpc-root-cert` and `--grpc-use-ssl-mutual` name them.
public struct TLSFiles: Sendable, Hashable {
    /// Path of the PEM file with the server's certificate chain, leaf first.
    public var certificateChain: String
    /// Path of the PEM file with the private key of the leaf certificate.
    public var privateKey: String
    /// CA bundle that client certificates must chain to (mutual TLS).
    public var rootCertificates: String?
    /// Whether clients must present a certificate signed by `rootCertificates`.
    public var mutual: Bool

    /// Makes the file set from the certificate and key paths, and for mutual TLS the client CA bundle.
    public init(certificateChain: String, privateKey: String, rootCertificates: String? = nil, mutual: Bool = false) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.rootCertificates = rootCertificates
        self.mutual = mutual
    }
}

/// A listener's TLS: the files, and the SSL context new connections get. `reload()` (on SIGHUP)
/// reads the files again; connections already open keep the context they started with, so
/// renewing a certificate drops none of them.
public final class ServerTLS: Sendable {
    /// The certificate, key and CA paths that `reload()` reads again.
    public let files: TLSFiles
    /// What ALPN offers ("h2" for gRPC, "http/1.1" for the HTTP ports).
    public let applicationProtocols: [String]
    private let context: Mutex<NIOSSLContext>

    /// Reads the files; throws naming the file that cannot be used.
    public init(files: TLSFiles, applicationProtocols: [String]) throws(TernError) {
        self.files = files
        self.applicationProtocols = applicationProtocols
        self.context = Mutex(try Self.makeContext(files, applicationProtocols: applicationProtocols))
    }

    /// Reads the certificate, key and CA files again for the connections that open from now on.
    /// On an error the context in use stays.
    public func reload() throws(TernError) {
        let fresh = try Self.makeContext(files, applicationProtocols: applicationProtocols)
        context.withLock { $0 = fresh }
    }

    /// The handler that runs TLS on a new connection (first in its pipeline).
    public func makeHandler() -> NIOSSLServerHandler {
        NIOSSLServerHandler(context: context.withLock { $0 })
    }

    /// Adds TLS to a new connection's pipeline, after the handlers already there.
    public func addHandler(to pipeline: ChannelPipeline.SynchronousOperations) throws {
        try pipeline.addHandler(makeHandler())
    }

    static func makeContext(_ files: TLSFiles, applicationProtocols: [String]) throws(TernError) -> NIOSSLContext {
        func load<T>(_ what: String, _ path: String, _ read: () throws -> T) throws(TernError) -> T {
            do {
                return try read()
            } catch {
                throw .invalidArgument("TLS \(what) \(path): cannot be read as PEM (\(error))")
            }
        }
        let chain = try load("certificate", files.certificateChain) { try NIOSSLCertificate.fromPEMFile(files.certificateChain) }
        guard !chain.isEmpty else { throw .invalidArgument("TLS certificate \(files.certificateChain): holds no certificate") }
        let key = try load("private key", files.privateKey) { try NIOSSLPrivateKey(file: files.privateKey, format: .pem) }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = applicationProtocols
        if files.mutual {
            guard let roots = files.rootCertificates else {
                throw .invalidArgument("mutual TLS needs the CA that signs client certificates (--grpc-root-cert / --http-root-cert)")
            }
            let ca = try load("root certificate", roots) { try NIOSSLCertificate.fromPEMFile(roots) }
            configuration.trustRoots = .certificates(ca)
            configuration.certificateVerification = .noHostnameVerification
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw .invalidArgument("TLS: certificate \(files.certificateChain) and key \(files.privateKey) cannot be used together (\(error))")
        }
    }
}

extension ServerTLS {
    /// The common name of the client certificate a connection presented (mutual TLS), if any.
    public static func peerName(_ pipeline: ChannelPipeline.SynchronousOperations) -> String? {
        guard let certificate = try? pipeline.nioSSL_peerCertificate() else { return nil }
        // swift-nio-ssl offers the common name through its description only.
        let text = certificate.description
        guard let range = text.range(of: ";common_name=") else { return nil }
        let rest = text[range.upperBound...]
        return String(rest.prefix { $0 != ";" && $0 != ">" })
    }
}
