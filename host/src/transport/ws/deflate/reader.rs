//! The read side of permessage-deflate, under tungstenite: it reads the
//! client's frames and hands tungstenite each compressed frame inflated,
//! as a plain masked frame (RSV1 clear, a zero mask key). Every other frame
//! (control frames, uncompressed messages, and anything malformed, which
//! tungstenite then refuses with the right code) passes through unchanged,
//! its payload copied straight through.
//!
//! A message is inflated no further than the route's message limit
//! ([`InflateError::TooBig`], close 1009), and compressed data that does
//! not inflate is refused ([`InflateError::Corrupt`], 1007): both reach the
//! connection task as an I/O error carrying the [`InflateError`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use flate2::Decompress;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::InflateError;

/// Bytes asked of the socket per read while parsing frames.
const READ_CHUNK: usize = 2 * 1024;
/// Buffers larger than this are given back once drained, so that an idle
/// connection does not keep a burst's memory.
const KEEP_BYTES: usize = 16 * 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    rsv1: bool,
    /// RSV2 or RSV3.
    other_rsv: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
}

impl Header {
    /// Parses the header at the start of `input`; its length in bytes.
    fn parse(input: &[u8]) -> Option<(Header, usize)> {
        let [b0, b1, ..] = *input else { return None };
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let masked = b1 & 0x80 != 0;
        let size = 2 + ext + if masked { 4 } else { 0 };
        if input.len() < size {
            return None;
        }
        let len = match ext {
            0 => u64::from(b1 & 0x7f),
            2 => u64::from(u16::from_be_bytes([input[2], input[3]])),
            _ => u64::from_be_bytes(input[2..10].try_into().expect("8 bytes")),
        };
        let mask = masked.then(|| input[2 + ext..size].try_into().expect("4 bytes"));
        let header = Header {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            other_rsv: b0 & 0x30 != 0,
            opcode: b0 & 0x0f,
            mask,
            len,
        };
        Some((header, size))
    }

    /// A client data frame of `len` bytes with a zero mask key (the payload
    /// goes as it is).
    fn write_plain(out: &mut Vec<u8>, fin: bool, opcode: u8, len: usize) {
        out.push(if fin { 0x80 } else { 0 } | opcode);
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0; 4]);
    }
}

/// Where the reader is in the client's stream.
enum At {
    /// Before a frame header.
    Header,
    /// Inside a frame that passes through: this many payload bytes left.
    Passing(u64),
    /// Before the payload of a compressed frame.
    Compressed(Header),
}

/// The message the frames belong to.
enum InMessage {
    /// Between messages.
    None,
    /// An uncompressed message continues in further frames.
    Plain,
    /// A compressed message continues in further frames, inflated by its
    /// own inflater.
    Compressed { inflater: Box<Decompress>, inflated: usize, ended: bool },
}

/// The client's stream with compressed frames inflated, or (when the
/// extension was not agreed) passed through untouched.
pub struct Inflating<S> {
    inner: S,
    on: bool,
    /// The route's message limit, on inflated bytes.
    limit: usize,
    /// Read from the socket and not yet handled (the handshake's leftover
    /// bytes first).
    input: BytesMut,
    /// Ready for tungstenite.
    output: BytesMut,
    at: At,
    message: InMessage,
    failed: Option<InflateError>,
}

impl<S> Inflating<S> {
    /// `leftover` is what was read past the handshake. With `on` false the
    /// stream passes through.
    pub fn new(inner: S, leftover: &[u8], on: bool, limit: usize) -> Self {
        Inflating {
            inner,
            on,
            limit,
            input: BytesMut::from(leftover),
            output: BytesMut::new(),
            at: At::Header,
            message: InMessage::None,
            failed: None,
        }
    }

    /// The compressed payload a frame may carry: incompressible data grows
    /// a little (5 bytes per 16 KiB stored block), never more.
    fn compressed_cap(&self) -> u64 {
        (self.limit + self.limit / 1024 + 64) as u64
    }

