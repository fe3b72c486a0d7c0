//! GRIP's signed tokens, HS256 JWTs (RFC 7519): the `Grip-Sig` header on
//! every request to a backend, so that it can tell the request came through
//! its gateway, and the bearer token a publisher may sign instead of sending
//! the admin token. Only HS256 is made or accepted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a `Grip-Sig` token is valid.
pub const SIG_LIFETIME: Duration = Duration::from_secs(3600);

/// The header of every token made here.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length")
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A token with issuer `iss` that expires at `exp` (Unix seconds).
pub fn token(key: &[u8], iss: &str, exp: u64) -> String {
    let claims = serde_json::json!({ "iss": iss, "exp": exp });
    let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(claims.to_string()));
    let mut m = mac(key);
    m.update(signing_input.as_bytes());
    format!("{signing_input}.{}", B64.encode(m.finalize().into_bytes()))
}

/// Signs `Grip-Sig` tokens with one key and issuer.
pub struct Signer {
    key: Vec<u8>,
    iss: String,
}

impl Signer {
    /// A signer with this shared secret and issuer.
    pub fn new(key: &[u8], iss: &str) -> Self {
        Signer { key: key.to_vec(), iss: iss.to_string() }
    }

    /// A token valid from now for [`SIG_LIFETIME`].
    pub fn token(&self) -> String {
        token(&self.key, &self.iss, now_s() + SIG_LIFETIME.as_secs())
    }
}

/// Whether `token` is an HS256 JWT signed with `key` whose `exp` is in the
/// future (any issuer).
pub fn valid(token: &str, key: &[u8]) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(signature) = B64.decode(signature) else { return false };
    let mut m = mac(key);
    m.update(header.as_bytes());
    m.update(b".");
    m.update(claims.as_bytes());
    // Constant-time comparison.
    if m.verify_slice(&signature).is_err() {
        return false;
    }
    let json = |part: &str| B64.decode(part).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let (Some(header), Some(claims)) = (json(header), json(claims)) else { return false };
    header["alg"] == "HS256" && claims["exp"].as_u64().is_some_and(|exp| exp > now_s())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_it_signs_is_valid_only_with_its_key() {
        let token = Signer::new(b"secret", "wharf").token();
        assert!(valid(&token, b"secret"));
        assert!(!valid(&token, b"other"));
        assert!(!valid("not.a.token", b"secret"));
        assert!(!valid(&format!("{token}.x"), b"secret"));
    }

    #[test]
    fn an_expired_or_tampered_token_is_refused() {
        assert!(!valid(&token(b"k", "x", 1), b"k"));
        let good = token(b"k", "x", now_s() + 60);
        assert!(valid(&good, b"k"));
        let (head, rest) = good.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = format!("{head}.{}.{sig}", B64.encode(r#"{"iss":"x","exp":99999999999}"#));
        assert!(!valid(&forged, b"k"));
    }

    #[test]
    fn matches_a_token_made_by_another_implementation() {
        // PyJWT 2.15: jwt.encode({"iss": "wharf", "exp": 4102444800}, "secret", "HS256")
        let pyjwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJ3aGFyZiIsImV4cCI6NDEwMjQ0NDgwMH0.\
                     k94QWXSmpj6YzNgSQ5RLvEQgXcesF8aLElsMlkM741s";
        assert!(valid(pyjwt, b"secret"), "PyJWT's token validates");
    }
}
