//! `make bench-pipeline`: what each handler of a route's chain costs a
//! message, in one run on one release host: the echo example alone, behind
//! a field selection (`[routes.select]` on `action`), and after one and
//! two `pass` test handlers that hand every message on to the next
//! (`pipeline.forward`). 64 B echo at 100 connections, the routes
//! interleaved; CPU per message per extra handler is the difference of the
//! medians. Written to `BENCHMARKS.md` between its own markers.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::load::{self, EchoResult, Window};
use crate::matrix::med;
use crate::server::Server;
use crate::stats::median;

/// Where the generated section starts in `BENCHMARKS.md`.
pub const BEGIN: &str = "<!-- make bench-pipeline: begin -->";
/// Where it ends.
pub const END: &str = "<!-- make bench-pipeline: end -->";

/// The routes measured, with what serves each.
pub const ROUTES: [(&str, &str); 4] = [
    ("/echo", "echo alone"),
    ("/select", "echo behind a field selection"),
    ("/chain2", "pass → echo"),
    ("/chain3", "pass → pass → echo"),
];

/// How much to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Runs per route (interleaved).
    pub runs: usize,
    /// Measured seconds per run.
    pub secs: f64,
    /// Connections.
    pub conns: usize,
    /// The core the host is pinned to, if any.
    pub server_core: Option<usize>,
}

impl Plan {
    /// The issue's points.
    pub fn full(server_core: Option<usize>) -> Plan {
        Plan { runs: 9, secs: 3.0, conns: 100, server_core }
    }

    /// A moment of each, to check the harness.
    pub fn quick(server_core: Option<usize>) -> Plan {
        Plan { runs: 1, secs: 0.5, conns: 20, server_core }
    }
}

/// Every run of every route.
#[derive(Debug, Serialize)]
pub struct Results {
    /// (route, runs), in [`ROUTES`] order.
    pub routes: Vec<(String, Vec<EchoResult>)>,
    /// The same of an earlier build, run beside it (`--before`).
    pub before: Option<Vec<(String, Vec<EchoResult>)>>,
}

fn host(dir: &Path, wharf: &Path, components: &Path, core: Option<usize>) -> anyhow::Result<Server> {
    let c = |name: &str| components.join(format!("{name}.wasm")).display().to_string();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"memory\"\n[admin]\nenabled = false\n\
         [limits]\nconnect_rate = 0\nmax_handshakes_per_ip = 1024\n\
         [plugins.echo]\ncomponent = {:?}\n[plugins.pass1]\ncomponent = {:?}\n[plugins.pass2]\ncomponent = {:?}\n\
         [[routes]]\npath = \"/echo\"\nplugin = \"echo\"\n\
         [[routes]]\npath = \"/select\"\nplugins = [\"echo\"]\n\
         [routes.select]\nfield = \"action\"\nhandlers = {{ echo = \"echo\" }}\n\
         [[routes]]\npath = \"/chain2\"\nplugins = [\"pass1\", \"echo\"]\n\
         [routes.select]\nfield = \"action\"\nhandlers = {{ echo = \"pass1\" }}\n\
         [[routes]]\npath = \"/chain3\"\nplugins = [\"pass1\", \"pass2\", \"echo\"]\n\
         [routes.select]\nfield = \"action\"\nhandlers = {{ echo = \"pass1\" }}\n",
        c("echo"),
        c("pass"),
        c("pass"),
    );
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, text)?;
    let config = file.to_str().unwrap_or_default();
    Server::start("wharf", wharf, &["serve", "--config", config], core, "wharf listening addr=")
}

/// A JSON text of `size` bytes whose `action` is `echo`: what every route
/// is sent, the selections reading its `action`.
pub fn selected(size: usize) -> String {
    let head = r#"{"action":"echo","text":""#;
    format!("{head}{}\"}}", "x".repeat(size.saturating_sub(head.len() + 2)))
}