    /// Handles a parsed header.
    fn header(&mut self, h: Header, raw: &[u8]) {
        let clean = !h.other_rsv && h.mask.is_some();
        let starts = matches!(h.opcode, OP_TEXT | OP_BINARY);
        let compressed = match &self.message {
            InMessage::None => clean && starts && h.rsv1,
            InMessage::Compressed { .. } => clean && !h.rsv1 && h.opcode == OP_CONTINUATION,
            InMessage::Plain => false,
        };
        if !compressed {
            // tungstenite judges it: control frames, plain messages, and
            // anything malformed.
            match (&self.message, h.opcode) {
                (InMessage::None, OP_TEXT | OP_BINARY) if !h.fin => self.message = InMessage::Plain,
                (InMessage::Plain, OP_CONTINUATION) if h.fin => self.message = InMessage::None,
                _ => {}
            }
            self.output.extend_from_slice(raw);
            self.at = At::Passing(h.len);
            return;
        }
        if h.len > self.compressed_cap() {
            self.failed = Some(InflateError::TooBig);
            return;
        }
        self.at = At::Compressed(h);
    }

    /// Inflates a compressed frame's payload and queues it as a plain frame.
    fn compressed(&mut self, h: Header, mut payload: BytesMut) {
        let mask = h.mask.expect("compressed frames are masked");
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        let first = matches!(self.message, InMessage::None);
        let mut starts = None;
        let inflated = match (&mut self.message, h.fin) {
            (InMessage::None, true) => super::inflate_message(&payload, self.limit),
            (InMessage::None, false) => {
                let mut inflater = Box::new(super::new_inflater());
                let mut out = Vec::new();
                let mut ended = false;
                super::inflate_into(&mut inflater, &payload, false, &mut out, self.limit, &mut ended).map(|()| {
                    starts = Some(InMessage::Compressed { inflater, inflated: out.len(), ended });
                    out
                })
            }
            (InMessage::Compressed { inflater, inflated, ended }, last) => {
                let mut out = Vec::new();
                let room = self.limit.saturating_sub(*inflated);
                super::inflate_into(inflater, &payload, last, &mut out, room, ended).map(|()| {
                    *inflated += out.len();
                    out
                })
            }
            (InMessage::Plain, _) => unreachable!("a plain message's frames pass through"),
        };
        if let Some(message) = starts {
            self.message = message;
        }
        match inflated {
            Ok(data) => {
                let opcode = if first { h.opcode } else { OP_CONTINUATION };
                let mut frame = Vec::with_capacity(data.len() + 14);
                Header::write_plain(&mut frame, h.fin, opcode, data.len());
                frame.extend_from_slice(&data);
                self.output.extend_from_slice(&frame);
                if h.fin {
                    self.message = InMessage::None;
                }
                self.at = At::Header;
            }
            Err(e) => self.failed = Some(e),
        }
    }
}

impl<S: AsyncRead + Unpin> Inflating<S> {
    /// Reads more of the socket into `input`; `false` at its end. Between
    /// frames it reads through the thread's buffer, so that a connection
    /// waiting for its next frame holds no read buffer of its own here.
    fn fill(&mut self, cx: &mut Context<'_>, at_least: usize) -> Poll<io::Result<bool>> {
        if self.input.is_empty() && at_least <= READ_CHUNK {
            let input = &mut self.input;
            return read_scratch(&mut self.inner, cx, |got| {
                input.extend_from_slice(got);
                !got.is_empty()
            });
        }
        self.input.reserve(at_least.max(READ_CHUNK));
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.input))?;
        Poll::Ready(Ok(n > 0))
    }

    /// Gives back `input`'s memory once everything in it was handled.
    fn release_input(&mut self) {
        if self.input.is_empty() && self.input.capacity() > 0 {
            self.input = BytesMut::new();
        }
    }
}

/// Bytes one read from the socket may bring, in a buffer of the thread.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    /// The thread's read buffer: a connection reads the socket into it and
    /// keeps only what does not fit the caller's buffer.
    static READ_SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// One read of `inner` into the thread's scratch buffer, handed to `take`
/// before the buffer is lent to the next read. Nothing is zero-filled per
/// read (the buffer is filled once, when the thread makes it), and a
/// connection keeps no buffer of its own while it waits.
fn read_scratch<S: AsyncRead + Unpin, R>(
    inner: &mut S,
    cx: &mut Context<'_>,
    take: impl FnOnce(&[u8]) -> R,
) -> Poll<io::Result<R>> {
    READ_SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let mut read = ReadBuf::new(&mut scratch[..]);
        ready!(Pin::new(inner).poll_read(cx, &mut read))?;
        Poll::Ready(Ok(take(read.filled())))
    })
}

