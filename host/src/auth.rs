//! Connection tokens (`[routes.auth]`): a JWT checked at the handshake,
//! before any handler runs.
//!
//! The token is the `token` query parameter, an `Authorization: Bearer`
//! header, or a `Sec-WebSocket-Protocol` entry `wharf.token.<jwt>` (a
//! browser can set no header on a WebSocket); that entry is taken out of
//! the offered subprotocols, so it is never chosen or echoed. HS256 with a
//! shared secret, RS256 or ES256 with a PEM public key or a JWK set; one
//! algorithm per key, so a token cannot pick a weaker one (nor `none`).
//! `exp` is required; `exp`, `nbf`, and when configured `aud` and `iss`
//! are checked. A verified token's claims reach the handler as the
//! connection's metadata `auth.sub` and `auth.claims` (JSON).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::AuthConfig;

/// The prefix of a subprotocol entry that carries a token.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "wharf.token.";
/// The metadata key of a verified token's `sub`.
pub const SUB_KEY: &str = "auth.sub";
/// The metadata key of a verified token's claims, as JSON.
pub const CLAIMS_KEY: &str = "auth.claims";
/// Longest token accepted (larger ones are refused unread).
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a verified token says.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The metadata the connection starts with.
    pub metadata: Vec<(String, String)>,
    /// When the token expires.
    pub expires_at: Option<SystemTime>,
}

/// A route's token check, its keys read once (again on a config reload).
pub struct Verifier {
    keys: Keys,
    /// The checks for each algorithm the keys use (one or two), made once.
    validations: Vec<(Algorithm, Validation)>,
    close_on_expiry: bool,
}

enum Keys {
    /// One key and its algorithm.
    One(Box<DecodingKey>, Algorithm),
    /// A JWK set by `kid`; a set of one key also serves tokens without one.
    Set(HashMap<Option<String>, (DecodingKey, Algorithm)>),
}

impl Verifier {
    /// Reads the key `config` names; the error names the file and why.
    pub fn load(config: &AuthConfig) -> anyhow::Result<Verifier> {
        let keys = if let Some(var) = &config.hs256_secret_env {
            let secret = std::env::var(var).with_context(|| format!("hs256_secret_env: `{var}` is not set"))?;
            Keys::One(Box::new(DecodingKey::from_secret(secret.as_bytes())?), Algorithm::HS256)
        } else if let Some(file) = &config.hs256_secret_file {
            let secret =
                std::fs::read(file).with_context(|| format!("hs256_secret_file: cannot read {}", file.display()))?;
            let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
            if secret.is_empty() {
                bail!("hs256_secret_file: {} is empty", file.display());
            }
            Keys::One(Box::new(DecodingKey::from_secret(secret)?), Algorithm::HS256)
        } else if let Some(file) = &config.public_key_file {
            let pem =
                std::fs::read(file).with_context(|| format!("public_key_file: cannot read {}", file.display()))?;
            pem_key(&pem).with_context(|| format!("public_key_file: {}", file.display()))?
        } else if let Some(file) = &config.jwks_file {
            let text = std::fs::read(file).with_context(|| format!("jwks_file: cannot read {}", file.display()))?;
            jwk_set(&text).with_context(|| format!("jwks_file: {}", file.display()))?
        } else {
            bail!("names no key");
        };
        let mut algorithms: Vec<Algorithm> = Vec::new();
        let used: Vec<Algorithm> = match &keys {
            Keys::One(_, alg) => vec![*alg],
            Keys::Set(set) => set.values().map(|(_, alg)| *alg).collect(),
        };
        for alg in used {
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        let validations = algorithms
            .into_iter()
            .map(|alg| {
                // Only this algorithm: a token cannot choose another.
                let mut validation = Validation::new(alg);
                validation.leeway = config.leeway_s;
                validation.validate_nbf = true;
                validation.validate_aud = config.audience.is_some();
                if let Some(aud) = &config.audience {
                    validation.set_audience(&[aud]);
                }
                if let Some(iss) = &config.issuer {
                    validation.set_issuer(&[iss]);
                }
                validation.set_required_spec_claims(&["exp"]);
                (alg, validation)
            })
            .collect();
        Ok(Verifier { keys, validations, close_on_expiry: config.close_on_expiry })
    }

    /// Whether a connection is closed when its token expires.
    pub fn close_on_expiry(&self) -> bool {
        self.close_on_expiry
    }

    /// Checks a token; the error says why it is refused.
    pub fn verify(&self, token: &str) -> Result<Verified, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err("token too long".into());
        }
        let (key, alg) = match &self.keys {
            Keys::One(key, alg) => (&**key, *alg),
            Keys::Set(keys) => {
                let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
                let found = keys.get(&header.kid).or_else(|| if keys.len() == 1 { keys.values().next() } else { None });
                let Some((key, alg)) = found else {
                    return Err(format!("no key with kid {:?}", header.kid.unwrap_or_default()));
                };
                (key, *alg)
            }
        };
        let (_, validation) =
            self.validations.iter().find(|(a, _)| *a == alg).expect("a validation for every key's algorithm");
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, validation)
            .map_err(|e| format!("invalid token: {e}"))?;
        let claims = data.claims;
        let expires_at =
            claims.get("exp").and_then(serde_json::Value::as_u64).map(|s| UNIX_EPOCH + Duration::from_secs(s));
        let mut metadata = Vec::with_capacity(2);
        if let Some(sub) = claims.get("sub").and_then(serde_json::Value::as_str) {
            metadata.push((SUB_KEY.to_string(), sub.to_string()));
        }
        metadata.push((CLAIMS_KEY.to_string(), serde_json::Value::Object(claims).to_string()));
        Ok(Verified { metadata, expires_at })
    }
}

