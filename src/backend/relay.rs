//! Raw relay of one response from a backend to a client: packets are copied as bytes in
//! chunks, headers scanned in place, sequence ids following the client's command. Nothing
//! is decoded except terminators (an OK may be rewritten, see `scan`); a response is
//! never buffered whole.

use std::hash::Hasher;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::protocol::messages::{parse_err, ErrInfo};
use crate::protocol::packet::{header, PacketStream};
use crate::protocol::scan::{Body, Next, Scanner, Summary};
use crate::protocol::ProtoError;

/// Flush to the client once this much is queued.
const FLUSH_AT: usize = 64 * 1024;

/// Why a relay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The backend failed; `client_touched`: bytes of this response already reached the client.
    #[error("backend: {err}")]
    Backend {
        err: ProtoError,
        client_touched: bool,
        /// It failed inside a packet the client has begun to receive: no ERR can follow.
        mid_packet: bool,
    },
    /// The client went away; the backend connection is mid-response and must be dropped.
    #[error("client: {0}")]
    Client(ProtoError),
    /// The response was only an ERR refusing the statement (read-only, killed; a deadlock
    /// when asked, see [`Relay::hold_deadlock`]): nothing reached the client; the session
    /// may run it elsewhere or pass the error on.
    #[error("refused: {}", .0.text())]
    Refused(ErrInfo),
}

