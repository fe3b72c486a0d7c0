//! The conformance kit behind `wharf test`: checks a component headlessly
//! against the same runtime, limits and store semantics as `wharf serve`
//! (memory store), with simulated connections instead of sockets.
//!
//! 1. World check: the component compiles, its imports are listed, and
//!    anything Wharf does not provide is refused by name.
//! 2. Lifecycle smoke: open, a text message, a binary message, close, each
//!    without a trap and within the limits.
//! 3. Scenarios: TOML files of named clients and steps ([`scenario`]).
//!
//! One line per check, then `N passed, M failed`.

pub mod scenario;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::app::App;
use crate::close;
use crate::config::{Config, StoreChoice};
use crate::handler::Message;
use crate::transport::sim::{Received, Sim};
use scenario::{Matcher, Scenario, Step};

/// How long an `expect` step waits for a message.
const EXPECT_WAIT: Duration = Duration::from_secs(2);

/// The result of one check.
#[derive(Clone, Debug)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// `Err(reason)` when it failed.
    pub result: Result<(), String>,
    /// How long it took.
    pub took: Duration,
}

/// Every check of one run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// How many passed and failed.
    pub fn counts(&self) -> (usize, usize) {
        let failed = self.checks.iter().filter(|c| c.result.is_err()).count();
        (self.checks.len() - failed, failed)
    }

    /// One line per check, then the totals.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            match &c.result {
                Ok(()) => out += &format!("ok   {}\n", c.name),
                Err(why) => out += &format!("FAIL {}: {why}\n", c.name),
            }
        }
        let (passed, failed) = self.counts();
        out += &format!("{passed} passed, {failed} failed\n");
        out
    }

    /// A JUnit XML report.
    pub fn junit(&self, suite: &str) -> String {
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
        let (_, failed) = self.counts();
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\">\n",
            esc(suite),
            self.checks.len()
        );
        for c in &self.checks {
            let time = c.took.as_secs_f64();
            match &c.result {
                Ok(()) => out += &format!("  <testcase name=\"{}\" time=\"{time:.3}\"/>\n", esc(&c.name)),
                Err(why) => {
                    out += &format!(
                        "  <testcase name=\"{}\" time=\"{time:.3}\">\n    <failure message=\"{}\"/>\n  </testcase>\n",
                        esc(&c.name),
                        esc(why)
                    )
                }
            }
        }
        out += "</testsuite>\n";
        out
    }
}

/// A host config that mounts `component` as plugin `plugin` at each path.
fn config_for(component: &Path, plugin: &str, paths: &BTreeSet<String>, base: &Config) -> Config {
    let mut config = base.clone();
    config.store = StoreChoice::Memory.into();
    config.admin.enabled = false;
    config.plugins.clear();
    config.plugins.insert(
        plugin.to_string(),
        crate::config::PluginConfig {
            component: component.to_path_buf(),
            kv_namespace: None,
            channel_namespace: None,
            limits: Default::default(),
        },
    );
    config.routes = paths
        .iter()
        .map(|p| crate::config::RouteConfig {
            path: p.clone(),
            plugin: Some(plugin.to_string()),
            plugins: Vec::new(),
            select: None,
            backend: None,
            instances: Default::default(),
            origins: Vec::new(),
            subprotocols: Vec::new(),
            limits: Default::default(),
            auth: None,
            compression: Default::default(),
        })
        .collect();
    config
}

/// A host built as `wharf serve` builds one, on an empty memory store,
/// with no admin API and nothing served yet; its timers are due by a
/// simulated clock that moves only when a scenario advances it.
async fn fresh_app(base: &Config) -> anyhow::Result<Arc<App>> {
    let mut config = base.clone();
    config.store = StoreChoice::Memory.into();
    config.admin.enabled = false;
    crate::app::build_with_clock(&config, crate::clock::Clock::manual(crate::store::now_ms())).await
}

/// Runs every scenario against the plugins and routes of `config` as it
/// serves them (on an empty memory store, a simulated clock, no admin
/// API): a route of several handlers is tested as a whole. The first check
/// is that the config loads.
pub async fn run_config(scenarios: &[PathBuf], config: &Config) -> anyhow::Result<Report> {
    let scenarios: Vec<Scenario> = scenarios.iter().map(|p| Scenario::load(p)).collect::<anyhow::Result<_>>()?;
    let mut report = Report::default();
    let started = Instant::now();
    let loaded = fresh_app(config).await.map(drop).map_err(|e| format!("{e:#}"));
    let name = format!("config {}: {} plugins, {} routes", config.source, config.plugins.len(), config.routes.len());
    let ok = loaded.is_ok();
    report.checks.push(Check { name, result: loaded, took: started.elapsed() });
    if !ok {
        return Ok(report);
    }
    let only: Option<String> = (config.plugins.len() == 1).then(|| config.plugins.keys().next().cloned()).flatten();
    for s in &scenarios {
        let started = Instant::now();
        let app = fresh_app(config).await?;
        let result = run_scenario(&app, s, only.as_deref()).await;
        report.checks.push(Check { name: format!("scenario {}", s.name), result, took: started.elapsed() });
    }
    Ok(report)
}

