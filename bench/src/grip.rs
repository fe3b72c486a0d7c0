//! `make bench-grip`: echo through one WebSocket-over-HTTP backend behind
//! Wharf and behind Debian's Pushpin, side by side in one run (the gateways
//! alternate within every run), at 1 and 100 connections; medians written
//! to `BENCHMARKS.md` between its own markers.
//!
//! The backend is this program's own: a hyper HTTP/1.1 server that answers
//! each request's `TEXT`/`BINARY` events with the same messages (GRIP mode,
//! `m:` prefix), `OPEN` with `OPEN`; it costs both gateways the same. The
//! gateway (Wharf, or Pushpin's runner with its condure, proxy and handler
//! processes) is pinned to the server core; its CPU is the whole process
//! tree's.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Serialize;

use crate::load::{self, EchoResult, Window};
use crate::matrix::med;
use crate::report::{ratio, thousands, us};
use crate::server::Server;

/// Where the generated section starts in `BENCHMARKS.md`.
pub const BEGIN: &str = "<!-- make bench-grip: begin -->";
/// Where it ends.
pub const END: &str = "<!-- make bench-grip: end -->";

/// How much to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Runs per point.
    pub runs: usize,
    /// Measured seconds per run (after one second of warm-up).
    pub secs: u64,
    /// Connection counts.
    pub conns: Vec<usize>,
    /// The core the gateways are pinned to, if any.
    pub server_core: Option<usize>,
}

impl Plan {
    /// The points.
    pub fn full(server_core: Option<usize>) -> Plan {
        Plan { runs: 3, secs: 4, conns: vec![1, 100], server_core }
    }

    /// A second of each, to check the harness.
    pub fn quick(server_core: Option<usize>) -> Plan {
        Plan { runs: 1, secs: 1, conns: vec![1, 10], server_core }
    }
}

/// One gateway's runs at one connection count.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// `wharf` or `pushpin`.
    pub gateway: String,
    /// Connections.
    pub conns: usize,
    /// Echo runs.
    pub runs: Vec<EchoResult>,
}

/// Serves the echo backend on 127.0.0.1 (a free port) on this runtime.
pub async fn echo_backend() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(answer);
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Ok(addr)
}

