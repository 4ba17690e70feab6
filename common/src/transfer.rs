//! Files on hosts, as `volley push` and `volley fetch` see them: what a destination holds, what
//! is asked of an agent to write or read one, as plain Rust types.
//!
//! Both transports produce the same [`FileState`] (the SSH side by a script, the agent by its
//! `Stat` call), so the controller decides "changed or unchanged" once, whatever the transport.
//! The agent protocol's prost types stay in `volley-proto`, which converts at the edge.

/// What a destination path holds on a host, looked at without following a final symbolic link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Nothing is there (the directory may be missing too).
    Missing,
    /// A regular file.
    File(FileFacts),
    /// Something else: `directory`, `symbolic link`, `socket`, ...
    Other { kind: String },
}

/// A regular file's content and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileFacts {
    /// SHA-256 in lower-case hex; `None` when it was not computed because the size already
    /// differs from the one asked about.
    pub sha256: Option<String>,
    pub size: u64,
    /// Permission bits, `0o7777` at most.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The owner's and group's names; the number as text when the host has no name for it.
    pub user: String,
    pub group: String,
}

/// One path to look at, and the size the controller would write there: a file of another size
/// differs anyway, so its checksum is not computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatQuery {
    pub path: String,
    pub size: Option<u64>,
    /// Follow a link to the file it names (a fetch), rather than report the link (a push,
    /// which replaces it).
    pub follow_links: bool,
}

/// Who should own a written file: a user and a group, each a name or a number; `None` keeps
/// the writer's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub user: Option<String>,
    pub group: Option<String>,
}

impl Owner {
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.group.is_none()
    }

    /// `user:group`, `user` or `:group`, as `chown` takes it.
    pub fn chown_spec(&self) -> String {
        match (&self.user, &self.group) {
            (Some(user), Some(group)) => format!("{user}:{group}"),
            (Some(user), None) => user.clone(),
            (None, Some(group)) => format!(":{group}"),
            (None, None) => String::new(),
        }
    }
}

/// A file for an agent to write: everything but the content, which follows in chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSpec {
    /// Chosen by the controller; recorded in the agent's audit log.
    pub execution_id: String,
    /// The absolute destination path.
    pub path: String,
    /// The content's exact size and SHA-256 (lower-case hex), checked on the host before the
    /// file is renamed into place.
    pub size: u64,
    pub sha256: String,
    /// Permission bits of the new file.
    pub mode: u32,
    pub owner: Owner,
    /// Missing directories between this existing directory and the file's are created; `None`:
    /// the file's directory must exist.
    pub create_below: Option<String>,
    /// Keep the replaced file as `path` followed by this suffix (or the first free
    /// [`numbered_backup_suffix`]); `None`: no backup.
    pub backup_suffix: Option<String>,
}

/// How many backup names a push tries, `suffix` and then numbered ones, before it fails.
pub const BACKUP_NAMES: usize = 100;

/// The backup suffix to try when `suffix` (and the numbers before `n`) are taken, because an
/// earlier push with the same stamp left a backup there: `.STAMP~` becomes `.STAMP.N~`. Both
/// transports use it, so that a backup is never replaced, and name them alike.
pub fn numbered_backup_suffix(suffix: &str, n: usize) -> String {
    let (stem, end) = backup_suffix_parts(suffix);
    format!("{stem}.{n}{end}")
}

/// What goes before and after the number of a [`numbered_backup_suffix`].
pub fn backup_suffix_parts(suffix: &str) -> (&str, &str) {
    match suffix.strip_suffix('~') {
        Some(stem) => (stem, "~"),
        None => (suffix, ""),
    }
}

/// What an agent did with a pushed file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Where the replaced file was kept, when a backup was asked for and there was a file.
    pub backup: Option<String>,
}

/// A file for an agent to read and send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchSpec {
    pub execution_id: String,
    pub path: String,
}

/// What a fetch streams back, in order: `Started`, chunks, `Ended`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchEvent {
    Started {
        size: u64,
        mode: u32,
    },
    Data(Vec<u8>),
    /// The SHA-256 and size of everything sent.
    Ended {
        sha256: String,
        size: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_backup_suffix_is_numbered_before_its_tilde() {
        assert_eq!(
            numbered_backup_suffix(".20261202T184055Z~", 1),
            ".20261202T184055Z.1~"
        );
        assert_eq!(numbered_backup_suffix(".orig", 2), ".orig.2");
    }
}
