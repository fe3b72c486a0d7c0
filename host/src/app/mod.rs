//! The composition root: the one place the config becomes a running host.
//! It opens the store, picks the bus (alone, or the cluster on Redis),
//! builds the hub and the runtime, loads every plugin, mounts the routes,
//! and starts the front ends; `wharf serve` and `wharf test` both start
//! here.
//!
//! - [`wasm_handler`]: the Wasm plugin as the hub's `Handler`.
//! - [`plugins`]: plugin slots (the version serving now), loading and
//!   swapping, and the admin API's view of them.
//! - [`reload`]: watching component files and re-reading the config.
//! - [`timers`]: the plugins as the timer scheduler's target.

mod plugins;
mod reload;
mod timers;
mod wasm_handler;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::AdminOptions;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::config::{Config, Limits, RouteConfig, StoreChoice};
use crate::conn_id::id_base;
use crate::hub::{Bus, ConnectionPolicy, Hub, LocalBus, Registry};
use crate::metrics::Metrics;
use crate::runtime::{self, EngineOptions, EventCaps, Runtime, RuntimeOptions};
use crate::scheduler::Scheduler;
use crate::store::{self as store_mod, Store, StoreKind};
use crate::tls::Tls;
use crate::transport::ws::{self, ServerOptions};

pub use plugins::PluginSlot;
pub use reload::ReloadSummary;

/// Most effects of any kind one event may ask for.
const MAX_EFFECTS_PER_EVENT: usize = 10_000;

/// The runtime's per-event caps for a plugin with these (resolved) limits.
pub(crate) fn event_caps(limits: &Limits) -> EventCaps {
    EventCaps {
        max_message_bytes: limits.max_message_bytes,
        max_messages: limits.max_messages_per_event,
        max_bytes: limits.max_bytes_per_event,
        max_store_ops: limits.max_store_ops_per_event,
        max_value_bytes: limits.max_value_bytes,
        max_effects: MAX_EFFECTS_PER_EVENT,
        deadline_ticks: limits.event_timeout_ms.div_ceil(runtime::EPOCH_TICK.as_millis() as u64).max(1),
        memory_bytes: (limits.memory_mib as usize) << 20,
        max_timers: limits.max_timers,
    }
}

/// The hub's policy for a route with these global limits and its token
/// check.
fn connection_policy(
    global: &Limits,
    route: &RouteConfig,
    auth: Option<Arc<crate::auth::Verifier>>,
) -> ConnectionPolicy {
    ConnectionPolicy {
        max_connections: route.limits.max_connections,
        origins: route.origins.clone(),
        subprotocols: route.subprotocols.clone(),
        auth,
        compression: route.compression,
        ..ConnectionPolicy::from_limits(&global.for_route(&route.limits))
    }
}

/// How a route's backend is reached, from its config.
fn backend_options(b: &crate::config::BackendConfig) -> crate::grip::BackendOptions {
    crate::grip::BackendOptions {
        url: b.url.parse().expect("validated backend URL"),
        timeout: Duration::from_millis(b.timeout_ms),
        connect_timeout: Duration::from_millis(b.connect_timeout_ms),
        retries: b.retries,
        retry_backoff: Duration::from_millis(b.retry_backoff_ms),
        sig: b.sig_key.as_ref().map(|k| (k.as_bytes().to_vec(), b.sig_iss.clone())),
        channel_namespace: b.channel_namespace().to_string(),
        max_request_bytes: b.max_request_bytes,
        max_response_bytes: b.max_response_bytes,
        max_concurrent_requests: b.max_concurrent_requests,
    }
}

/// The hub as the place a backend's late effects go. It holds the hub
/// weakly: the hub holds the routes, which hold the backend.
struct HubEffects(std::sync::Weak<Hub>);

impl crate::handler::EffectSink for HubEffects {
    fn apply(&self, effects: Vec<crate::handler::Effect>) {
        if let Some(hub) = self.0.upgrade() {
            hub.apply(effects);
        }
    }
}

/// The application: the hub, the plugins behind its routes, and the config
/// they came from.
pub struct App {
    hub: Arc<Hub>,
    plugins: std::sync::Mutex<HashMap<String, Arc<PluginSlot>>>,
    runtime: Runtime,
    config: std::sync::Mutex<Config>,
    watcher: std::sync::Mutex<Option<reload::Watcher>>,
    /// The listeners' certificates, re-read on SIGHUP, and the watchers
    /// that re-read them when their files change.
    tls: std::sync::Mutex<(Vec<Arc<Tls>>, Vec<notify::RecommendedWatcher>)>,
    /// Fires the plugins' timers.
    scheduler: Arc<crate::scheduler::Scheduler>,
}

/// The certificates of both listeners, read before anything is served.
struct ListenerTls {
    ws: Option<Arc<Tls>>,
    admin: Option<Arc<Tls>>,
}

