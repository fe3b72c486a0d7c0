//! `make bench-edge`: what the production edge costs, in one run: echo over
//! `ws://` and `wss://`, echo with and without permessage-deflate (64 B and
//! 4 KiB of JSON-like text: server CPU and bytes on the wire per message),
//! the memory of idle connections that negotiated deflate, handshakes per
//! second with an RSA-2048 and a P-256 certificate, and what checking a
//! connection token adds to a handshake. Medians written to `BENCHMARKS.md`
//! between its own markers.
//!
//! The client is this module's own minimal WebSocket client (tungstenite
//! refuses compressed frames): it frames, masks, compresses and counts
//! every byte it writes and reads, over TCP or rustls. Three hosts run side
//! by side (plain, TLS with P-256, TLS with RSA-2048), each pinned to the
//! server core; certificates and keys come from `openssl`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::matrix::med;
use crate::procfs;
use crate::server::Server;

/// Where the generated section starts in `BENCHMARKS.md`.
pub const BEGIN: &str = "<!-- make bench-edge: begin -->";
/// Where it ends.
pub const END: &str = "<!-- make bench-edge: end -->";
/// Longest one reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How much to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Runs per point.
    pub runs: usize,
    /// Measured seconds per point.
    pub secs: f64,
    /// Echo connections.
    pub conns: usize,
    /// Idle connections held for the memory point.
    pub idle: usize,
    /// The core the hosts are pinned to, if any.
    pub server_core: Option<usize>,
}

impl Plan {
    /// The issue's points.
    pub fn full(server_core: Option<usize>) -> Plan {
        Plan { runs: 3, secs: 3.0, conns: 100, idle: 5000, server_core }
    }

    /// A moment of each, to check the harness.
    pub fn quick(server_core: Option<usize>) -> Plan {
        Plan { runs: 1, secs: 0.5, conns: 10, idle: 200, server_core }
    }
}

/// A byte stream the client runs over.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The minimal client: one connection, its bytes counted.
struct Client {
    io: Box<dyn Io>,
    deflate: bool,
    compress: Compress,
    inflate: Decompress,
    sent: u64,
    received: u64,
}

impl Client {
    /// Handshakes on `io` for `path`, offering deflate when asked; the
    /// extension is on when the host accepted it.
    async fn open(mut io: Box<dyn Io>, path: &str, offer_deflate: bool) -> anyhow::Result<Client> {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if offer_deflate {
            req += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
        }
        req += "\r\n";
        io.write_all(req.as_bytes()).await?;
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            anyhow::ensure!(head.len() < 8192, "an endless handshake answer");
            io.read_exact(&mut byte).await?;
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        anyhow::ensure!(head.starts_with("http/1.1 101"), "handshake refused: {}", head.lines().next().unwrap_or(""));
        let deflate = head.contains("sec-websocket-extensions: permessage-deflate");
        anyhow::ensure!(deflate == offer_deflate, "deflate {offer_deflate} offered, {deflate} agreed");
        Ok(Client {
            io,
            deflate,
            compress: Compress::new(Compression::default(), false),
            inflate: Decompress::new(false),
            sent: 0,
            received: 0,
        })
    }

