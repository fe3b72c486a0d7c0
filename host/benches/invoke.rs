//! One handler invocation through the runtime, without sockets: the `echo`
//! example's `on-message` on a warm pooled instance and on a fresh instance
//! per event, for a 64-byte text and a 64 KiB binary message; then the same
//! echo in each guest language (`rust`, `js`, `python`) for a 64-byte text.
//! A warm call there is the per-event cost of that language's runtime.
//!
//! `cargo bench -p wharf --bench invoke`; `make bench` quotes the medians.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use wharf::handler::{
    Accept, Effect, EffectSink, EventContext, Handler, Message, OpenRequest, Outcome, Reject, RouteHandlers,
};
use wharf::metrics::Metrics;
use wharf::pipeline::{Pipeline, Select};
use wharf::runtime::{CallContext, EngineOptions, EventCaps, Namespaces, Plugin, Runtime, RuntimeOptions};
use wharf::store::StoreKind;

/// The echo component of each language, relative to the repository root.
const ECHOES: [(&str, &str); 3] = [
    ("rust", "target/wasm32-wasip2/release/echo.wasm"),
    ("js", "target/components/js-echo.wasm"),
    ("python", "target/components/py-echo.wasm"),
];

/// The runtime (its engine and epoch ticker) on a memory store, and that
/// store.
fn runtime() -> (Runtime, wharf::store::Store) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let store = wharf::store::open(&StoreKind::Memory, Path::new("."), Default::default()).expect("memory store");
    let opts = RuntimeOptions {
        engine: EngineOptions {
            max_instances: 100,
            memory_bytes: 64 << 20,
            cache_dir: Some(root.join("target/test-data/cache")),
        },
        instance_pool: 4,
        memory_budget_bytes: 1 << 30,
        pool_growth_bytes: None,
    };
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(wharf::hub::Registry::new(metrics.outbound_dropped.clone()));
    let history = Arc::new(wharf::hub::ChannelLog::new(store.history.clone(), registry, &metrics));
    let runtime = Runtime::new(opts, store.clone(), history, metrics, wharf::clock::Clock::System).expect("runtime");
    (runtime, store)
}

/// Plugin `name` of component `file` (relative to the repository root),
/// instantiated once.
fn load(rt: &tokio::runtime::Runtime, runtime: &Runtime, name: &str, file: &str) -> Plugin {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let caps = EventCaps {
        max_message_bytes: 1 << 20,
        max_messages: 1000,
        max_bytes: 16 << 20,
        max_store_ops: 1000,
        max_value_bytes: 1 << 20,
        max_effects: 10_000,
        deadline_ticks: 20,
        memory_bytes: 64 << 20,
        max_timers: 1000,
    };
    let bytes = std::fs::read(root.join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}; build the components first: `make guests components`"));
    let plugin = runtime
        .load_plugin_bytes(name, &Namespaces::own(name), caps, &bytes)
        .unwrap_or_else(|e| panic!("{file} does not load: {e:#}"));
    rt.block_on(plugin.check()).expect("the plugin instantiates");
    plugin
}

/// Sends `msg` to `plugin` `iters` times; how long that took.
fn calls(rt: &tokio::runtime::Runtime, plugin: &Plugin, fresh: bool, msg: &Message, iters: u64) -> Duration {
    let event = EventContext::new(1, Arc::from("/echo"), Arc::new(RouteHandlers::one(Arc::from("echo"))));
    let cx = CallContext { event: &event, fresh };
    rt.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            let (reply, effects) = plugin.on_message(cx, msg.clone()).await.expect("echo answers");
            assert!(reply.is_some(), "echo replies");
            std::hint::black_box((reply, effects));
        }
        started.elapsed()
    })
}