/// A PEM public key: RSA (RS256) or EC P-256 (ES256).
fn pem_key(pem: &[u8]) -> anyhow::Result<Keys> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(Keys::One(Box::new(key), Algorithm::RS256));
    }
    match DecodingKey::from_ec_pem(pem) {
        Ok(key) => Ok(Keys::One(Box::new(key), Algorithm::ES256)),
        Err(e) => bail!("not an RSA or EC P-256 public key in PEM: {e}"),
    }
}

/// A JWK set of RSA (RS256) and EC P-256 (ES256) keys.
fn jwk_set(text: &[u8]) -> anyhow::Result<Keys> {
    let set: JwkSet = serde_json::from_slice(text).context("not a JWK set (`{\"keys\": [...]}`)")?;
    let mut keys = HashMap::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
            _ => bail!("keys[{i}]: only RSA (RS256) and EC P-256 (ES256) keys are supported"),
        };
        let key = DecodingKey::from_jwk(jwk).with_context(|| format!("keys[{i}]"))?;
        if keys.insert(jwk.common.key_id.clone(), (key, alg)).is_some() {
            bail!("keys[{i}]: a second key with kid {:?}", jwk.common.key_id.clone().unwrap_or_default());
        }
    }
    if keys.is_empty() {
        bail!("holds no keys");
    }
    Ok(Keys::Set(keys))
}

