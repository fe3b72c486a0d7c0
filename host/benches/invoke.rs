//! One handler invocation through the runtime, without sockets: the `echo`
//! example's `on-message` on a warm pooled instance and on a fresh instance
//! per event, for a 64-byte text and a 64 KiB binary message.
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
use wharf::runtime::{CallContext, EngineOptions, EventCaps, Namespaces, Runtime, RuntimeOptions};
use wharf::store::StoreKind;

/// The runtime (its engine and epoch ticker) and the loaded `echo` plugin.
fn echo_plugin(rt: &tokio::runtime::Runtime) -> (Runtime, wharf::runtime::Plugin) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bytes = std::fs::read(root.join("target/wasm32-wasip2/release/echo.wasm"))
        .expect("build the guest components first with `make guests`");
    let store = wharf::store::open(&StoreKind::Memory, Path::new("."), Default::default()).expect("memory store");
    let opts = RuntimeOptions {
        engine: EngineOptions {
            max_instances: 100,
            memory_bytes: 64 << 20,
            cache_dir: Some(root.join("target/test-data/cache")),
        },
        instance_pool: 4,
        memory_budget_bytes: 1 << 30,
        pool_growth_bytes: 4 << 20,
    };
    let runtime = Runtime::new(opts, store, Arc::new(Metrics::new())).expect("runtime");
    let caps = EventCaps {
        max_message_bytes: 1 << 20,
        max_messages: 1000,
        max_bytes: 16 << 20,
        max_store_ops: 1000,
        max_value_bytes: 1 << 20,
        max_effects: 10_000,
        deadline_ticks: 20,
        memory_bytes: 64 << 20,
    };
    let plugin = runtime.load_plugin_bytes("echo", &Namespaces::own("echo"), caps, &bytes).expect("echo loads");
    rt.block_on(plugin.check()).expect("echo instantiates");
    (runtime, plugin)
}

fn invoke(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (_runtime, plugin) = echo_plugin(&rt);
    let messages =
        [("text 64 B", Message::Text("x".repeat(64))), ("binary 64 KiB", Message::Binary(vec![7; 64 << 10]))];
    let mut group = c.benchmark_group("on-message");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    for fresh in [false, true] {
        let event = EventContext { conn: 1, route: Arc::from("/echo") };
        let cx = CallContext { event: &event, fresh };
        for (name, msg) in &messages {
            let id = format!("{} {name}", if fresh { "fresh" } else { "warm" });
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iters {
                            let reply = plugin.on_message(cx, msg.clone()).await.expect("echo answers");
                            std::hint::black_box(reply);
                        }
                        started.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, invoke);
criterion_main!(benches);
