//! `wharf-bench`: the load generator, the baseline server and the matrix.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use wharf_bench::{baseline, cluster, edge, grip, history, languages, load, matrix, pipeline, report, soak, timers};

#[derive(Parser)]
#[command(name = "wharf-bench", about = "Load generator, native baseline and benchmark matrix for Wharf")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the native baseline (`/echo`, `/broadcast`) until killed.
    Baseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Closed-loop echo: prints one JSON result.
    Echo {
        url: String,
        #[arg(long, default_value_t = 1)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        depth: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// The server's process id, for its CPU time.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// An unpaced burst of MESSAGES to SUBS subscribers of a broadcast
    /// route: how many of the deliveries arrive; prints one JSON result.
    Burst {
        url: String,
        #[arg(long, default_value_t = 1000)]
        subs: usize,
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Seconds a subscriber waits for its next message before it counts as failed.
        #[arg(long, default_value_t = 10)]
        quiet_secs: u64,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Broadcast fan-out: one publisher, N subscribers; prints one JSON result.
    Broadcast {
        url: String,
        #[arg(long, default_value_t = 1000)]
        subs: usize,
        /// Messages per second; 0 publishes as fast as they are delivered.
        #[arg(long, default_value_t = 0)]
        rate: u32,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Connect storm, then hold the connections idle and read the server's RSS.
    Idle {
        url: String,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[arg(long, default_value_t = 2)]
        hold_secs: u64,
        #[arg(long)]
        pid: u32,
    },
    /// The whole matrix against the baseline and Wharf; writes the report.
    Matrix {
        /// A few seconds of everything instead of the full matrix.
        #[arg(long)]
        quick: bool,
        #[command(flatten)]
        host: HostArgs,
        /// The Markdown file whose generated section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// The chart (SVG).
        #[arg(long, default_value = "bench/chart.svg")]
        chart: PathBuf,
        /// Raw results (JSON).
        #[arg(long, default_value = "target/bench/results.json")]
        json: PathBuf,
        /// Pin the servers to this core (run the generator itself on
        /// another, e.g. under `taskset -c 1`).
        #[arg(long)]
        server_core: Option<usize>,
    },
    /// Writes the matrix's section of the report and its chart again from
    /// the raw results of a run (after a change to the report alone).
    Report {
        /// Raw results (JSON) of `matrix`.
        #[arg(long, default_value = "target/bench/results.json")]
        json: PathBuf,
        /// The Markdown file whose generated section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// The chart (SVG).
        #[arg(long, default_value = "bench/chart.svg")]
        chart: PathBuf,
        /// The command that made the results, for the report.
        #[arg(long, default_value = "make bench")]
        command: String,
    },
    /// Broadcast across 1, 2 and 3 hosts on one Redis beside one host on
    /// the memory store; writes its section of the report.
    Cluster {
        /// A second of everything instead of the full plan.
        #[arg(long)]
        quick: bool,
        #[command(flatten)]
        host: HostArgs,
        /// The Markdown file whose generated section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Raw results (JSON).
        #[arg(long, default_value = "target/bench/cluster.json")]
        json: PathBuf,
    },
    /// The echo and chat examples in Rust, JavaScript and Python side by
    /// side (start-up, throughput, memory); writes its section of the
    /// report. Reads the `invoke` bench's medians when it ran first.
    Languages {
        /// A second of everything instead of the full plan.
        #[arg(long)]
        quick: bool,
        /// The wharf binary.
        #[arg(long, default_value = "target/release/wharf")]
        wharf: PathBuf,
        /// The Markdown file whose generated section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Raw results (JSON).
        #[arg(long, default_value = "target/bench/languages.json")]
        json: PathBuf,
        /// Pin the hosts to this core (run the generator itself on another,
        /// e.g. under `taskset -c 1`).
        #[arg(long)]
        server_core: Option<usize>,
    },
    /// Echo through one WebSocket-over-HTTP backend behind Wharf and behind
    /// Pushpin, side by side; writes its section of the report.
    Grip {
        /// A second of each point instead of the full plan.
        #[arg(long)]
        quick: bool,
        /// The wharf binary.
        #[arg(long, default_value = "target/release/wharf")]
        wharf: PathBuf,
        /// The Markdown file whose generated section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Raw results (JSON).
        #[arg(long, default_value = "target/bench/grip.json")]
        json: PathBuf,
        /// Pin the gateways to this core.
        #[arg(long)]
        server_core: Option<usize>,
    },
    /// What TLS, permessage-deflate and connection tokens cost: echo,
    /// handshakes and idle memory; writes its section of the report.
    Edge {
        /// A moment of each point instead of the full plan.
        #[arg(long)]
        quick: bool,
        /// The wharf binary.
        #[arg(long, default_value = "target/release/wharf")]
        wharf: PathBuf,
        /// The echo example's component.
        #[arg(long, default_value = "target/wasm32-wasip2/release/echo.wasm")]
        echo: PathBuf,
        /// The Markdown file whose generated section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Raw results (JSON).
        #[arg(long, default_value = "target/bench/edge.json")]
        json: PathBuf,
        /// Pin the hosts to this core.
        #[arg(long)]
        server_core: Option<usize>,
    },
    /// What channel history costs: fan-out with history on and off on the
    /// memory and embedded stores side by side, and the time to recover
    /// missed messages; writes its section of the report.
    History {
        /// A moment of each point instead of the full plan.
        #[arg(long)]
        quick: bool,
        /// The wharf binary.
        #[arg(long, default_value = "target/release/wharf")]
        wharf: PathBuf,
        /// Where the chat and rooms examples' components are.
        #[arg(long, default_value = "target/wasm32-wasip2/release")]
        components: PathBuf,
        /// The Markdown file whose generated section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Raw results (JSON).
        #[arg(long, default_value = "target/bench/history.json")]
        json: PathBuf,
        /// Pin the hosts to this core.
        #[arg(long)]
        server_core: Option<usize>,
    },
    /// What each handler of a route's chain costs a message: echo alone,
    /// behind a selection, after one and two forwarding handlers; writes
    /// its section of the report.
    Pipeline {
        /// A moment of each point instead of the full plan.
        #[arg(long)]
        quick: bool,
        /// The wharf binary.
        #[arg(long, default_value = "target/release/wharf")]
        wharf: PathBuf,
        /// An earlier wharf binary, measured beside it in the same run.
        #[arg(long)]
        before: Option<PathBuf>,
        /// Where the echo and pass components are.
        #[arg(long, default_value = "target/wasm32-wasip2/release")]
        components: PathBuf,
        /// The Markdown file whose generated section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Raw results (JSON).
        #[arg(long, default_value = "target/bench/pipeline.json")]
        json: PathBuf,
        /// Pin the host to this core.
        #[arg(long)]
        server_core: Option<usize>,
    },
    /// How late timers fire with 10,000 pending, and how many one host
    /// fires a second, on the memory, embedded and Redis stores side by
    /// side; writes its section of the report.
    Timers {
        /// A moment of each point instead of the full plan.
        #[arg(long)]
        quick: bool,
        /// The wharf binary.
        #[arg(long, default_value = "target/release/wharf")]
        wharf: PathBuf,
        /// The `timers` test guest.
        #[arg(long, default_value = "target/wasm32-wasip2/release/timers.wasm")]
        component: PathBuf,
        /// The Markdown file whose generated section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Raw results (JSON).
        #[arg(long, default_value = "target/bench/timers.json")]
        json: PathBuf,
        /// Pin the hosts to this core.
        #[arg(long)]
        server_core: Option<usize>,
    },
    /// Mixed traffic for a long time against a host on the embedded store
    /// and one on Redis (restarted midway), side by side; writes its
    /// section of the report and fails when a check does not hold.
    Soak {
        /// Minutes of traffic.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Two minutes, to try the harness.
        #[arg(long)]
        quick: bool,
        /// The wharf binary.
        #[arg(long, default_value = "target/release/wharf")]
        wharf: PathBuf,
        /// The compiled components (examples and test guests).
        #[arg(long, default_value = "target/wasm32-wasip2/release")]
        components: PathBuf,
        /// The Markdown file whose generated section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Raw results (JSON).
        #[arg(long, default_value = "target/bench/soak.json")]
        json: PathBuf,
    },
}

/// The host under test, for `matrix` and `cluster`.
#[derive(clap::Args)]
struct HostArgs {
    /// The wharf binary.
    #[arg(long, default_value = "target/release/wharf")]
    wharf: PathBuf,
    /// The Wharf config the benchmark serves.
    #[arg(long, default_value = "bench/wharf.toml")]
    config: PathBuf,
    /// The peers' servers (Node `ws`, workerd), run beside Wharf when their
    /// npm packages are installed there (`npm ci --prefix bench/peers`).
    #[arg(long, default_value = "bench/peers")]
    peers: PathBuf,
}

impl HostArgs {
    fn programs(self) -> anyhow::Result<matrix::Programs> {
        Ok(matrix::Programs {
            bench: std::env::current_exe()?,
            wharf: self.wharf,
            config: self.config,
            peers: self.peers,
        })
    }
}

/// Writes raw results as JSON, making the directory if needed.
fn write_json(path: &std::path::Path, v: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(v)?)?;
    Ok(())
}

/// A path made absolute (it must exist), for the hosts the runs start.
fn absolute(p: PathBuf) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
}