    /// Sends one text message (compressed when agreed), masked.
    async fn send(&mut self, text: &[u8]) -> anyhow::Result<()> {
        let (payload, rsv1) = if self.deflate {
            let mut out = Vec::with_capacity(text.len() + 64);
            self.compress.compress_vec(text, &mut out, FlushCompress::Sync)?;
            self.compress.reset();
            out.truncate(out.len() - 4);
            (out, 0x40)
        } else {
            (text.to_vec(), 0)
        };
        let mut frame = vec![0x81 | rsv1];
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a, 0x17, 0xc3, 0x9e];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        self.io.write_all(&frame).await?;
        self.sent += frame.len() as u64;
        Ok(())
    }

    /// Reads one data message; its inflated length.
    async fn recv(&mut self) -> anyhow::Result<usize> {
        let mut h = [0u8; 2];
        self.io.read_exact(&mut h).await?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.io.read_exact(&mut b).await?;
                self.received += 2;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.io.read_exact(&mut b).await?;
                self.received += 8;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        self.received += 2 + len as u64;
        anyhow::ensure!(h[0] & 0x0f == 0x1, "expected a text message, got opcode {}", h[0] & 0x0f);
        if h[0] & 0x40 == 0 {
            return Ok(len);
        }
        payload.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(len * 8 + 64);
        loop {
            let read = self.inflate.total_in() as usize;
            self.inflate.decompress_vec(&payload[read..], &mut out, FlushDecompress::Sync)?;
            if self.inflate.total_in() as usize == payload.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity());
        }
        self.inflate.reset(false);
        Ok(out.len())
    }
}

/// How to reach a host.
#[derive(Clone)]
struct Target {
    addr: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Target {
    async fn connect(&self, path: &str, deflate: bool) -> anyhow::Result<Client> {
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from("localhost")?;
                Box::new(tls.connect(name, tcp).await?)
            }
        };
        Client::open(io, path, deflate).await
    }
}

/// Accepts any certificate: the bench measures handshakes, not trust.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One echo point's run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EchoRun {
    /// Round trips per second.
    pub msgs_per_s: f64,
    /// Server CPU per round trip, µs.
    pub cpu_us_per_msg: f64,
    /// Bytes on the wire per round trip (both ways, frames only).
    pub wire_bytes_per_msg: f64,
}

/// Echo: `conns` connections, one message in flight each, for `secs`.
async fn echo(
    target: &Target,
    path: &str,
    deflate: bool,
    payload: &[u8],
    conns: usize,
    secs: f64,
    pid: u32,
) -> anyhow::Result<EchoRun> {
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(target.connect(path, deflate).await?);
    }
    let payload: Arc<[u8]> = payload.into();
    let warm = Instant::now() + Duration::from_millis(500);
    let stop = warm + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let payload = payload.clone();
            tokio::spawn(async move {
                let (mut n, mut bytes) = (0u64, 0u64);
                while Instant::now() < stop {
                    let before = c.sent + c.received;
                    c.send(&payload).await?;
                    let got = tokio::time::timeout(REPLY_TIMEOUT, c.recv()).await??;
                    anyhow::ensure!(got == payload.len(), "echo of {} bytes came back as {got}", payload.len());
                    if Instant::now() >= warm {
                        n += 1;
                        bytes += c.sent + c.received - before;
                    }
                }
                anyhow::Ok((n, bytes))
            })
        })
        .collect();
    tokio::time::sleep_until(warm.into()).await;
    let cpu0 = procfs::tree_cpu_time(pid)?;
    tokio::time::sleep_until(stop.into()).await;
    let cpu = procfs::tree_cpu_time(pid)?.saturating_sub(cpu0);
    let (mut n, mut bytes) = (0u64, 0u64);
    for t in tasks {
        let (a, b) = t.await??;
        n += a;
        bytes += b;
    }
    let n = n.max(1) as f64;
    Ok(EchoRun {
        msgs_per_s: n / secs,
        cpu_us_per_msg: cpu.as_secs_f64() * 1e6 / n,
        wire_bytes_per_msg: bytes as f64 / n,
    })
}

/// One handshake point's run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HandshakeRun {
    /// Completed handshakes (TCP, TLS when on, WebSocket) per second.
    pub per_s: f64,
    /// Server CPU per handshake, µs.
    pub cpu_us: f64,
}

