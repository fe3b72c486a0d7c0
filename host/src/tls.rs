//! TLS on the listeners (`[tls]`, `[admin.tls]`): rustls on ring, TLS 1.2
//! and 1.3 only, with the certificate and key read from PEM files.
//!
//! The key pair in use sits behind a resolver that every new handshake
//! asks, so re-reading the files (on SIGHUP, or when they change) swaps the
//! certificate for new handshakes without touching open connections. A
//! file that cannot be read, holds no certificate or key, or holds a key
//! that does not match the certificate is refused naming the file and why;
//! on a reload the previous pair stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::server::TlsStream;

/// How long file events are gathered before the files are re-read (a
/// renewal writes the certificate and the key one after the other).
const SETTLE: Duration = Duration::from_millis(200);

/// A listener's certificate and key files and the pair read from them.
pub struct Tls {
    /// The config key the files came from (`tls`, `admin.tls`), for logs.
    name: String,
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
}

/// Hands every handshake the key pair read last.
#[derive(Debug)]
struct Resolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl Tls {
    /// Reads `cert` and `key` for the listener configured at `name`.
    pub fn load(name: &str, cert: &Path, key: &Path) -> anyhow::Result<Arc<Tls>> {
        let pair = read_pair(cert, key)?;
        let resolver = Arc::new(Resolver(ArcSwap::from_pointee(pair)));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS 1.2 and 1.3 with ring")?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(Tls {
            name: name.to_string(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }))
    }

    /// What accepts this listener's TLS handshakes.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Re-reads the files; new handshakes use the new pair. On error the
    /// pair in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let pair = read_pair(&self.cert, &self.key).with_context(|| format!("{}: reloading", self.name))?;
        self.resolver.0.store(Arc::new(pair));
        tracing::info!(listener = %self.name, cert = %self.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Re-reads the files whenever either changes, for as long as the
    /// returned watcher lives.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<notify::RecommendedWatcher> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let files: Vec<PathBuf> = [&self.cert, &self.key].iter().map(|p| canonical(p)).collect();
        let names: Vec<_> = files.iter().filter_map(|p| p.file_name().map(|n| n.to_os_string())).collect();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // A renewal may replace the file (a rename) rather than write it:
            // match by name in the watched directory.
            if let Ok(event) = event
                && !event.kind.is_access()
                && event.paths.iter().any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
            {
                let _ = tx.send(());
            }
        })?;
        for dir in files.iter().filter_map(|f| f.parent()) {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .with_context(|| format!("watching {} for certificate changes", dir.display()))?;
        }
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
                let Some(tls) = tls.upgrade() else { return };
                if let Err(e) = tls.reload() {
                    tracing::warn!(
                        reason = format!("{e:#}"),
                        "changed TLS files refused; the previous certificate stays"
                    );
                }
            }
        });
        Ok(watcher)
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Reads a certificate chain and its private key, and checks that they
/// belong together.
fn read_pair(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("cannot read the certificate {}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate file", cert.display()))?;
    if chain.is_empty() {
        bail!("{}: holds no CERTIFICATE block", cert.display());
    }
    let key_pem = std::fs::read(key).with_context(|| format!("cannot read the private key {}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("{}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider
        .key_provider
        .load_private_key(key_der)
        .with_context(|| format!("{}: unsupported private key", key.display()))?;
    let pair = CertifiedKey::new(chain, signer);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        // ring cannot always name a key's public half; the handshake is
        // then the judge.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(pair),
        Err(e) => bail!("{} does not match the certificate {}: {e}", key.display(), cert.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, ck.cert.pem()).expect("write");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write");
        (cert, key)
    }

    #[test]
    fn a_matching_pair_loads_and_a_mismatched_one_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_a, key_a) = pair(dir.path(), "a");
        let (_, key_b) = pair(dir.path(), "b");
        Tls::load("tls", &cert_a, &key_a).expect("a matching pair loads");
        let err = format!("{:#}", Tls::load("tls", &cert_a, &key_b).err().expect("refused"));
        assert!(err.contains("b.key does not match the certificate") && err.contains("a.crt"), "{err}");
    }

    #[test]
    fn missing_or_empty_files_are_refused_with_the_file_and_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = pair(dir.path(), "a");
        let missing = dir.path().join("nope.crt");
        let err = format!("{:#}", Tls::load("tls", &missing, &key).err().expect("refused"));
        assert!(err.contains("cannot read the certificate") && err.contains("nope.crt"), "{err}");
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, "not a key\n").expect("write");
        let err = format!("{:#}", Tls::load("tls", &cert, &empty).err().expect("refused"));
        assert!(err.contains("empty.key: holds no PEM private key"), "{err}");
        let err = format!("{:#}", Tls::load("tls", &key, &key).err().expect("refused"));
        assert!(err.contains("a.key: holds no CERTIFICATE block"), "{err}");
    }

    #[test]
    fn a_bad_reload_keeps_the_pair_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = pair(dir.path(), "a");
        let tls = Tls::load("tls", &cert, &key).expect("loads");
        let before = tls.resolver.0.load_full();
        std::fs::write(&key, "garbage").expect("write");
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.resolver.0.load_full()), "the old pair stays");
        let (cert2, key2) = pair(dir.path(), "b");
        std::fs::copy(&cert2, &cert).expect("copy");
        std::fs::copy(&key2, &key).expect("copy");
        tls.reload().expect("a good pair reloads");
        assert_eq!(tls.resolver.0.load().cert, read_pair(&cert2, &key2).expect("pair b").cert, "the new pair serves");
    }
}
