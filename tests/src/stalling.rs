//! [`StallingPort`]: a loopback port whose first connections are accepted and never answered, and
//! whose later connections are relayed to a real host. It stands for a host that is down for a
//! moment and then back: a client's first connects time out, a retry gets through. The switch
//! is made by counting connections, not by time, so a test built on it does not race.

use std::io;
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::loopback::fresh_listener;

/// How often the accepting thread looks for a stop request.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A running stalling port; dropping it closes every connection it holds.
pub struct StallingPort {
    socket: SocketAddrV4,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StallingPort {
    /// Listens on a fresh loopback address; the first `stall` connections get silence, later
    /// ones are relayed to `target`.
    pub fn start(stall: usize, target: SocketAddrV4) -> StallingPort {
        let (listener, socket) = fresh_listener();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(&listener, stall, target, &accepted, &stop))
        };
        StallingPort {
            socket,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Where clients connect.
    pub fn socket(&self) -> SocketAddrV4 {
        self.socket
    }

    /// Connections accepted so far, stalled and relayed.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for StallingPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    stall: usize,
    target: SocketAddrV4,
    accepted: &AtomicUsize,
    stop: &AtomicBool,
) {
    // Held open, unanswered, until the port is dropped.
    let mut stalled = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let number = accepted.fetch_add(1, Ordering::SeqCst);
                if number < stall {
                    stalled.push(client);
                } else if let Err(e) = relay(client, target) {
                    eprintln!("stalling port: cannot relay to {target}: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL_INTERVAL),
            Err(e) => {
                eprintln!("stalling port: accept failed: {e}");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// Copies both ways between `client` and `target` on two threads, each closing its side when
/// its source ends.
fn relay(client: TcpStream, target: SocketAddrV4) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect(target)?;
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    pipe(client.try_clone()?, server.try_clone()?);
    pipe(server, client);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn the_first_connections_stall_and_the_next_are_relayed() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(target) = echo.local_addr().unwrap() else {
            unreachable!("bound to an IPv4 address")
        };
        std::thread::spawn(move || {
            for stream in echo.incoming().flatten() {
                let mut stream = stream;
                let mut buffer = [0u8; 5];
                if stream.read_exact(&mut buffer).is_ok() {
                    let _ = stream.write_all(&buffer);
                }
            }
        });
        let port = StallingPort::start(1, target);

        let mut first = TcpStream::connect(port.socket()).unwrap();
        first
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        first.write_all(b"hello").unwrap();
        let mut buffer = [0u8; 5];
        let silence = first.read(&mut buffer).unwrap_err();
        assert!(
            matches!(
                silence.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{silence:?}"
        );

        let mut second = TcpStream::connect(port.socket()).unwrap();
        second
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        second.write_all(b"again").unwrap();
        second.read_exact(&mut buffer).unwrap();
        assert_eq!(&buffer, b"again");
        assert_eq!(port.accepted(), 2);
    }
}
