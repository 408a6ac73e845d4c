//! Framing: 4-byte headers (3-byte length, 1-byte sequence id), payloads of 16 MiB - 1 and
//! more continued in the next packet. One buffered stream type serves both sides.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ProtoError, MAX_WIRE_PAYLOAD};

/// Reads a wire header: (payload length, sequence id).
#[inline]
pub fn header(b: &[u8]) -> (usize, u8) {
    (
        usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16,
        b[3],
    )
}

/// Appends a payload as wire packets starting at `seq`; returns the next sequence id.
pub fn encode_packet(out: &mut Vec<u8>, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_WIRE_PAYLOAD);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_WIRE_PAYLOAD {
            return seq;
        }
    }
}

/// A logical packet: its payload (continuations joined) and the sequence id of its last
/// wire packet.
#[derive(Debug)]
pub struct Packet {
    pub seq: u8,
    pub payload: BytesMut,
}

/// A buffered packet stream over any byte stream. In `exact` mode it never reads a byte past
/// the packet it was asked for (the handshake: a TLS upgrade may follow an SSLRequest).
pub struct PacketStream<S> {
    pub stream: S,
    pub rbuf: BytesMut,
    pub wbuf: Vec<u8>,
    pub max_payload: usize,
    pub exact: bool,
    /// What a read makes room for at least.
    chunk: usize,
    /// The parts read so far of a packet continued past 16 MiB - 1 (kept here, not in the
    /// reading future, so a read cancelled between parts resumes where it stopped).
    partial: Option<BytesMut>,
}

const READ_CHUNK: usize = 64 * 1024;

/// A client's buffers between commands: commands are small, and an idle client should
/// cost little memory (a large result or command grows them for a while, see
/// [`PacketStream::trim`]).
const CLIENT_CHUNK: usize = 1024;

