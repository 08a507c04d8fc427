import CoreMetrics
import Testing
@testable import TernMetrics

@Suite struct PrometheusExporterTests {
    @Test func rendersCountersWithTritonNamesAndLabels() {
        let exporter = PrometheusExporter()
        let counter = Counter(label: "nv_inference_request_success", dimensions: [("model", "m"), ("version", "1")], factory: exporter.factory)
        counter.increment(by: 3)
        let text = exporter.render()
        #expect(text.contains(#"nv_inference_request_success{model="m",version="1"} 3"#))
        #expect(text.contains("nv_cpu_memory_total_bytes"))
    }

    @Test func cpuSamplerReportsAFraction() throws {
        let sampler = CPUSampler()
        #expect(sampler.sample() == nil)  // the first sample only sets the baseline
        let deadline = ContinuousClock.now + .milliseconds(50)
        var spins = 0
        while ContinuousClock.now < deadline { spins += 1 }
        let value = try #require(sampler.sample())
        #expect(value >= 0 && value <= 1, "\(value) after \(spins) spins")
    }
}
