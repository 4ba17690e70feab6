//! Ed25519 key pairs made with ssh-keygen, for host keys and client identities.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools;

/// A key pair on disk: the private key file and its public half (`<path>.pub`).
#[derive(Clone, Debug)]
pub struct KeyPair {
    private: PathBuf,
    /// `ssh-ed25519 AAAA...`, without the comment.
    public: String,
}

impl KeyPair {
    /// Generates an ed25519 key at `path`, encrypted with `passphrase` if one is given.
    pub fn generate(path: &Path, passphrase: Option<&str>) -> KeyPair {
        tools::run_tool(
            Command::new(tools::ssh_keygen())
                .args(["-q", "-t", "ed25519", "-C", "volley-tests", "-N"])
                .arg(passphrase.unwrap_or(""))
                .arg("-f")
                .arg(path),
        );
        let public_path = path.with_extension("pub");
        let text = std::fs::read_to_string(&public_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", public_path.display()));
        KeyPair {
            private: path.to_path_buf(),
            public: type_and_key(&text),
        }
    }

    /// The private key file, as `-i` and `IdentityFile` take it.
    pub fn path(&self) -> &Path {
        &self.private
    }

    /// `ssh-ed25519 AAAA...`, the form authorized_keys and known_hosts use.
    pub fn public(&self) -> &str {
        &self.public
    }

    /// The SHA256 fingerprint, as `ssh-keygen -l` prints it: `SHA256:...`.
    pub fn fingerprint(&self) -> String {
        let listing = tools::run_tool(
            Command::new(tools::ssh_keygen())
                .arg("-lf")
                .arg(self.private.with_extension("pub")),
        );
        listing
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no fingerprint in {listing:?}"))
            .to_string()
    }

    /// The base64 blob alone, for comparing with what a tool wrote.
    pub fn blob(&self) -> &str {
        self.public.split_once(' ').map_or("", |(_, blob)| blob)
    }
}

/// A known_hosts line for a server on a non-standard port: `[ADDR]:PORT ssh-ed25519 AAAA...`.
pub fn known_hosts_line(socket: SocketAddrV4, key: &KeyPair) -> String {
    format!("{} {}", known_hosts_pattern(socket), key.public())
}

/// How OpenSSH names a host with a port in known_hosts.
pub fn known_hosts_pattern(socket: SocketAddrV4) -> String {
    format!("[{}]:{}", socket.ip(), socket.port())
}

fn type_and_key(public_file: &str) -> String {
    public_file
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_ed25519_and_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyPair::generate(&dir.path().join("first"), None);
        let second = KeyPair::generate(&dir.path().join("second"), Some("secret"));
        assert!(
            first.public().starts_with("ssh-ed25519 AAAA"),
            "{}",
            first.public()
        );
        assert_eq!(first.public().split(' ').count(), 2);
        assert_ne!(first.blob(), second.blob());
        assert!(first.fingerprint().starts_with("SHA256:"));
        assert_ne!(first.fingerprint(), second.fingerprint());
        let socket = "127.20.30.4:40022".parse().unwrap();
        assert_eq!(
            known_hosts_line(socket, &first),
            format!("[127.20.30.4]:40022 {}", first.public())
        );
    }
}