fn load_tls(config: &Config) -> anyhow::Result<ListenerTls> {
    let load = |name: &str, tls: &Option<crate::config::TlsConfig>| {
        tls.as_ref()
            .map(|t| Tls::load(name, &t.cert, &t.key).with_context(|| format!("config {}: {name}", config.source)))
            .transpose()
    };
    let admin = if config.admin.enabled { load("admin.tls", &config.admin.tls)? } else { None };
    Ok(ListenerTls { ws: load("tls", &config.tls)?, admin })
}

/// A host that is serving; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The admin API's bound address, when it is enabled.
    pub admin_addr: Option<SocketAddr>,
    app: Arc<App>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// A token that stops the host when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The store the host's handlers use.
    pub fn store(&self) -> Store {
        self.app.hub.store().clone()
    }

    /// The application, for reloading it while it serves.
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Closes every connection with 1001, runs their close handlers, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the host has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the server task panicked")?
    }
}

/// Loads every plugin of `config`, then binds its listen address and serves
/// in a background task. A bad plugin is reported before the port is touched.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let tls = load_tls(&config)?;
    let app = build(&config).await?;
    let listener = match ws::bind(config.listen) {
        Ok(l) => l,
        Err(e) => {
            app.leave().await;
            return Err(e).with_context(|| format!("binding {}", config.listen));
        }
    };
    serve(app, &config, listener, tls).await
}

/// Like [`start`] on an already bound listener.
pub async fn start_on(config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    let tls = load_tls(&config)?;
    let app = build(&config).await?;
    serve(app, &config, listener, tls).await
}

/// Builds the whole application for `config`, serving nothing yet: the
/// store, the bus, the hub, the runtime and every plugin and route.
pub(crate) async fn build(config: &Config) -> anyhow::Result<Arc<App>> {
    build_with_clock(config, Clock::System).await
}

/// Like [`build`], with timers due by `clock` (the conformance kit's is
/// manual).
pub(crate) async fn build_with_clock(config: &Config, clock: Clock) -> anyhow::Result<Arc<App>> {
    let metrics = Arc::new(Metrics::new());
    let dropped = metrics.outbound_dropped.clone();
    let context = || format!("config {}: store", config.source);
    let local = |kind| store_mod::open(&kind, &config.data_dir, config.limits.record_caps()).with_context(context);
    let (store, registry, bus): (Store, Arc<Registry>, Arc<dyn Bus>) = match &config.store.backend {
        StoreChoice::Embedded => (local(StoreKind::Embedded)?, Arc::new(Registry::new(dropped)), Arc::new(LocalBus)),
        StoreChoice::Memory => (local(StoreKind::Memory)?, Arc::new(Registry::new(dropped)), Arc::new(LocalBus)),
        StoreChoice::Redis(url) => {
            let ttl = Duration::from_millis(config.store.heartbeat_ttl_ms);
            let cluster =
                Cluster::connect(url, ttl, config.limits.record_caps(), &metrics).await.with_context(context)?;
            tracing::info!(host = cluster.host(), url = %crate::cluster::redact(url), "joined the hosts sharing Redis");
            let registry = Arc::new(Registry::new(dropped).ids_after(id_base(cluster.host())));
            cluster.start(registry.clone())?;
            (cluster.store(), registry, cluster)
        }
    };
    let hub = Arc::new(Hub::new(registry, store, bus, metrics, config.limits.max_connections));
    match App::new(config, hub.clone(), clock).await {
        Ok(app) => Ok(app),
        Err(e) => {
            hub.bus().leave().await;
            Err(e)
        }
    }
}

async fn serve(app: Arc<App>, config: &Config, listener: TcpListener, tls: ListenerTls) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    app.watch_tls(tls.ws.iter().chain(&tls.admin).cloned().collect());
    let shutdown = CancellationToken::new();
    let admin_addr = if config.admin.enabled {
        let admin = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("binding the admin API on {} (admin.listen)", config.admin.listen))?;
        let admin_addr = admin.local_addr()?;
        let opts = AdminOptions {
            token: config.admin.token.clone(),
            max_body_bytes: config.limits.max_message_bytes,
            request_timeout: Duration::from_millis(config.limits.handshake_timeout_ms),
            publish_key: config.admin.publish_key.as_ref().map(|k| k.as_bytes().to_vec()),
        };
        let plugins = Arc::new(plugins::AdminPlugins(app.clone()));
        let acceptor = tls.admin.as_ref().map(|t| t.acceptor());
        tokio::spawn(crate::admin::serve(admin, acceptor, app.hub.clone(), plugins, opts, shutdown.clone()));
        tracing::info!(addr = %admin_addr, auth = config.admin.token.is_some(), tls = tls.admin.is_some(), "admin API listening");
        Some(admin_addr)
    } else {
        None
    };
    app.watch_components();
    if !app.scheduler.clock().is_manual() {
        app.scheduler.start(shutdown.clone());
    }
    let opts = ServerOptions {
        static_dir: config.static_dir.clone(),
        handshake_timeout: Duration::from_millis(config.limits.handshake_timeout_ms),
        max_handshakes: config.limits.max_handshakes,
        max_handshakes_per_ip: config.limits.max_handshakes_per_ip,
        trusted_proxies: ws::TrustedProxies::parse(&config.trusted_proxies).expect("validated trusted_proxies"),
        tls: tls.ws.as_ref().map(|t| t.acceptor()),
    };
    let token = shutdown.clone();
    let (hub, leaving) = (app.hub.clone(), app.clone());
    let task = tokio::spawn(async move {
        let served = ws::serve(listener, hub, opts, token).await.context("serving");
        leaving.leave().await;
        served
    });
    if tls.ws.is_some() {
        tracing::info!(%addr, "TLS on the listener: clients connect with wss:// and https://");
    }
    // Scripts read the address from this line's end: keep it last.
    tracing::info!(%addr, "wharf listening");
    Ok(Running { addr, admin_addr, app, shutdown, task })
}