/// Buffers grown past this are given back once the stream is idle.
const TRIM_ABOVE: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> PacketStream<S> {
    /// A stream that reads in large chunks (backends: result sets).
    pub fn new(stream: S, max_payload: usize) -> Self {
        Self::with_chunk(stream, max_payload, READ_CHUNK, 16 * 1024)
    }

    /// A client's stream: small buffers to start with.
    pub fn client(stream: S, max_payload: usize) -> Self {
        Self::with_chunk(stream, max_payload, CLIENT_CHUNK, CLIENT_CHUNK)
    }

    fn with_chunk(stream: S, max_payload: usize, chunk: usize, write: usize) -> Self {
        PacketStream {
            stream,
            rbuf: BytesMut::with_capacity(chunk),
            wbuf: Vec::with_capacity(write),
            max_payload,
            exact: false,
            chunk,
            partial: None,
        }
    }

    /// Between commands: buffers a large result or command grew are given back, so an
    /// idle stream keeps only small ones.
    pub fn trim(&mut self) {
        if self.wbuf.is_empty() && self.wbuf.capacity() > TRIM_ABOVE {
            self.wbuf = Vec::with_capacity(self.chunk);
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > TRIM_ABOVE {
            self.rbuf = BytesMut::with_capacity(self.chunk);
        }
    }

    /// Reads until at least `need` bytes are buffered.
    pub async fn fill(&mut self, need: usize) -> Result<(), ProtoError> {
        while self.rbuf.len() < need {
            let n = if self.exact {
                let want = (need - self.rbuf.len()) as u64;
                (&mut self.stream)
                    .take(want)
                    .read_buf(&mut self.rbuf)
                    .await?
            } else {
                self.rbuf.reserve(self.chunk.max(need - self.rbuf.len()));
                self.stream.read_buf(&mut self.rbuf).await?
            };
            if n == 0 {
                return Err(ProtoError::Closed);
            }
        }
        Ok(())
    }

    /// Reads one more chunk of whatever is available; Ok(0) never returned (Closed instead).
    pub async fn read_more(&mut self) -> Result<usize, ProtoError> {
        self.rbuf.reserve(self.chunk);
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(ProtoError::Closed),
            n => Ok(n),
        }
    }

    /// Reads one logical packet, joining continuation packets, bounded by `max_payload`.
    /// Cancel-safe: a read dropped while waiting for bytes loses nothing (what was read
    /// stays buffered, parts of a continued packet too).
    pub async fn read_packet(&mut self) -> Result<Packet, ProtoError> {
        loop {
            self.fill(4).await?;
            let (len, seq) = header(&self.rbuf[..4]);
            let total = self.partial.as_ref().map_or(0, |p| p.len()) + len;
            if total > self.max_payload {
                self.partial = None;
                return Err(ProtoError::TooLarge(total, self.max_payload));
            }
            self.fill(4 + len).await?;
            self.rbuf.advance(4);
            let part = self.rbuf.split_to(len);
            let joined = match self.partial.take() {
                None => part,
                Some(mut p) => {
                    p.extend_from_slice(&part);
                    p
                }
            };
            if len < MAX_WIRE_PAYLOAD {
                return Ok(Packet {
                    seq,
                    payload: joined,
                });
            }
            self.partial = Some(joined);
        }
    }

    /// Queues a payload for writing; returns the next sequence id.
    pub fn queue(&mut self, seq: u8, payload: &[u8]) -> u8 {
        encode_packet(&mut self.wbuf, seq, payload)
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), ProtoError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            if self.wbuf.capacity() > 1 << 20 {
                self.wbuf = Vec::with_capacity(self.chunk);
            }
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Queues and flushes one payload.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<u8, ProtoError> {
        let next = self.queue(seq, payload);
        self.flush().await?;
        Ok(next)
    }

    /// True when nothing is buffered from the peer (a clean boundary between commands).
    pub fn read_idle(&self) -> bool {
        self.rbuf.is_empty() && self.partial.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn continuation_packets_join_and_split() {
        let big = vec![7u8; MAX_WIRE_PAYLOAD + 10];
        let mut wire = Vec::new();
        let next = encode_packet(&mut wire, 3, &big);
        assert_eq!(next, 5, "two wire packets");
        let (a, b) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            let mut a = a;
            a.write_all(&wire).await.unwrap();
        });
        let mut ps = PacketStream::new(b, 64 << 20);
        let p = ps.read_packet().await.unwrap();
        assert_eq!((p.payload.len(), p.seq), (big.len(), 4));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_read_cancelled_between_continuation_parts_resumes() {
        let big: Vec<u8> = (0..MAX_WIRE_PAYLOAD + 10).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        encode_packet(&mut wire, 0, &big);
        let split = MAX_WIRE_PAYLOAD + 4 + 2; // the first part and 2 bytes of the next header
        let (mut a, b) = tokio::io::duplex(64 << 20);
        a.write_all(&wire[..split]).await.unwrap();
        let mut ps = PacketStream::new(b, 64 << 20);
        let quick = std::time::Duration::from_millis(50);
        let first = tokio::time::timeout(quick, ps.read_packet()).await;
        assert!(first.is_err(), "the packet is not complete yet");
        assert!(!ps.read_idle(), "a part is kept");
        a.write_all(&wire[split..]).await.unwrap();
        let p = ps.read_packet().await.unwrap();
        assert_eq!(p.payload.len(), big.len());
        assert!(p.payload[..] == big[..], "the parts joined in order");
        assert!(ps.read_idle());
    }

    #[tokio::test]
    async fn exactly_max_payload_needs_an_empty_trailer() {
        let big = vec![1u8; MAX_WIRE_PAYLOAD];
        let mut wire = Vec::new();
        assert_eq!(encode_packet(&mut wire, 0, &big), 2);
        assert_eq!(wire.len(), MAX_WIRE_PAYLOAD + 8);
        assert_eq!(&wire[wire.len() - 4..], &[0, 0, 0, 1]);
    }

    #[tokio::test]
    async fn oversized_packet_is_refused() {
        let mut wire = Vec::new();
        encode_packet(&mut wire, 0, &[0u8; 100]);
        let (mut a, b) = tokio::io::duplex(4096);
        a.write_all(&wire).await.unwrap();
        let mut ps = PacketStream::new(b, 50);
        assert!(matches!(
            ps.read_packet().await,
            Err(ProtoError::TooLarge(100, 50))
        ));
    }

    #[tokio::test]
    async fn exact_mode_reads_no_byte_past_the_packet() {
        let mut wire = Vec::new();
        encode_packet(&mut wire, 1, b"hello");
        wire.extend_from_slice(b"TLS-BYTES");
        let (mut a, b) = tokio::io::duplex(4096);
        a.write_all(&wire).await.unwrap();
        let mut ps = PacketStream::new(b, 1024);
        ps.exact = true;
        let p = ps.read_packet().await.unwrap();
        assert_eq!(&p.payload[..], b"hello");
        assert!(ps.rbuf.is_empty(), "nothing buffered past the packet");
        let mut rest = [0u8; 9];
        ps.stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"TLS-BYTES");
    }
}
