//! [`JumpFleet`]: hosts that only jump hosts can reach. The hosts' sshd processes, and an inner
//! jump host, run inside a network [`Namespace`] of the fleet's own, on loopback addresses that
//! mean nothing outside it: a direct connection from here is refused. Two gates bridge in: sshd
//! processes started inside the namespace for each connection to a loopback port here
//! ([`InetdSshd`]). `gate` forwards anywhere; `narrow-gate` forwards only to `inner`.
//!
//! Jump hosts and hosts take different client keys (the jump key, named by the ssh config, and
//! the client key, named with `-i`), so a run that gets through authenticated each hop with its
//! own key. The ssh config in the client's HOME names the three jump hosts; tests add their own
//! lines with [`JumpFleet::write_ssh_config`].

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::fleet::{FleetDirs, Host, HostKind};
use crate::inetd::InetdSshd;
use crate::inventory::inventory_toml;
use crate::keys::{KeyPair, known_hosts_line};
use crate::loopback::AddressBlock;
use crate::netns::Namespace;
use crate::process::{ProcessOutput, RunningProcess};
use crate::sshd::{MAX_LISTEN_ADDRESSES, Sshd, SshdConfig};
use crate::tools;
use crate::volley::{RUN_DEADLINE, RunFlags, volley_command};

/// The jump hosts, as the ssh config names them.
pub const GATE: &str = "gate";
pub const NARROW_GATE: &str = "narrow-gate";
pub const INNER: &str = "inner";

/// A running jump fleet; dropping it stops every sshd and the namespace.
pub struct JumpFleet {
    // Field order is drop order: the servers go before their namespace and directory.
    gate: InetdSshd,
    narrow_gate: InetdSshd,
    inner: Sshd,
    servers: Vec<Sshd>,
    _namespace: Namespace,
    hosts: Vec<Host>,
    inner_socket: SocketAddrV4,
    client_key: KeyPair,
    jump_key: KeyPair,
    host_keys: HostKeys,
    known_hosts: PathBuf,
    inventory: PathBuf,
    client_home: PathBuf,
    dir: TempDir,
}

/// The keys the jump hosts present.
struct HostKeys {
    gate: KeyPair,
    narrow_gate: KeyPair,
    inner: KeyPair,
}

