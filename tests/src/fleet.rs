//! [`SshFleet`]: N named hosts served by real sshd processes on loopback, with the keys,
//! known_hosts and inventory that a run of volley against them needs.
//!
//! Every host has its own loopback address and port, so `$SSH_CONNECTION` on the remote side
//! tells the hosts apart. Odd hosts ([`HostKind`]) are built into the same fleet, so one run can
//! meet every kind of failure at once.

use std::net::SocketAddrV4;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::inventory::inventory_toml;
use crate::isolation::{HostFiles, Isolation};
use crate::keys::{KeyPair, known_hosts_line};
use crate::loopback::AddressBlock;
use crate::process::{ProcessOutput, RunningProcess};
use crate::sshd::{MAX_LISTEN_ADDRESSES, Sshd, SshdConfig};
use crate::tools;

/// The passphrase of the fleet's encrypted client key.
pub const ENCRYPTED_KEY_PASSPHRASE: &str = "secret";

/// What a host does when a client comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// Served by sshd, listed in known_hosts, accepts the fleet's client key.
    Normal,
    /// Served by sshd, absent from known_hosts.
    UnknownKey,
    /// Served by sshd; known_hosts holds another valid ed25519 key for it.
    ChangedKey,
    /// Served by sshd, but it accepts no client key at all, and its inventory entry names
    /// [`SshFleet::wrong_key`] as its identity. It refuses whichever identity a client uses.
    WrongClientKey,
    /// An address and port with no listener: connections are refused.
    Dead,
}

/// The hosts of a fleet, in order: they are named `h01`, `h02`, ... in the order given here.
#[derive(Clone, Debug)]
pub struct FleetSpec {
    hosts: Vec<HostKind>,
    encrypted_client_key: bool,
    login_environment: bool,
    isolation: Option<Isolation>,
}

impl FleetSpec {
    /// `normal` ordinary hosts.
    pub fn new(normal: usize) -> FleetSpec {
        FleetSpec {
            hosts: vec![HostKind::Normal; normal],
            encrypted_client_key: false,
            login_environment: false,
            isolation: None,
        }
    }

    /// One more host of `kind`, after the ones already given.
    pub fn with(mut self, kind: HostKind) -> FleetSpec {
        self.hosts.push(kind);
        self
    }

    /// Also make a passphrase-protected client key (see [`ENCRYPTED_KEY_PASSPHRASE`]) that every
    /// host authorizes, so a failure with it can only come from the encryption.
    pub fn with_encrypted_client_key(mut self) -> FleetSpec {
        self.encrypted_client_key = true;
        self
    }

    /// Sessions get their user's own home and login environment, as on a real server, instead
    /// of the fleet's clean HOME.
    pub fn with_login_environment(mut self) -> FleetSpec {
        self.login_environment = true;
        self
    }

    /// One sshd per host, each in a mount namespace of its own with its own tmpfs at the
    /// isolation's mount point: the hosts have their own files there.
    pub fn isolated(mut self, isolation: Isolation) -> FleetSpec {
        self.isolation = Some(isolation);
        self
    }
}

/// One host of a fleet.
#[derive(Clone, Debug)]
pub struct Host {
    /// `h01`..`hNN`, zero-padded to the width of N (at least 2).
    pub name: String,
    pub socket: SocketAddrV4,
    pub kind: HostKind,
    /// The key the host's sshd presents; `None` for a dead host.
    pub host_key: Option<KeyPair>,
}

impl Host {
    /// The end of `$SSH_CONNECTION` on this host: ` ADDR PORT`.
    pub fn connection_suffix(&self) -> String {
        format!(" {} {}", self.socket.ip(), self.socket.port())
    }
}

/// A running fleet. Dropping it kills its sshd processes and removes its directory.
pub struct SshFleet {
    // Field order is drop order: the servers go before the directory they log into.
    servers: Vec<Sshd>,
    hosts: Vec<Host>,
    client_key: KeyPair,
    wrong_key: KeyPair,
    encrypted_key: Option<KeyPair>,
    known_hosts: PathBuf,
    inventory: PathBuf,
    client_home: PathBuf,
    dir: TempDir,
}

impl SshFleet {
    /// A fleet of `normal` ordinary hosts.
    pub fn start(normal: usize) -> SshFleet {
        SshFleet::with_spec(FleetSpec::new(normal))
    }

