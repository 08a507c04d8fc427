import Foundation
import Testing
@testable import TernCore

@Suite struct ModelConfigParsingTests {
    static let fullConfig = """
        name: "full"
        platform: "onnxruntime_onnx"
        backend: "onnxruntime"
        max_batch_size: 8
        version_policy: { latest: { num_versions: 2 } }
        default_model_filename: "net.onnx"
        input [
          { name: "a" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, -1, -1 ] },
          { name: "b" data_type: TYPE_STRING dims: [ 1 ] reshape: { shape: [ ] } optional: true }
        ]
        output [ { name: "c" data_type: TYPE_FP16 dims: [ 10 ] label_filename: "labels.txt" } ]
        instance_group [ { count: 2 kind: KIND_CPU }, { count: 1 kind: KIND_GPU gpus: [ 0, 1 ] } ]
        dynamic_batching {
          preferred_batch_size: [ 4, 8 ]
          max_queue_delay_microseconds: 100
          preserve_ordering: true
          priority_levels: 3
          default_priority_level: 2
          default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 5000 allow_timeout_override: true max_queue_size: 16 }
          priority_queue_policy { key: 1 value: { timeout_action: REJECT max_queue_size: 4 } }
        }
        parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
        model_warmup [ { name: "w" batch_size: 1 inputs { key: "a" value: { data_type: TYPE_FP32 dims: [ 3, 8, 8 ] zero_data: true } } } ]
        optimization { graph { level: 1 } execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ] } }
        some_future_field: 7
        """

    @Test func parsesEveryCommonSection() throws {
        let config = try ModelConfig.parse(text: Self.fullConfig)
        #expect(config.name == "full")
        #expect(config.maxBatchSize == 8)
        #expect(config.versionPolicy.latest.numVersions == 2)
        #expect(config.input.map(\.name) == ["a", "b"])
        #expect(config.input[0].dims == [3, -1, -1])
        #expect(config.input[1].dataType == .typeString && config.input[1].optional && config.input[1].hasReshape)
        #expect(config.output[0].dataType == .typeFp16)
        #expect(config.instanceGroup.map(\.count) == [2, 1] && config.instanceGroup[1].kind == .gpu)
        #expect(config.dynamicBatching.preferredBatchSize == [4, 8])
        #expect(config.dynamicBatching.defaultQueuePolicy.timeoutAction == .delay)
        #expect(config.dynamicBatching.priorityQueuePolicy[1]?.maxQueueSize == 4)
        #expect(config.parameters["intra_op_thread_count"]?.stringValue == "2")
        #expect(config.modelWarmup[0].inputs["a"]?.zeroData == true)
        #expect(config.optimization.executionAccelerators.gpuExecutionAccelerator[0].parameters["precision_mode"] == "FP16")
        try config.validate(file: "full/config.pbtxt")
    }

    @Test func sequenceBatchingAndEnsembleParse() throws {
        let config = try ModelConfig.parse(text: """
            name: "seq"
            max_batch_size: 4
            sequence_batching {
              max_sequence_idle_microseconds: 5000000
              control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
                              { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] } ]
              oldest { max_candidate_sequences: 4 preferred_batch_size: [ 2 ] }
              state [ { input_name: "s_in" output_name: "s_out" data_type: TYPE_FP32 dims: [ 4 ]
                        initial_state: [ { name: "zero" data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } ] } ]
            }
            """)
        #expect(config.sequenceBatching.controlInput.count == 2)
        #expect(config.sequenceBatching.oldest.maxCandidateSequences == 4)
        #expect(config.sequenceBatching.state[0].initialState[0].zeroData)
        let ensemble = try ModelConfig.parse(text: """
            name: "ens" platform: "ensemble"
            ensemble_scheduling { step [ { model_name: "a" model_version: -1 input_map { key: "x" value: "IN" } output_map { key: "y" value: "OUT" } } ] }
            """)
        #expect(ensemble.ensembleScheduling.step[0].inputMap["x"] == "IN")
    }

