//! `sd_notify`: tells systemd (`Type=notify`) that the agent serves, and that it is stopping.
//!
//! The protocol is one datagram to the Unix socket named by `NOTIFY_SOCKET`: a path, or an
//! abstract name when it starts with `@`. Without the variable (not under systemd) nothing is
//! sent. A failure to notify is logged, never fatal: the agent serves either way.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (for example `READY=1`) when `NOTIFY_SOCKET` is set; logs a failure.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send(&socket, state) {
        tracing::warn!(socket = %socket.to_string_lossy(), %error, "cannot notify systemd");
    }
}

fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let address = match socket.as_bytes() {
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name)?,
        _ => SocketAddr::from_pathname(socket)?,
    };
    let sender = UnixDatagram::unbound()?;
    sender.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}