/// Handshakes, 8 at a time, for `secs`; each connection then closes.
async fn handshakes(target: &Target, path: &str, secs: f64, pid: u32) -> anyhow::Result<HandshakeRun> {
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let cpu0 = procfs::tree_cpu_time(pid)?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (target, path) = (target.clone(), path.to_string());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < stop {
                    let c = tokio::time::timeout(REPLY_TIMEOUT, target.connect(&path, false)).await??;
                    drop(c);
                    n += 1;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut n = 0;
    for t in tasks {
        n += t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Closes the host saw last still cost it: give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu = procfs::tree_cpu_time(pid)?.saturating_sub(cpu0);
    let n = n.max(1) as f64;
    Ok(HandshakeRun { per_s: n / elapsed, cpu_us: cpu.as_secs_f64() * 1e6 / n })
}

/// RSS per idle connection, KiB: `n` connections opened (offering deflate or
/// not), held a second.
async fn idle_kib(target: &Target, path: &str, deflate: bool, n: usize, pid: u32) -> anyhow::Result<f64> {
    let before = procfs::rss_bytes(pid)?;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(target.connect(path, deflate).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = procfs::rss_bytes(pid)?;
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(after.saturating_sub(before) as f64 / n as f64 / 1024.0)
}

/// An echo point: its name, host, host pid, path, deflate offered, payload.
type EchoPoint<'a> = (&'a str, &'a Target, u32, &'a str, bool, &'a [u8]);

/// Every point's runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Results {
    /// Echo points by name.
    pub echo: Vec<(String, Vec<EchoRun>)>,
    /// Handshake points by name.
    pub handshakes: Vec<(String, Vec<HandshakeRun>)>,
    /// Idle KiB per connection, deflate off and on.
    pub idle: Vec<(String, Vec<f64>)>,
}

/// 64 bytes and 4 KiB of JSON-like text, as a chat or a feed sends.
pub fn json_text(size: usize) -> Vec<u8> {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < size {
        let _ = write!(
            s,
            r#"{{"id":{i},"user":"user-{}","type":"message","room":"lobby","text":"see you at {}:{:02}"}},"#,
            i % 7,
            9 + i % 8,
            (i * 13) % 60
        );
        i += 1;
    }
    let mut s: Vec<u8> = s.into_bytes();
    s.truncate(size);
    s
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("openssl: {e} (apt-get install openssl)"))?;
    anyhow::ensure!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A self-signed certificate and key of `kind` (`rsa` or `p256`) under `dir`.
fn certificate(dir: &Path, kind: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join(format!("{kind}.crt")), dir.join(format!("{kind}.key")));
    let (c, k) = (cert.to_str().unwrap_or_default(), key.to_str().unwrap_or_default());
    match kind {
        "rsa" => openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k])?,
        _ => openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", k])?,
    }
    openssl(&[
        "req",
        "-x509",
        "-key",
        k,
        "-out",
        c,
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ])?;
    Ok((cert, key))
}