fn invoke(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (runtime, _store) = runtime();
    let plugins: Vec<_> = ECHOES.iter().map(|&(lang, file)| (lang, load(&rt, &runtime, "echo", file))).collect();
    let rust = &plugins[0].1;
    let messages =
        [("text 64 B", Message::Text("x".repeat(64))), ("binary 64 KiB", Message::Binary(vec![7; 64 << 10]))];
    let mut group = c.benchmark_group("on-message");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    for fresh in [false, true] {
        for (name, msg) in &messages {
            let id = format!("{} {name}", if fresh { "fresh" } else { "warm" });
            group.bench_function(id, |b| b.iter_custom(|iters| calls(&rt, rust, fresh, msg, iters)));
        }
    }
    let text = Message::Text("x".repeat(64));
    for (lang, plugin) in &plugins {
        for fresh in [false, true] {
            let id = format!("{lang} {} text 64 B", if fresh { "fresh" } else { "warm" });
            group.bench_function(id, |b| b.iter_custom(|iters| calls(&rt, plugin, fresh, &text, iters)));
        }
    }
    group.finish();
}

/// A plugin as a route's handler, on warm instances.
struct Node(Plugin, Arc<str>);

#[async_trait::async_trait]
impl Handler for Node {
    fn name(&self) -> Arc<str> {
        self.1.clone()
    }

    async fn open(&self, cx: &EventContext, req: OpenRequest) -> Outcome<Result<Accept, Reject>> {
        self.0.on_open(CallContext { event: cx, fresh: false }, req).await
    }

    async fn message(&self, cx: &EventContext, msg: Message) -> Outcome<Option<Message>> {
        self.0.on_message(CallContext { event: cx, fresh: false }, msg).await
    }

    async fn close(&self, cx: &EventContext, code: u16, reason: &str) -> Outcome<()> {
        self.0.on_close(CallContext { event: cx, fresh: false }, code, reason).await
    }
}

struct NoSink;

impl EffectSink for NoSink {
    fn apply(&self, _effects: Vec<Effect>) {}
}

/// A route's handler graph as `wharf serve` builds it: `passes` `pass`
/// handlers in front of `echo`, the first one selected by a message's
/// `action`, as in `make bench-pipeline`.
fn graph(rt: &tokio::runtime::Runtime, runtime: &Runtime, store: &wharf::store::Store, passes: usize) -> Pipeline {
    let mut names: Vec<String> = (1..=passes).map(|i| format!("pass{i}")).collect();
    names.push("echo".into());
    let handlers: Vec<Arc<dyn Handler>> = names
        .iter()
        .map(|name| {
            let file = if name == "echo" { ECHOES[0].1 } else { "target/wasm32-wasip2/release/pass.wasm" };
            Arc::new(Node(load(rt, runtime, name, file), Arc::from(name.as_str()))) as Arc<dyn Handler>
        })
        .collect();
    let select = Select { field: "action".into(), by_value: [("echo".to_string(), 0)].into(), default: None };
    Pipeline::new(handlers, names.len(), Some(select), store.connections.clone(), Arc::new(NoSink))
}

/// A JSON text of `size` bytes whose `action` is `echo`.
fn selected(size: usize) -> String {
    let head = r#"{"action":"echo","text":""#;
    format!("{head}{}\"}}", "x".repeat(size - head.len() - 2))
}

/// A 64-byte text through `handler` `iters` times; how long that took.
fn through(rt: &tokio::runtime::Runtime, handler: &dyn Handler, iters: u64) -> Duration {
    let event = EventContext::new(1, Arc::from("/chain"), handler.handlers());
    let msg = Message::Text(selected(64));
    rt.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            let (reply, effects) = handler.message(&event, msg.clone()).await.expect("the graph answers");
            assert!(reply.is_some() || !effects.is_empty(), "echo answers");
            std::hint::black_box((reply, effects));
        }
        started.elapsed()
    })
}

/// One message through a route of one, two and three handlers (`pass` ones
/// forwarding to `echo`): the difference is what each extra node costs.
fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (runtime, store) = runtime();
    let alone = Node(load(&rt, &runtime, "echo", ECHOES[0].1), Arc::from("echo"));
    let graphs: Vec<_> = (0..=2).map(|passes| graph(&rt, &runtime, &store, passes)).collect();
    let mut group = c.benchmark_group("pipeline");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    group.bench_function("echo alone", |b| b.iter_custom(|iters| through(&rt, &alone, iters)));
    for (passes, g) in graphs.iter().enumerate() {
        let id = format!("{} handler(s)", passes + 1);
        group.bench_function(id, |b| b.iter_custom(|iters| through(&rt, g, iters)));
    }
    group.finish();
}

criterion_group!(benches, invoke, pipeline);
criterion_main!(benches);
