//! Servers under test, started as child processes (pinned to one core when
//! asked), with their address read from their output.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process that is stopped when dropped.
pub struct Server {
    child: Child,
    /// Its listen address.
    pub addr: String,
    /// What it is, for reports.
    pub name: String,
}

impl Server {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Starts `program args...` (under `taskset -c CORE` when given) and
    /// waits for a line of its output containing `marker` followed by the
    /// address.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        core: Option<usize>,
        marker: &str,
    ) -> anyhow::Result<Server> {
        let mut cmd = match core {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(c.to_string()).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| anyhow::anyhow!("starting {}: {e}", program.display()))?;
        // Read both streams on threads; the address appears on one of them.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("{name} exited with {status}: {}", seen.join("\n"));
                }
                continue;
            };
            if let Some(rest) = line.split(marker).nth(1) {
                let addr: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
                if !addr.is_empty() {
                    // Keep draining the output so the child never blocks on it.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return Ok(Server { child, addr, name: name.to_string() });
                }
            }
            seen.push(line);
        }
        let _ = child.kill();
        anyhow::bail!("{name} did not report its address: {}", seen.join("\n"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
