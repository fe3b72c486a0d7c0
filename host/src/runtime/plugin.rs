//! One loaded plugin: its pre-linked component and a bounded pool of warm
//! instances. Each event takes an instance, runs, and gives it back; an
//! instance that trapped is dropped, never reused.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{Component, InstancePre};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::bindings::{v1, v2};
use super::capabilities::{from_message, to_message};
use super::state::{InstanceState, PluginEnv};
use crate::handler::{Accept, EventContext, HandlerFailure, Message, OpenRequest, Outcome, Reject};

/// How to run one event: whose it is, and whether on a fresh instance that
/// is dropped afterwards (the route's `instances = "fresh"`) instead of a
/// warm one from the pool.
#[derive(Clone, Copy, Debug)]
pub struct CallContext<'a> {
    /// The connection and route.
    pub event: &'a EventContext,
    /// Run on a fresh instance and drop it afterwards.
    pub fresh: bool,
}

/// Pre-resolved metric handles of one event kind.
struct EventStats {
    seconds: prometheus::Histogram,
    traps: prometheus::IntCounter,
}

/// Index into [`Plugin::stats`].
#[derive(Clone, Copy)]
enum Event {
    Open = 0,
    Message = 1,
    Close = 2,
    Timer = 3,
}

/// The events' names, by [`Event`].
const EVENTS: [&str; 4] = ["on-open", "on-message", "on-close", "on-timer"];

/// Where a component's `handler` export is, for the world version it was
/// built for, and its `timer-handler` export when it has one (0.2.0).
enum Indices {
    V2(v2::GuestIndices, Option<v2::TimerGuestIndices>),
    V1(v1::GuestIndices),
}

/// An instance's `handler` export, and its `timer-handler` export.
enum Exports {
    V2(v2::Guest, Option<v2::TimerGuest>),
    V1(v1::Guest),
}

struct Instance {
    store: Store<InstanceState>,
    exports: Exports,
}

/// A compiled, pre-linked plugin with its instance pool.
pub struct Plugin {
    engine: Engine,
    stats: [EventStats; 4],
    pre: InstancePre<InstanceState>,
    indices: Indices,
    env: Arc<PluginEnv>,
    pool: InstancePool,
}

/// The WIT version of the handler export of a pre-linked component: 0.2.0
/// or the frozen 0.1.0.
fn handler_export(pre: &InstancePre<InstanceState>) -> anyhow::Result<Indices> {
    let v2 = match v2::GuestIndices::new(pre) {
        Ok(i) => return Ok(Indices::V2(i, v2::TimerGuestIndices::new(pre).ok())),
        Err(e) => e,
    };
    match v1::GuestIndices::new(pre) {
        Ok(i) => Ok(Indices::V1(i)),
        Err(v1) => {
            anyhow::bail!("the component does not export the wharf:handler world: {v2}; nor version 0.1.0 of it: {v1}")
        }
    }
}

/// Whether a pre-linked component exports `on-timer` (`timer-handler`,
/// 0.2.0): a plugin without it may not set timers.
pub(crate) fn exports_on_timer(pre: &InstancePre<InstanceState>) -> bool {
    v2::GuestIndices::new(pre).is_ok() && v2::TimerGuestIndices::new(pre).is_ok()
}

/// The upgrade request as version `$v` of the world has it.
macro_rules! request {
    ($v:ident, $req:expr) => {{
        let req = $req;
        $v::types::Request {
            path: req.path,
            query: req.query,
            headers: req.headers,
            subprotocols: req.subprotocols,
            remote_addr: req.remote_addr,
        }
    }};
}

/// A handler's open answer, from any version of the world.
macro_rules! open_answer {
    ($r:expr) => {
        $r.map(|r| {
            r.map(|a| Accept { subprotocol: a.subprotocol, metadata: a.metadata })
                .map_err(|j| Reject { status: j.status, reason: j.reason })
        })
    };
}

fn from_v1(m: v1::types::Message) -> Message {
    match m {
        v1::types::Message::Text(t) => Message::Text(t),
        v1::types::Message::Binary(b) => Message::Binary(b),
    }
}

fn to_v1(m: Message) -> v1::types::Message {
    match m {
        Message::Text(t) => v1::types::Message::Text(t),
        Message::Binary(b) => v1::types::Message::Binary(b),
    }
}