/// Writes the raw `results` to `json` and `section` between `begin` and
/// `end` of the report `out`.
fn publish(
    out: &std::path::Path,
    json: &std::path::Path,
    results: &impl serde::Serialize,
    (begin, end): (&str, &str),
    section: &str,
) -> anyhow::Result<()> {
    write_json(json, results)?;
    let text = std::fs::read_to_string(out).unwrap_or_default();
    std::fs::write(out, report::splice_between(&text, begin, end, section))?;
    eprintln!("wrote {} and {}", out.display(), json.display());
    Ok(())
}

fn print(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Thousands of sockets: raise the soft open-file limit to the hard one.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let window = |secs: u64| load::Window { warmup: Duration::from_secs(1), measure: Duration::from_secs(secs) };
    match Cli::parse().command {
        Command::Baseline { listen } => {
            // The host's accept backlog (4096), so that storms compare alike.
            let addr: std::net::SocketAddr = listen.parse()?;
            let socket =
                if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            let listener = socket.listen(4096)?;
            let addr = listener.local_addr()?;
            anyhow::ensure!(addr.ip().is_loopback(), "the baseline listens on loopback only");
            println!("baseline listening on {addr}");
            // Serve on a multi-threaded runtime, like the host.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
                let listener = listener.into_std().expect("std listener");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    baseline::serve(listener).await
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the baseline server panicked"))??;
        }
        Command::Echo { url, conns, size, depth, secs, pid } => {
            print(&load::echo(&url, conns, size, depth, window(secs), pid).await?)?
        }
        Command::Broadcast { url, subs, rate, size, secs, pid } => {
            print(&load::broadcast(&url, subs, rate, size, window(secs), pid).await?)?
        }
        Command::Burst { url, subs, messages, size, quiet_secs, pid } => {
            print(&load::burst(&url, subs, messages, size, Duration::from_secs(quiet_secs), pid).await?)?
        }
        Command::Idle { url, conns, hold_secs, pid } => {
            print(&load::idle(&url, conns, Duration::from_secs(hold_secs), pid).await?)?
        }
        Command::Matrix { quick, host, out, chart, json, server_core } => {
            let core = server_core;
            let plan = if quick { matrix::Plan::quick(core) } else { matrix::Plan::full(core) };
            let mut results = matrix::run(&plan, &host.programs()?).await?;
            results.invoke = report::criterion_medians(std::path::Path::new("target/criterion/on-message"));
            write_json(&json, &results)?;
            let command = if quick { "make bench-quick" } else { "make bench" };
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            std::fs::write(&out, report::splice(&text, &report::markdown(&results, command)))?;
            std::fs::write(&chart, report::chart(&results))?;
            eprintln!("wrote {}, {} and {}", out.display(), chart.display(), json.display());
        }
        Command::Report { json, out, chart, command } => {
            let raw = std::fs::read_to_string(&json).map_err(|e| anyhow::anyhow!("{}: {e}", json.display()))?;
            let results: matrix::Results =
                serde_json::from_str(&raw).map_err(|e| anyhow::anyhow!("{}: {e}", json.display()))?;
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            std::fs::write(&out, report::splice(&text, &report::markdown(&results, &command)))?;
            std::fs::write(&chart, report::chart(&results))?;
            eprintln!("wrote {} and {} from {}", out.display(), chart.display(), json.display());
        }
        Command::Cluster { quick, host, out, json } => {
            let plan = if quick { cluster::Plan::quick() } else { cluster::Plan::full() };
            let cells = cluster::run(&plan, &host.programs()?).await?;
            write_json(&json, &cells)?;
            let command = if quick { "make bench-cluster-quick" } else { "make bench-cluster" };
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let section = cluster::markdown(&cells, &plan, command);
            std::fs::write(&out, report::splice_between(&text, cluster::BEGIN, cluster::END, &section))?;
            eprintln!("wrote {} and {}", out.display(), json.display());
        }
        Command::Languages { quick, wharf, out, json, server_core } => {
            let plan = if quick { languages::Plan::quick(server_core) } else { languages::Plan::full(server_core) };
            let root = std::env::current_dir()?;
            let wharf = std::fs::canonicalize(&wharf).map_err(|e| anyhow::anyhow!("{}: {e}", wharf.display()))?;
            let invoke = report::criterion_medians(std::path::Path::new("target/criterion/on-message"));
            let results = languages::run(&plan, &languages::Programs { wharf, root }, &invoke).await?;
            write_json(&json, &results)?;
            let command = if quick { "make bench-languages-quick" } else { "make bench-languages" };
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let section = languages::markdown(&results, &plan, &report::machine(server_core), command);
            std::fs::write(&out, report::splice_between(&text, languages::BEGIN, languages::END, &section))?;
            eprintln!("wrote {} and {}", out.display(), json.display());
        }
        Command::Grip { quick, wharf, out, json, server_core } => {
            let plan = if quick { grip::Plan::quick(server_core) } else { grip::Plan::full(server_core) };
            let points = grip::run(&plan, &grip::wharf_binary(&wharf)?).await?;
            write_json(&json, &points)?;
            let command = if quick { "make bench-grip-quick" } else { "make bench-grip" };
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let section = grip::markdown(&points, &plan, &report::machine(server_core), command);
            std::fs::write(&out, report::splice_between(&text, grip::BEGIN, grip::END, &section))?;
            eprintln!("wrote {} and {}", out.display(), json.display());
        }
        Command::Edge { quick, wharf, echo, out, json, server_core } => {
            let plan = if quick { edge::Plan::quick(server_core) } else { edge::Plan::full(server_core) };
            let results = edge::run(&plan, &absolute(wharf)?, &absolute(echo)?).await?;
            let command = if quick { "make bench-edge-quick" } else { "make bench-edge" };
            let section = edge::markdown(&results, &plan, &report::machine(server_core), command);
            publish(&out, &json, &results, (edge::BEGIN, edge::END), &section)?;
        }
        Command::History { quick, wharf, components, out, json, server_core } => {
            let plan = if quick { history::Plan::quick(server_core) } else { history::Plan::full(server_core) };
            let results = history::run(&plan, &absolute(wharf)?, &absolute(components)?).await?;
            let command = if quick { "make bench-history-quick" } else { "make bench-history" };
            let section = history::markdown(&results, &plan, &report::machine(server_core), command);
            publish(&out, &json, &results, (history::BEGIN, history::END), &section)?;
        }
        Command::Pipeline { quick, wharf, before, components, out, json, server_core } => {
            let plan = if quick { pipeline::Plan::quick(server_core) } else { pipeline::Plan::full(server_core) };
            let before = before.map(absolute).transpose()?;
            let results = pipeline::run(&plan, &absolute(wharf)?, before.as_deref(), &absolute(components)?).await?;
            let command = match (quick, &before) {
                (true, _) => "make bench-pipeline-quick",
                (false, None) => "make bench-pipeline",
                (false, Some(_)) => "make bench-pipeline BEFORE=<an earlier wharf>",
            };
            let section = pipeline::markdown(&results, &plan, &report::machine(server_core), command);
            publish(&out, &json, &results, (pipeline::BEGIN, pipeline::END), &section)?;
        }
        Command::Timers { quick, wharf, component, out, json, server_core } => {
            let plan = if quick { timers::Plan::quick(server_core) } else { timers::Plan::full(server_core) };
            let results = timers::run(&plan, &absolute(wharf)?, &absolute(component)?).await?;
            let command = if quick { "make bench-timers-quick" } else { "make bench-timers" };
            let section = timers::markdown(&results, &plan, &report::machine(server_core), command);
            publish(&out, &json, &results, (timers::BEGIN, timers::END), &section)?;
        }
        Command::Soak { minutes, quick, wharf, components, out, json } => {
            let plan = if quick { soak::Plan::quick() } else { soak::Plan::full(minutes) };
            let programs = soak::Programs { wharf: absolute(wharf)?, components: absolute(components)? };
            let (embedded, redis) =
                tokio::join!(soak::run_one(&plan, &programs, "embedded"), soak::run_one(&plan, &programs, "redis"));
            let outcomes = [embedded?, redis?];
            write_json(&json, &outcomes)?;
            let command = if quick { "make soak-quick" } else { "make soak" };
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let section = soak::markdown(&outcomes, &plan, command, &soak::machine());
            std::fs::write(&out, report::splice_between(&text, soak::BEGIN, soak::END, &section))?;
            eprintln!("wrote {} and {}", out.display(), json.display());
            let failed: Vec<String> =
                outcomes.iter().flat_map(|o| o.failures.iter().map(|f| format!("{}: {f}", o.store))).collect();
            anyhow::ensure!(failed.is_empty(), "the soak did not hold: {}", failed.join("; "));
        }
    }
    Ok(())
}
