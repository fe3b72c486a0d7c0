//! The one place where the server and the runtime meet: routes map to
//! plugins, handler events run on the runtime, and the effects handlers ask
//! for are applied to the registry after each event.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Instances, StoreChoice};
use crate::events::{Accept, ConnId, Effect, HandlerFailure, Message, OpenRequest, Reject};
use crate::metrics::Metrics;
use crate::runtime::{self, CallContext, EngineOptions, EventCaps, Plugin, Runtime, RuntimeOptions};
use crate::server::{self, AdminOptions, Dispatch, Registry, ServerOptions, to_ws};
use crate::store::{self as store_mod, ConnectionRecord, Store, StoreKind};

/// Most effects one event may ask for.
const MAX_EFFECTS_PER_EVENT: usize = 10_000;

struct Route {
    key: Arc<str>,
    plugin: Arc<Plugin>,
    fresh: bool,
}

/// The application: routes, plugins, the registry and the store.
pub struct App {
    routes: HashMap<Arc<str>, Route>,
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    _runtime: Runtime,
}

/// A host that is serving; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The admin API's bound address, when it is enabled.
    pub admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    store: Arc<dyn Store>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// A token that stops the host when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The store the host's handlers use.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
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
    let parts = Parts::build(&config)?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    parts.serve(&config, listener).await
}

/// Like [`start`] on an already bound listener.
pub async fn start_on(config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    Parts::build(&config)?.serve(&config, listener).await
}

/// An application ready to serve.
struct Parts {
    app: App,
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl Parts {
    fn build(config: &Config) -> anyhow::Result<Parts> {
        let registry = Arc::new(Registry::new(config.limits.outbound_queue));
        let kind = match config.store {
            StoreChoice::Embedded => StoreKind::Embedded,
            StoreChoice::Memory => StoreKind::Memory,
        };
        let store =
            store_mod::open(&kind, &config.data_dir).with_context(|| format!("config {}: store", config.source))?;
        let metrics = Arc::new(Metrics::new());
        let app = tokio::task::block_in_place(|| App::new(config, registry.clone(), store.clone(), metrics.clone()))?;
        Ok(Parts { app, registry, store, metrics })
    }

    async fn serve(self, config: &Config, listener: TcpListener) -> anyhow::Result<Running> {
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let admin_addr = if config.admin.enabled {
            let admin = TcpListener::bind(config.admin.listen)
                .await
                .with_context(|| format!("binding the admin API on {} (admin.listen)", config.admin.listen))?;
            let admin_addr = admin.local_addr()?;
            let opts =
                AdminOptions { token: config.admin.token.clone(), max_body_bytes: config.limits.max_message_bytes };
            let (registry, store, metrics) = (self.registry.clone(), self.store.clone(), self.metrics.clone());
            tokio::spawn(server::serve_admin(admin, registry, store, metrics, opts, shutdown.clone()));
            tracing::info!(addr = %admin_addr, auth = config.admin.token.is_some(), "admin API listening");
            Some(admin_addr)
        } else {
            None
        };
        let opts =
            ServerOptions { static_dir: config.static_dir.clone(), max_message_bytes: config.limits.max_message_bytes };
        let token = shutdown.clone();
        let Parts { app, registry, store, metrics } = self;
        let task = tokio::spawn(async move {
            server::serve(listener, app, registry, metrics, opts, token).await.context("serving")
        });
        tracing::info!(%addr, "wharf listening");
        Ok(Running { addr, admin_addr, shutdown, store, task })
    }
}

impl App {
    /// Builds the runtime and compiles every plugin the routes use.
    pub fn new(
        config: &Config,
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<App> {
        let limits = &config.limits;
        let opts = RuntimeOptions {
            engine: EngineOptions {
                max_instances: limits.max_instances,
                memory_bytes: (limits.memory_mib as usize) << 20,
                cache_dir: Some(config.cache_dir()),
            },
            caps: EventCaps {
                max_message_bytes: limits.max_message_bytes,
                max_effects: MAX_EFFECTS_PER_EVENT,
                deadline_ticks: limits.event_timeout_ms.div_ceil(runtime::EPOCH_TICK.as_millis() as u64).max(1),
            },
            instance_pool: limits.instance_pool,
        };
        let runtime = Runtime::new(opts, store.clone(), metrics)?;
        let mut plugins = HashMap::new();
        for (name, plugin) in &config.plugins {
            let loaded = runtime
                .load_plugin(name, config.namespace_of(name), &plugin.component)
                .with_context(|| format!("config {}: plugins.{name}.component", config.source))?;
            tracing::info!(plugin = %name, component = %plugin.component.display(), "plugin loaded");
            plugins.insert(name.clone(), Arc::new(loaded));
        }
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let key: Arc<str> = Arc::from(r.path.as_str());
                let route = Route {
                    key: key.clone(),
                    plugin: plugins[&r.plugin].clone(),
                    fresh: r.instances == Instances::Fresh,
                };
                (key, route)
            })
            .collect();
        Ok(App { routes, registry, store, _runtime: runtime })
    }