/// Runs the world check, the smoke test and every scenario against the
/// component at `component`. `base` supplies limits and the cache directory.
pub async fn run(component: &Path, scenarios: &[PathBuf], base: &Config) -> anyhow::Result<Report> {
    let bytes = std::fs::read(component).with_context(|| format!("cannot read component {}", component.display()))?;
    let scenarios: Vec<Scenario> = scenarios.iter().map(|p| Scenario::load(p)).collect::<anyhow::Result<_>>()?;
    let plugin = component.file_stem().map_or("handler".into(), |s| {
        s.to_string_lossy().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_', "_")
    });
    let mut empty = base.clone();
    empty.plugins.clear();
    empty.routes.clear();
    let mut report = Report::default();

    // 1. World check.
    let started = Instant::now();
    let probe = fresh_app(&empty).await?;
    let world = match probe.component_imports(&bytes) {
        Err(e) => Err(format!("{e:#}")),
        Ok(imports) => match crate::runtime::check_imports(imports.iter().map(String::as_str)) {
            Ok(()) => {
                let wharf: Vec<&str> = imports.iter().filter(|i| i.starts_with("wharf:")).map(String::as_str).collect();
                Ok(format!(
                    "world: imports {} and {} WASI interfaces (sandboxed)",
                    if wharf.is_empty() { "nothing of wharf:handler".to_string() } else { wharf.join(", ") },
                    imports.len() - wharf.len()
                ))
            }
            Err(refused) => Err(refused),
        },
    };
    let world = match world {
        Ok(summary) => {
            let paths = BTreeSet::from(["/".to_string()]);
            let loaded = probe.serve_config(&config_for(component, &plugin, &paths, base)).await;
            // The config and plugin context name things the author did not
            // write (a generated config); keep the reasons.
            loaded.map(|_| summary).map_err(|e| {
                let reasons: Vec<String> = e
                    .chain()
                    .map(ToString::to_string)
                    .filter(|m| !m.starts_with("config ") && !m.starts_with("plugin `"))
                    .collect();
                reasons.join(": ")
            })
        }
        Err(e) => Err(e),
    };
    match world {
        Ok(name) => report.checks.push(Check { name, result: Ok(()), took: started.elapsed() }),
        Err(why) => {
            report.checks.push(Check { name: "world".into(), result: Err(why), took: started.elapsed() });
            return Ok(report);
        }
    }

    // 2. Lifecycle smoke, on the app the world check loaded.
    smoke(&probe, &mut report).await;

    // 3. Scenarios, each on a fresh host with an empty store.
    for s in &scenarios {
        let started = Instant::now();
        let paths: BTreeSet<String> = s
            .steps
            .iter()
            .filter_map(|st| match st {
                Step::Open { path, .. } => Some(path.clone()),
                _ => None,
            })
            .chain(["/".to_string()])
            .collect();
        let app = fresh_app(&empty).await?;
        app.serve_config(&config_for(component, &plugin, &paths, base)).await?;
        let result = run_scenario(&app, s, Some(&plugin)).await;
        report.checks.push(Check { name: format!("scenario {}", s.name), result, took: started.elapsed() });
    }
    Ok(report)
}

async fn smoke(app: &Arc<App>, report: &mut Report) {
    let mut sim = Sim::new(app.hub().clone());
    let mut check = |name: &str, result: Result<(), String>, took: Duration| {
        report.checks.push(Check { name: format!("smoke: {name}"), result, took });
    };
    let t = Instant::now();
    let opened = sim.open("smoke", "/", "", &[], &[]).await;
    let accepted = matches!(opened, Ok(None));
    check("open", opened.map(|_| ()), t.elapsed());
    if !accepted {
        return;
    }
    let t = Instant::now();
    check("text message", sim.send("smoke", Message::Text("wharf test".into())).await, t.elapsed());
    let t = Instant::now();
    check("binary message", sim.send("smoke", Message::Binary(vec![0, 1, 2, 255])).await, t.elapsed());
    let t = Instant::now();
    let closed = match sim.id("smoke") {
        Some(_) => {
            sim.close("smoke", close::NORMAL).await.or_else(|e| if e.contains("is closed") { Ok(()) } else { Err(e) })
        }
        None => Ok(()),
    };
    check("close", closed, t.elapsed());
}

