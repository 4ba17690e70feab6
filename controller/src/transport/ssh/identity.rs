//! The credentials SSH authentication offers: identity files, read once per run, and the keys of
//! a running ssh-agent.
//!
//! Keys are decoded once, before any host connects, so a 10,000-host run does not parse the same
//! file 10,000 times. An encrypted key is never prompted for: it is usable only through the agent,
//! and a host that has nothing else gets an `AuthFailed` outcome that says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKey, PublicKey};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use crate::plan::RunPlan;

/// One identity file as it was found.
#[derive(Clone, Debug)]
pub enum IdentityFile {
    Key(Arc<PrivateKey>),
    /// Encrypted with a passphrase: usable only through the agent, if it holds the key, whose
    /// public half the file (or FILE.pub) tells.
    Encrypted(Option<PublicKey>),
    /// Missing, unreadable or not a key; the reason names the problem.
    Unusable(String),
}

#[derive(Debug, thiserror::Error)]
#[error("identity file {path}: {reason}")]
pub struct IdentityError {
    pub path: PathBuf,
    pub reason: String,
}

/// Every credential of the run.
pub struct Identities {
    files: HashMap<PathBuf, IdentityFile>,
    /// Files offered after the host's own: to every host when the operator named them, else
    /// (ssh's defaults) to hosts that have none (`plan::offered_after`).
    global: Vec<PathBuf>,
    global_explicit: bool,
    agent: Option<Agent>,
    /// Why the ssh-agent named by `SSH_AUTH_SOCK` could not be used, for the operator.
    pub agent_problem: Option<String>,
}

/// A connected ssh-agent. Signing goes through one connection, taken in turn: a signature is a
/// short exchange, and one socket serves thousands of hosts.
pub struct Agent {
    pub keys: Vec<PublicKey>,
    pub client: Mutex<AgentClient<UnixStream>>,
}

impl Identities {
    /// Reads every identity file the plan names. A file the operator named that cannot be used
    /// is an error; a default file that does not exist is skipped; a default or per-host file
    /// that cannot be used becomes part of a failing host's reason.
    pub async fn load(plan: &RunPlan) -> Result<Identities, IdentityError> {
        let mut files = HashMap::new();
        let mut global = Vec::new();
        for path in &plan.identity_files {
            let file = read_identity(path);
            match &file {
                IdentityFile::Unusable(reason) if plan.identity_files_explicit => {
                    return Err(IdentityError {
                        path: path.clone(),
                        reason: reason.clone(),
                    });
                }
                // A default key that is not there is no concern; one that is there and cannot
                // be used (open to others, unreadable) is named in a failing host's reason.
                IdentityFile::Unusable(_) if !path.exists() => continue,
                _ => {}
            }
            global.push(path.clone());
            files.insert(path.clone(), file);
        }
        let own_files = plan.hosts.iter().flat_map(|host| {
            let hops = host.jump.iter().flat_map(|hop| &hop.identity_files);
            host.identity_files.iter().chain(hops)
        });
        for path in own_files {
            if !files.contains_key(path) {
                files.insert(path.clone(), read_identity(path));
            }
        }
        let (agent, agent_problem) = match connect_agent().await {
            Ok(agent) => (agent, None),
            Err(problem) => (None, Some(problem)),
        };
        Ok(Identities {
            files,
            global,
            global_explicit: plan.identity_files_explicit,
            agent,
            agent_problem,
        })
    }

    /// The files to offer a host, its own first, each once.
    pub fn files_for<'a>(
        &'a self,
        own: &'a [PathBuf],
    ) -> impl Iterator<Item = (&'a Path, &'a IdentityFile)> + 'a {
        let mut seen = Vec::new();
        let global = crate::plan::offered_after(own, &self.global, self.global_explicit);
        own.iter().chain(global).filter_map(move |path| {
            if seen.contains(&path) {
                return None;
            }
            seen.push(path);
            self.files.get(path).map(|file| (path.as_path(), file))
        })
    }

    pub fn agent(&self) -> Option<&Agent> {
        self.agent.as_ref()
    }
}

fn read_identity(path: &Path) -> IdentityFile {
    if path.is_dir() {
        return IdentityFile::Unusable("a directory, not a key file".to_string());
    }
    if public_key(path) {
        return IdentityFile::Unusable(
            "a public key: give the private key (the file without .pub)".to_string(),
        );
    }
    if let Some(problem) = too_open(path) {
        return IdentityFile::Unusable(problem);
    }
    match russh::keys::load_secret_key(path, None) {
        Ok(key) => IdentityFile::Key(Arc::new(key)),
        Err(russh::keys::Error::KeyIsEncrypted) => IdentityFile::Encrypted(public_half(path)),
        Err(russh::keys::Error::IO(error)) => {
            IdentityFile::Unusable(crate::plan::io_reason(&error))
        }
        Err(error) => IdentityFile::Unusable(format!("not a usable private key ({error})")),
    }
}