/// Warm instances, last in first out: the instance used last has its memory
/// in the CPU caches, so it is the one handed out next.
struct InstancePool {
    idle: std::sync::Mutex<Vec<Instance>>,
    capacity: usize,
}

impl InstancePool {
    fn new(capacity: usize) -> Self {
        InstancePool { idle: std::sync::Mutex::new(Vec::with_capacity(capacity)), capacity }
    }

    fn pop(&self) -> Option<Instance> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Keeps `inst` unless the pool is full (then it is dropped, freeing
    /// its slot).
    fn push(&self, inst: Instance) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.capacity {
            idle.push(inst);
        }
    }
}

impl Plugin {
    /// A plugin of pre-linked component `pre`, refused when it exports no
    /// version of the `handler` interface.
    pub(crate) fn new(
        engine: &Engine,
        pre: InstancePre<InstanceState>,
        env: Arc<PluginEnv>,
        pool_size: usize,
    ) -> anyhow::Result<Self> {
        let indices = handler_export(&pre)?;
        let stats = ["open", "message", "close", "timer"].map(|event| EventStats {
            seconds: env.metrics.handler_seconds.with_label_values(&[&*env.name, event]),
            traps: env.metrics.traps.with_label_values(&[&*env.name, event]),
        });
        Ok(Plugin { engine: engine.clone(), stats, pre, indices, env, pool: InstancePool::new(pool_size.max(1)) })
    }