impl JumpFleet {
    /// `count` hosts (`h01`, ...) behind the jump hosts.
    pub fn start(count: usize) -> JumpFleet {
        let FleetDirs {
            dir,
            keys,
            client_home,
            session_home,
        } = FleetDirs::new("volley-jump-fleet-");
        let root = dir.path().to_path_buf();
        let make_dir = |name: &str| {
            let path = root.join(name);
            std::fs::create_dir_all(&path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
            path
        };
        let client_key = KeyPair::generate(&keys.join("client"), None);
        let jump_key = KeyPair::generate(&keys.join("jump"), None);
        let host_keys = HostKeys {
            gate: KeyPair::generate(&keys.join("gate_host"), None),
            narrow_gate: KeyPair::generate(&keys.join("narrow_gate_host"), None),
            inner: KeyPair::generate(&keys.join("inner_host"), None),
        };
        let hosts_authorized = root.join("hosts_authorized_keys");
        write(&hosts_authorized, &format!("{}\n", client_key.public()));
        let jumps_authorized = root.join("jumps_authorized_keys");
        write(&jumps_authorized, &format!("{}\n", jump_key.public()));

        let namespace = Namespace::start();
        let mut block = AddressBlock::random();
        let mut hosts: Vec<Host> = (1..=count)
            .map(|number| Host {
                name: format!("h{number:02}"),
                socket: block.next_free_socket(),
                kind: HostKind::Normal,
                host_key: None,
            })
            .collect();
        let servers = start_hosts(
            &root,
            &mut hosts,
            &hosts_authorized,
            &session_home,
            &namespace,
        );

        let inner_socket = block.next_free_socket();
        let jump_config =
            |host_key, extra| jump_host_config(host_key, &jumps_authorized, &session_home, extra);
        let inner = Sshd::start_in(
            &make_dir("inner"),
            &SshdConfig {
                listen: &[inner_socket],
                ..jump_config(&host_keys.inner, "")
            },
            Some(&namespace),
        );
        let gate = InetdSshd::start(
            &make_dir("gate"),
            &jump_config(&host_keys.gate, ""),
            &namespace,
        );
        let permit_inner = format!("PermitOpen {}:{}\n", inner_socket.ip(), inner_socket.port());
        let narrow_gate = InetdSshd::start(
            &make_dir("narrow-gate"),
            &jump_config(&host_keys.narrow_gate, &permit_inner),
            &namespace,
        );

        let known_hosts = root.join("known_hosts");
        let inventory = root.join("inventory.toml");
        write(&inventory, &inventory_toml(&hosts, client_key.path()));
        let fleet = JumpFleet {
            gate,
            narrow_gate,
            inner,
            servers,
            _namespace: namespace,
            hosts,
            inner_socket,
            client_key,
            jump_key,
            host_keys,
            known_hosts,
            inventory,
            client_home,
            dir,
        };
        write(&fleet.known_hosts, &fleet.known_hosts_text(&[]));
        fleet.write_ssh_config("");
        fleet
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The gate that forwards anywhere.
    pub fn gate(&self) -> &InetdSshd {
        &self.gate
    }

    /// The gate that forwards only to `inner`.
    pub fn narrow_gate(&self) -> &InetdSshd {
        &self.narrow_gate
    }

    /// Where `inner` listens, inside the namespace.
    pub fn inner_socket(&self) -> SocketAddrV4 {
        self.inner_socket
    }

    /// The key a jump host presents (`GATE`, `NARROW_GATE` or `INNER`).
    pub fn jump_host_key(&self, name: &str) -> &KeyPair {
        match name {
            GATE => &self.host_keys.gate,
            NARROW_GATE => &self.host_keys.narrow_gate,
            INNER => &self.host_keys.inner,
            other => panic!("no jump host {other}"),
        }
    }

    /// Where a jump host is dialled (from here for the gates, from a gate for `inner`).
    pub fn jump_host_socket(&self, name: &str) -> SocketAddrV4 {
        match name {
            GATE => self.gate.socket(),
            NARROW_GATE => self.narrow_gate.socket(),
            INNER => self.inner_socket,
            other => panic!("no jump host {other}"),
        }
    }

    /// The key the jump hosts accept, and the only one.
    pub fn jump_key(&self) -> &KeyPair {
        &self.jump_key
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// A known_hosts file with every host and jump host, but none of `leave_out` (jump host
    /// names).
    pub fn known_hosts_text(&self, leave_out: &[&str]) -> String {
        let mut lines: Vec<String> = self
            .hosts
            .iter()
            .filter_map(|host| Some(known_hosts_line(host.socket, host.host_key.as_ref()?)))
            .collect();
        for name in [GATE, NARROW_GATE, INNER] {
            if !leave_out.contains(&name) {
                let socket = self.jump_host_socket(name);
                lines.push(known_hosts_line(socket, self.jump_host_key(name)));
            }
        }
        lines.join("\n") + "\n"
    }

    /// Writes `~/.ssh/config` of the client: the jump hosts, then `extra`.
    pub fn write_ssh_config(&self, extra: &str) {
        let mut text = String::from("# Written by the volley-tests jump fleet.\n");
        for name in [GATE, NARROW_GATE, INNER] {
            let socket = self.jump_host_socket(name);
            text.push_str(&format!(
                "Host {name}\n    HostName {}\n    Port {}\n    User {}\n    IdentityFile {}\n",
                socket.ip(),
                socket.port(),
                tools::login_user(),
                self.jump_key.path().display()
            ));
        }
        text.push_str(extra);
        write(&self.client_home.join(".ssh/config"), &text);
    }

    /// `run --inventory ... --known-hosts ... -i CLIENT_KEY -l USER`, for tests to extend.
    pub fn flags(&self) -> RunFlags {
        RunFlags {
            inventory: self.inventory.clone(),
            known_hosts: self.known_hosts.clone(),
            identity: self.client_key.path().to_path_buf(),
            user: tools::login_user().to_string(),
            pki: None,
        }
    }

    /// Runs volley with `args` to the end, killing it and failing past [`RUN_DEADLINE`].
    pub fn run<S: Into<std::ffi::OsString>>(
        &self,
        args: impl IntoIterator<Item = S>,
    ) -> ProcessOutput {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        RunningProcess::spawn(volley_command(&self.client_home).args(args)).finish(RUN_DEADLINE)
    }

    /// Every sshd log, for failure messages.
    pub fn logs(&self) -> String {
        let mut logs: Vec<String> = self
            .servers
            .iter()
            .chain([&self.inner])
            .map(|server| format!("--- {} ---\n{}", server.log_path().display(), server.log()))
            .collect();
        for gate in [&self.gate, &self.narrow_gate] {
            logs.push(format!(
                "--- {} ---\n{}",
                gate.log_path().display(),
                gate.log()
            ));
        }
        logs.join("\n")
    }

    /// Every line the hosts' sshd processes logged about accepted logins.
    pub fn host_logins(&self) -> usize {
        self.servers
            .iter()
            .map(|server| server.log().matches("Accepted publickey").count())
            .sum()
    }
}

impl Drop for JumpFleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "jump fleet directory: {}\n{}",
                self.dir.path().display(),
                self.logs()
            );
        }
    }
}

/// A jump host's sshd: only the jump key logs in.
fn jump_host_config<'a>(
    host_key: &'a KeyPair,
    authorized_keys: &'a Path,
    session_home: &'a Path,
    extra: &'a str,
) -> SshdConfig<'a> {
    SshdConfig {
        listen: &[],
        host_key: host_key.path(),
        authorized_keys,
        session_home: Some(session_home),
        refuse_keys_on: &[],
        extra,
    }
}

/// One sshd per 16 hosts, inside the namespace, each with its own host key.
fn start_hosts(
    root: &Path,
    hosts: &mut [Host],
    authorized_keys: &Path,
    session_home: &Path,
    namespace: &Namespace,
) -> Vec<Sshd> {
    let mut servers = Vec::new();
    for (number, chunk) in hosts.chunks_mut(MAX_LISTEN_ADDRESSES).enumerate() {
        let server_dir = root.join(format!("sshd-{:02}", number + 1));
        std::fs::create_dir_all(&server_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", server_dir.display()));
        let host_key = KeyPair::generate(&server_dir.join("host_ed25519"), None);
        let listen: Vec<SocketAddrV4> = chunk.iter().map(|host| host.socket).collect();
        for host in chunk.iter_mut() {
            host.host_key = Some(host_key.clone());
        }
        servers.push(Sshd::start_in(
            &server_dir,
            &SshdConfig {
                listen: &listen,
                host_key: host_key.path(),
                authorized_keys,
                session_home: Some(session_home),
                refuse_keys_on: &[],
                extra: "",
            },
            Some(namespace),
        ));
    }
    servers
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
