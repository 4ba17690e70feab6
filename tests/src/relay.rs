//! [`DelayRelay`]: a TCP relay that adds a fixed one-way delay in each direction, so benchmarks
//! can give loopback hosts a realistic round trip (the kernel here has no netem).
//!
//! Each direction of a connection is a reader and a writer joined by a queue of timestamped
//! chunks: the reader stamps a chunk with the time it is due and reads on, the writer waits for
//! each chunk's due time. The delay therefore adds latency without limiting throughput. The relay
//! owns a small tokio runtime, so it works from plain and async tests alike, and everything it
//! runs stops when it is dropped.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Largest chunk read at once.
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks queued per direction before the reader waits: bounds memory at 16 MiB per direction.
const QUEUED_CHUNKS: usize = 256;

/// A running relay. Add routes with [`DelayRelay::route`]; drop it to stop them all.
pub struct DelayRelay {
    runtime: Option<Runtime>,
    one_way: Duration,
}

impl DelayRelay {
    /// A relay that delays every chunk by `one_way` in each direction.
    pub fn new(one_way: Duration) -> io::Result<DelayRelay> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("delay-relay")
            .enable_all()
            .build()?;
        Ok(DelayRelay {
            runtime: Some(runtime),
            one_way,
        })
    }

    /// The round trip the relay adds: twice the one-way delay.
    pub fn added_round_trip(&self) -> Duration {
        2 * self.one_way
    }

    /// Listens on a free port of `listen` (a loopback address) and relays every connection
    /// there to `target`. Returns the address to connect to.
    pub fn route(&self, listen: IpAddr, target: SocketAddr) -> io::Result<SocketAddr> {
        assert!(
            listen.is_loopback(),
            "the relay listens on loopback only, not {listen}"
        );
        // Binding here, with port 0, means the port is ours before anyone connects.
        let listener = std::net::TcpListener::bind((listen, 0))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let one_way = self.one_way;
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        runtime.spawn(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => accept_loop(listener, target, one_way).await,
                Err(e) => eprintln!("delay relay cannot listen on {address}: {e}"),
            }
        });
        Ok(address)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        // Not a blocking shutdown: the relay may be dropped inside an async test.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, one_way: Duration) {
    loop {
        match listener.accept().await {
            Ok((inbound, _)) => {
                tokio::spawn(relay_connection(inbound, target, one_way));
            }
            // Out of descriptors or a connection reset before accept: try the next one.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Relays one connection. If the target refuses, the client sees its connection closed, as it
/// would see a refused connection after the handshake a real network path completes.
async fn relay_connection(inbound: TcpStream, target: SocketAddr, one_way: Duration) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    tokio::join!(
        delayed_copy(inbound_read, outbound_write, one_way),
        delayed_copy(outbound_read, inbound_write, one_way),
    );
}

/// Copies `from` to `to`, each chunk `one_way` after it was read. End of stream is passed on
/// (as a write shutdown) after the chunks before it.
async fn delayed_copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, one_way: Duration) {
    let (queue, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUED_CHUNKS);
    let reader = async move {
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = (Instant::now() + one_way, buffer[..n].to_vec());
                    if queue.send(chunk).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn echo_round_trip_takes_at_least_the_added_round_trip() {
        let echo = echo_server().await;
        let relay = DelayRelay::new(Duration::from_millis(40)).unwrap();
        let entry = relay.route("127.0.0.1".parse().unwrap(), echo).unwrap();
        let mut client = TcpStream::connect(entry).await.unwrap();
        client.set_nodelay(true).unwrap();
        for _ in 0..3 {
            let started = std::time::Instant::now();
            client.write_all(b"ping").await.unwrap();
            let mut reply = [0u8; 4];
            client.read_exact(&mut reply).await.unwrap();
            let elapsed = started.elapsed();
            assert_eq!(&reply, b"ping");
            assert!(
                elapsed >= relay.added_round_trip(),
                "round trip {elapsed:?} is shorter than the added {:?}",
                relay.added_round_trip()
            );
        }
    }

    #[tokio::test]
    async fn bulk_data_arrives_intact_and_end_of_stream_passes() {
        let echo = echo_server().await;
        let relay = DelayRelay::new(Duration::from_millis(5)).unwrap();
        let entry = relay.route("127.0.0.1".parse().unwrap(), echo).unwrap();
        let client = TcpStream::connect(entry).await.unwrap();
        let (mut read, mut write) = client.into_split();
        let sent: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let sender = tokio::spawn(async move {
            write.write_all(&sent).await.unwrap();
            write.shutdown().await.unwrap();
        });
        let mut received = Vec::new();
        read.read_to_end(&mut received).await.unwrap();
        sender.await.unwrap();
        assert!(
            received == expected,
            "{} bytes back of {}",
            received.len(),
            expected.len()
        );
    }
}
