//! The Wasm side of the host: the engine, compiled plugins with their
//! instance pools, and the host implementations of the WIT imports.
//!
//! Everything Wasmtime generates stays in this module; the rest of the host
//! sees [`Plugin`], [`CallContext`] and the plain types of [`crate::handler`].

mod allowlist;
mod bindings;
mod capabilities;
mod compat;
mod engine;
mod guest_language;
mod guest_output;
mod memory;
mod plugin;
mod state;

use std::sync::Arc;

use anyhow::Context;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

pub use allowlist::check as check_imports;
pub use engine::{EPOCH_TICK, EngineOptions};
pub use guest_language::GuestLanguage;
pub use memory::MemoryBudget;
pub use plugin::{CallContext, Plugin};
pub use state::EventCaps;

use state::{InstanceState, PluginEnv};

use crate::handler::ChannelHistory;
use crate::metrics::Metrics;
use crate::store::Store;

/// Settings of the runtime.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Engine settings.
    pub engine: EngineOptions,
    /// Warm instances kept per plugin.
    pub instance_pool: usize,
    /// Linear memory all live instances may hold together, in bytes.
    pub memory_budget_bytes: usize,
    /// A warm instance whose memory grew by more than this many bytes
    /// since it was instantiated is dropped instead of pooled; `None`: by
    /// the component's language ([`GuestLanguage::default_pool_growth_bytes`]).
    pub pool_growth_bytes: Option<usize>,
}

/// The engine, the linker with every host import, and the store handlers use.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InstanceState>,
    store: Store,
    history: Arc<dyn ChannelHistory>,
    metrics: Arc<Metrics>,
    budget: Arc<MemoryBudget>,
    clock: crate::clock::Clock,
    opts: RuntimeOptions,
    _ticker: engine::EpochTicker,
}

/// Where a plugin's names live: its key/value keys and its channels. A
/// plugin owns a namespace named after itself unless the config shares one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespaces {
    /// The key/value namespace.
    pub kv: String,
    /// The channel namespace.
    pub channels: String,
}

impl Namespaces {
    /// The namespaces a plugin `name` owns when it shares none.
    pub fn own(name: &str) -> Namespaces {
        Namespaces { kv: name.to_string(), channels: name.to_string() }
    }
}

impl Runtime {
    /// Builds the engine and links WASI (with nothing granted) and the Wharf
    /// imports; timers set by handlers are due by `clock`.
    pub fn new(
        opts: RuntimeOptions,
        store: Store,
        history: Arc<dyn ChannelHistory>,
        metrics: Arc<Metrics>,
        clock: crate::clock::Clock,
    ) -> anyhow::Result<Self> {
        let engine = engine::build(&opts.engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from).context("linking WASI")?;
        bindings::AllVersions::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("linking the Wharf world")?;
        let ticker = engine::EpochTicker::start(&engine);
        let budget = Arc::new(MemoryBudget::new(opts.memory_budget_bytes, metrics.instance_memory_bytes.clone()));
        Ok(Runtime { engine, linker, store, history, metrics, budget, clock, opts, _ticker: ticker })
    }

    /// The names of everything a component imports, after checking that it
    /// is a component this engine can compile.
    pub fn component_imports(&self, bytes: &[u8]) -> anyhow::Result<Vec<String>> {
        let component = plugin::compile(&self.engine, bytes).context("not a valid component")?;
        let ty = component.component_type();
        Ok(ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect())
    }

    /// Compiles and pre-links component bytes as plugin `name` with its
    /// per-event caps; a component with imports the host does not provide is
    /// refused, naming them.
    pub fn load_plugin_bytes(
        &self,
        name: &str,
        namespaces: &Namespaces,
        caps: EventCaps,
        bytes: &[u8],
    ) -> anyhow::Result<Plugin> {
        let component = plugin::compile(&self.engine, bytes).context("not a valid component")?;
        let language = GuestLanguage::detect(bytes);
        let ty = component.component_type();
        allowlist::check(ty.imports(&self.engine).map(|(name, _)| name)).map_err(anyhow::Error::msg)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("cannot link the component")?;
        let env = Arc::new(PluginEnv {
            name: Arc::from(name),
            namespace: namespaces.kv.clone(),
            channel_namespace: namespaces.channels.clone(),
            store: self.store.clone(),
            history: self.history.clone(),
            caps: EventCaps { memory_bytes: caps.memory_bytes.min(self.opts.engine.memory_bytes), ..caps },
            metrics: self.metrics.clone(),
            budget: self.budget.clone(),
            pool_growth_bytes: self.opts.pool_growth_bytes.unwrap_or_else(|| language.default_pool_growth_bytes()),
            language,
            clock: self.clock.clone(),
            on_timer: plugin::exports_on_timer(&pre),
        });
        Plugin::new(&self.engine, pre, env, self.opts.instance_pool)
    }
}
