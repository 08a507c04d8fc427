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

    @Test func cpuSamplerReportsAFraction() {
        let sampler = CPUSampler()
        _ = sampler.sample()
        var x = 0.0
        for i in 0..<2_000_000 { x += Double(i) }
        if let value = sampler.sample() { #expect(value >= 0 && value <= 1, "\(value) \(x)") }
    }
}