/// Finds a client's token: the `token` query parameter, else an
/// `Authorization: Bearer` header, else a `wharf.token.` subprotocol entry.
/// Every such entry is removed from `subprotocols`.
pub fn take_token(query: &str, headers: &[(String, String)], subprotocols: &mut Vec<String>) -> Option<String> {
    let mut from_protocol = None;
    subprotocols.retain(|p| match p.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX) {
        Some(t) => {
            from_protocol.get_or_insert_with(|| t.to_string());
            false
        }
        None => true,
    });
    let from_query = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    let from_header = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")).and_then(|(_, v)| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
    });
    from_query.or(from_header).or(from_protocol).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn hs_verifier(dir: &std::path::Path, extra: impl FnOnce(&mut AuthConfig)) -> Verifier {
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut config = AuthConfig { hs256_secret_file: Some(file), ..Default::default() };
        extra(&mut config);
        Verifier::load(&config).unwrap()
    }

    fn hs(claims: serde_json::Value, secret: &str) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn hs256_checks_signature_expiry_not_before_audience_and_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let v = hs_verifier(dir.path(), |c| {
            c.audience = Some("chat".into());
            c.issuer = Some("auth".into());
        });
        let good = json!({"sub": "ada", "aud": "chat", "iss": "auth", "exp": now() + 60, "room": 7});
        let ok = v.verify(&hs(good.clone(), "s3cret")).expect("a good token");
        assert_eq!(ok.metadata[0], (SUB_KEY.to_string(), "ada".to_string()));
        let claims: serde_json::Value = serde_json::from_str(&ok.metadata[1].1).unwrap();
        assert_eq!(claims["room"], 7);
        assert_eq!(ok.expires_at, Some(UNIX_EPOCH + Duration::from_secs(good["exp"].as_u64().unwrap())));

        let bad = |claims: serde_json::Value, secret: &str| v.verify(&hs(claims, secret)).unwrap_err();
        assert!(bad(good.clone(), "other").contains("InvalidSignature"), "wrong secret");
        let mut c = good.clone();
        c["exp"] = json!(now() - 5);
        assert!(bad(c, "s3cret").contains("ExpiredSignature"));
        let mut c = good.clone();
        c["nbf"] = json!(now() + 60);
        assert!(bad(c, "s3cret").contains("ImmatureSignature"));
        let mut c = good.clone();
        c["aud"] = json!("admin");
        assert!(bad(c, "s3cret").contains("InvalidAudience"));
        let mut c = good.clone();
        c["iss"] = json!("evil");
        assert!(bad(c, "s3cret").contains("InvalidIssuer"));
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove("exp");
        assert!(bad(c, "s3cret").contains("exp"), "exp is required");
        assert!(v.verify("not.a.token").is_err());
        assert!(v.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)).unwrap_err().contains("too long"));
    }

    #[test]
    fn a_token_cannot_choose_another_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let v = hs_verifier(dir.path(), |_| {});
        // `alg: none`, unsigned.
        use base64::Engine;
        let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(json!({"exp": now() + 60})));
        assert!(v.verify(&none).is_err());
        // HS384 with the right secret is still not HS256.
        let claims = json!({"exp": now() + 60});
        let hs384 =
            encode(&Header::new(Algorithm::HS384), &claims, &EncodingKey::from_secret(b"s3cret").unwrap()).unwrap();
        assert!(v.verify(&hs384).unwrap_err().contains("InvalidAlgorithm"));
    }

    #[test]
    fn es256_from_a_pem_key_and_a_jwk_set_picked_by_kid() {
        let dir = tempfile::tempdir().unwrap();
        let signing = rcgen::KeyPair::generate().unwrap();
        let pem = dir.path().join("key.pem");
        std::fs::write(&pem, signing.public_key_pem()).unwrap();
        let v = Verifier::load(&AuthConfig { public_key_file: Some(pem), ..Default::default() }).unwrap();
        let enc = EncodingKey::from_ec_pem(signing.serialize_pem().as_bytes()).unwrap();
        let mut header = Header::new(Algorithm::ES256);
        let token = encode(&header, &json!({"sub": "x", "exp": now() + 60}), &enc).unwrap();
        assert!(v.verify(&token).is_ok());

        // The same key in a JWK set with a kid, beside another key.
        let other = rcgen::KeyPair::generate().unwrap();
        let jwk = |k: &rcgen::KeyPair, kid: &str| {
            let raw = k.public_key_raw(); // 0x04 || x || y
            use base64::Engine;
            let b = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b(&raw[1..33]), "y": b(&raw[33..65])})
        };
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, json!({"keys": [jwk(&other, "k2"), jwk(&signing, "k1")]}).to_string()).unwrap();
        let v = Verifier::load(&AuthConfig { jwks_file: Some(jwks), ..Default::default() }).unwrap();
        header.kid = Some("k1".into());
        let token = encode(&header, &json!({"exp": now() + 60}), &enc).unwrap();
        assert!(v.verify(&token).is_ok());
        header.kid = Some("k2".into());
        let token = encode(&header, &json!({"exp": now() + 60}), &enc).unwrap();
        assert!(v.verify(&token).unwrap_err().contains("InvalidSignature"), "k2 is not the signer");
        header.kid = Some("k9".into());
        let token = encode(&header, &json!({"exp": now() + 60}), &enc).unwrap();
        assert!(v.verify(&token).unwrap_err().contains("no key with kid"));
    }

    #[test]
    fn rs256_from_a_pem_public_key() {
        // ring cannot make RSA keys: `openssl` (Debian's, a test dependency) does.
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("rsa.key"), dir.path().join("rsa.pub"));
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl runs (apt-get install openssl)");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", private.to_str().unwrap()]);
        run(&["pkey", "-in", private.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
        let v = Verifier::load(&AuthConfig { public_key_file: Some(public), ..Default::default() }).unwrap();
        let enc = EncodingKey::from_rsa_pem(&std::fs::read(&private).unwrap()).unwrap();
        let token = encode(&Header::new(Algorithm::RS256), &json!({"sub": "r", "exp": now() + 60}), &enc).unwrap();
        assert_eq!(v.verify(&token).unwrap().metadata[0].1, "r");
        // The RSA public key as an HS256 secret: the classic confusion.
        let confused = hs(json!({"exp": now() + 60}), &std::fs::read_to_string(dir.path().join("rsa.pub")).unwrap());
        assert!(v.verify(&confused).unwrap_err().contains("InvalidAlgorithm"));
    }

    #[test]
    fn bad_key_files_name_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "junk").unwrap();
        let e = |c: AuthConfig| format!("{:#}", Verifier::load(&c).err().unwrap());
        let err = e(AuthConfig { public_key_file: Some(junk.clone()), ..Default::default() });
        assert!(err.starts_with("public_key_file: ") && err.contains("junk.pem"), "{err}");
        let err = e(AuthConfig { jwks_file: Some(junk), ..Default::default() });
        assert!(err.contains("jwks_file") && err.contains("not a JWK set"), "{err}");
        let err = e(AuthConfig { hs256_secret_file: Some(dir.path().join("nope")), ..Default::default() });
        assert!(err.contains("hs256_secret_file: cannot read") && err.contains("nope"), "{err}");
    }

    #[test]
    fn the_token_is_found_in_the_query_a_bearer_header_or_a_subprotocol_entry() {
        let mut protocols = vec!["chat".to_string(), "wharf.token.abc".to_string()];
        assert_eq!(take_token("", &[], &mut protocols).as_deref(), Some("abc"));
        assert_eq!(protocols, ["chat"], "the token entry is never offered onward");
        let headers = [("Authorization".to_string(), "Bearer  hdr ".to_string())];
        assert_eq!(take_token("a=1", &headers, &mut vec![]).as_deref(), Some("hdr"));
        assert_eq!(take_token("a=1&token=q%2Bq", &headers, &mut vec![]).as_deref(), Some("q+q"), "query first");
        let basic = [("authorization".to_string(), "Basic eDp5".to_string())];
        assert_eq!(take_token("", &basic, &mut vec![]), None);
        assert_eq!(take_token("token=", &[], &mut vec![]), None);
    }
}
