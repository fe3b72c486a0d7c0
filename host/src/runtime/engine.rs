//! The Wasmtime engine: compilation settings, the pooling allocator, the
//! on-disk compile cache and the epoch ticker that bounds every event.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use wasmtime::{Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; event deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of a freed linear memory slot kept resident and reset in place
/// (a Rust guest's stack and data fit in about 1.1 MiB).
const KEEP_RESIDENT: usize = 2 << 20;

/// Settings the engine is built with.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Most instances alive at once (pooled slots).
    pub max_instances: u32,
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Compile cache directory; `None` disables the cache.
    pub cache_dir: Option<std::path::PathBuf>,
}

/// Builds the engine shared by every plugin.
pub fn build(opts: &EngineOptions) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // `WHARF_PERFMAP=1` writes /tmp/perf-PID.map, so that `perf report`
    // names the guest's functions (BENCHMARKS.md, profiling).
    if std::env::var_os("WHARF_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }

    let n = opts.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    // A Rust component has one main module plus small shim modules; give
    // each component instance room for a few core instances and tables.
    pool.total_component_instances(n)
        .total_core_instances(n * 4)
        .total_memories(n)
        .total_tables(n * 4)
        .total_stacks(n)
        .max_memory_size(opts.memory_bytes)
        // Reset a used slot by rewriting only its dirty pages (Linux 6.7+
        // PAGEMAP_SCAN) instead of madvise, which costs page faults and TLB
        // shootdowns on every fresh instance. Memory past what is kept
        // resident (an instance that grew) is given back as soon as its
        // instance is dropped, not once 16 such slots have queued up: a
        // batch held up to 16 grown slots resident, 32 MiB more with every
        // memory-exhausting handler, for as long as no other slot was freed.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .decommit_batch_size(1);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

    if let Some(dir) = &opts.cache_dir {
        config.cache(Some(cache(dir)?));
    }
    Engine::new(&config).map_err(anyhow::Error::from).context("creating the Wasmtime engine")
}

fn cache(dir: &Path) -> anyhow::Result<Cache> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating compile cache directory {}", dir.display()))?;
    let dir =
        std::path::absolute(dir).with_context(|| format!("resolving compile cache directory {}", dir.display()))?;
    let mut cc = CacheConfig::new();
    cc.with_directory(&dir);
    Cache::new(cc).map_err(anyhow::Error::from).with_context(|| format!("opening compile cache in {}", dir.display()))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts the ticker thread for `engine`.
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("wharf-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
