//! A route's `[routes.auth]`: connection tokens (JWTs) checked before the
//! handler runs.
//!
//! ```toml
//! [routes.auth]
//! hs256_secret_env = "CHAT_TOKEN_SECRET"   # or hs256_secret_file,
//!                                          # public_key_file, jwks_file
//! audience = "chat"
//! issuer = "https://auth.example"
//! close_on_expiry = true
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One route's token check. Exactly one key source is given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256: the environment variable holding the shared secret.
    #[serde(default)]
    pub hs256_secret_env: Option<String>,
    /// HS256: a file holding the shared secret (trailing newline ignored).
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// RS256 or ES256 (P-256): a PEM public key (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// RS256 and ES256: a JWK set (`{"keys": [...]}`); a token's `kid` picks
    /// the key.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The `aud` a token must carry, when set.
    #[serde(default)]
    pub audience: Option<String>,
    /// The `iss` a token must carry, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    #[serde(default)]
    pub leeway_s: u64,
    /// Closes the connection when its token expires (close code 3000).
    #[serde(default)]
    pub close_on_expiry: bool,
}

impl AuthConfig {
    /// The key sources given, by config key.
    pub fn sources(&self) -> Vec<&'static str> {
        let given = [
            ("hs256_secret_env", self.hs256_secret_env.is_some()),
            ("hs256_secret_file", self.hs256_secret_file.is_some()),
            ("public_key_file", self.public_key_file.is_some()),
            ("jwks_file", self.jwks_file.is_some()),
        ];
        given.iter().filter(|(_, g)| *g).map(|(k, _)| *k).collect()
    }

    /// Checks what can be checked without reading files; the error's key is
    /// relative to `routes[i].auth`.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        match self.sources().as_slice() {
            [_] => {}
            [] => {
                return Err((
                    String::new(),
                    "names no key: give one of hs256_secret_env, hs256_secret_file, public_key_file, jwks_file".into(),
                ));
            }
            many => return Err((String::new(), format!("names {} keys; give exactly one", many.join(" and ")))),
        }
        if let Some(var) = &self.hs256_secret_env {
            match std::env::var(var) {
                Ok(v) if !v.is_empty() => {}
                _ => return Err((".hs256_secret_env".into(), format!("the environment variable `{var}` is not set"))),
            }
        }
        Ok(())
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.hs256_secret_file, &mut self.public_key_file, &mut self.jwks_file].into_iter().flatten() {
            *p = base.join(&*p);
        }
    }
}
