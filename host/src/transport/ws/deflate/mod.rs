//! permessage-deflate (RFC 7692) on a route with `compression = "deflate"`.
//!
//! tungstenite refuses every frame with RSV1 set, so the extension lives
//! around it: [`reader::Inflating`] sits between the socket and tungstenite
//! and hands it each compressed frame inflated, as a plain frame; outgoing
//! messages are compressed into frames with RSV1 set before tungstenite
//! writes them ([`compress`]).
//!
//! Neither side keeps a compression context between messages: the host
//! never refers back to an earlier message (`server_no_context_takeover`
//! needs no agreement), and it asks the client not to either
//! (`client_no_context_takeover`, which a server may add to any accepted
//! offer). A connection therefore holds no deflate state between messages:
//! every message is compressed and inflated with one state per thread,
//! reset after each message (uWebSockets' shared compressor, the same
//! trade of ratio for memory). Only a compressed message that arrives in
//! several frames holds an inflater of its own until its last frame.

pub(super) mod reader;

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The `Sec-WebSocket-Extensions` token.
pub const EXTENSION: &str = "permessage-deflate";
/// Every compressed message ends with these four bytes, which the sender
/// removes and the receiver appends (RFC 7692, 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Messages shorter than this go out uncompressed (RSV1 clear), as Node
/// `ws` does by default: a small message saves a few bytes at best, and
/// compressing it costs more CPU than the rest of its echo
/// (`make bench-edge`: 64 B of JSON went from 136 to 130 bytes on the wire
/// for 2x the CPU).
pub const MIN_COMPRESS_BYTES: usize = 1024;
/// zlib's smallest raw-deflate window is 2^9; an offer that limits the host
/// to 2^8 is declined.
const MIN_WINDOW_BITS: u8 = 9;

/// What was agreed with one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The window the host compresses with (`server_max_window_bits`).
    pub server_window_bits: u8,
}

/// Picks the first `permessage-deflate` offer the host can accept from the
/// client's `Sec-WebSocket-Extensions` values; the agreement and the
/// response header value.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<(Agreed, String)> {
    header_values.into_iter().flat_map(|v| v.split(',')).find_map(accept_offer)
}

/// One offer, `permessage-deflate; param; param=value`: accepted unless a
/// parameter is unknown, repeated, or has a bad value (RFC 7692, 7.1).
fn accept_offer(offer: &str) -> Option<(Agreed, String)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen = Vec::new();
    let mut agreed = Agreed { server_window_bits: 15 };
    let mut response = format!("{EXTENSION}; client_no_context_takeover");
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (part, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        let bits = || {
            value
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0'))?
                .parse::<u8>()
                .ok()
                .filter(|b| (8..=15).contains(b))
        };
        match name.as_str() {
            "server_no_context_takeover" if value.is_none() => response += "; server_no_context_takeover",
            "client_no_context_takeover" if value.is_none() => {}
            "server_max_window_bits" => {
                let b = bits()?;
                if b < MIN_WINDOW_BITS {
                    return None;
                }
                agreed.server_window_bits = b;
                response += &format!("; server_max_window_bits={b}");
            }
            // The host inflates with the largest window, so any limit the
            // client may keep to is fine; it need not be answered.
            "client_max_window_bits" if value.is_none() || bits().is_some() => {}
            _ => return None,
        }
        seen.push(name);
    }
    Some((agreed, response))
}

thread_local! {
    /// One compressor per window size used on this thread.
    static COMPRESSORS: RefCell<Vec<(u8, Compress)>> = const { RefCell::new(Vec::new()) };
    /// The inflater of single-frame messages on this thread.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `payload` compressed as one permessage-deflate message, or `None` when
/// that would not make it smaller.
pub fn compress(agreed: Agreed, payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() < MIN_COMPRESS_BYTES {
        return None;
    }
    COMPRESSORS.with_borrow_mut(|compressors| {
        let at = match compressors.iter().position(|(bits, _)| *bits == agreed.server_window_bits) {
            Some(at) => at,
            None => {
                let bits = agreed.server_window_bits;
                compressors.push((bits, Compress::new_with_window_bits(Compression::fast(), false, bits)));
                compressors.len() - 1
            }
        };
        let deflate = &mut compressors[at].1;
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let done = loop {
            let read = deflate.total_in() as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity());
            }
            match deflate.compress_vec(&payload[read..], &mut out, FlushCompress::Sync) {
                // Everything read and room left over: the flush is complete.
                Ok(_) if deflate.total_in() as usize == payload.len() && out.len() < out.capacity() => {
                    break out.ends_with(&TAIL);
                }
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        deflate.reset();
        // A sync flush ends with the empty stored block the receiver adds back.
        (done && out.len() - TAIL.len() < payload.len()).then(|| {
            out.truncate(out.len() - TAIL.len());
            out
        })
    })
}

/// Why an inflated message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflated past the message limit (close 1009).
    TooBig,
    /// It is not a valid deflate stream (close 1007).
    Corrupt,
}

impl std::fmt::Display for InflateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InflateError::TooBig => "the message inflates past the message limit",
            InflateError::Corrupt => "the message is not valid deflate data",
        })
    }
}

impl std::error::Error for InflateError {}

/// Inflates one frame's worth of a message into `out`, which may grow to
/// `limit` bytes at most; `last` adds the message's end. `ended` is kept
/// across the frames of one message: a sender may end the deflate stream
/// (a final block) before the message ends, and nothing may follow it.
pub(crate) fn inflate_into(
    inflater: &mut Decompress,
    input: &[u8],
    last: bool,
    out: &mut Vec<u8>,
    limit: usize,
    ended: &mut bool,
) -> Result<(), InflateError> {
    feed(inflater, input, out, limit, ended)?;
    if last && !*ended {
        feed(inflater, &TAIL, out, limit, ended)?;
    }
    Ok(())
}

