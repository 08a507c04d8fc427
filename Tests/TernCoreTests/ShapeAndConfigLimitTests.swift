import Foundation
import Testing
import TernCore

/// Sizes from the wire or a config never trap: element and byte counts are checked, config paths
/// stay in the model's folder, and declared sizes have limits.
@Suite struct ShapeAndConfigLimitTests {
    @Test func elementAndByteCountsReportOverflowInsteadOfTrapping() throws {
        #expect(Tensor.checkedElementCount(of: [2, 3, 4]) == 24)
        #expect(Tensor.checkedElementCount(of: [4_294_967_296, 4_294_967_296]) == nil)
        #expect(Tensor.elementCount(of: [4_294_967_296, 4_294_967_296]) == Int.max)
        #expect(Tensor.byteCount(of: [3], type: .fp64) == 24)
        #expect(Tensor.byteCount(of: [2_305_843_009_213_693_952], type: .fp64) == nil)
        #expect(Tensor.byteCount(of: [2], type: .bytes) == nil)
        let tensor = Tensor(name: "INPUT0", dataType: .fp64, shape: [2_305_843_009_213_693_952], data: Data(count: 8))
        #expect(throws: TernError.self) { try tensor.validateByteSize() }
        do {
            try tensor.validateByteSize()
        } catch {
            #expect(error.message.contains("more bytes than a tensor can have"))
        }
    }

    @Test func declaredShapesAreCheckedAgainstTheRequestLimit() throws {
        try Tensor.checkDeclared(shape: [2, 3], type: .fp32, name: "x", limit: 24)
        #expect(throws: TernError.self) { try Tensor.checkDeclared(shape: [2, 4], type: .fp32, name: "x", limit: 24) }
        #expect(throws: TernError.self) { try Tensor.checkDeclared(shape: [7], type: .bytes, name: "x", limit: 24) }  // 4 bytes each at least
        #expect(throws: TernError.self) { try Tensor.checkDeclared(shape: [Int64.max, 2], type: .bytes, name: "x") }
        try Tensor.checkDeclared(shape: [1 << 40], type: .uint8, name: "x")  // no limit: only overflow
    }

    func config(_ text: String) throws -> ModelConfig { try ModelConfig.parse(text: text, file: "m/config.pbtxt") }

    @Test func configPathsStayInsideTheModelFolder() throws {
        for bad in ["../../other/1/model.onnx", "/etc/passwd", "a/../../b.onnx"] {
            let c = try config("name: \"m\"\ndefault_model_filename: \"\(bad)\"")
            #expect(throws: TernError.self) { try c.validatePaths(file: "m/config.pbtxt") }
        }
        let labels = try config("name: \"m\"\noutput [{ name: \"o\" data_type: TYPE_FP32 dims: [1] label_filename: \"../secret\" }]")
        #expect(throws: TernError.self) { try labels.validatePaths(file: "m/config.pbtxt") }
        let fine = try config("name: \"m\"\ndefault_model_filename: \"sub/model.onnx\"")
        try fine.validatePaths(file: "m/config.pbtxt")
    }

    @Test func declaredSizesHaveLimits() throws {
        let batch = try config("name: \"m\"\nmax_batch_size: 2147483647")
        #expect(throws: TernError.self) { try batch.validateLimits(file: "f") }
        let dims = try config("name: \"m\"\ninput [{ name: \"i\" data_type: TYPE_FP32 dims: [9223372036854775807] }]")
        #expect(throws: TernError.self) { try dims.validateLimits(file: "f") }
        let product = try config("name: \"m\"\nmax_batch_size: 1024\ninput [{ name: \"i\" data_type: TYPE_FP64 dims: [2147483647, 2147483647, 2147483647] }]")
        #expect(throws: TernError.self) { try product.validateLimits(file: "f") }
        let instances = try config("name: \"m\"\ninstance_group [{ count: 100000 kind: KIND_CPU }]")
        #expect(throws: TernError.self) { try instances.validateLimits(file: "f") }
        let warmup = try config("name: \"m\"\nmodel_warmup [{ name: \"w\" batch_size: 1 inputs { key: \"i\" value: { data_type: TYPE_FP32 dims: [2147483647, 2147483647] zero_data: true } } }]")
        #expect(throws: TernError.self) { try warmup.validateLimits(file: "f") }
        let bigWarmup = try config("name: \"m\"\nmodel_warmup [{ name: \"w\" batch_size: 64 inputs { key: \"i\" value: { data_type: TYPE_FP32 dims: [1048576, 16] zero_data: true } } }]")
        #expect(throws: TernError.self) { try bigWarmup.validateLimits(file: "f") }
        let state = try config("name: \"m\"\nsequence_batching { state [{ input_name: \"s\" output_name: \"t\" data_type: TYPE_FP32 dims: [2147483647, 2147483647] }] }")
        #expect(throws: TernError.self) { try state.validateLimits(file: "f") }
        let fine = try config("name: \"m\"\nmax_batch_size: 8\ninput [{ name: \"i\" data_type: TYPE_FP32 dims: [-1, 224, 224, 3] }]\ninstance_group [{ count: 4 }]")
        try fine.validateLimits(file: "f")
    }

    @Test func configJSONErrorsSayWhatIsWrong() {
        do {
            _ = try ModelConfig.parse(json: "{\"max_batch_size\": 1e99}")
            Issue.record("an out-of-range number was accepted")
        } catch {
            #expect(error.message.contains("out of range"), "\(error.message)")
        }
    }

    @Test func npyFilesWithLengthsPastTheirBytesAreRefused() throws {
        func npy(header: String, headerLength: Int? = nil, body: [UInt8]) -> Data {
            let length = headerLength ?? header.utf8.count
            return Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(header.utf8) + body)
        }
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
        let good = try NumpyFile.decode(npy(header: header, body: [UInt8](repeating: 0, count: 8)), source: "a.npy", name: "x")
        #expect(good.shape == [2] && good.dataType == .fp32)
        for (bad, expected) in [
            (npy(header: header, headerLength: 60_000, body: []), "header says"),
            (npy(header: header, body: [0, 0, 0]), "needs 8"),
            (npy(header: "{'descr': '<f4', 'shape': (99999999999999999999,), }", body: []), "out of range"),
            (Data([0x93] + Array("NUMPY".utf8) + [9, 0, 0, 0]), "version 9"),
            (Data([0x93] + Array("NUMPY".utf8) + [2, 0, 0, 0]), "ends early"),
        ] {
            do {
                _ = try NumpyFile.decode(bad, source: "a.npy", name: "x")
                Issue.record("accepted: \(expected)")
            } catch {
                #expect(error.message.contains(expected), "\(error.message)")
            }
        }
    }
}
