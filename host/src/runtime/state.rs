//! The data of one Wasmtime `Store`: the sandbox's WASI context, its resource
//! limits, the plugin it belongs to, and the event being handled.

use std::sync::Arc;

use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::guest_output::{GuestOutput, Stream};
use crate::handler::{ConnId, Effect};
use crate::metrics::Metrics;
use crate::store::Store;

/// What every instance of one plugin shares.
pub(crate) struct PluginEnv {
    /// The plugin's name (from the config).
    pub name: Arc<str>,
    /// The key/value namespace the plugin owns.
    pub namespace: String,
    /// The channel namespace the plugin's channel names are in.
    pub channel_namespace: String,
    /// The host's store.
    pub store: Store,
    /// Channel history (the hub's).
    pub history: Arc<dyn crate::handler::ChannelHistory>,
    /// Per-event caps.
    pub caps: EventCaps,
    /// The host's metrics.
    pub metrics: Arc<Metrics>,
    /// Linear memory all instances may hold together.
    pub budget: Arc<super::memory::MemoryBudget>,
    /// A warm instance whose memory grew by more than this since it was
    /// instantiated is dropped instead of pooled.
    pub pool_growth_bytes: usize,
    /// The language the component was written in.
    pub language: super::GuestLanguage,
    /// The clock timers are due by.
    pub clock: crate::clock::Clock,
    /// Whether the component exports `on-timer` (else it may not set
    /// timers).
    pub on_timer: bool,
}

/// Bounds on what one event of a plugin may ask of the host. Past a cap the
/// import answers `quota-exceeded` (or `too-large`); the event goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventCaps {
    /// Largest message a handler may emit, publish or broadcast.
    pub max_message_bytes: usize,
    /// Most messages (emit, broadcast, publish) per event.
    pub max_messages: u32,
    /// Most bytes of those messages per event.
    pub max_bytes: usize,
    /// Most store operations (key/value, metadata, presence) per event.
    pub max_store_ops: u32,
    /// Largest key/value or metadata value.
    pub max_value_bytes: usize,
    /// Most effects of any kind (messages, closes, subscriptions) per event.
    pub max_effects: usize,
    /// Epoch ticks an event may run.
    pub deadline_ticks: u64,
    /// Linear memory cap of one instance, in bytes.
    pub memory_bytes: usize,
    /// Timers the plugin may have pending at once (not per event).
    pub max_timers: u64,
}

/// The event being handled right now.
pub(crate) struct Call {
    /// The connection the event belongs to.
    pub conn: ConnId,
    /// Its route.
    pub route: Arc<str>,
    /// The route's handlers, which `pipeline.forward` may hand a message to.
    pub handlers: Arc<crate::handler::RouteHandlers>,
    /// Effects asked for so far, applied by the host after the event.
    pub effects: Vec<Effect>,
    /// Epoch ticks left before the event is interrupted.
    pub ticks_left: u64,
    /// Messages sent so far.
    pub messages: u32,
    /// Bytes of those messages.
    pub bytes: usize,
    /// Store operations so far.
    pub store_ops: u32,
    /// Bytes the `log` import wrote to the host log so far.
    pub log_bytes: usize,
    /// When the event's time is up: host calls that wait (on the store)
    /// give up then.
    pub deadline: tokio::time::Instant,
    /// Changes made during the event that are not durable yet (timers on
    /// the embedded store): the event ends once they are.
    pub unwritten: Vec<crate::store::timers::Durable>,
    /// Whether the event is a message, which `pipeline.forward` may hand on.
    pub forwardable: bool,
}

impl Call {
    /// Starts event `event`, whose host calls give up at `deadline`, with
    /// `ticks` epoch ticks to run.
    pub fn begin(&mut self, event: &crate::handler::EventContext, deadline: tokio::time::Instant, ticks: u64) {
        self.conn = event.conn;
        self.route.clone_from(&event.route);
        self.handlers.clone_from(&event.handlers);
        self.effects.clear();
        self.ticks_left = ticks;
        self.messages = 0;
        self.bytes = 0;
        self.store_ops = 0;
        self.log_bytes = 0;
        self.deadline = deadline;
        self.unwritten.clear();
        self.forwardable = false;
    }
}

impl Default for Call {
    fn default() -> Self {
        Call {
            conn: 0,
            route: Arc::from(""),
            handlers: Default::default(),
            effects: Vec::new(),
            ticks_left: 0,
            messages: 0,
            bytes: 0,
            store_ops: 0,
            log_bytes: 0,
            deadline: tokio::time::Instant::now(),
            unwritten: Vec::new(),
            forwardable: false,
        }
    }
}

/// The data of one Store.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: super::memory::Limiter,
    pub env: Arc<PluginEnv>,
    pub call: Call,
}

impl InstanceState {
    /// A sandbox with no files, network, environment or arguments; its
    /// stdout and stderr go to the host log.
    pub fn new(env: Arc<PluginEnv>) -> Self {
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::new(env.name.clone(), Stream::Stdout))
            .stderr(GuestOutput::new(env.name.clone(), Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        InstanceState {
            wasi,
            table: ResourceTable::new(),
            limits: super::memory::Limiter::new(env.caps.memory_bytes, env.budget.clone()),
            env,
            call: Call::default(),
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