/// One read of `inner` through the thread's scratch buffer: what fits goes
/// to `buf`, the rest to `keep` (which is empty when this is called). The
/// caller's buffer can then be small (tungstenite zero-fills it before each
/// read, and every idle connection holds it) without a read per few hundred
/// bytes: a larger message is read at once and handed on from memory.
fn read_through_scratch<S: AsyncRead + Unpin>(
    inner: &mut S,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    keep: &mut BytesMut,
) -> Poll<io::Result<()>> {
    read_scratch(inner, cx, |got| {
        let n = got.len().min(buf.remaining());
        buf.put_slice(&got[..n]);
        if n < got.len() {
            keep.extend_from_slice(&got[n..]);
        }
    })
}

/// Copies as much of `from` as fits into `buf`.
fn give(from: &mut BytesMut, buf: &mut ReadBuf<'_>) {
    let n = from.len().min(buf.remaining());
    buf.put_slice(&from[..n]);
    from.advance(n);
    if from.is_empty() && from.capacity() > KEEP_BYTES {
        *from = BytesMut::new();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.on {
            if !this.input.is_empty() {
                give(&mut this.input, buf);
                this.release_input();
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() >= SCRATCH {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            return read_through_scratch(&mut this.inner, cx, buf, &mut this.input);
        }
        loop {
            if !this.output.is_empty() {
                give(&mut this.output, buf);
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
            match this.at {
                At::Passing(0) => this.at = At::Header,
                At::Passing(left) => {
                    if !this.input.is_empty() {
                        let n = (this.input.len() as u64).min(left) as usize;
                        let n = n.min(buf.remaining());
                        buf.put_slice(&this.input[..n]);
                        this.input.advance(n);
                        this.release_input();
                        this.at = At::Passing(left - n as u64);
                        return Poll::Ready(Ok(()));
                    }
                    // Straight from the socket into tungstenite's buffer.
                    let want = (buf.remaining() as u64).min(left) as usize;
                    let mut part = ReadBuf::new(buf.initialize_unfilled_to(want));
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                    let n = part.filled().len();
                    buf.advance(n);
                    this.at = At::Passing(left - n as u64);
                    return Poll::Ready(Ok(()));
                }
                At::Header => match Header::parse(&this.input) {
                    Some((h, size)) => {
                        let raw = this.input.split_to(size);
                        this.header(h, &raw);
                        this.release_input();
                    }
                    None => {
                        if !ready!(this.fill(cx, 14))? {
                            // The end of the stream: what is left (a cut-off
                            // header) goes to tungstenite as it is.
                            let rest = this.input.split();
                            if rest.is_empty() {
                                return Poll::Ready(Ok(()));
                            }
                            this.output.extend_from_slice(&rest);
                        }
                    }
                },
                At::Compressed(h) => {
                    let len = h.len as usize;
                    if this.input.len() >= len {
                        let payload = this.input.split_to(len);
                        this.compressed(h, payload);
                        this.release_input();
                    } else if !ready!(this.fill(cx, len - this.input.len()))? {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A masked client frame.
    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![if fin { 0x80 } else { 0 } | if rsv1 { 0x40 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    /// Without deflate, the socket is read through the thread's scratch
    /// buffer: a caller with a small buffer gets every byte in order (the
    /// handshake's leftover first), a large read arrives in one socket read,
    /// and nothing is kept once it is handed on.
    #[tokio::test]
    async fn plain_reads_through_the_scratch_buffer_and_keep_nothing() {
        let wire: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        {
            use tokio::io::AsyncWriteExt;
            client.write_all(&wire[5..]).await.unwrap();
            client.shutdown().await.unwrap();
        }
        let mut reader = Inflating::new(server, &wire[..5], false, 1 << 20);
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        let mut reads = 0;
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            reads += 1;
            out.extend_from_slice(&buf[..n]);
            if out.len() == 5 + SCRATCH {
                // One socket read of 16 KiB, all of it handed on.
                assert_eq!(reader.input.capacity(), 0, "kept {} bytes' room", reader.input.capacity());
            }
        }
        assert_eq!(out, wire);
        assert_eq!(reads, 1 + (wire.len() - 5).div_ceil(256), "256 bytes per read after the 5 left over");
        assert_eq!(reader.input.capacity(), 0);
    }

    /// What tungstenite would read, given `wire` in `chunk`-byte reads.
    async fn through(wire: Vec<u8>, limit: usize, chunk: usize) -> (Vec<u8>, Option<InflateError>) {
        let (mut client, server) = tokio::io::duplex(chunk);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for part in wire.chunks(chunk) {
                client.write_all(part).await.unwrap();
            }
        });
        let mut reader = Inflating::new(server, &[], true, limit);
        let mut out = Vec::new();
        let mut buf = [0u8; 333];
        let err = loop {
            match reader.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break e.get_ref().and_then(|e| e.downcast_ref::<InflateError>()).copied(),
            }
        };
        writer.abort();
        (out, err)
    }

    fn unmasked(frames: &[u8]) -> Vec<(u8, bool, Vec<u8>)> {
        let mut rest = frames;
        let mut out = Vec::new();
        while let Some((h, size)) = Header::parse(rest) {
            let body: Vec<u8> = rest[size..size + h.len as usize]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ h.mask.unwrap_or_default()[i & 3])
                .collect();
            out.push((h.opcode, h.fin, body));
            rest = &rest[size + h.len as usize..];
        }
        out
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        super::super::compress(super::super::Agreed { server_window_bits: 15 }, data).expect("compressible")
    }

    #[tokio::test]
    async fn compressed_frames_arrive_inflated_and_the_rest_unchanged() {
        let text = b"a compressed text message, a compressed text message".repeat(24);
        let packed = deflate(&text);
        let (a, b) = packed.split_at(packed.len() / 2);
        let mut wire = frame(true, true, OP_TEXT, &packed);
        wire.extend(frame(true, false, 0x9, b"ping")); // a ping passes through
        wire.extend(frame(false, true, OP_BINARY, a)); // a fragmented compressed message...
        wire.extend(frame(true, false, 0xA, b"pong")); // ...with a control frame between
        wire.extend(frame(true, false, OP_CONTINUATION, b));
        wire.extend(frame(true, false, OP_TEXT, b"plain")); // uncompressed
        for chunk in [1, 7, 4096] {
            let (out, err) = through(wire.clone(), 1 << 20, chunk).await;
            assert_eq!(err, None);
            let frames = unmasked(&out);
            assert_eq!(frames[0], (OP_TEXT, true, text.clone()), "chunk {chunk}");
            assert_eq!(frames[1], (0x9, true, b"ping".to_vec()));
            assert_eq!((frames[2].0, frames[2].1), (OP_BINARY, false));
            assert_eq!(frames[3], (0xA, true, b"pong".to_vec()));
            assert_eq!((frames[4].0, frames[4].1), (OP_CONTINUATION, true));
            assert_eq!([frames[2].2.clone(), frames[4].2.clone()].concat(), text);
            assert_eq!(frames[5], (OP_TEXT, true, b"plain".to_vec()));
            assert_eq!(out[0] & 0x40, 0, "RSV1 is cleared");
        }
    }

    #[tokio::test]
    async fn a_bomb_stops_at_the_limit_and_garbage_is_corrupt() {
        let bomb = deflate(&vec![b'z'; 4 << 20]);
        let (_, err) = through(frame(true, true, OP_BINARY, &bomb), 64 << 10, 4096).await;
        assert_eq!(err, Some(InflateError::TooBig));
        // Split across frames, the limit counts the whole message.
        let (a, b) = bomb.split_at(bomb.len() / 2);
        let mut wire = frame(false, true, OP_BINARY, a);
        wire.extend(frame(true, false, OP_CONTINUATION, b));
        assert_eq!(through(wire, 64 << 10, 4096).await.1, Some(InflateError::TooBig));
        let (_, err) = through(frame(true, true, OP_TEXT, &[0xff; 40]), 1 << 20, 4096).await;
        assert_eq!(err, Some(InflateError::Corrupt));
        // A compressed frame longer than the limit could ever inflate from
        // is refused before it is read.
        let (_, err) = through(frame(true, true, OP_BINARY, &vec![0; 70_000]), 1024, 4096).await;
        assert_eq!(err, Some(InflateError::TooBig));
    }

    #[tokio::test]
    async fn malformed_frames_pass_through_for_tungstenite_to_refuse() {
        // RSV1 on a control frame, on a continuation, RSV2; all unchanged.
        for wire in [frame(true, true, 0x9, b"x"), frame(true, true, OP_CONTINUATION, b"x"), {
            let mut f = frame(true, false, OP_TEXT, b"x");
            f[0] |= 0x20;
            f
        }] {
            assert_eq!(through(wire.clone(), 1024, 4096).await, (wire, None));
        }
    }
}