    @Test func unknownEnumNamesTheFileLineAndField() {
        let text = """
            name: "m"
            max_batch_size: 2
            input [
              { name: "x" data_type: TYPE_FLOAT32 dims: [ 4 ] }
            ]
            """
        #expect {
            try ModelConfig.parse(text: text, file: "/repo/m/config.pbtxt")
        } throws: { error in
            let message = (error as? TernError)?.message ?? ""
            return message.contains("/repo/m/config.pbtxt:4") && message.contains("unknown enum") && message.contains("input")
                && message.contains("TYPE_FLOAT32")
        }
    }

    @Test func malformedTextIsReportedAtItsLine() {
        #expect {
            try ModelConfig.parse(text: "name: \"m\"\nmax_batch_size: eight\n", file: "c.pbtxt")
        } throws: { error in
            ((error as? TernError)?.message ?? "").hasPrefix("c.pbtxt:2:")
        }
    }

    @Test func validationNamesTheField() throws {
        let cases: [(String, String)] = [
            ("name: \"m\" max_batch_size: -1", "max_batch_size"),
            ("name: \"m\" input [ { name: \"x\" dims: [ 2 ] } ]", "input[0] 'x'.data_type"),
            ("name: \"m\" input [ { name: \"x\" data_type: TYPE_FP32 dims: [ -3 ] } ]", "input[0] 'x'.dims"),
            ("name: \"m\" output [ { name: \"y\" data_type: TYPE_FP32 dims: [ 2 ] }, { name: \"y\" data_type: TYPE_FP32 dims: [ 2 ] } ]", "appears twice"),
            ("name: \"m\" max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 8 ] }", "preferred_batch_size"),
            ("name: \"m\" version_policy { specific { versions: [ 0 ] } }", "version_policy.specific"),
            ("name: \"m\" instance_group [ { kind: KIND_MODEL } ]", "instance_group[0].kind"),
            ("name: \"m\" input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 2, 3 ] reshape: { shape: [ 5 ] } } ]", "reshape"),
        ]
        for (text, field) in cases {
            let config = try ModelConfig.parse(text: text)
            #expect(throws: TernError.self, "\(field)") { try config.validate(file: "m/config.pbtxt") }
            do {
                try config.validate(file: "m/config.pbtxt")
            } catch {
                #expect(error.message.contains(field), "\(error.message) should name \(field)")
                #expect(error.message.hasPrefix("m/config.pbtxt"))
            }
        }
    }

    @Test func autoCompleteFillsFromTheModelSignature() {
        var config = ModelConfig()
        config.name = "m"
        let signature = ModelSignature(
            inputs: [TensorSpec(name: "X", dataType: .fp32, shape: [-1, 64])],
            outputs: [TensorSpec(name: "label", dataType: .int64, shape: [-1]), TensorSpec(name: "p", dataType: .fp32, shape: [-1, 10])])
        config.autoComplete(from: signature)
        #expect(config.maxBatchSize == ModelConfig.defaultMaxBatchSize)
        #expect(config.input.map(\.dims) == [[64]])
        #expect(config.output[0].dims == [1] && config.output[0].hasReshape && config.output[0].reshape.shape.isEmpty)
        #expect(config.output[1].dims == [10])
        #expect(throws: Never.self) { try config.check(against: signature, file: "m") }
    }

    @Test func autoCompleteLeavesFixedShapesUnbatched() throws {
        var config = ModelConfig()
        config.name = "m"
        let signature = ModelSignature(
            inputs: [TensorSpec(name: "x", dataType: .int32, shape: [1, 3])],
            outputs: [TensorSpec(name: "y", dataType: .int32, shape: [1, 3])])
        config.autoComplete(from: signature)
        #expect(config.maxBatchSize == 0)
        #expect(config.input[0].dims == [1, 3])
    }

    @Test func checkRejectsAConfigThatDisagreesWithTheModel() throws {
        let signature = ModelSignature(
            inputs: [TensorSpec(name: "x", dataType: .fp32, shape: [-1, 4])], outputs: [TensorSpec(name: "y", dataType: .fp32, shape: [-1, 4])])
        let wrongType = try ModelConfig.parse(text: "name: \"m\" max_batch_size: 2 input [ { name: \"x\" data_type: TYPE_INT32 dims: [ 4 ] } ]")
        #expect(throws: TernError.self) { try wrongType.check(against: signature, file: "m") }
        let wrongShape = try ModelConfig.parse(text: "name: \"m\" max_batch_size: 2 input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 5 ] } ]")
        #expect(throws: TernError.self) { try wrongShape.check(against: signature, file: "m") }
        let wrongName = try ModelConfig.parse(text: "name: \"m\" max_batch_size: 2 input [ { name: \"z\" data_type: TYPE_FP32 dims: [ 4 ] } ]")
        #expect(throws: TernError.self) { try wrongName.check(against: signature, file: "m") }
    }
}