fn feed(
    inflater: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
    ended: &mut bool,
) -> Result<(), InflateError> {
    if *ended {
        return if input.is_empty() { Ok(()) } else { Err(InflateError::Corrupt) };
    }
    let mut pos = 0;
    loop {
        if out.len() == out.capacity() {
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            // Room for one byte past the limit shows that it was passed.
            let want = (out.capacity() * 2).clamp(256, limit + 1);
            out.reserve_exact(want - out.len());
        }
        let before = (inflater.total_in(), inflater.total_out());
        let status =
            inflater.decompress_vec(&input[pos..], out, FlushDecompress::Sync).map_err(|_| InflateError::Corrupt)?;
        pos += (inflater.total_in() - before.0) as usize;
        if out.len() > limit {
            return Err(InflateError::TooBig);
        }
        if status == Status::StreamEnd {
            *ended = true;
            return if pos == input.len() { Ok(()) } else { Err(InflateError::Corrupt) };
        }
        let room = out.len() < out.capacity();
        if pos == input.len() && room {
            return Ok(());
        }
        if room && (inflater.total_in(), inflater.total_out()) == before {
            // Input left, room to write, and no progress: not deflate.
            return Err(InflateError::Corrupt);
        }
    }
}

/// Inflates a whole single-frame message with this thread's inflater.
pub(crate) fn inflate_message(input: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with_borrow_mut(|slot| {
        let inflater = slot.get_or_insert_with(new_inflater);
        let mut out = Vec::with_capacity((input.len() * 4).clamp(64, limit + 1));
        let result = inflate_into(inflater, input, true, &mut out, limit, &mut false);
        inflater.reset(false);
        result.map(|()| out)
    })
}

/// An inflater that takes any window a client may use.
pub(crate) fn new_inflater() -> Decompress {
    Decompress::new_with_window_bits(false, 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_browsers_and_common_clients_send_are_accepted() {
        // Chromium and Firefox.
        let (a, r) = negotiate(["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!((a.server_window_bits, r.as_str()), (15, "permessage-deflate; client_no_context_takeover"));
        // Python websockets.
        let (_, r) = negotiate(["permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"]).unwrap();
        assert_eq!(r, "permessage-deflate; client_no_context_takeover; server_max_window_bits=12");
        let (_, r) = negotiate(["permessage-deflate; server_no_context_takeover; client_no_context_takeover"]).unwrap();
        assert_eq!(r, "permessage-deflate; client_no_context_takeover; server_no_context_takeover");
    }

    #[test]
    fn bad_or_unusable_offers_fall_through_to_the_next_one() {
        for bad in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; mystery",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate([bad]), None, "{bad}");
            let (_, r) = negotiate([bad, "permessage-deflate"]).expect("the next offer");
            assert_eq!(r, "permessage-deflate; client_no_context_takeover", "{bad}");
        }
        let (_, r) = negotiate(["permessage-deflate; server_max_window_bits=8, permessage-deflate"]).unwrap();
        assert_eq!(r, "permessage-deflate; client_no_context_takeover", "offers in one header value");
    }

    #[test]
    fn a_compressed_message_inflates_back_and_small_or_random_ones_stay_plain() {
        let text = br#"{"type":"chat","room":"lobby","user":"ada","text":"hello, hello, hello, everyone"}"#.repeat(20);
        for bits in [9, 12, 15] {
            let packed = compress(Agreed { server_window_bits: bits }, &text).expect("compressible");
            assert!(packed.len() < text.len() / 4, "{bits}: {} of {}", packed.len(), text.len());
            assert_eq!(inflate_message(&packed, text.len()).unwrap(), text);
        }
        assert_eq!(
            compress(Agreed { server_window_bits: 15 }, &b"short".repeat(200)),
            None,
            "under 1 KiB goes out plain"
        );
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(compress(Agreed { server_window_bits: 15 }, &noise), None, "incompressible goes out plain");
    }

    #[test]
    fn inflating_stops_at_the_limit_and_on_corrupt_data() {
        let zeros = vec![0u8; 1 << 20];
        let bomb = compress(Agreed { server_window_bits: 15 }, &zeros).unwrap();
        assert!(bomb.len() < 16 * 1024, "1 MiB of zeros compresses to {} bytes", bomb.len());
        assert_eq!(inflate_message(&bomb, 64 * 1024), Err(InflateError::TooBig));
        assert_eq!(inflate_message(&bomb, 1 << 20).map(|v| v.len()), Ok(1 << 20), "exactly the limit is fine");
        assert_eq!(inflate_message(&[0xff, 0xff, 0xff, 0xff], 1024), Err(InflateError::Corrupt));
        // The thread's inflater is reset after a failure.
        let hello = compress(Agreed { server_window_bits: 15 }, &b"hello ".repeat(200)).unwrap();
        assert_eq!(inflate_message(&hello, 2048).unwrap(), b"hello ".repeat(200));
    }

    #[test]
    fn a_message_split_across_frames_inflates_with_its_own_inflater() {
        let text = b"fragmented and compressed ".repeat(100);
        let packed = compress(Agreed { server_window_bits: 15 }, &text).unwrap();
        let (a, b) = packed.split_at(packed.len() / 3);
        let mut inflater = new_inflater();
        let mut out = Vec::new();
        let mut ended = false;
        inflate_into(&mut inflater, a, false, &mut out, text.len(), &mut ended).unwrap();
        inflate_into(&mut inflater, b, true, &mut out, text.len(), &mut ended).unwrap();
        assert_eq!(out, text);
    }
}
