//! Plugin slots: the version of each plugin that serves new events now, how
//! a new version is compiled and checked off the event loop, and the swap.
//!
//! A swap replaces one pointer. An event takes the current version when it
//! starts and keeps it to its end, so events already running finish on the
//! old version and every later event runs on the new one; connections,
//! metadata, channel membership and key/value data are not touched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::App;
use crate::admin::{ChannelNamespaces, PluginAdmin, PluginInfo};
use crate::runtime::{EventCaps, Namespaces, Plugin};
use crate::store::now_ms;

/// One compiled version of a plugin.
pub struct PluginVersion {
    /// The compiled, pre-linked plugin with its instance pool.
    pub plugin: Plugin,
    /// SHA-256 of the component bytes, hex.
    pub sha256: String,
    /// When it was swapped in, Unix milliseconds.
    pub loaded_at_ms: u64,
    /// 1 for the first version, +1 for each swap.
    pub generation: u64,
}

/// A named plugin and the version serving it now.
pub struct PluginSlot {
    name: String,
    namespaces: Namespaces,
    component: std::sync::Mutex<PathBuf>,
    current: ArcSwap<PluginVersion>,
    generations: AtomicU64,
    /// Serializes loads of this plugin, so versions swap in the order they
    /// were asked for.
    loading: tokio::sync::Mutex<()>,
}

