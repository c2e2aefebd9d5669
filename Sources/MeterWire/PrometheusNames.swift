import Prometheus

// The Prometheus text exposition format is one more format the service and the mock both speak:
// both name their metrics this way.

/// Metrics named by their full Prometheus name, through swift-prometheus's descriptor API (its
/// `make…(name:…)` family is deprecated). A descriptor with an empty unit yields the name as given.
extension PrometheusCollectorRegistry {
    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    package func meterCounter(name: String, labels: [(String, String)] = [], help: String) -> Counter {
        labels.isEmpty ? makeCounter(descriptor: Self.descriptor(name, help))
            : makeCounter(descriptor: Self.descriptor(name, help), labels: labels)
    }

    package func meterGauge(name: String, labels: [(String, String)] = [], help: String) -> Gauge {
        labels.isEmpty ? makeGauge(descriptor: Self.descriptor(name, help))
            : makeGauge(descriptor: Self.descriptor(name, help), labels: labels)
    }

    package func meterDurationHistogram(name: String, labels: [(String, String)] = [], buckets: [Duration], help: String) -> DurationHistogram {
        labels.isEmpty ? makeDurationHistogram(descriptor: Self.descriptor(name, help), buckets: buckets)
            : makeDurationHistogram(descriptor: Self.descriptor(name, help), labels: labels, buckets: buckets)
    }

    package func meterValueHistogram(name: String, buckets: [Double], help: String) -> ValueHistogram {
        makeValueHistogram(descriptor: Self.descriptor(name, help), buckets: buckets)
    }
}
