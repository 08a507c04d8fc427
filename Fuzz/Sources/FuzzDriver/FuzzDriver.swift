/// libFuzzer's entry for programs that keep their own `main`: SwiftPM links each executable
/// target's entry point as `main`, so libFuzzer's own `main` is never pulled in and each target's
/// `@main` hands its arguments and `LLVMFuzzerTestOneInput` to this driver instead.
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

/// Runs libFuzzer with the process's arguments (corpus folders, `-max_total_time=...`, ...) over
/// `target`, and exits with its status: non-zero when an input crashed the target.
public func runFuzzer(_ target: @escaping @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> Never {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, target))
}

#if canImport(Glibc)
import Glibc
#endif