    pub fn with_spec(spec: FleetSpec) -> SshFleet {
        let FleetDirs {
            dir,
            keys,
            client_home,
            session_home,
        } = FleetDirs::new("volley-fleet-");
        let root = dir.path().to_path_buf();

        let client_key = KeyPair::generate(&keys.join("client"), None);
        let wrong_key = KeyPair::generate(&keys.join("wrong"), None);
        let other_host_key = KeyPair::generate(&keys.join("other_host"), None);
        let encrypted_key = spec
            .encrypted_client_key
            .then(|| KeyPair::generate(&keys.join("encrypted"), Some(ENCRYPTED_KEY_PASSPHRASE)));

        let authorized_keys = root.join("authorized_keys");
        let mut authorized = format!("{}\n", client_key.public());
        if let Some(key) = &encrypted_key {
            authorized.push_str(&format!("{}\n", key.public()));
        }
        write(&authorized_keys, &authorized);
        let session_home = (!spec.login_environment).then_some(session_home.as_path());

        let mut block = AddressBlock::random();
        let mut hosts: Vec<Host> = spec
            .hosts
            .iter()
            .enumerate()
            .map(|(index, &kind)| Host {
                name: host_name(index + 1, spec.hosts.len()),
                socket: block.next_free_socket(),
                kind,
                host_key: None,
            })
            .collect();

        let servers = start_servers(
            &root,
            &mut hosts,
            &authorized_keys,
            session_home,
            spec.isolation.as_ref(),
        );

        let known_hosts = root.join("known_hosts");
        write(&known_hosts, &known_hosts_text(&hosts, &other_host_key));
        let inventory = root.join("inventory.toml");
        write(&inventory, &inventory_toml(&hosts, wrong_key.path()));

        SshFleet {
            servers,
            hosts,
            client_key,
            wrong_key,
            encrypted_key,
            known_hosts,
            inventory,
            client_home,
            dir,
        }
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host called `name`; panics if there is none.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .unwrap_or_else(|| panic!("the fleet has no host {name}"))
    }

    pub fn hosts_of(&self, kind: HostKind) -> Vec<&Host> {
        self.hosts.iter().filter(|host| host.kind == kind).collect()
    }

    /// The one host of `kind`; panics unless there is exactly one.
    pub fn only(&self, kind: HostKind) -> &Host {
        match self.hosts_of(kind)[..] {
            [host] => host,
            ref hosts => panic!("expected one {kind:?} host, the fleet has {}", hosts.len()),
        }
    }

    /// The fleet's scratch directory; files that tests write belong here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The files of host `name` of an isolated fleet ([`FleetSpec::isolated`]), as the test
    /// sees them.
    pub fn files(&self, name: &str) -> HostFiles {
        let socket = self.host(name).socket;
        let server = self
            .servers
            .iter()
            .find(|server| server.serves(socket))
            .unwrap_or_else(|| panic!("no sshd serves {name}"));
        HostFiles { pid: server.pid() }
    }

    /// HOME of every volley started by the fleet: `.ssh/` exists and is empty.
    pub fn client_home(&self) -> &Path {
        &self.client_home
    }

    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    pub fn inventory(&self) -> &Path {
        &self.inventory
    }

    /// The unencrypted client key that every host but the wrong-client-key one accepts.
    pub fn client_key(&self) -> &KeyPair {
        &self.client_key
    }

    /// A client key that no host accepts.
    pub fn wrong_key(&self) -> &KeyPair {
        &self.wrong_key
    }

    /// The encrypted client key, if the spec asked for one.
    pub fn encrypted_key(&self) -> &KeyPair {
        self.encrypted_key
            .as_ref()
            .expect("the fleet was built without FleetSpec::with_encrypted_client_key")
    }

    /// The remote user: sshd without root lets in only its own user.
    pub fn user(&self) -> &'static str {
        tools::login_user()
    }

    /// Every sshd log, each under its path, for failure messages.
    pub fn sshd_logs(&self) -> String {
        self.servers
            .iter()
            .map(|server| format!("--- {} ---\n{}", server.log_path().display(), server.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs `remote_command` on `host` with the OpenSSH client (see [`SshFleet::openssh_command`])
    /// and the fleet's known_hosts.
    pub fn openssh(&self, host: &Host, identity: &Path, remote_command: &str) -> ProcessOutput {
        let mut ssh = self.openssh_command(identity, &self.known_hosts);
        ssh.arg("-p")
            .arg(host.socket.port().to_string())
            .arg(format!("{}@{}", self.user(), host.socket.ip()))
            .arg(remote_command);
        RunningProcess::spawn(&mut ssh).finish(std::time::Duration::from_secs(60))
    }

    /// The OpenSSH client with `identity`, checking host keys strictly against `known_hosts`,
    /// never prompting, and blind to the real user's ssh config and agent. Add more options,
    /// then `-p PORT USER@ADDR COMMAND`.
    pub fn openssh_command(&self, identity: &Path, known_hosts: &Path) -> Command {
        let mut ssh = Command::new(tools::ssh());
        ssh.env_remove("SSH_AUTH_SOCK")
            .args(["-F", "none", "-i"])
            .arg(identity)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=10",
            ]);
        ssh
    }
}