/// One request's answer: the echo of its messages.
async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut opening = false;
    for (name, content) in events(&body) {
        match (name, content) {
            (b"OPEN", _) => {
                opening = true;
                out.extend_from_slice(b"OPEN\r\n");
            }
            (b"TEXT" | b"BINARY", Some(c)) => {
                out.extend_from_slice(name);
                out.extend_from_slice(format!(" {:x}\r\nm:", c.len() + 2).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            (b"CLOSE", c) => {
                out.extend_from_slice(b"CLOSE");
                if let Some(c) = c {
                    out.extend_from_slice(format!(" {:x}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                }
                out.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
    }
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    let headers = resp.headers_mut();
    headers.insert("content-type", "application/websocket-events".parse().expect("valid"));
    if opening {
        headers.insert("sec-websocket-extensions", "grip".parse().expect("valid"));
    }
    Ok(resp)
}

/// The (name, content) of each event of a body; stops at the first
/// malformed one.
fn events(body: &[u8]) -> Vec<(&[u8], Option<&[u8]>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let Some(eol) = body[at..].windows(2).position(|w| w == b"\r\n") else { break };
        let line = &body[at..at + eol];
        at += eol + 2;
        match line.iter().position(|&b| b == b' ') {
            None => out.push((line, None)),
            Some(sp) => {
                let Some(len) =
                    std::str::from_utf8(&line[sp + 1..]).ok().and_then(|h| usize::from_str_radix(h, 16).ok())
                else {
                    break;
                };
                if at + len + 2 > body.len() {
                    break;
                }
                out.push((&line[..sp], Some(&body[at..at + len])));
                at += len + 2;
            }
        }
    }
    out
}

/// Pushpin (Debian's `pushpin` runner, and the `zurl` its proxy makes HTTP
/// requests with: Debian runs it as a service of its own) in front of
/// `backend`, with its run and log directories in `dir`; stopped when
/// dropped.
pub struct Pushpin {
    child: Child,
    /// The WebSocket listener.
    pub addr: SocketAddr,
}

impl Pushpin {
    /// Starts Pushpin on `port` (under `taskset -c CORE` when given).
    pub fn start(dir: &Path, backend: SocketAddr, port: u16, core: Option<usize>) -> anyhow::Result<Pushpin> {
        let template = std::fs::read_to_string("/etc/pushpin/pushpin.conf")
            .map_err(|e| anyhow::anyhow!("/etc/pushpin/pushpin.conf: {e} (apt-get install pushpin)"))?;
        for sub in ["run", "log"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let routes = dir.join("routes");
        std::fs::write(&routes, format!("* {backend},over_http\n"))?;
        // zurl, allowed to reach the loopback backend (Debian's denies 127.*).
        let run = dir.join("run");
        let ipc = |name: &str| format!("ipc://{}", run.join(name).display());
        let zurl_conf = dir.join("zurl.conf");
        std::fs::write(
            &zurl_conf,
            format!(
                "[General]\nin_spec={}\nin_stream_spec={}\nout_spec={}\nin_req_spec={}\n\
                 defpolicy=allow\nallow=\ndeny=\nmax_open_requests=20000\nbuffer_size=200000\ntimeout=600\n",
                ipc("zurl-in"),
                ipc("zurl-in-stream"),
                ipc("zurl-out"),
                ipc("zurl-req")
            ),
        )?;
        let conf: String = template
            .lines()
            .map(|l| match l.split_once('=').map(|(k, _)| k.trim()) {
                Some("rundir") => format!("rundir={}", dir.join("run").display()),
                Some("logdir") => format!("logdir={}", dir.join("log").display()),
                Some("routesfile") => format!("routesfile={}", routes.display()),
                Some("http_port") => format!("http_port={port}"),
                Some("log_level") => "log_level=1".into(),
                _ if l.trim() == "[proxy]" => format!(
                    "[proxy]\nzurl_out_specs={}\nzurl_out_stream_specs={}\nzurl_in_specs={}",
                    ipc("zurl-in"),
                    ipc("zurl-in-stream"),
                    ipc("zurl-out")
                ),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let conf_path = dir.join("pushpin.conf");
        std::fs::write(&conf_path, conf)?;
        // One process tree: zurl is started by the shell that becomes the
        // runner, so the runner's tree holds every Pushpin process.
        let script = format!(
            "zurl --config={} >{}/zurl.log 2>&1 & exec pushpin --config {}",
            zurl_conf.display(),
            dir.join("log").display(),
            conf_path.display()
        );
        let mut cmd = match core {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(c.to_string()).arg("sh");
                cmd
            }
            None => Command::new("sh"),
        };
        cmd.arg("-c").arg(script).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| anyhow::anyhow!("starting pushpin: {e} (apt-get install pushpin)"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut p = Pushpin { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "pushpin did not listen on {addr}");
            if let Some(status) = p.child.try_wait()? {
                anyhow::bail!("pushpin exited with {status}; see {}", dir.join("log").display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Its proxy and handler start after the listener.
        std::thread::sleep(Duration::from_millis(500));
        Ok(p)
    }

    /// Its runner's process id (the services are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Pushpin {
    fn drop(&mut self) {
        // SIGTERM lets the runner stop its services; zurl is not one of
        // them, so whatever is left of the tree is killed after.
        let tree = crate::procfs::descendants(self.child.id());
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in tree {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs the plan with the `wharf` binary; progress on stderr.
pub async fn run(plan: &Plan, wharf: &Path) -> anyhow::Result<Vec<Point>> {
    let dir = tempfile::tempdir()?;
    let backend = echo_backend().await?;
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nstore = \"memory\"\ndata_dir = {:?}\n[admin]\nenabled = false\n\
             [limits]\nconnect_rate = 0\nmax_handshakes_per_ip = 1024\n\
             [[routes]]\npath = \"/echo\"\nbackend = \"http://{backend}/\"\n",
            dir.path().join("data").display().to_string()
        ),
    )?;
    let config = config.display().to_string();
    let host =
        Server::start("wharf", wharf, &["serve", "--config", &config], plan.server_core, "wharf listening addr=")?;
    let pushpin = Pushpin::start(&dir.path().join("pushpin"), backend, free_port()?, plan.server_core)?;
    let gateways: [(&str, String, u32); 2] =
        [("wharf", host.url("/echo"), host.pid()), ("pushpin", format!("ws://{}/echo", pushpin.addr), pushpin.pid())];
    let window = Window { warmup: Duration::from_secs(1), measure: Duration::from_secs(plan.secs) };
    let mut points: Vec<Point> = Vec::new();
    for &conns in &plan.conns {
        for (name, _, _) in &gateways {
            points.push(Point { gateway: name.to_string(), conns, runs: Vec::new() });
        }
    }
    for run in 0..plan.runs {
        for &conns in &plan.conns {
            for (name, url, pid) in &gateways {
                let e = load::echo(url, conns, 64, 1, window, Some(*pid)).await?;
                eprintln!(
                    "grip echo {name:<8} conns={conns:<4} run {}: {:>8.0} msg/s p99 {:>8.0} µs cpu {:.1} µs/msg errors {}",
                    run + 1,
                    e.msgs_per_s,
                    e.latency.p99_us,
                    e.cpu_us_per_msg,
                    e.errors
                );
                let p =
                    points.iter_mut().find(|p| p.gateway == *name && p.conns == conns).expect("a point per gateway");
                p.runs.push(e);
            }
        }
    }
    drop(pushpin);
    drop(host);
    Ok(points)
}

/// The generated section of `BENCHMARKS.md`.
pub fn markdown(points: &[Point], plan: &Plan, machine: &str, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "_Generated by `{command}` on {machine}: echo of 64-byte text messages, one in flight per connection, \
         through the same WebSocket-over-HTTP backend (wharf-bench's own, on the load generator's core) behind \
         Wharf (release build) and behind Pushpin {} (Debian), the two alternating within each run; medians of {} \
         runs of {} s. CPU is the gateway's whole process tree, per message._\n",
        pushpin_version().unwrap_or_else(|| "(version unknown)".into()),
        plan.runs,
        plan.secs
    );
    let _ = writeln!(s, "| connections | | Wharf | Pushpin | Wharf ÷ Pushpin |");
    let _ = writeln!(s, "|---:|---|---:|---:|---:|");
    for &conns in &plan.conns {
        let get = |g: &str| points.iter().find(|p| p.gateway == g && p.conns == conns);
        let (Some(w), Some(p)) = (get("wharf"), get("pushpin")) else { continue };
        let rate = |x: &Point| med(&x.runs, |r| r.msgs_per_s);
        let cpu = |x: &Point| med(&x.runs, |r| r.cpu_us_per_msg);
        let p99 = |x: &Point| med(&x.runs, |r| r.latency.p99_us);
        let errors = |x: &Point| x.runs.iter().map(|r| r.errors).sum::<u64>();
        let _ = writeln!(
            s,
            "| {conns} | msgs/s | {} | {} | {} |",
            thousands(rate(w)),
            thousands(rate(p)),
            ratio(rate(w), rate(p))
        );
        let _ = writeln!(
            s,
            "| | gateway CPU per message | {:.1} µs | {:.1} µs | {} |",
            cpu(w),
            cpu(p),
            ratio(cpu(w), cpu(p))
        );
        let _ = writeln!(s, "| | p99 | {} | {} | {} |", us(p99(w)), us(p99(p)), ratio(p99(w), p99(p)));
        let _ = writeln!(s, "| | errors (all runs) | {} | {} | |", errors(w), errors(p));
    }
    let _ = writeln!(s, "\n{END}");
    s
}

fn pushpin_version() -> Option<String> {
    let out = Command::new("pushpin").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.split_whitespace().find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit())).map(str::to_string)
}

/// Where the `wharf` binary is, from the command line.
pub fn wharf_binary(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| anyhow::anyhow!("{}: {e} (make build)", path.display()))
}
