//! A `redis-server` on a free loopback port for the benchmarks and the
//! soak, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
    durable: bool,
    /// `redis://127.0.0.1:PORT/0`.
    pub url: String,
}

impl Redis {
    /// With no persistence, its files in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Redis::spawn(dir, port, false)
    }

    /// With every write in its append-only file, fsynced before it answers,
    /// so that a restart (even after SIGKILL) keeps every acknowledged write.
    pub fn start_durable(dir: &Path) -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Redis::spawn(dir, port, true)
    }

    fn spawn(dir: &Path, port: u16, durable: bool) -> anyhow::Result<Redis> {
        let persistence: &[&str] = if durable {
            &["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--save", "", "--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(persistence)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting redis-server (install it: apt-get install redis-server): {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Redis { child, port, dir: dir.to_path_buf(), durable, url: format!("redis://127.0.0.1:{port}/0") })
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same files.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        *self = Redis::spawn(&self.dir, self.port, self.durable)?;
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
