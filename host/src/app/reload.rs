//! Changing what is served without a restart: re-reading the config (on
//! SIGHUP) and swapping a plugin when its component file changes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher as _};

use super::wasm_handler::WasmHandler;
use super::{App, PluginSlot};
use crate::close;
use crate::config::{Config, Instances};
use crate::grip::BackendHandler;
use crate::handler::Handler;
use crate::hub::Route;
use crate::runtime::Namespaces;

/// How long file events are gathered before reloading, so that one build
/// that writes a file several times causes one reload.
const SETTLE: Duration = Duration::from_millis(150);

/// What a config reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Routes mounted by this reload.
    pub added_routes: Vec<String>,
    /// Routes unmounted; their connections were asked to close with 1001.
    pub removed_routes: Vec<String>,
    /// Plugins loaded for the first time.
    pub added_plugins: Vec<String>,
    /// Plugins whose component changed and was swapped.
    pub swapped_plugins: Vec<String>,
}

/// Watches the directories of every component file.
pub(super) struct Watcher {
    _inner: notify::RecommendedWatcher,
}

impl App {
    /// The handler graph of route `r`: its `chain` of plugins, then those
    /// only its selection names, each a [`WasmHandler`] of its slot.
    fn pipeline(
        &self,
        r: &crate::config::RouteConfig,
        chain: &[&str],
        slots: &HashMap<String, Arc<PluginSlot>>,
    ) -> crate::pipeline::Pipeline {
        let mut names: Vec<&str> = chain.to_vec();
        if let Some(select) = &r.select {
            for name in select.handlers.values().chain(&select.default) {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        let index = |name: &str| names.iter().position(|n| *n == name).expect("every named handler is in the graph");
        let select = r.select.as_ref().map(|s| crate::pipeline::Select {
            field: s.field.clone(),
            by_value: s.handlers.iter().map(|(value, name)| (value.clone(), index(name))).collect(),
            default: s.default.as_deref().map(index),
        });
        let fresh = r.instances == Instances::Fresh;
        let handlers: Vec<Arc<dyn Handler>> =
            names.iter().map(|n| Arc::new(WasmHandler::new(slots[*n].clone(), fresh)) as Arc<dyn Handler>).collect();
        crate::pipeline::Pipeline::new(
            handlers,
            chain.len(),
            select,
            self.hub.store().connections.clone(),
            Arc::new(super::HubEffects(Arc::downgrade(&self.hub))),
        )
    }

    /// Makes `config`'s plugins and routes the served ones. Everything is
    /// compiled and checked before anything changes: on error nothing does.
    pub(super) async fn apply_config(self: &Arc<Self>, config: &Config) -> anyhow::Result<ReloadSummary> {
        let mut summary = ReloadSummary::default();
        // Token keys are read (again) first: a bad one changes nothing.
        let verifiers = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let context = || format!("config {}: routes[{i}].auth", config.source);
                r.auth.as_ref().map(|a| crate::auth::Verifier::load(a).map(Arc::new).with_context(context)).transpose()
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let old_slots = self.plugins.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut slots: HashMap<String, Arc<PluginSlot>> = HashMap::new();
        let mut swaps = Vec::new();
        let mut loads = Vec::new();
        for (name, plugin) in &config.plugins {
            let namespaces = Namespaces {
                kv: config.namespace_of(name).to_string(),
                channels: config.channel_namespace_of(name).to_string(),
            };
            let caps = super::event_caps(&config.limits.for_plugin(&plugin.limits));
            let key = || format!("config {}: plugins.{name}.component", config.source);
            // A new namespace (of either kind) makes a new slot; otherwise the slot stays, and
            // a changed component or changed limits are swapped in as a new
            // version that open connections run too.
            match old_slots.get(name).filter(|s| *s.namespaces() == namespaces) {
                Some(slot) => {
                    if slot.component() != plugin.component || slot.caps() != caps {
                        let bytes = tokio::fs::read(&plugin.component).await.with_context(|| {
                            format!("{}: cannot read component {}", key(), plugin.component.display())
                        })?;
                        swaps.push((slot.clone(), bytes, plugin.component.clone(), caps));
                    }
                    slots.insert(name.clone(), slot.clone());
                }
                None => loads.push(async move {
                    let key = || format!("config {}: plugins.{name}.component", config.source);
                    let slot = self.load_slot(name, &namespaces, caps, &plugin.component).await.with_context(key)?;
                    anyhow::Ok((name.clone(), slot))
                }),
            }
        }
        // New plugins compile side by side (each off the event loop): a
        // JavaScript or Python component takes seconds to compile cold.
        for (name, slot) in futures_util::future::try_join_all(loads).await? {
            summary.added_plugins.push(name.clone());
            slots.insert(name, slot);
        }
        for (slot, bytes, path, caps) in swaps {
            if self
                .swap(&slot, bytes, Some(&path), Some(caps))
                .await
                .with_context(|| format!("plugin `{}`", slot.name()))?
            {
                summary.swapped_plugins.push(slot.name().to_string());
            }
        }

        let routes: HashMap<Arc<str>, Arc<Route>> = config
            .routes
            .iter()
            .zip(verifiers)
            .map(|(r, auth)| {
                let path: Arc<str> = Arc::from(r.path.as_str());
                let handler: Arc<dyn Handler> = match (r.chain().as_slice(), &r.backend) {
                    (_, Some(backend)) => Arc::new(BackendHandler::new(
                        path.clone(),
                        super::backend_options(backend),
                        self.hub.store().connections.clone(),
                        Arc::new(super::HubEffects(Arc::downgrade(&self.hub))),
                        self.hub.metrics().clone(),
                    )),
                    ([plugin], None) if r.select.is_none() => {
                        Arc::new(WasmHandler::new(slots[*plugin].clone(), r.instances == Instances::Fresh))
                    }
                    ([], None) => unreachable!("a validated route names a plugin or a backend"),
                    (chain, None) => Arc::new(self.pipeline(r, chain, &slots)),
                };
                let route =
                    Route { path: path.clone(), handler, policy: super::connection_policy(&config.limits, r, auth) };
                (path, Arc::new(route))
            })
            .collect();
        let old_routes = self.hub.routes();
        summary.added_routes = routes.keys().filter(|p| !old_routes.contains_key(*p)).map(|p| p.to_string()).collect();
        summary.added_routes.sort();

        for (name, plugin) in &config.plugins {
            let quota = config.limits.for_plugin(&plugin.limits).kv_quota();
            self.hub.store().kv.set_quota(config.namespace_of(name), quota);
        }
        *self.plugins.lock().unwrap_or_else(|p| p.into_inner()) = slots;
        self.hub.history().set_rules(config.history_rules());
        summary.removed_routes = self.hub.set_routes(routes, close::GOING_AWAY, "route removed");
        Ok(summary)
    }

    /// Re-reads the config file this host started from and applies its
    /// plugins, routes and `[[channels]]` (other keys need a restart). On any error the
    /// host keeps serving what it served.
    pub async fn reload_config(self: &Arc<Self>) -> anyhow::Result<ReloadSummary> {
        let current = self.config.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let file = Config::load(Path::new(&current.source))?;
        let mut next = current.clone();
        next.plugins = file.plugins;
        next.routes = file.routes;
        next.channels = file.channels;
        next.validate(&next.source)?;
        let summary = self.apply_config(&next).await?;
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = next;
        self.watch_components();
        Ok(summary)
    }

    /// (Re)starts watching the directory of every component file; a change
    /// to a component reloads its plugin.
    pub(super) fn watch_components(self: &Arc<Self>) {
        let slots: Vec<Arc<PluginSlot>> =
            self.plugins.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut by_file: HashMap<PathBuf, Vec<String>> = HashMap::new();
        let mut dirs = HashSet::new();
        for slot in &slots {
            let file = canonical(&slot.component());
            if let Some(dir) = file.parent() {
                dirs.insert(dir.to_path_buf());
            }
            by_file.entry(file).or_default().push(slot.name().to_string());
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && (event.kind.is_create() || event.kind.is_modify())
            {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch component files; reload with SIGHUP or the admin API");
                return;
            }
        };
        for dir in &dirs {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a component directory");
            }
        }
        *self.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(Watcher { _inner: watcher });
        tokio::spawn(reload_on_change(Arc::downgrade(self), by_file, rx));
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Reloads plugins whose component files changed, until the watcher that
/// feeds `rx` is replaced or the app is gone.
async fn reload_on_change(
    app: std::sync::Weak<App>,
    by_file: HashMap<PathBuf, Vec<String>>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<PathBuf>,
) {
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(SETTLE).await;
        let mut changed = HashSet::from([first]);
        while let Ok(path) = rx.try_recv() {
            changed.insert(path);
        }
        let Some(app) = app.upgrade() else { return };
        let names: HashSet<&String> = changed.iter().filter_map(|p| by_file.get(&canonical(p))).flatten().collect();
        for name in names {
            let Some(slot) = app.slot(name) else { continue };
            let path = slot.component();
            let result = match tokio::fs::read(&path).await {
                Ok(bytes) => app.swap(&slot, bytes, None, None).await,
                Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
            };
            if let Err(e) = result {
                tracing::warn!(plugin = %name, reason = format!("{e:#}"), "changed component refused; the serving version stays");
            }
        }
    }
}