impl Drop for SshFleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "fleet directory: {}\n{}",
                self.dir.path().display(),
                self.sshd_logs()
            );
        }
    }
}

/// The directories of a fleet: its own temporary one, and in it `keys/`, the client's HOME (with
/// an empty `.ssh/`) and the HOME of remote sessions.
pub struct FleetDirs {
    pub dir: TempDir,
    pub keys: PathBuf,
    pub client_home: PathBuf,
    pub session_home: PathBuf,
}

impl FleetDirs {
    pub fn new(prefix: &str) -> FleetDirs {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create the fleet's directory: {e}"));
        // sshd reads authorized_keys as the user logging in, who is not root in the --become
        // tests: others may pass through the directory (not list it); keys stay 0600.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .unwrap_or_else(|e| panic!("cannot chmod the fleet's directory: {e}"));
        let make_dir = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(&path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
            path
        };
        let keys = make_dir("keys");
        let client_home = make_dir("client-home");
        make_dir("client-home/.ssh");
        let session_home = make_dir("session-home");
        FleetDirs {
            dir,
            keys,
            client_home,
            session_home,
        }
    }
}

/// Starts one sshd per 16 served hosts (one per host when isolated), each with its own host
/// key, and records on every host the key its server presents.
fn start_servers(
    root: &Path,
    hosts: &mut [Host],
    authorized_keys: &Path,
    session_home: Option<&Path>,
    isolation: Option<&Isolation>,
) -> Vec<Sshd> {
    let served: Vec<usize> = (0..hosts.len())
        .filter(|&i| hosts[i].kind != HostKind::Dead)
        .collect();
    let per_server = if isolation.is_some() {
        1
    } else {
        MAX_LISTEN_ADDRESSES
    };
    let mut servers = Vec::new();
    for (number, chunk) in served.chunks(per_server).enumerate() {
        let server_dir = root.join(format!("sshd-{:02}", number + 1));
        std::fs::create_dir_all(&server_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", server_dir.display()));
        let host_key = KeyPair::generate(&server_dir.join("host_ed25519"), None);
        let listen: Vec<SocketAddrV4> = chunk.iter().map(|&i| hosts[i].socket).collect();
        let refuse: Vec<SocketAddrV4> = chunk
            .iter()
            .filter(|&&i| hosts[i].kind == HostKind::WrongClientKey)
            .map(|&i| hosts[i].socket)
            .collect();
        for &i in chunk {
            hosts[i].host_key = Some(host_key.clone());
        }
        let config = SshdConfig {
            listen: &listen,
            host_key: host_key.path(),
            authorized_keys,
            session_home,
            refuse_keys_on: &refuse,
            extra: "",
        };
        servers.push(match isolation {
            Some(isolation) => Sshd::start_isolated(&server_dir, &config, isolation),
            None => Sshd::start(&server_dir, &config),
        });
    }
    servers
}

/// `h` and the host's number, zero-padded to the width of the fleet's size (at least 2).
fn host_name(number: usize, fleet_size: usize) -> String {
    let width = fleet_size.to_string().len().max(2);
    format!("h{number:0width$}")
}

/// One line per host that has a key on record: its own key, or another one if it is meant to
/// look changed. A dead host gets a line too, so only its missing listener sets it apart.
fn known_hosts_text(hosts: &[Host], other_host_key: &KeyPair) -> String {
    let fallback = hosts
        .iter()
        .find_map(|host| host.host_key.as_ref())
        .unwrap_or(other_host_key);
    hosts
        .iter()
        .filter_map(|host| {
            let key = match host.kind {
                HostKind::UnknownKey => return None,
                HostKind::ChangedKey => other_host_key,
                HostKind::Dead => fallback,
                HostKind::Normal | HostKind::WrongClientKey => host.host_key.as_ref()?,
            };
            Some(known_hosts_line(host.socket, key) + "\n")
        })
        .collect()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_padded_to_the_width_of_the_fleet() {
        assert_eq!(host_name(1, 1), "h01");
        assert_eq!(host_name(7, 50), "h07");
        assert_eq!(host_name(50, 50), "h50");
        assert_eq!(host_name(1, 100), "h001");
        assert_eq!(host_name(1000, 1000), "h1000");
    }
}