impl PluginSlot {
    /// The version serving new events.
    pub fn current(&self) -> Arc<PluginVersion> {
        self.current.load_full()
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The per-event caps of the version serving now.
    pub fn caps(&self) -> EventCaps {
        self.current().plugin.caps()
    }

    /// The plugin's key/value and channel namespaces.
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    /// The component file it was last loaded from.
    pub fn component(&self) -> PathBuf {
        self.component.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl App {
    /// Compiles and checks component bytes off the event loop: the component
    /// must be one, target the Wharf world, link, and instantiate without a
    /// trap. The checked instance warms the pool.
    pub(super) async fn compile(
        self: &Arc<Self>,
        name: &str,
        namespaces: &Namespaces,
        caps: EventCaps,
        bytes: Vec<u8>,
    ) -> anyhow::Result<(Plugin, String)> {
        let sha = sha256_hex(&bytes);
        let (app, n, ns) = (self.clone(), name.to_string(), namespaces.clone());
        let plugin = tokio::task::spawn_blocking(move || app.runtime.load_plugin_bytes(&n, &ns, caps, &bytes))
            .await
            .context("the compile task panicked")??;
        plugin.check().await.context("the component failed its load-time check")?;
        Ok((plugin, sha))
    }

    /// A new slot for plugin `name`, loaded from `component`.
    pub(super) async fn load_slot(
        self: &Arc<Self>,
        name: &str,
        namespaces: &Namespaces,
        caps: EventCaps,
        component: &Path,
    ) -> anyhow::Result<Arc<PluginSlot>> {
        let bytes = tokio::fs::read(component)
            .await
            .with_context(|| format!("plugin `{name}`: cannot read component {}", component.display()))?;
        let (size, started) = (bytes.len(), std::time::Instant::now());
        let (plugin, sha256) = self
            .compile(name, namespaces, caps, bytes)
            .await
            .with_context(|| format!("plugin `{name}`: loading component {}", component.display()))?;
        // A cold compile of a JavaScript or Python component takes seconds;
        // one from the compile cache, a few hundred milliseconds.
        let ms = started.elapsed().as_millis() as u64;
        let language = plugin.language().name();
        tracing::info!(plugin = %name, component = %component.display(), language, bytes = size, ms, %sha256, "plugin loaded");
        Ok(Arc::new(PluginSlot {
            name: name.to_string(),
            namespaces: namespaces.clone(),
            component: std::sync::Mutex::new(component.to_path_buf()),
            current: ArcSwap::from_pointee(PluginVersion { plugin, sha256, loaded_at_ms: now_ms(), generation: 1 }),
            generations: AtomicU64::new(1),
            loading: tokio::sync::Mutex::new(()),
        }))
    }

    /// Compiles `bytes` as the next version of `slot`, with new per-event
    /// caps if given (else the current ones), and swaps it in. On any error
    /// the serving version stays. Unchanged bytes and caps are not swapped.
    pub(super) async fn swap(
        self: &Arc<Self>,
        slot: &Arc<PluginSlot>,
        bytes: Vec<u8>,
        component: Option<&Path>,
        caps: Option<EventCaps>,
    ) -> anyhow::Result<bool> {
        let _one_at_a_time = slot.loading.lock().await;
        let caps = caps.unwrap_or_else(|| slot.caps());
        if sha256_hex(&bytes) == slot.current().sha256 && caps == slot.caps() {
            if let Some(path) = component {
                *slot.component.lock().unwrap_or_else(|p| p.into_inner()) = path.to_path_buf();
            }
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let (plugin, sha256) = self.compile(&slot.name, &slot.namespaces, caps, bytes).await?;
        let generation = slot.generations.fetch_add(1, Ordering::SeqCst) + 1;
        slot.current.store(Arc::new(PluginVersion {
            plugin,
            sha256: sha256.clone(),
            loaded_at_ms: now_ms(),
            generation,
        }));
        if let Some(path) = component {
            *slot.component.lock().unwrap_or_else(|p| p.into_inner()) = path.to_path_buf();
        }
        tracing::info!(plugin = %slot.name, %sha256, generation, took_ms = started.elapsed().as_millis() as u64, "plugin swapped");
        Ok(true)
    }

    pub(super) fn slot(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.plugins.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// What the admin API shows of one plugin.
    fn info(&self, slot: &PluginSlot) -> PluginInfo {
        let loaded = slot.current();
        let mut routes: Vec<String> = self
            .hub
            .routes()
            .values()
            .filter(|r| r.handler.name().split(',').any(|n| n == slot.name))
            .map(|r| r.path.to_string())
            .collect();
        routes.sort();
        PluginInfo {
            name: slot.name.clone(),
            routes,
            component: slot.component().display().to_string(),
            sha256: loaded.sha256.clone(),
            loaded_at_ms: loaded.loaded_at_ms,
            generation: loaded.generation,
            kv_namespace: slot.namespaces.kv.clone(),
            channel_namespace: slot.namespaces.channels.clone(),
        }
    }
}

/// The admin API's handle on the plugins.
pub(super) struct AdminPlugins(pub Arc<App>);

#[async_trait]
impl PluginAdmin for AdminPlugins {
    fn list(&self) -> Vec<PluginInfo> {
        let slots: Vec<_> = self.0.plugins.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut list: Vec<_> = slots.iter().map(|s| self.0.info(s)).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    fn get(&self, name: &str) -> Option<PluginInfo> {
        self.0.slot(name).map(|s| self.0.info(&s))
    }

    fn channel_namespaces(&self) -> ChannelNamespaces {
        let config = self.0.config.lock().unwrap_or_else(|p| p.into_inner());
        ChannelNamespaces {
            by_plugin: config
                .plugins
                .keys()
                .map(|n| (n.clone(), config.channel_namespace_of(n).to_string()))
                .chain(config.routes.iter().filter_map(|r| {
                    let ns = r.backend.as_ref()?.channel_namespace();
                    Some((crate::grip::handler_name(&r.path), ns.to_string()))
                }))
                .collect(),
            default: config.admin.default_channel_namespace.clone(),
        }
    }

    async fn upload(&self, name: &str, bytes: Vec<u8>) -> Result<Option<PluginInfo>, String> {
        let Some(slot) = self.0.slot(name) else { return Ok(None) };
        match self.0.swap(&slot, bytes, None, None).await {
            Ok(_) => Ok(Some(self.0.info(&slot))),
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(plugin = %name, %reason, "uploaded component refused; the serving version stays");
                Err(reason)
            }
        }
    }
}