/// Relay state: the client sequence id to use next and whether anything was flushed.
pub struct Relay<'a, C> {
    pub backend: &'a mut super::BackendIo,
    pub client: &'a mut PacketStream<C>,
    pub out_seq: u8,
    pub touched: bool,
    /// Sequence id the backend expects next from us (LOCAL INFILE data).
    pub backend_seq: u8,
    /// An ERR-only reply 1213 (deadlock: the server rolled the transaction back) is held
    /// back as [`RelayError::Refused`], for the session to replay the transaction.
    pub hold_deadlock: bool,
    /// Digest of what the client was told (a replay compares it): every payload byte of
    /// rows, and of each OK, EOF or ERR only its meaning (affected rows, insert id,
    /// warnings; the error): status bits, session-state trackers and cached column
    /// definitions differ between connections without changing what the client saw.
    pub digest: Option<&'a mut std::collections::hash_map::DefaultHasher>,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Relay<'_, C> {
    /// Relays until the scanner sees the end of the response.
    pub async fn run(&mut self, scanner: &mut Scanner) -> Result<Summary, RelayError> {
        self.refusal().await?;
        loop {
            match self.packet(scanner).await? {
                Next::More => {}
                Next::Done => {
                    self.flush_client().await?;
                    return Ok(std::mem::take(&mut scanner.summary));
                }
                Next::LocalInfile => {
                    self.flush_client().await?;
                    self.pump_infile().await?;
                    scanner.resume();
                }
            }
        }
    }

    /// A response that is only an ERR refusing the statement is held back from the client.
    async fn refusal(&mut self) -> Result<(), RelayError> {
        self.need(5).await?;
        let (len, seq) = header(&self.backend.rbuf[..4]);
        if self.backend.rbuf[4] != 0xFF || len >= crate::protocol::MAX_WIRE_PAYLOAD {
            return Ok(());
        }
        self.need(4 + len).await?;
        let held = |e: &ErrInfo| e.refusal().is_some() || (self.hold_deadlock && e.deadlock());
        match parse_err(&self.backend.rbuf[4..4 + len]).filter(held) {
            Some(e) => {
                self.backend.rbuf.advance(4 + len);
                self.backend_seq = seq.wrapping_add(1);
                Err(RelayError::Refused(e))
            }
            None => Ok(()),
        }
    }

    async fn packet(&mut self, scanner: &mut Scanner) -> Result<Next, RelayError> {
        self.need(4).await?;
        let (len, seq) = header(&self.backend.rbuf[..4]);
        self.backend_seq = seq.wrapping_add(1);
        let first = self.backend.rbuf.get(4).copied().filter(|_| len > 0);
        let mut want = scanner.wants(len, first);
        if want > 0 && first.is_none() {
            self.need(5).await?;
            want = scanner.wants(len, self.backend.rbuf.get(4).copied());
        }
        self.need(4 + want).await?;
        let step = scanner.step(len, &self.backend.rbuf[4..4 + want]);
        if step.ends {
            if let Some(h) = self.digest.as_mut() {
                digest_end(h, &scanner.summary);
            }
        }
        // rows are what the client read; column definitions describe the same schema on
        // every server but are sent or skipped (MariaDB's metadata cache) per connection
        let hash = step.row;
        match step.body {
            Body::Rewrite => {
                self.backend.rbuf.advance(4 + len);
                self.out_seq = self.client.queue(self.out_seq, &scanner.rewritten);
            }
            Body::Forward => self.forward(len, hash).await?,
        }
        if self.client.wbuf.len() >= FLUSH_AT {
            self.flush_client().await?;
        }
        Ok(step.next)
    }

    /// Copies one wire packet (header renumbered) to the client, streaming big payloads;
    /// `hash`: its payload goes into the digest.
    async fn forward(&mut self, len: usize, hash: bool) -> Result<(), RelayError> {
        let b = &mut self.backend.rbuf;
        let w = &mut self.client.wbuf;
        w.extend_from_slice(&b[..3]);
        w.push(self.out_seq);
        self.out_seq = self.out_seq.wrapping_add(1);
        b.advance(4);
        let mut left = len;
        loop {
            let n = left.min(self.backend.rbuf.len());
            if let Some(h) = self.digest.as_mut().filter(|_| hash) {
                h.write(&self.backend.rbuf[..n]);
            }
            self.client.wbuf.extend_from_slice(&self.backend.rbuf[..n]);
            self.backend.rbuf.advance(n);
            left -= n;
            if left == 0 {
                return Ok(());
            }
            self.flush_client().await?;
            if let Err(e) = self.backend.read_more().await {
                let mut err = self.backend_err(e);
                if let RelayError::Backend { mid_packet, .. } = &mut err {
                    *mid_packet = true;
                }
                return Err(err);
            }
        }
    }

    /// Ensures `n` bytes are buffered from the backend, flushing the client before waiting.
    async fn need(&mut self, n: usize) -> Result<(), RelayError> {
        if self.backend.rbuf.len() >= n {
            return Ok(());
        }
        self.flush_client().await?;
        let r = self.backend.fill(n).await;
        r.map_err(|e| self.backend_err(e))
    }

    fn backend_err(&self, err: ProtoError) -> RelayError {
        RelayError::Backend {
            err,
            client_touched: self.touched || !self.client.wbuf.is_empty(),
            mid_packet: false,
        }
    }

    async fn flush_client(&mut self) -> Result<(), RelayError> {
        if self.client.wbuf.is_empty() {
            return Ok(());
        }
        self.touched = true;
        self.client.flush().await.map_err(RelayError::Client)
    }

    /// LOCAL INFILE: the client's file packets go to the backend up to an empty packet.
    async fn pump_infile(&mut self) -> Result<(), RelayError> {
        loop {
            let p = self
                .client
                .read_packet()
                .await
                .map_err(RelayError::Client)?;
            self.backend_seq = self.backend.queue(self.backend_seq, &p.payload);
            self.backend
                .flush()
                .await
                .map_err(|e| self.backend_err(e))?;
            self.out_seq = p.seq.wrapping_add(1);
            if p.payload.is_empty() {
                return Ok(());
            }
        }
    }
}

/// What an OK, EOF or ERR told the client, into a digest.
fn digest_end(h: &mut std::collections::hash_map::DefaultHasher, s: &Summary) {
    match (&s.error, &s.last_ok) {
        (Some(e), _) => {
            h.write_u16(e.code);
            h.write(&e.message);
        }
        (None, Some(ok)) => {
            h.write_u64(ok.affected_rows);
            h.write_u64(ok.last_insert_id);
            h.write_u16(ok.warnings);
        }
        (None, None) => h.write_u8(0),
    }
}

/// A client that takes every byte and never sends one: where a replayed response goes.
pub struct Discard;

impl AsyncWrite for Discard {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Discard {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(())) // end of stream
    }
}
