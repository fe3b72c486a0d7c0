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
use wharf::handler::{EventContext, Message};
use wharf::metrics::Metrics;
use wharf::runtime::{CallContext, EngineOptions, EventCaps, Namespaces, Plugin, Runtime, RuntimeOptions};
use wharf::store::StoreKind;

/// The echo component of each language, relative to the repository root.
const ECHOES: [(&str, &str); 3] = [
    ("rust", "target/wasm32-wasip2/release/echo.wasm"),
    ("js", "target/components/js-echo.wasm"),
    ("python", "target/components/py-echo.wasm"),
];

/// The runtime (its engine and epoch ticker) and the `echo` plugin of each
/// language.
fn echo_plugins(rt: &tokio::runtime::Runtime) -> (Runtime, Vec<(&'static str, Plugin)>) {
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
    let runtime = Runtime::new(opts, store, history, metrics, wharf::clock::Clock::System).expect("runtime");
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
    let plugins = ECHOES
        .iter()
        .map(|&(lang, file)| {
            let bytes = std::fs::read(root.join(file))
                .unwrap_or_else(|e| panic!("{file}: {e}; build the components first: `make guests components`"));
            let plugin = runtime
                .load_plugin_bytes("echo", &Namespaces::own("echo"), caps, &bytes)
                .unwrap_or_else(|e| panic!("{file} does not load: {e:#}"));
            rt.block_on(plugin.check()).expect("echo instantiates");
            (lang, plugin)
        })
        .collect();
    (runtime, plugins)
}

/// Sends `msg` to `plugin` `iters` times; how long that took.
fn calls(rt: &tokio::runtime::Runtime, plugin: &Plugin, fresh: bool, msg: &Message, iters: u64) -> Duration {
    let event = EventContext { conn: 1, route: Arc::from("/echo") };
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
    let (_runtime, plugins) = echo_plugins(&rt);
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

criterion_group!(benches, invoke);
criterion_main!(benches);