    fn context(&self, route: &str, conn: ConnId) -> (&Route, CallContext) {
        let r = &self.routes[route];
        (r, CallContext { conn, route: r.key.clone(), fresh: r.fresh })
    }

    /// Applies what a handler asked for, in order.
    fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Emit { to, msg } => {
                    self.registry.send(to, to_ws(msg));
                }
                Effect::Broadcast { route, msg, except } => {
                    self.registry.broadcast(&route, &to_ws(msg), except);
                }
                Effect::Subscribe { conn, channel } => {
                    self.registry.subscribe(conn, &channel);
                }
                Effect::Unsubscribe { conn, channel } => self.registry.unsubscribe(conn, &channel),
                Effect::Publish { channel, msg } => {
                    self.registry.publish(&channel, &to_ws(msg));
                }
                Effect::Close { conn, code, reason } => {
                    self.registry.close(conn, code, &reason);
                }
            }
        }
    }
}

impl Dispatch for App {
    fn route(&self, path: &str) -> Option<Arc<str>> {
        self.routes.get(path).map(|r| r.key.clone())
    }

    async fn open(
        &self,
        route: &Arc<str>,
        conn: ConnId,
        req: OpenRequest,
    ) -> Result<Result<Accept, Reject>, HandlerFailure> {
        let (r, cx) = self.context(route, conn);
        let record = ConnectionRecord {
            id: conn,
            route: r.key.clone(),
            plugin: Arc::from(r.plugin.name()),
            remote_addr: req.remote_addr.clone(),
            connected_at_ms: store_mod::now_ms(),
            metadata: Vec::new(),
            channels: Vec::new(),
        };
        self.store.connection_open(record).await.map_err(|e| HandlerFailure::Unavailable(e.to_string()))?;
        let outcome = r.plugin.on_open(&cx, req).await;
        match outcome {
            Ok((Ok(accept), effects)) => {
                for (key, value) in &accept.metadata {
                    if let Err(e) = self.store.metadata_set(conn, key, value).await {
                        let _ = self.store.connection_close(conn).await;
                        return Err(HandlerFailure::Unavailable(e.to_string()));
                    }
                }
                self.apply(effects);
                Ok(Ok(accept))
            }
            Ok((Err(reject), effects)) => {
                self.apply(effects);
                let _ = self.store.connection_close(conn).await;
                Ok(Err(reject))
            }
            Err(failure) => {
                let _ = self.store.connection_close(conn).await;
                Err(failure)
            }
        }
    }

    async fn message(&self, route: &Arc<str>, conn: ConnId, msg: Message) -> Result<Option<Message>, HandlerFailure> {
        let (r, cx) = self.context(route, conn);
        let (reply, effects) = r.plugin.on_message(&cx, msg).await?;
        self.apply(effects);
        Ok(reply)
    }

    async fn close(&self, route: &Arc<str>, conn: ConnId, code: u16, reason: &str) {
        let (r, cx) = self.context(route, conn);
        match r.plugin.on_close(&cx, code, reason).await {
            Ok(((), effects)) => self.apply(effects),
            Err(failure) => tracing::warn!(conn, %route, %failure, "on-close failed"),
        }
        if let Err(e) = self.store.connection_close(conn).await {
            tracing::warn!(conn, error = %e, "could not remove the connection's record");
        }
    }
}
