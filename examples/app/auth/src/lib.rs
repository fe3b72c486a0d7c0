//! `app-auth`: the first handler of the `/app` route (examples/app): only a
//! client with a valid `?token=` gets through, and the next handler knows
//! who it is.
//!
//! A client gets a token from `/app/login?name=NICK` (this handler alone
//! on that route): `{"type":"token","token":"…","user":"NICK"}`, valid for
//! an hour, then the connection closes. On `/app`, `on-open` looks the
//! token up in key/value (`token:TOKEN` → the name), refuses an unknown one
//! with 401, and accepts with metadata `user = NAME`, which the next
//! handler of the chain sees in its own `on-open`.

use std::hash::{BuildHasher, Hasher};

use serde_json::json;
use wharf_guest::{Accept, Connection, Handler, Reject, Request, export_handler, kv};

/// How long a token is good for.
const TOKEN_TTL_MS: u64 = 3_600_000;

struct Auth;

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// 128 random bits as hex (the sandbox's random source).
fn new_token() -> String {
    (0..2)
        .map(|_| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(0);
            format!("{:016x}", h.finish())
        })
        .collect()
}

impl Handler for Auth {
    fn on_open(conn: Connection, req: Request) -> Result<Accept, Reject> {
        if req.path.ends_with("/login") {
            let name = req.query_param("name").unwrap_or("");
            if !valid_name(name) {
                return Err(Reject::new(400, "name: 1 to 64 ASCII letters, digits, - or _"));
            }
            let token = new_token();
            kv::set_with_ttl(&format!("token:{token}"), name.as_bytes(), TOKEN_TTL_MS)
                .map_err(|e| Reject::new(503, format!("cannot issue a token: {e}")))?;
            let _ = conn.send(json!({ "type": "token", "token": token, "user": name }).to_string());
            let _ = conn.close(1000, "token issued");
            return Ok(Accept::default());
        }
        let token = req.query_param("token").ok_or_else(|| Reject::new(401, "a token is required"))?;
        let user = kv::get(&format!("token:{token}"))
            .map_err(|e| Reject::new(503, format!("cannot check the token: {e}")))?
            .ok_or_else(|| Reject::new(401, "unknown token"))?;
        Ok(Accept::default().metadata("user", String::from_utf8_lossy(&user)))
    }
}

export_handler!(Auth);