/// Runs the plan with the `wharf` binary and the echo component; progress on
/// stderr.
pub async fn run(plan: &Plan, wharf: &Path, echo_wasm: &Path) -> anyhow::Result<Results> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (rsa_cert, rsa_key) = certificate(d, "rsa")?;
    let (ec_cert, ec_key) = certificate(d, "p256")?;
    let (rsa_pub, ec_pub) = (d.join("rsa.pub"), d.join("p256.pub"));
    openssl(&[
        "pkey",
        "-in",
        rsa_key.to_str().unwrap_or_default(),
        "-pubout",
        "-out",
        rsa_pub.to_str().unwrap_or_default(),
    ])?;
    openssl(&[
        "pkey",
        "-in",
        ec_key.to_str().unwrap_or_default(),
        "-pubout",
        "-out",
        ec_pub.to_str().unwrap_or_default(),
    ])?;
    std::fs::write(d.join("hs.secret"), "a shared secret of the bench")?;
    let routes = format!(
        "[plugins.echo]\ncomponent = {echo:?}\n\
         [[routes]]\npath = \"/echo\"\nplugin = \"echo\"\n\
         [[routes]]\npath = \"/deflate\"\nplugin = \"echo\"\ncompression = \"deflate\"\n\
         [[routes]]\npath = \"/hs256\"\nplugin = \"echo\"\n[routes.auth]\nhs256_secret_file = \"hs.secret\"\n\
         [[routes]]\npath = \"/es256\"\nplugin = \"echo\"\n[routes.auth]\npublic_key_file = \"p256.pub\"\n\
         [[routes]]\npath = \"/rs256\"\nplugin = \"echo\"\n[routes.auth]\npublic_key_file = \"rsa.pub\"\n",
        echo = echo_wasm.display().to_string()
    );
    let host = |name: &str, tls: Option<(&Path, &Path)>| -> anyhow::Result<Server> {
        let file = d.join(format!("{name}.toml"));
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\nstore = \"memory\"\ndata_dir = {:?}\n[admin]\nenabled = false\n\
             [limits]\nconnect_rate = 0\nmax_handshakes_per_ip = 1024\nmax_connections = 20000\n",
            d.join(format!("data-{name}")).display().to_string()
        );
        if let Some((c, k)) = tls {
            let _ = write!(text, "[tls]\ncert = {:?}\nkey = {:?}\n", c.display().to_string(), k.display().to_string());
        }
        text += &routes;
        std::fs::write(&file, text)?;
        let file = file.display().to_string();
        Server::start(name, wharf, &["serve", "--config", &file], plan.server_core, "wharf listening addr=")
    };
    let plain = host("plain", None)?;
    let p256 = host("tls-p256", Some((&ec_cert, &ec_key)))?;
    let rsa = host("tls-rsa", Some((&rsa_cert, &rsa_key)))?;
    let connector = tls_connector();
    let ws = Target { addr: plain.addr.clone(), tls: None };
    let wss = Target { addr: p256.addr.clone(), tls: Some(connector.clone()) };
    let wss_rsa = Target { addr: rsa.addr.clone(), tls: Some(connector) };

    let mint = |alg: jsonwebtoken::Algorithm, key: jsonwebtoken::EncodingKey| -> anyhow::Result<String> {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600;
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &serde_json::json!({"sub": "bench", "exp": exp}),
            &key,
        )?)
    };
    let hs =
        mint(jsonwebtoken::Algorithm::HS256, jsonwebtoken::EncodingKey::from_secret(b"a shared secret of the bench")?)?;
    let es = mint(jsonwebtoken::Algorithm::ES256, jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(&ec_key)?)?)?;
    let rs = mint(jsonwebtoken::Algorithm::RS256, jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&rsa_key)?)?)?;

    let small = json_text(64);
    let large = json_text(4096);
    // The plain 64 B point is the baseline of both TLS and deflate.
    let echo_points: [EchoPoint; 5] = [
        ("ws:// 64 B", &ws, plain.pid(), "/echo", false, &small),
        ("wss:// 64 B", &wss, p256.pid(), "/echo", false, &small),
        ("ws:// 64 B, deflate on", &ws, plain.pid(), "/deflate", true, &small),
        ("ws:// 4 KiB", &ws, plain.pid(), "/echo", false, &large),
        ("ws:// 4 KiB, deflate on", &ws, plain.pid(), "/deflate", true, &large),
    ];
    let hs_points = [
        ("ws://, no token".to_string(), &ws, plain.pid(), "/echo".to_string()),
        ("ws://, HS256 token".to_string(), &ws, plain.pid(), format!("/hs256?token={hs}")),
        ("ws://, ES256 token".to_string(), &ws, plain.pid(), format!("/es256?token={es}")),
        ("ws://, RS256 token".to_string(), &ws, plain.pid(), format!("/rs256?token={rs}")),
        ("wss:// P-256 certificate".to_string(), &wss, p256.pid(), "/echo".to_string()),
        ("wss:// RSA-2048 certificate".to_string(), &wss_rsa, rsa.pid(), "/echo".to_string()),
    ];
    let mut results = Results::default();
    for run in 0..plan.runs {
        for (i, (name, target, pid, path, deflate, payload)) in echo_points.iter().enumerate() {
            let r = echo(target, path, *deflate, payload, plan.conns, plan.secs, *pid).await?;
            eprintln!(
                "edge echo {name:<26} run {}: {:>8.0} msg/s {:>6.1} µs CPU {:>7.1} B on the wire",
                run + 1,
                r.msgs_per_s,
                r.cpu_us_per_msg,
                r.wire_bytes_per_msg
            );
            if run == 0 {
                results.echo.push((name.to_string(), Vec::new()));
            }
            results.echo[i].1.push(r);
        }
        for (i, (name, target, pid, path)) in hs_points.iter().enumerate() {
            let r = handshakes(target, path, plan.secs, *pid).await?;
            eprintln!("edge handshakes {name:<28} run {}: {:>7.0}/s {:>7.1} µs CPU each", run + 1, r.per_s, r.cpu_us);
            if run == 0 {
                results.handshakes.push((name.clone(), Vec::new()));
            }
            results.handshakes[i].1.push(r);
        }
        for (i, (name, path, deflate)) in
            [("deflate off", "/echo", false), ("deflate on", "/deflate", true)].iter().enumerate()
        {
            // A fresh host each time: memory a host once used stays in its
            // RSS, so only a new one shows what idle connections add.
            let fresh = host(&format!("idle-{run}-{i}"), None)?;
            let target = Target { addr: fresh.addr.clone(), tls: None };
            let kib = idle_kib(&target, path, *deflate, plan.idle, fresh.pid()).await?;
            drop(fresh);
            eprintln!("edge idle {name:<12} run {}: {kib:.2} KiB per connection", run + 1);
            if run == 0 {
                results.idle.push((name.to_string(), Vec::new()));
            }
            results.idle[i].1.push(kib);
        }
    }
    drop((plain, p256, rsa));
    Ok(results)
}

