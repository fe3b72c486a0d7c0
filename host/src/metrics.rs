//! Prometheus metrics of one host, rendered by the admin API's `/metrics`.
//!
//! Hot paths hold pre-resolved handles (one per route or plugin) so that
//! counting a message is one atomic add, not a label lookup.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
    exponential_buckets,
};

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections, by route.
    pub connections_open: IntGaugeVec,
    /// Connections accepted since start, by route.
    pub connections_total: IntCounterVec,
    /// Messages received from clients, by route.
    pub messages_in: IntCounterVec,
    /// Messages written to clients, by route.
    pub messages_out: IntCounterVec,
    /// Handler event duration, by plugin and event.
    pub handler_seconds: HistogramVec,
    /// Handler events that trapped, by plugin and event.
    pub traps: IntCounterVec,
    /// Store operation duration, by operation.
    pub store_seconds: HistogramVec,
    /// Store operations that failed, by operation.
    pub store_errors: IntCounterVec,
    /// Queued messages dropped by the drop-oldest slow-reader policy.
    pub outbound_dropped: IntCounter,
}

impl Metrics {
    /// A fresh set of metrics with its own registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let fast = exponential_buckets(2e-6, 4.0, 11).expect("valid buckets"); // 2 µs .. ~2 s
        let m = Metrics {
            connections_open: IntGaugeVec::new(
                Opts::new("wharf_connections_open", "Open WebSocket connections"),
                &["route"],
            )
            .expect("valid metric"),
            connections_total: IntCounterVec::new(
                Opts::new("wharf_connections_total", "WebSocket connections accepted"),
                &["route"],
            )
            .expect("valid metric"),
            messages_in: IntCounterVec::new(
                Opts::new("wharf_messages_received_total", "Messages received from clients"),
                &["route"],
            )
            .expect("valid metric"),
            messages_out: IntCounterVec::new(
                Opts::new("wharf_messages_sent_total", "Messages written to clients"),
                &["route"],
            )
            .expect("valid metric"),
            handler_seconds: HistogramVec::new(
                HistogramOpts::new("wharf_handler_duration_seconds", "Handler event duration").buckets(fast.clone()),
                &["plugin", "event"],
            )
            .expect("valid metric"),
            traps: IntCounterVec::new(
                Opts::new("wharf_handler_traps_total", "Handler events that trapped"),
                &["plugin", "event"],
            )
            .expect("valid metric"),
            store_seconds: HistogramVec::new(
                HistogramOpts::new("wharf_store_duration_seconds", "Store operation duration").buckets(fast),
                &["op"],
            )
            .expect("valid metric"),
            store_errors: IntCounterVec::new(
                Opts::new("wharf_store_errors_total", "Store operations that failed"),
                &["op"],
            )
            .expect("valid metric"),
            outbound_dropped: IntCounter::new(
                "wharf_outbound_dropped_total",
                "Queued messages dropped by the drop-oldest slow-reader policy",
            )
            .expect("valid metric"),
            registry,
        };
        m.registry.register(Box::new(m.outbound_dropped.clone())).expect("unique metric");
        for c in [&m.connections_total, &m.messages_in, &m.messages_out, &m.traps, &m.store_errors] {
            m.registry.register(Box::new(c.clone())).expect("unique metric");
        }
        m.registry.register(Box::new(m.connections_open.clone())).expect("unique metric");
        m.registry.register(Box::new(m.handler_seconds.clone())).expect("unique metric");
        m.registry.register(Box::new(m.store_seconds.clone())).expect("unique metric");
        m
    }

    /// Adds a metric kept elsewhere (the cluster's) to what `/metrics` shows.
    pub fn register(&self, metric: Box<dyn prometheus::core::Collector>) {
        self.registry.register(metric).expect("unique metric");
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encoding to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
