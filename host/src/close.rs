//! WebSocket close codes the host sends, and the rules for the codes and
//! reasons others may ask for: handlers (`close`), the admin API and the
//! conformance kit's scenarios all check them here.

/// The client or handler closed normally.
pub const NORMAL: u16 = 1000;
/// The host shuts down, a route was removed, a client stopped answering
/// pings or reached its route's lifetime.
pub const GOING_AWAY: u16 = 1001;
/// The client broke the protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// A close frame without a code (reported, never sent).
pub const NO_STATUS: u16 = 1005;
/// The connection ended without a close frame (reported, never sent).
pub const ABNORMAL: u16 = 1006;
/// A text message that is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A slow reader: its outbound queue overflowed or a write blocked too long.
pub const POLICY: u16 = 1008;
/// A message larger than the route allows.
pub const TOO_BIG: u16 = 1009;
/// The handler failed (trap, deadline, no instance).
pub const HANDLER_ERROR: u16 = 1011;
/// The connection's token expired (`[routes.auth]` with `close_on_expiry`):
/// IANA's registered 3000, "Unauthorized".
pub const TOKEN_EXPIRED: u16 = 3000;

/// Longest close reason: a close frame's payload is at most 125 bytes, two
/// of them the code.
pub const MAX_REASON_BYTES: usize = 123;

/// The reason sent with [`HANDLER_ERROR`]; the detail goes to the log.
pub const HANDLER_ERROR_REASON: &str = "handler error";

/// Whether a handler, an operator or a scenario may close a connection with
/// `code`: a normal close or an application code (3000–4999). The other
/// codes say what the host saw and are the host's to send.
pub fn may_request(code: u16) -> bool {
    code == NORMAL || (3000..=4999).contains(&code)
}

/// Whether a server may send `code` in a close frame (RFC 6455 7.4): the
/// codes a relayed peer (a backend, a publisher) may pass on.
pub fn may_send(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// What [`may_request`] allows, for error messages.
pub const REQUESTABLE: &str = "1000 or 3000..=4999";

/// Checks a requested close: its code and the length of its reason.
pub fn check_request(code: u16, reason: &str) -> Result<(), Refusal> {
    if !may_request(code) {
        return Err(Refusal::Code);
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(Refusal::ReasonTooLong);
    }
    Ok(())
}

/// Why a requested close is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The code is not one of [`REQUESTABLE`].
    #[error("the close code is 1000 or 3000..=4999")]
    Code,
    /// The reason is longer than [`MAX_REASON_BYTES`].
    #[error("the close reason is at most 123 bytes")]
    ReasonTooLong,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normal_and_application_codes_may_be_requested() {
        for ok in [1000, 3000, 4000, 4999] {
            assert!(may_request(ok), "{ok}");
        }
        for host_only in [999, 1001, 1002, 1005, 1006, 1008, 1009, 1011, 1015, 2999, 5000] {
            assert!(!may_request(host_only), "{host_only}");
        }
    }

    #[test]
    fn a_reason_fits_a_close_frame() {
        assert_eq!(check_request(1000, &"r".repeat(MAX_REASON_BYTES)), Ok(()));
        assert_eq!(check_request(1000, &"r".repeat(MAX_REASON_BYTES + 1)), Err(Refusal::ReasonTooLong));
        assert_eq!(check_request(1011, ""), Err(Refusal::Code));
        // Two bytes of code and the reason make at most a control frame's 125.
        assert_eq!(2 + MAX_REASON_BYTES, 125);
    }
}