impl App {
    /// Every connection has closed and left the store: send what the close
    /// handlers published to other hosts, then tell them this host is gone
    /// (they need not wait for its heartbeat to expire).
    async fn leave(&self) {
        self.hub.bus().leave().await;
    }

    /// Keeps the listeners' certificates, re-read when their files change.
    fn watch_tls(&self, tls: Vec<Arc<Tls>>) {
        let watchers = tls
            .iter()
            .filter_map(|t| {
                t.watch()
                    .map_err(|e| {
                        tracing::warn!(
                            reason = format!("{e:#}"),
                            "certificate files are not watched; reload them with SIGHUP"
                        )
                    })
                    .ok()
            })
            .collect();
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = (tls, watchers);
    }

    /// Re-reads every listener's certificate and key (on SIGHUP); a pair
    /// that is refused leaves the one in use.
    pub fn reload_tls(&self) -> anyhow::Result<()> {
        let tls = self.tls.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        tls.iter().try_for_each(|t| t.reload())
    }

    /// The hub: routes, connections, and the way to other hosts.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The store handlers use.
    pub fn store(&self) -> &Store {
        self.hub.store()
    }

    /// What a component imports (it must compile with this engine).
    pub fn component_imports(&self, bytes: &[u8]) -> anyhow::Result<Vec<String>> {
        self.runtime.component_imports(bytes)
    }

    /// Serves `config`'s plugins and routes (as a config reload does), and
    /// keeps it as the config served.
    pub async fn serve_config(self: &Arc<Self>, config: &Config) -> anyhow::Result<ReloadSummary> {
        let summary = self.apply_config(config).await?;
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config.clone();
        Ok(summary)
    }

    /// The key/value namespace of plugin `plugin` in the config served,
    /// if it has one of that name.
    pub fn kv_namespace(&self, plugin: &str) -> Option<String> {
        let config = self.config.lock().unwrap_or_else(|p| p.into_inner());
        config.plugins.contains_key(plugin).then(|| config.namespace_of(plugin).to_string())
    }

    /// Fires the plugins' timers.
    pub fn scheduler(&self) -> &Arc<crate::scheduler::Scheduler> {
        &self.scheduler
    }

    /// Builds the runtime on the hub's store and compiles every plugin the
    /// config names.
    async fn new(config: &Config, hub: Arc<Hub>, clock: Clock) -> anyhow::Result<Arc<App>> {
        let limits = &config.limits;
        let opts = RuntimeOptions {
            engine: EngineOptions {
                max_instances: limits.max_instances,
                memory_bytes: (limits.memory_mib as usize) << 20,
                cache_dir: Some(config.cache_dir()),
            },
            instance_pool: limits.instance_pool,
            memory_budget_bytes: (limits.instance_memory_mib as usize) << 20,
            pool_growth_bytes: limits.pool_growth_mib.map(|m| (m as usize) << 20),
        };
        let runtime =
            Runtime::new(opts, hub.store().clone(), hub.history().clone(), hub.metrics().clone(), clock.clone())?;
        let scheduling = timers::scheduler_options(limits);
        let app = Arc::new_cyclic(|app| App {
            scheduler: Scheduler::new(
                hub.store().timers.clone(),
                Arc::new(timers::AppTimers(app.clone())),
                clock,
                scheduling,
                hub.metrics().clone(),
            ),
            hub,
            plugins: std::sync::Mutex::new(HashMap::new()),
            runtime,
            config: std::sync::Mutex::new(config.clone()),
            watcher: std::sync::Mutex::new(None),
            tls: std::sync::Mutex::default(),
        });
        app.apply_config(config).await?;
        Ok(app)
    }
}
