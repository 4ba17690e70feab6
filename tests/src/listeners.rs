//! Odd listeners, for the reasons a failed connect gives: [`TextPort`] accepts and writes fixed
//! bytes (an HTTP status line, a bare SSH banner), then keeps the connection open in silence or
//! closes it;
//! [`FullPort`] is a listening socket whose accept queue is full, so that a new connect gets no
//! answer at all (the kernel drops its SYN), as a host behind a dropping firewall does.

use std::io::{self, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::loopback::{AddressBlock, fresh_listener};

/// How often the accepting thread looks for a stop request.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A port that writes the same bytes to every connection and then says nothing more.
pub struct TextPort {
    socket: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TextPort {
    /// Writes `text`, then holds the connection open in silence.
    pub fn start(text: &'static [u8]) -> TextPort {
        TextPort::serve(text, false)
    }

    /// Writes `text`, then ends its side of the connection, as an HTTP server answering garbage
    /// does.
    pub fn closing(text: &'static [u8]) -> TextPort {
        TextPort::serve(text, true)
    }

    fn serve(text: &'static [u8], close: bool) -> TextPort {
        let (listener, socket) = fresh_listener();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Held open, in silence, until the port is dropped.
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut client, _)) => {
                            let _ = client.write_all(text);
                            // Closing only our side: a full close with the client's bytes
                            // unread would reset the connection, and could drop our text.
                            if close {
                                let _ = client.shutdown(std::net::Shutdown::Write);
                            }
                            held.push(client);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(POLL_INTERVAL)
                        }
                        Err(e) => {
                            eprintln!("text port: accept failed: {e}");
                            std::thread::sleep(POLL_INTERVAL);
                        }
                    }
                }
            })
        };
        TextPort {
            socket,
            stop,
            thread: Some(thread),
        }
    }

    pub fn socket(&self) -> SocketAddrV4 {
        self.socket
    }
}

impl Drop for TextPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A port that never answers a connect: its listening socket has a backlog of 0, and one
/// connection that is never accepted fills it.
pub struct FullPort {
    socket: SocketAddrV4,
    _listener: TcpListener,
    _filler: TcpStream,
}

impl FullPort {
    pub fn start() -> FullPort {
        use rustix::net::{AddressFamily, SocketType, bind, listen, socket};
        let address = AddressBlock::random().next_address();
        let fd = socket(AddressFamily::INET, SocketType::STREAM, None)
            .unwrap_or_else(|e| panic!("cannot make a socket: {e}"));
        bind(&fd, &SocketAddrV4::new(address, 0))
            .unwrap_or_else(|e| panic!("cannot bind {address}: {e}"));
        listen(&fd, 0).unwrap_or_else(|e| panic!("cannot listen on {address}: {e}"));
        let listener = TcpListener::from(fd);
        let socket = local_socket(&listener);
        let filler = TcpStream::connect_timeout(&socket.into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot fill the backlog of {socket}: {e}"));
        FullPort {
            socket,
            _listener: listener,
            _filler: filler,
        }
    }

    pub fn socket(&self) -> SocketAddrV4 {
        self.socket
    }
}

fn local_socket(listener: &TcpListener) -> SocketAddrV4 {
    match listener.local_addr() {
        Ok(std::net::SocketAddr::V4(socket)) => socket,
        other => panic!("unexpected local address {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_full_port_does_not_answer_and_a_text_port_speaks_once() {
        let full = FullPort::start();
        let error = TcpStream::connect_timeout(&full.socket().into(), Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");

        let text = TextPort::start(b"HTTP/1.1 400 Bad Request\r\n");
        let mut client = TcpStream::connect(text.socket()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut received = [0u8; 26];
        client.read_exact(&mut received).unwrap();
        assert_eq!(&received, b"HTTP/1.1 400 Bad Request\r\n");
    }
}
