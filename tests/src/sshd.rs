//! One OpenSSH sshd process in the foreground, serving up to 16 loopback addresses.
//!
//! sshd runs with `-D -e`, so it stays our child and logs to stderr, which goes to a log file in
//! the fleet's directory for failure messages. It starts with umask 022, as systemd starts it
//! on a server, whatever the test runner's umask. It is killed when dropped.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::isolation::Isolation;
use crate::netns::Namespace;
use crate::tools;

/// sshd's limit on `ListenAddress` lines per process.
pub const MAX_LISTEN_ADDRESSES: usize = 16;

/// How long a fresh sshd gets to answer on all its addresses; generous for a loaded 2-core CI box.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// What one sshd serves and how.
#[derive(Debug)]
pub struct SshdConfig<'a> {
    pub listen: &'a [SocketAddrV4],
    pub host_key: &'a Path,
    pub authorized_keys: &'a Path,
    /// HOME of the sessions. A clean one keeps the login user's shell startup files (root's
    /// .bashrc starts pyenv here) out of every command; `None` leaves each user's own home and
    /// login environment, as on a real server (a container's users have fresh homes).
    pub session_home: Option<&'a Path>,
    /// Addresses on which no client key is accepted, whatever authorized_keys says.
    pub refuse_keys_on: &'a [SocketAddrV4],
    /// More sshd_config lines (`KexAlgorithms ...`, `PermitOpen ...`), before the Match blocks.
    pub extra: &'a str,
}

/// A running sshd, killed on drop.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    log: PathBuf,
    listen: Vec<SocketAddrV4>,
}

impl Sshd {
    /// Writes `dir/sshd_config`, starts sshd with its log at `dir/sshd.log`, and returns once
    /// every listen address answers with an SSH banner.
    pub fn start(dir: &Path, config: &SshdConfig) -> Sshd {
        Sshd::start_in(dir, config, None)
    }

    /// [`Sshd::start`] inside `namespace`, if one is given: it is then ready once its log says
    /// it listens on every address (they cannot be reached from here to read a banner).
    pub fn start_in(dir: &Path, config: &SshdConfig, namespace: Option<&Namespace>) -> Sshd {
        Sshd::launch(dir, config, namespace, None)
    }

    /// As [`Sshd::start`], in a mount namespace of its own (see [`Isolation`]).
    pub fn start_isolated(dir: &Path, config: &SshdConfig, isolation: &Isolation) -> Sshd {
        Sshd::launch(dir, config, None, Some(isolation))
    }

    fn launch(
        dir: &Path,
        config: &SshdConfig,
        namespace: Option<&Namespace>,
        isolation: Option<&Isolation>,
    ) -> Sshd {
        assert!(
            config.listen.len() <= MAX_LISTEN_ADDRESSES,
            "one sshd serves at most {MAX_LISTEN_ADDRESSES} addresses"
        );
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config_text(config))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
        let log = dir.join("sshd.log");
        let log_file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        // Through a shell for the umask; `exec` keeps the pid: the child is sshd.
        let shell = Path::new("/bin/sh");
        let mut command = match (namespace, isolation) {
            (Some(namespace), _) => namespace.command(shell),
            (None, Some(isolation)) => isolation.command(shell),
            (None, None) => Command::new(shell),
        };
        let child = command
            .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
            .arg(tools::sshd())
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sshd: {e}"));
        let mut sshd = Sshd {
            child,
            log,
            listen: config.listen.to_vec(),
        };
        match namespace {
            Some(_) => sshd.wait_until_logged_listening(),
            None => sshd.wait_until_ready(),
        }
        sshd
    }

    /// Everything sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn serves(&self, socket: SocketAddrV4) -> bool {
        self.listen.contains(&socket)
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        for &socket in &self.listen.clone() {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "sshd exited with {status} before it was ready; its log:\n{}",
                        self.log()
                    );
                }
                match read_banner(socket) {
                    Ok(banner) if banner.starts_with("SSH-2.0-") => break,
                    Ok(banner) => panic!("{socket} answered with {banner:?}, not an SSH banner"),
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!(
                        "sshd did not answer on {socket} within {READY_WITHIN:?} ({e}); its log:\n{}",
                        self.log()
                    ),
                }
            }
        }
    }

    fn wait_until_logged_listening(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        let lines: Vec<String> = self
            .listen
            .iter()
            .map(|socket| {
                format!(
                    "Server listening on {} port {}.",
                    socket.ip(),
                    socket.port()
                )
            })
            .collect();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "sshd exited with {status} before it was ready; its log:\n{}",
                    self.log()
                );
            }
            let log = self.log();
            if lines.iter().all(|line| log.contains(line.as_str())) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {:?} within {READY_WITHIN:?}; its log:\n{log}",
                self.listen
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole sshd_config. Match blocks must come last: they run to the end of the file.
pub fn config_text(config: &SshdConfig) -> String {
    let mut text = String::from("# Written by the volley-tests fleet.\n");
    for socket in config.listen {
        let _ = writeln!(text, "ListenAddress {socket}");
    }
    let _ = writeln!(text, "HostKey {}", config.host_key.display());
    let _ = writeln!(
        text,
        "AuthorizedKeysFile {}",
        config.authorized_keys.display()
    );
    if let Some(home) = config.session_home {
        let _ = writeln!(text, "SetEnv HOME={}", home.display());
    }
    text.push_str(
        "PidFile none\n\
         StrictModes no\n\
         UsePAM no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         UseDNS no\n\
         MaxStartups 2000:30:2000\n\
         MaxSessions 64\n\
         LogLevel INFO\n",
    );
    text.push_str(config.extra);
    for socket in config.refuse_keys_on {
        let _ = writeln!(
            text,
            "Match LocalAddress {} LocalPort {}\n    AuthorizedKeysFile none",
            socket.ip(),
            socket.port()
        );
    }
    text
}

/// The first line a server on `socket` sends: an SSH banner once sshd is ready.
pub fn read_banner(socket: SocketAddrV4) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&SocketAddr::V4(socket), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut banner = String::new();
    BufReader::new(stream).read_line(&mut banner)?;
    Ok(banner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_address_and_puts_match_blocks_last() {
        let listen: Vec<SocketAddrV4> = vec![
            "127.30.0.1:40001".parse().unwrap(),
            "127.30.0.2:40002".parse().unwrap(),
        ];
        let text = config_text(&SshdConfig {
            listen: &listen,
            host_key: Path::new("/f/host_key"),
            authorized_keys: Path::new("/f/authorized_keys"),
            session_home: Some(Path::new("/f/session-home")),
            refuse_keys_on: &listen[1..],
            extra: "PermitOpen 127.0.0.1:22\n",
        });
        assert!(text.contains("ListenAddress 127.30.0.1:40001\nListenAddress 127.30.0.2:40002\n"));
        assert!(text.contains("AuthorizedKeysFile /f/authorized_keys\n"));
        assert!(!text.contains("Subsystem"));
        assert!(text.contains("SetEnv HOME=/f/session-home\n"));
        assert!(text.contains("LogLevel INFO\nPermitOpen 127.0.0.1:22\nMatch "));
        assert!(
            text.ends_with(
                "Match LocalAddress 127.30.0.2 LocalPort 40002\n    AuthorizedKeysFile none\n"
            ),
            "{text}"
        );
    }
}