    /// The version of the world the component was built for.
    pub fn world_version(&self) -> &'static str {
        match self.indices {
            Indices::V2(..) => "0.2.0",
            Indices::V1(_) => "0.1.0",
        }
    }

    /// The language its component was written in.
    pub fn language(&self) -> super::GuestLanguage {
        self.env.language
    }

    /// The per-event caps this plugin was loaded with.
    pub fn caps(&self) -> super::EventCaps {
        self.env.caps
    }

    /// Runs `on-open`.
    pub async fn on_open(&self, cx: CallContext<'_>, req: OpenRequest) -> Outcome<Result<Accept, Reject>> {
        let started = Instant::now();
        let mut inst = self.take(cx, started).await?;
        let (conn, store) = (cx.event.conn, &mut inst.store);
        let r = match &inst.exports {
            Exports::V2(g, _) => open_answer!(g.call_on_open(store, conn, &request!(v2, req)).await),
            Exports::V1(g) => open_answer!(g.call_on_open(store, conn, &request!(v1, req)).await),
        };
        let store_ops = inst.store.data().call.store_ops;
        let r = written(&mut inst, r).await;
        let (r, fx) = self.finish(inst, cx, Event::Open, started, r)?;
        if let Ok(accept) = &r {
            self.check_accept(&accept.metadata, store_ops)?;
        }
        Ok((r, fx))
    }

    /// Accept metadata goes through the checks `set-metadata` makes: each
    /// key and value within their sizes, and one store operation per entry
    /// within what the event has left.
    fn check_accept(&self, metadata: &[(String, String)], store_ops: u32) -> Result<(), HandlerFailure> {
        let caps = &self.env.caps;
        let over = |why: String| Err(HandlerFailure::OverLimit(format!("plugin `{}` on-open: {why}", self.env.name)));
        if metadata.len() as u64 + u64::from(store_ops) > u64::from(caps.max_store_ops) {
            return over(format!(
                "{} accept metadata entries after {store_ops} store operations are over max_store_ops_per_event ({})",
                metadata.len(),
                caps.max_store_ops
            ));
        }
        for (key, value) in metadata {
            if key.len() > super::capabilities::MAX_KEY_BYTES {
                return over(format!(
                    "an accept metadata key of {} bytes is over {}",
                    key.len(),
                    super::capabilities::MAX_KEY_BYTES
                ));
            }
            if value.len() > caps.max_value_bytes {
                return over(format!(
                    "an accept metadata value of {} bytes is over max_value_bytes ({})",
                    value.len(),
                    caps.max_value_bytes
                ));
            }
        }
        Ok(())
    }

    /// A direct reply is within `max_message_bytes`, like every message a
    /// handler sends. (It is not counted against the event's byte budget:
    /// a handler that spent the budget on emits may still answer.)
    fn check_reply(&self, reply: &Option<Message>) -> Result<(), HandlerFailure> {
        let len = match reply {
            None => return Ok(()),
            Some(m) => crate::history::size(m),
        };
        let max = self.env.caps.max_message_bytes;
        if len <= max {
            return Ok(());
        }
        Err(HandlerFailure::OverLimit(format!(
            "plugin `{}` on-message: a reply of {len} bytes is over max_message_bytes ({max})",
            self.env.name
        )))
    }

    /// Runs `on-message`; the answer is the direct reply.
    pub async fn on_message(&self, cx: CallContext<'_>, msg: Message) -> Outcome<Option<Message>> {
        let started = Instant::now();
        let mut inst = self.take(cx, started).await?;
        inst.store.data_mut().call.forwardable = true;
        let (conn, store) = (cx.event.conn, &mut inst.store);
        let r = match &inst.exports {
            Exports::V2(g, _) => g.call_on_message(store, conn, &from_message(msg)).await.map(|r| r.map(to_message)),
            Exports::V1(g) => g.call_on_message(store, conn, &to_v1(msg)).await.map(|r| r.map(from_v1)),
        };
        let r = written(&mut inst, r).await;
        let (reply, fx) = self.finish(inst, cx, Event::Message, started, r)?;
        self.check_reply(&reply)?;
        Ok((reply, fx))
    }

    /// Runs `on-close`.
    pub async fn on_close(&self, cx: CallContext<'_>, code: u16, reason: &str) -> Outcome<()> {
        let started = Instant::now();
        let mut inst = self.take(cx, started).await?;
        let (conn, store) = (cx.event.conn, &mut inst.store);
        let r = match &inst.exports {
            Exports::V2(g, _) => g.call_on_close(store, conn, code, reason).await,
            Exports::V1(g) => g.call_on_close(store, conn, code, reason).await,
        };
        let r = written(&mut inst, r).await;
        self.finish(inst, cx, Event::Close, started, r)
    }

    /// Whether the component exports `on-timer`.
    pub fn has_on_timer(&self) -> bool {
        matches!(self.indices, Indices::V2(_, Some(_)))
    }

    /// Runs `on-timer` for timer `name`; `cx.event.conn` is 0 (no
    /// connection) and its route is the one the timer was set on.
    pub async fn on_timer(&self, cx: CallContext<'_>, name: &str, payload: &[u8]) -> Outcome<()> {
        if !self.has_on_timer() {
            return Err(HandlerFailure::Unavailable(format!(
                "plugin `{}` has a timer due but its component exports no on-timer",
                self.env.name
            )));
        }
        let started = Instant::now();
        let mut inst = self.take(cx, started).await?;
        let r = match &inst.exports {
            Exports::V2(_, Some(t)) => t.call_on_timer(&mut inst.store, name, payload).await,
            _ => unreachable!("has_on_timer"),
        };
        let r = written(&mut inst, r).await;
        self.finish(inst, cx, Event::Timer, started, r)
    }

    /// The load-time check: instantiates once, running the component's start
    /// code under the event deadline, and keeps the instance warm.
    pub async fn check(&self) -> Result<(), HandlerFailure> {
        let inst = self.instantiate().await?;
        self.pool.push(inst);
        Ok(())
    }

    /// A warm instance from the pool (or a fresh one), armed for the event
    /// that started at `started`: its host calls give up one budget later
    /// (a fresh instance's, one budget after it was made).
    async fn take(&self, cx: CallContext<'_>, started: Instant) -> Result<Instance, HandlerFailure> {
        let (mut inst, from) = match (cx.fresh, self.pool.pop()) {
            (false, Some(inst)) => (inst, started),
            // Boxed: a warm event's future need not hold instantiation's.
            // The event's budget starts once the instance is made.
            _ => (Box::pin(self.instantiate()).await?, Instant::now()),
        };
        let deadline = tokio::time::Instant::from_std(from) + self.budget();
        inst.store.data_mut().call.begin(cx.event, deadline, self.ticks());
        inst.store.set_epoch_deadline(1);
        Ok(inst)
    }

    /// Gives the store a full event budget from now (for instantiation).
    fn arm(&self, store: &mut Store<InstanceState>) {
        let call = &mut store.data_mut().call;
        call.ticks_left = self.ticks();
        call.deadline = tokio::time::Instant::now() + self.budget();
        store.set_epoch_deadline(1);
    }

    /// The epoch ticks of one event. The first tick comes after a part of
    /// [`super::EPOCH_TICK`], so one extra tick makes the budget at least
    /// the configured time, never less.
    fn ticks(&self) -> u64 {
        self.env.caps.deadline_ticks + 1
    }

    /// The wall-clock time of one event, host calls included: its ticks.
    fn budget(&self) -> std::time::Duration {
        super::EPOCH_TICK * (self.env.caps.deadline_ticks.min(u32::MAX as u64) as u32 + 1)
    }

    async fn instantiate(&self) -> Result<Instance, HandlerFailure> {
        let mut store = Store::new(&self.engine, InstanceState::new(self.env.clone()));
        store.limiter(|s| &mut s.limits);
        // Every tick, yield to the scheduler so one busy handler cannot hold a
        // worker; when the event's ticks are spent, interrupt it (a trap).
        store.epoch_deadline_callback(|mut cx| {
            let call = &mut cx.data_mut().call;
            call.ticks_left = call.ticks_left.saturating_sub(1);
            Ok(if call.ticks_left == 0 { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        // Instantiation runs guest start code: bound it like an event.
        self.arm(&mut store);
        let failed =
            |e: wasmtime::Error| HandlerFailure::Unavailable(format!("instantiating plugin {}: {e:#}", self.env.name));
        let instance = self.pre.instantiate_async(&mut store).await.map_err(failed)?;
        let exports = match &self.indices {
            Indices::V2(i, t) => Exports::V2(
                i.load(&mut store, &instance).map_err(failed)?,
                t.as_ref().map(|t| t.load(&mut store, &instance)).transpose().map_err(failed)?,
            ),
            Indices::V1(i) => Exports::V1(i.load(&mut store, &instance).map_err(failed)?),
        };
        store.data_mut().limits.settle();
        Ok(Instance { store, exports })
    }

    /// Collects the effects; returns a healthy instance to the pool.
    fn finish<T>(
        &self,
        mut inst: Instance,
        cx: CallContext<'_>,
        event: Event,
        started: Instant,
        r: wasmtime::Result<T>,
    ) -> Outcome<T> {
        let stats = &self.stats[event as usize];
        stats.seconds.observe(started.elapsed().as_secs_f64());
        let effects = std::mem::take(&mut inst.store.data_mut().call.effects);
        match r {
            Ok(v) => {
                // An instance whose memory grew a lot keeps it while pooled:
                // drop it, so the memory goes back to the budget.
                let grown = inst.store.data().limits.grown();
                if !cx.fresh {
                    if grown <= self.env.pool_growth_bytes {
                        self.pool.push(inst);
                    } else {
                        tracing::debug!(
                            plugin = %self.env.name,
                            grown,
                            "an instance whose memory grew past pool_growth_mib is dropped, not pooled"
                        );
                    }
                }
                Ok((v, effects))
            }
            Err(e) => {
                stats.traps.inc();
                // A failed event's effects are not applied: take back the
                // replays they would have finished.
                for effect in &effects {
                    if let crate::handler::Effect::Resume { conn, channel, .. } = effect {
                        self.env.history.abandon_replay(*conn, channel);
                    }
                }
                let event = EVENTS[event as usize];
                Err(HandlerFailure::Trap(format!("plugin `{}` {event}: {}", self.env.name, describe_trap(&e))))
            }
        }
    }
}

/// `r` once what the event changed is durable (waiting at most a second
/// past its deadline); an event whose changes could not be written fails.
async fn written<T>(inst: &mut Instance, r: wasmtime::Result<T>) -> wasmtime::Result<T> {
    let call = &mut inst.store.data_mut().call;
    if call.unwritten.is_empty() || r.is_err() {
        return r;
    }
    // Boxed: an event that changed nothing durable does not carry the wait.
    Box::pin(wait_written(call, r)).await
}

async fn wait_written<T>(call: &mut super::state::Call, r: wasmtime::Result<T>) -> wasmtime::Result<T> {
    let unwritten = std::mem::take(&mut call.unwritten);
    let until = call.deadline.max(tokio::time::Instant::now()) + std::time::Duration::from_secs(1);
    for w in unwritten {
        match tokio::time::timeout_at(until, w).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(wasmtime::Error::msg(format!("a change the event made could not be written: {e}")));
            }
            Err(_) => return Err(wasmtime::Error::msg("a change the event made was not written in time")),
        }
    }
    r
}

/// A one-line description of why a call failed, for the log.
fn describe_trap(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "event deadline exceeded".to_string(),
        Some(trap) => trap.to_string(),
        None => format!("{:#}", e),
    }
}

/// Compiles a component from bytes.
pub(crate) fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    Ok(Component::new(engine, bytes)?)
}
