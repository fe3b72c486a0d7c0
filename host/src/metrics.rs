//! Prometheus metrics of one host, rendered by the admin API's `/metrics`.
//!
//! Hot paths hold pre-resolved handles (one per route or plugin) so that
//! counting a message is one atomic add, not a label lookup.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, exponential_buckets,
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
    /// Linear memory the live instances hold together, in bytes.
    pub instance_memory_bytes: IntGauge,
    /// Handler `log` lines dropped because their event's log budget was
    /// spent, by plugin.
    pub guest_log_dropped: IntCounterVec,
    /// Requests to HTTP backends that failed, by route and reason
    /// (`unreachable`, `timeout`, `status`, `garbage`, `protocol`).
    pub backend_errors: IntCounterVec,
    /// Handshakes refused for their token, by route and reason (`missing`,
    /// `invalid`).
    pub auth_refused: IntCounterVec,
    /// Publications to channels that keep history, by result (`kept`,
    /// `failed`: the store could not take it, and nobody received it).
    pub history_publications: IntCounterVec,
    /// Timers pending, as the scheduler last counted them (on Redis: on
    /// every host).
    pub timers_pending: IntGauge,
    /// Timer firings whose `on-timer` ran, by plugin.
    pub timers_fired: IntCounterVec,
    /// Timer firings that failed and will run again, by plugin.
    pub timers_retried: IntCounterVec,
    /// Timers dropped after their last retry failed, by plugin.
    pub timers_dropped: IntCounterVec,
    /// How long after its due time each firing started.
    pub timer_lateness_seconds: Histogram,
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
            guest_log_dropped: IntCounterVec::new(
                Opts::new(
                    "wharf_guest_log_dropped_total",
                    "Handler log lines dropped because their event's log budget was spent",
                ),
                &["plugin"],
            )
            .expect("valid metric"),
            backend_errors: IntCounterVec::new(
                Opts::new(
                    "wharf_backend_errors_total",
                    "Requests to WebSocket-over-HTTP backends that failed, by reason (unreachable, timeout, status, garbage, protocol)",
                ),
                &["route", "reason"],
            )
            .expect("valid metric"),
            auth_refused: IntCounterVec::new(
                Opts::new(
                    "wharf_auth_refused_total",
                    "Handshakes refused with 401 for their connection token, by reason (missing, invalid)",
                ),
                &["route", "reason"],
            )
            .expect("valid metric"),
            history_publications: IntCounterVec::new(
                Opts::new(
                    "wharf_history_publications_total",
                    "Publications to channels that keep history, by result (kept, failed)",
                ),
                &["result"],
            )
            .expect("valid metric"),
            timers_pending: IntGauge::new("wharf_timers_pending", "Timers pending (on Redis: on every host)")
                .expect("valid metric"),
            timers_fired: IntCounterVec::new(
                Opts::new("wharf_timers_fired_total", "Timer firings whose on-timer ran"),
                &["plugin"],
            )
            .expect("valid metric"),
            timers_retried: IntCounterVec::new(
                Opts::new("wharf_timers_retried_total", "Timer firings that failed and will run again"),
                &["plugin"],
            )
            .expect("valid metric"),
            timers_dropped: IntCounterVec::new(
                Opts::new("wharf_timers_dropped_total", "Timers dropped after their last retry failed"),
                &["plugin"],
            )
            .expect("valid metric"),
            timer_lateness_seconds: Histogram::with_opts(
                HistogramOpts::new("wharf_timer_lateness_seconds", "How long after its due time a timer firing started")
                    .buckets(exponential_buckets(1e-3, 2.0, 14).expect("valid buckets")), // 1 ms .. ~8 s
            )
            .expect("valid metric"),
            instance_memory_bytes: IntGauge::new(
                "wharf_instance_memory_bytes",
                "Linear memory the live handler instances hold together (limits.instance_memory_mib bounds it)",
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
        m.registry.register(Box::new(m.instance_memory_bytes.clone())).expect("unique metric");
        for c in [
            &m.connections_total,
            &m.messages_in,
            &m.messages_out,
            &m.traps,
            &m.store_errors,
            &m.guest_log_dropped,
            &m.backend_errors,
            &m.auth_refused,
            &m.history_publications,
            &m.timers_fired,
            &m.timers_retried,
            &m.timers_dropped,
        ] {
            m.registry.register(Box::new(c.clone())).expect("unique metric");
        }
        m.registry.register(Box::new(m.connections_open.clone())).expect("unique metric");
        m.registry.register(Box::new(m.handler_seconds.clone())).expect("unique metric");
        m.registry.register(Box::new(m.store_seconds.clone())).expect("unique metric");
        m.registry.register(Box::new(m.timers_pending.clone())).expect("unique metric");
        m.registry.register(Box::new(m.timer_lateness_seconds.clone())).expect("unique metric");
        m
    }

    /// The metrics of a host that shares Redis with others, registered with
    /// these; called once, by the cluster.
    pub fn cluster(&self) -> ClusterMetrics {
        let m = ClusterMetrics {
            redis_up: IntGauge::new("wharf_redis_up", "1 when Redis answers and this host is subscribed")
                .expect("valid metric"),
            outages: IntCounter::new("wharf_redis_outages_total", "Times Redis became unreachable")
                .expect("valid metric"),
            hosts: IntGauge::new("wharf_cluster_hosts", "Hosts with a live heartbeat, this one included")
                .expect("valid metric"),
            sent: IntCounter::new("wharf_cluster_frames_sent_total", "Frames published to other hosts")
                .expect("valid metric"),
            received: IntCounter::new("wharf_cluster_frames_received_total", "Frames received from other hosts")
                .expect("valid metric"),
            undelivered: IntCounterVec::new(
                Opts::new(
                    "wharf_cluster_undelivered_total",
                    "Cross-host deliveries that did not arrive, by reason (redis_unavailable, host_unreachable, queue_full, gone, malformed)",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            reaped: IntCounter::new(
                "wharf_cluster_reaped_connections_total",
                "Connections of dead hosts removed from presence by this host",
            )
            .expect("valid metric"),
        };
        for g in [&m.redis_up, &m.hosts] {
            self.registry.register(Box::new(g.clone())).expect("unique metric");
        }
        for c in [&m.outages, &m.sent, &m.received, &m.reaped] {
            self.registry.register(Box::new(c.clone())).expect("unique metric");
        }
        self.registry.register(Box::new(m.undelivered.clone())).expect("unique metric");
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encoding to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The metrics of the link to the other hosts sharing Redis.
#[derive(Clone)]
pub struct ClusterMetrics {
    /// 1 when Redis answers and this host is subscribed.
    pub redis_up: IntGauge,
    /// Times Redis became unreachable.
    pub outages: IntCounter,
    /// Hosts with a live heartbeat, this one included.
    pub hosts: IntGauge,
    /// Frames published to other hosts.
    pub sent: IntCounter,
    /// Frames received from other hosts.
    pub received: IntCounter,
    /// Cross-host deliveries that did not arrive, by reason.
    pub undelivered: IntCounterVec,
    /// Connections of dead hosts this host removed from presence.
    pub reaped: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