/// The generated section of `BENCHMARKS.md`.
pub fn markdown(r: &Results, plan: &Plan, machine: &str, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "_Generated by `{command}` on {machine}: the echo example (release host, memory store), {} connections with \
         one message in flight each; handshakes 8 at a time, each connection closed after its handshake; idle memory \
         over {} connections. Medians of {} runs of {} s. CPU is the host process's, per message or per handshake; \
         bytes are the frames both ways per round trip._\n",
        plan.conns, plan.idle, plan.runs, plan.secs
    );
    let _ = writeln!(s, "| echo | msgs/s | CPU µs per message | bytes on the wire per round trip |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: |");
    for (name, runs) in &r.echo {
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {:.1} | {:.0} |",
            med(runs, |x| x.msgs_per_s),
            med(runs, |x| x.cpu_us_per_msg),
            med(runs, |x| x.wire_bytes_per_msg)
        );
    }
    let _ = writeln!(s, "\n| handshake | per second | CPU µs per handshake |");
    let _ = writeln!(s, "| --- | ---: | ---: |");
    for (name, runs) in &r.handshakes {
        let _ = writeln!(s, "| {name} | {:.0} | {:.1} |", med(runs, |x| x.per_s), med(runs, |x| x.cpu_us));
    }
    let _ = writeln!(s, "\n| idle connection | KiB of host RSS each |");
    let _ = writeln!(s, "| --- | ---: |");
    for (name, runs) in &r.idle {
        let _ = writeln!(s, "| {name} | {:.2} |", med(runs, |x| *x));
    }
    let _ = writeln!(s, "\n{END}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_is_the_size_asked() {
        assert_eq!(json_text(64).len(), 64);
        assert_eq!(json_text(4096).len(), 4096);
        assert!(json_text(64).starts_with(br#"[{"id":0,"user":"user-0""#));
    }
}