/// Runs the plan with the `wharf` binary and the components (echo, pass)
/// in `components`; with `before`, that binary's host too, each run of
/// each route on one host then the other, the first one alternating
/// (pinned to the same core, one loaded at a time).
pub async fn run(plan: &Plan, wharf: &Path, before: Option<&Path>, components: &Path) -> anyhow::Result<Results> {
    let dir = tempfile::tempdir()?;
    let mut hosts = vec![host(dir.path(), wharf, components, plan.server_core)?];
    if let Some(before) = before {
        hosts.push(host(dir.path(), before, components, plan.server_core)?);
    }
    let window = Window { warmup: Duration::from_millis(500), measure: Duration::from_secs_f64(plan.secs) };
    let empty = || ROUTES.iter().map(|(p, _)| (p.to_string(), Vec::new())).collect::<Vec<(String, Vec<EchoResult>)>>();
    let mut results: Vec<_> = hosts.iter().map(|_| empty()).collect();
    for run in 0..plan.runs {
        // Each run starts at the next route, so that none is always first.
        for k in 0..ROUTES.len() {
            let i = (k + run) % ROUTES.len();
            let (path, what) = ROUTES[i];
            // And alternates which build goes first.
            for h in (0..hosts.len()).map(|h| (h + run) % hosts.len()) {
                let server = &hosts[h];
                let build = if h == 0 { "this build" } else { "before" };
                eprintln!("run {}/{}: {what} ({path}), {} connections, {build}", run + 1, plan.runs, plan.conns);
                let r =
                    load::echo_text(&server.url(path), plan.conns, selected(64), 1, window, Some(server.pid())).await?;
                anyhow::ensure!(r.errors == 0, "{path}: {} replies missing", r.errors);
                results[h][i].1.push(r);
            }
        }
    }
    let before = (results.len() > 1).then(|| results.pop()).flatten();
    Ok(Results { routes: results.pop().unwrap_or_default(), before })
}

/// What route `b` costs a message more than route `a`: the median of the
/// differences of their CPU per message within each run (measured seconds
/// apart, so the machine's slower drifts cancel).
pub fn paired(routes: &[(String, Vec<EchoResult>)], a: usize, b: usize) -> f64 {
    let d: Vec<f64> = routes[a].1.iter().zip(&routes[b].1).map(|(x, y)| y.cpu_us_per_msg - x.cpu_us_per_msg).collect();
    median(&d)
}

/// The generated section of `BENCHMARKS.md`.
pub fn markdown(r: &Results, plan: &Plan, machine: &str, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "_Generated by `{command}` on {machine}: one release host, 64 B echo at {} connections (one message in \
         flight each, a JSON text whose `action` is `echo`), the routes interleaved (each run starting at the next); medians of {} runs of {} s. The \
         selection reads `action` (`[routes.select]`); `pass` hands each message on to the next handler of the chain \
         (`pipeline.forward`); the chains reach the first `pass` through their selection._\n",
        plan.conns, plan.runs, plan.secs
    );
    let _ = writeln!(s, "| route | msgs/s | CPU µs per message | vs echo alone | p99 ms |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
    let cpu: Vec<f64> = r.routes.iter().map(|(_, runs)| med(runs, |x| x.cpu_us_per_msg)).collect();
    for (i, (_, runs)) in r.routes.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.2} | {:+.2} | {:.2} |",
            ROUTES[i].1,
            med(runs, |x| x.msgs_per_s),
            cpu[i],
            paired(&r.routes, 0, i),
            med(runs, |x| x.latency.p99_us / 1000.0)
        );
    }
    let _ = writeln!(
        s,
        "\nCPU per message of the selection: {:.2} µs; of each `pass` handler: {:.2} µs (first), {:.2} µs (second); \
         medians of the differences within each run.",
        paired(&r.routes, 0, 1),
        paired(&r.routes, 1, 2),
        paired(&r.routes, 2, 3)
    );
    if let Some(before) = &r.before {
        let was: Vec<f64> = before.iter().map(|(_, runs)| med(runs, |x| x.cpu_us_per_msg)).collect();
        let _ = writeln!(s, "\nBeside the build before (`--before`), same run, same core:\n");
        let _ = writeln!(s, "| route | CPU µs per message, before | this build | ratio (median of each run's) |");
        let _ = writeln!(s, "| --- | ---: | ---: | ---: |");
        for i in 0..ROUTES.len() {
            let ratios: Vec<f64> =
                r.routes[i].1.iter().zip(&before[i].1).map(|(x, y)| x.cpu_us_per_msg / y.cpu_us_per_msg).collect();
            let _ = writeln!(s, "| {} | {:.2} | {:.2} | {:.2}× |", ROUTES[i].1, was[i], cpu[i], median(&ratios));
        }
        let _ = writeln!(
            s,
            "\nPer `pass` handler before: {:.2} µs (first), {:.2} µs (second).",
            paired(before, 1, 2),
            paired(before, 2, 3)
        );
    }
    let _ = writeln!(s, "\n{END}");
    s
}