/// The public key of an encrypted private key file: in the clear in OpenSSH's format, else in
/// FILE.pub beside it.
fn public_half(path: &Path) -> Option<PublicKey> {
    if let Ok(key) = PrivateKey::read_openssh_file(path) {
        return Some(key.public_key().clone());
    }
    let mut public = path.as_os_str().to_owned();
    public.push(".pub");
    russh::keys::load_public_key(public).ok()
}

/// Whether the file holds an OpenSSH public key (`ssh-ed25519 AAAA...`), as a `.pub` file does.
fn public_key(path: &Path) -> bool {
    use std::io::Read;
    let mut start = [0; 64];
    let Ok(read) = std::fs::File::open(path).and_then(|mut file| file.read(&mut start)) else {
        return false;
    };
    let text = String::from_utf8_lossy(&start[..read]);
    let algorithm = text.split_whitespace().next().unwrap_or_default();
    russh::keys::Algorithm::new(algorithm).is_ok() && text.contains(" AAAA")
}

/// ssh's rule for a private key: one of the user's own that others may read (or write) is not
/// used, with the reason; a key of another owner (root reading an operator's) is not checked.
fn too_open(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    let mode = metadata.mode() & 0o777;
    let own = metadata.uid() == rustix::process::getuid().as_raw();
    (own && mode & 0o077 != 0).then(|| {
        format!(
            "permissions {mode:04o} are too open: a private key must be readable by its owner \
             only (chmod 600 {}), as ssh requires",
            path.display()
        )
    })
}

/// Connects to the agent named by `SSH_AUTH_SOCK`, if any, and lists its keys. An agent that
/// cannot be reached is treated as absent (identity files may still do); the error says why.
async fn connect_agent() -> Result<Option<Agent>, String> {
    if std::env::var_os("SSH_AUTH_SOCK").is_none() {
        return Ok(None);
    }
    let mut client = match AgentClient::connect_env().await {
        Ok(client) => client,
        Err(error) => return Err(format!("ssh-agent (SSH_AUTH_SOCK) not usable: {error}")),
    };
    let keys = match client.request_identities().await {
        Ok(identities) => identities
            .into_iter()
            .filter_map(|identity| match identity {
                AgentIdentity::PublicKey { key, .. } => Some(key),
                AgentIdentity::Certificate { .. } => None,
            })
            .collect(),
        Err(error) => {
            return Err(format!(
                "ssh-agent (SSH_AUTH_SOCK) did not list its keys: {error}"
            ));
        }
    };
    Ok(Some(Agent {
        keys,
        client: Mutex::new(client),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(file: IdentityFile) -> String {
        match file {
            IdentityFile::Unusable(reason) => reason,
            _ => panic!("usable"),
        }
    }

    #[test]
    fn a_directory_or_a_public_key_is_named_for_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            reason(read_identity(dir.path())),
            "a directory, not a key file"
        );
        let public = dir.path().join("id_ed25519.pub");
        std::fs::write(
            &public,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdbTLy94mjn+XBcuF9rTg9Abd/T5315Iq46HvIHN26W me@host\n",
        )
        .unwrap();
        assert_eq!(
            reason(read_identity(&public)),
            "a public key: give the private key (the file without .pub)"
        );
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "not a key\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(reason(read_identity(&garbage)).starts_with("not a usable private key"));
    }

    #[test]
    fn defaults_go_only_to_hosts_without_keys_of_their_own_and_named_files_to_every_host() {
        let unusable = || IdentityFile::Unusable("test".to_string());
        let (own, default) = ("/k/own", "/k/id_ed25519");
        let mut identities = Identities {
            files: [own, default]
                .map(|path| (PathBuf::from(path), unusable()))
                .into(),
            global: vec![PathBuf::from(default)],
            global_explicit: false,
            agent: None,
            agent_problem: None,
        };
        let offered = |identities: &Identities, own: &[&str]| -> Vec<String> {
            let own: Vec<PathBuf> = own.iter().map(PathBuf::from).collect();
            identities
                .files_for(&own)
                .map(|(path, _)| path.display().to_string())
                .collect()
        };
        assert_eq!(offered(&identities, &[own]), [own]);
        assert_eq!(offered(&identities, &[]), [default]);
        identities.global_explicit = true;
        assert_eq!(offered(&identities, &[own]), [own, default]);
        assert_eq!(offered(&identities, &[default]), [default]);
    }
}
