import Prometheus
import StatusHTTP

/// The control server's Prometheus metrics, registered on one registry (no global state).
public struct ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let connectedStreams: Gauge
    let headRevision: Gauge
    let commitBatches: Counter
    let committedRevisions: Counter
    /// Writes that failed in SQLite because the database or its disk was full, and otherwise.
    let failedWritesFull: Counter
    let failedWritesError: Counter
    let deltaBytes: Counter
    let sentBytes: Counter
    let catchUps: Counter
    let snapshots: Counter
    let nacks: Counter
    let writeDuration: DurationHistogram

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        func name(_ subsystem: String, _ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "kubeproxy", subsystem: subsystem, metricName: metric, unitName: unit, helpText: help)
        }
        self.registry = registry
        connectedStreams = registry.makeGauge(descriptor: name("nodesync", "streams", "", "Open NodeSync streams."))
        headRevision = registry.makeGauge(descriptor: name("store", "head_revision", "", "Last committed revision."))
        commitBatches = registry.makeCounter(
            descriptor: name("store", "commit_batches", "total", "SQLite transactions that committed revisions (group commit)."))
        committedRevisions = registry.makeCounter(
            descriptor: name("store", "committed_revisions", "total", "Revisions committed; divided by commit batches: the mean group size."))
        let failedWrites = name(
            "store", "failed_writes", "total",
            "Writes that failed in SQLite (reason full: the database or its disk was full); none of them was stored.")
        failedWritesFull = registry.makeCounter(descriptor: failedWrites, labels: [("reason", "full")])
        failedWritesError = registry.makeCounter(descriptor: failedWrites, labels: [("reason", "error")])
        deltaBytes = registry.makeCounter(
            descriptor: name("nodesync", "encoded_delta_bytes", "total", "Bytes of deltas, encoded once per commit batch."))
        sentBytes = registry.makeCounter(
            descriptor: name("nodesync", "sent_bytes", "total", "Message bytes written to all NodeSync streams."))
        catchUps = registry.makeCounter(
            descriptor: name("nodesync", "catchups", "total", "Merged deltas prepared for streams that were behind."))
        snapshots = registry.makeCounter(descriptor: name("nodesync", "snapshots", "total", "Snapshots read for streams."))
        nacks = registry.makeCounter(descriptor: name("nodesync", "nacks", "total", "NACKs received from nodes."))
        writeDuration = registry.makeDurationHistogram(
            descriptor: name("registry", "write_duration", "seconds", "Duration of durable Apply and Delete calls."),
            buckets: [
                .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
                .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
            ])
    }

    /// The registry and the process metrics in Prometheus text exposition format.
    public func render() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        ProcessMetrics.append(to: &buffer)
        return buffer
    }
}
