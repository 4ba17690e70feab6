//! That an agent accepted our certificate, known without a request: its first HTTP/2 frame.
//!
//! With TLS 1.3 an agent's refusal of our certificate (another CA, an identity not in its
//! `allowed_controllers`) comes after our side of the handshake completed, as an alert or a
//! closed connection. Until the agent has accepted us, no command may be sent: a failure then is
//! one that lets `auto` fall back to SSH. The agent's HTTP/2 server sends its SETTINGS frame as
//! soon as the agent's side of the handshake is done, so that frame arriving proves the
//! acceptance as an answer to `Info` would, a round trip after our handshake just the same, but
//! with no request for either end to make, encode and answer. The bytes read are handed to
//! HTTP/2 again by [`Rewound`].

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// An HTTP/2 frame header: a length (3 bytes), a type, flags and a stream id (4 bytes).
const FRAME_HEADER: usize = 9;
/// The type of a SETTINGS frame, the first frame of every HTTP/2 server (RFC 9113, 3.4).
const SETTINGS: u8 = 0x4;

/// Why no first frame came.
#[derive(Debug)]
pub enum NoFirstFrame {
    /// Reading failed: a TLS alert (the agent's refusal) or a reset.
    Failed(io::Error),
    /// The connection was closed before a whole frame header came.
    Closed,
    /// What came is not an HTTP/2 server's first frame.
    NotHttp2,
}

/// Reads until the first frame header of the server is in and checks that it starts HTTP/2;
/// returns every byte read, for [`Rewound`].
pub async fn first_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Bytes, NoFirstFrame> {
    let mut read = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    while read.len() < FRAME_HEADER {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(NoFirstFrame::Failed)?;
        if n == 0 {
            return Err(NoFirstFrame::Closed);
        }
        read.extend_from_slice(&chunk[..n]);
    }
    let stream_id = u32::from_be_bytes([read[5], read[6], read[7], read[8]]) & 0x7fff_ffff;
    if read[3] != SETTINGS || stream_id != 0 {
        return Err(NoFirstFrame::NotHttp2);
    }
    Ok(Bytes::from(read))
}

/// A stream whose first reads give back `read`, the bytes taken off it before.
pub struct Rewound<S> {
    read: Bytes,
    inner: S,
}

impl<S> Rewound<S> {
    pub fn new(read: Bytes, inner: S) -> Rewound<S> {
        Rewound { read, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.has_remaining() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A SETTINGS frame with one setting (MAX_CONCURRENT_STREAMS = 100), as a server starts.
    const FIRST: [u8; 15] = [0, 0, 6, SETTINGS, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];

    #[tokio::test]
    async fn a_servers_settings_frame_is_its_first_frame_even_in_pieces() {
        let (mut server, mut client) = tokio::io::duplex(64);
        let feeding = tokio::spawn(async move {
            for piece in [&FIRST[..2], &FIRST[2..7], &FIRST[7..]] {
                server.write_all(piece).await.unwrap();
                server.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            server
        });
        let read = first_frame(&mut client).await.unwrap();
        assert!(read.len() >= FRAME_HEADER && FIRST.starts_with(&read));
        let _server = feeding.await.unwrap();
        // Rewound, the stream reads whole again.
        let mut rewound = Rewound::new(read, client);
        let mut again = [0u8; FIRST.len()];
        rewound.read_exact(&mut again).await.unwrap();
        assert_eq!(again, FIRST);
    }

    #[tokio::test]
    async fn no_first_frame_is_said_apart_from_one_that_is_not_http2() {
        let closed: &[u8] = &FIRST[..5];
        assert!(matches!(
            first_frame(&mut &*closed).await,
            Err(NoFirstFrame::Closed)
        ));
        let http1: &[u8] = b"HTTP/1.1 400 Bad Request\r\n";
        assert!(matches!(
            first_frame(&mut &*http1).await,
            Err(NoFirstFrame::NotHttp2)
        ));
        // A SETTINGS type on a stream is not a server's first frame either.
        let mut on_stream = FIRST;
        on_stream[8] = 1;
        assert!(matches!(
            first_frame(&mut &on_stream[..]).await,
            Err(NoFirstFrame::NotHttp2)
        ));
    }
}