fn json_subset(expected: &serde_json::Value, actual: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (expected, actual) {
        (Object(e), Object(a)) => e.iter().all(|(k, v)| a.get(k).is_some_and(|av| json_subset(v, av))),
        (Array(e), Array(a)) => e.len() == a.len() && e.iter().zip(a).all(|(x, y)| json_subset(x, y)),
        _ => expected == actual,
    }
}

fn matches(matcher: &Matcher, got: &Received) -> bool {
    match (matcher, got) {
        (Matcher::Text(t), Received::Data(Message::Text(g))) => t == g,
        (Matcher::Regex(r), Received::Data(Message::Text(g))) => regex_lite::Regex::new(r).is_ok_and(|r| r.is_match(g)),
        (Matcher::JsonSubset(j), Received::Data(Message::Text(g))) => {
            serde_json::from_str::<serde_json::Value>(g).is_ok_and(|v| json_subset(j, &v))
        }
        (Matcher::Binary(b), Received::Data(Message::Binary(g))) => b == g,
        (Matcher::Close(code), Received::Closed(got)) => code == got,
        _ => false,
    }
}

/// Runs one scenario; `kv` steps without `plugin` use `default_plugin`'s
/// namespace.
async fn run_scenario(app: &Arc<App>, s: &Scenario, default_plugin: Option<&str>) -> Result<(), String> {
    let mut sim = Sim::new(app.hub().clone());
    let result = async {
        for (i, step) in s.steps.iter().enumerate() {
            run_step(app, &mut sim, step, default_plugin).await.map_err(|e| format!("step[{i}]: {e}"))?;
        }
        Ok(())
    }
    .await;
    sim.close_all().await;
    result
}

async fn run_step(app: &Arc<App>, sim: &mut Sim, step: &Step, default_plugin: Option<&str>) -> Result<(), String> {
    match step {
        Step::Open { client, path, query, headers, subprotocols, expect_reject } => {
            match (sim.open(client, path, query, headers, subprotocols).await?, expect_reject) {
                (None, None) => Ok(()),
                (Some(status), Some(want)) if status == *want => Ok(()),
                (None, Some(want)) => Err(format!("expected a reject with {want}, the handler accepted")),
                (Some(status), _) => Err(format!("the handler rejected with {status}")),
            }
        }
        Step::Send { client, msg } => sim.send(client, msg.clone()).await,
        Step::Expect { client, matcher } => match sim.next(client, EXPECT_WAIT).await {
            Some(got) if matches(matcher, &got) => Ok(()),
            Some(got) => Err(format!("{client} expected {matcher:?}, got {got}")),
            None => Err(format!("{client} expected {matcher:?}, nothing arrived")),
        },
        Step::ExpectNone { client, ms } => match sim.next(client, Duration::from_millis(*ms)).await {
            None => Ok(()),
            Some(got) => Err(format!("{client} expected nothing, got {got}")),
        },
        Step::Close { client, code } => sim.close(client, *code).await,
        Step::Advance { ms } => app.scheduler().advance(*ms).await.map(drop).map_err(|e| format!("advance_ms: {e:#}")),
        Step::Kv { key, equals, set, plugin } => {
            let Some(plugin) = plugin.as_deref().or(default_plugin) else {
                return Err("the config has several plugins: name whose key/value this is (`plugin = ...`)".into());
            };
            let namespace = app.kv_namespace(plugin).ok_or_else(|| format!("no plugin named `{plugin}`"))?;
            let namespace = namespace.as_str();
            if let Some(value) = set {
                return app
                    .store()
                    .kv
                    .set(namespace, key, value.clone().into_bytes(), None)
                    .await
                    .map_err(|e| e.to_string());
            }
            let got = app.store().kv.get(namespace, key).await.map_err(|e| e.to_string())?;
            let got = got.map(|v| String::from_utf8_lossy(&v).into_owned());
            if got == *equals { Ok(()) } else { Err(format!("kv {key:?} is {got:?}, expected {equals:?}")) }
        }
        Step::Metadata { client, key, equals } => {
            let id = sim.id(client).ok_or_else(|| format!("client `{client}` never opened"))?;
            let got = app
                .store()
                .connections
                .metadata_get(id, key)
                .await
                .map_err(|e| format!("metadata of `{client}`: {e}"))?;
            if got == *equals {
                Ok(())
            } else {
                Err(format!("metadata {key:?} of {client} is {got:?}, expected {equals:?}"))
            }
        }
    }
}
