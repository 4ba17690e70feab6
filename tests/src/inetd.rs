//! [`InetdSshd`]: an sshd reachable on a loopback port of this machine while it runs inside a
//! [`Namespace`]: each accepted connection is handed, as stdin and stdout, to a fresh
//! `sshd -i` (inetd mode) started in the namespace. It is a jump host: clients reach it from
//! here, and the connections it forwards are made inside the namespace, where only it can go.
//! It also counts the connections it accepted.

use std::io;
use std::net::{SocketAddrV4, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::loopback::fresh_listener;
use crate::netns::{Entry, Namespace};
use crate::sshd::{SshdConfig, config_text};
use crate::tools;

/// How often the accepting thread looks for a stop request.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A running inetd-style sshd; dropping it kills the sshd processes it started.
pub struct InetdSshd {
    socket: SocketAddrV4,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    children: Arc<Mutex<Vec<Child>>>,
    log: PathBuf,
}

impl InetdSshd {
    /// Listens on a fresh loopback address; writes `dir/sshd_config` from `config` (its listen
    /// addresses unused) and logs every sshd to `dir/sshd.log`.
    pub fn start(dir: &Path, config: &SshdConfig, namespace: &Namespace) -> InetdSshd {
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config_text(config))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
        let log = dir.join("sshd.log");
        let (listener, socket) = fresh_listener();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let children = Arc::new(Mutex::new(Vec::new()));
        let serve = Serve {
            entry: namespace.entry(),
            config: config_path,
            log: log.clone(),
            accepted: accepted.clone(),
            stop: stop.clone(),
            children: children.clone(),
        };
        let thread = std::thread::spawn(move || serve.accept_loop(&listener));
        InetdSshd {
            socket,
            accepted,
            stop,
            thread: Some(thread),
            children,
            log,
        }
    }

    /// Where clients connect.
    pub fn socket(&self) -> SocketAddrV4 {
        self.socket
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// What every sshd it started logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for InetdSshd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        for child in children.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the accepting thread needs.
struct Serve {
    entry: Entry,
    config: PathBuf,
    log: PathBuf,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    children: Arc<Mutex<Vec<Child>>>,
}

impl Serve {
    fn accept_loop(&self, listener: &TcpListener) {
        while !self.stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((client, _)) => {
                    self.accepted.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = self.hand_over(client) {
                        eprintln!("inetd sshd: cannot start sshd -i: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(POLL_INTERVAL)
                }
                Err(e) => {
                    eprintln!("inetd sshd: accept failed: {e}");
                    std::thread::sleep(POLL_INTERVAL);
                }
            }
        }
    }

    /// Starts `sshd -i` in the namespace with the connection as its stdin and stdout.
    fn hand_over(&self, client: std::net::TcpStream) -> io::Result<()> {
        client.set_nonblocking(false)?;
        let input = OwnedFd::from(client.try_clone()?);
        let output = OwnedFd::from(client);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .entry
            .command(&tools::sshd())
            .args(["-i", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::from(input))
            .stdout(Stdio::from(output))
            .stderr(log)
            .spawn()?;
        let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap the sshd processes whose connections ended.
        children.retain_mut(|child| !matches!(child.try_wait(), Ok(Some(_))));
        children.push(child);
        Ok(())
    }
}
