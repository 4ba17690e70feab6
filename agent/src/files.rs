//! The file operations behind `Stat`, `Push` and `Fetch`, on paths checked against
//! `push_roots` ([`crate::roots`]).
//!
//! A push writes a hidden temporary file in the destination's directory (`.NAME.volley-XXXX`,
//! created exclusively, 0600), checks its size and SHA-256 against the header, applies the
//! owner and then the mode (chown clears set-id bits), syncs it, keeps the replaced file as a
//! hard link when a backup is asked for, renames it over the destination and syncs the
//! directory. Every refusal (a path outside the roots, a size over the limit, an unknown owner,
//! a missing directory) comes before the temporary file exists; once it exists, any failure,
//! or the stream breaking, removes it ([`TempFile`] removes it when dropped). A reader of the
//! destination sees the old file or the new one, never a part; and a config directory read by
//! a glob such as `conf.d/*.conf` never sees the temporary file, whose name starts with a dot.
//!
//! Every file is reached from an open directory, never by its path again: the directory a
//! checked path names is opened one name at a time from `/`, following no link
//! ([`open_directory`]), and the file is created, linked, renamed, stat'd or read relative to
//! it. A user who may write inside a root (`/srv/app`, theirs) and swaps a directory of the
//! path for a link to `/etc` after the check makes the push or fetch fail; it cannot make
//! the agent write, read or hash anything outside the roots.
//!
//! The agent writes as its own user (root, as installed); owner and mode are always applied
//! explicitly. Under systemd the agent's unit refuses chown(2), so the owner is given first by a
//! unit of systemd's (`transfer.rs`, [`crate::executor::Executor::chown`]), and [`finish`] leaves
//! it. These functions block: callers run them on tokio's blocking pool.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};

use volley_common::transfer::{
    BACKUP_NAMES, FileFacts, FileState, Owner, PushSpec, Pushed, StatQuery, numbered_backup_suffix,
};

use crate::roots::{PushRoots, Refusal, Resolved};

/// Bytes read from disk at a time, and the largest chunk a fetch sends.
pub const CHUNK_BYTES: usize = 64 << 10;

/// Why a file operation failed; each maps to a gRPC status whose message is this text.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{path}: {size} bytes is more than the agent's max_file_bytes ({limit})")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{0}")]
    Precondition(String),
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}

impl FileError {
    fn io(path: &Path, error: &io::Error) -> FileError {
        FileError::Io {
            path: path.display().to_string(),
            reason: io_reason(error),
        }
    }

    pub fn status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            FileError::Refused(_) => tonic::Status::permission_denied(message),
            FileError::TooLarge { .. } => tonic::Status::resource_exhausted(message),
            FileError::Precondition(_) => tonic::Status::failed_precondition(message),
            FileError::Io { .. } => tonic::Status::aborted(message),
        }
    }
}

/// An I/O error as a short reason, without Rust's `(os error N)`.
pub fn io_reason(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

/// What each queried path holds. A refused path fails the whole call.
pub fn stat(
    roots: &PushRoots,
    checksums: &Checksums,
    queries: &[StatQuery],
) -> Result<Vec<FileState>, FileError> {
    queries
        .iter()
        .map(|query| {
            let resolved = roots.resolve(&query.path)?;
            if !resolved.missing.is_empty() {
                return Ok(FileState::Missing);
            }
            let path = resolved.path();
            if query.follow_links && path.is_symlink() {
                if !path.exists() {
                    // A link to nothing: nothing to fetch.
                    return Ok(FileState::Missing);
                }
                let target = roots.resolve_target(&query.path)?;
                return state_of(checksums, &target, query.size);
            }
            roots.check_not_protected(&query.path, &path)?;
            state_of(checksums, &path, query.size)
        })
        .collect()
}

fn state_of(checksums: &Checksums, path: &Path, size: Option<u64>) -> Result<FileState, FileError> {
    let (directory, name) = open_parent(path)?;
    let kind = match fstatat(&directory, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT,
        Err(Errno::ENOENT) => return Ok(FileState::Missing),
        Err(error) => return Err(FileError::io(path, &error.into())),
    };
    if kind != SFlag::S_IFREG {
        let kind = match kind {
            SFlag::S_IFDIR => "directory",
            SFlag::S_IFLNK => "symbolic link",
            _ => "special file",
        };
        return Ok(FileState::Other {
            kind: kind.to_string(),
        });
    }
    // Read through the file opened, not its path: what is hashed is what was stat'd.
    let mut file = open_file(&directory, name, path)?;
    let metadata = file
        .metadata()
        .map_err(|error| FileError::io(path, &error))?;
    if !metadata.is_file() {
        return Err(moved(path));
    }
    let sha256 = match size {
        Some(size) if size != metadata.len() => None,
        _ => match checksums.get(path, &metadata) {
            Some(known) => Some(known),
            None => Some(sha256_file(&mut file, path)?),
        },
    };
    Ok(FileState::File(FileFacts {
        sha256,
        size: metadata.len(),
        mode: metadata.mode() & 0o7777,
        uid: metadata.uid(),
        gid: metadata.gid(),
        user: user_name(metadata.uid()),
        group: group_name(metadata.gid()),
    }))
}

fn sha256_file(file: &mut File, path: &Path) -> Result<String, FileError> {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0; CHUNK_BYTES];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|error| FileError::io(path, &error))?;
        if read == 0 {
            break;
        }
        digest.update(&buffer[..read]);
    }
    Ok(hex(digest.finish().as_ref()))
}

/// How many files [`Checksums`] remembers.
const KNOWN_FILES: usize = 4096;

/// The SHA-256 of the files this agent put in place, for as long as they stay as it left them,
/// so that the `Stat` of the next push does not read them again.
///
/// A file counts as unchanged while its device, inode, size, mtime and ctime are: every write,
/// truncation, rename over it, chmod or chown moves its ctime, which no user can set back (only
/// root, by setting the clock). The stamp is taken with fstat(2) on the pushed file just after
/// its rename. Since Linux 6.13, tmpfs, ext4, xfs and btrfs give a change that follows a stat
/// a fine-grained ctime of its own; elsewhere a write in the same clock tick as that fstat (a
/// few milliseconds) could go unseen, which takes another writer racing the push itself. A
/// write that moves neither time (through a shared mapping on tmpfs, say) goes unseen too, as
/// it does by make's and rsync's checks; a push with different content still replaces the file.
#[derive(Debug, Default)]
pub struct Checksums {
    known: std::sync::Mutex<std::collections::HashMap<PathBuf, (Stamp, String)>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(metadata: &fs::Metadata) -> Stamp {
        Stamp {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

impl Checksums {
    /// The SHA-256 of `path`, if this agent wrote it and it has not changed since.
    fn get(&self, path: &Path, metadata: &fs::Metadata) -> Option<String> {
        let known = self
            .known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match known.get(path) {
            Some((stamp, sha256)) if *stamp == Stamp::of(metadata) => Some(sha256.clone()),
            _ => None,
        }
    }

    fn put(&self, path: PathBuf, metadata: &fs::Metadata, sha256: String) {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.len() >= KNOWN_FILES
            && !known.contains_key(&path)
            && let Some(evicted) = known.keys().next().cloned()
        {
            known.remove(&evicted);
        }
        known.insert(path, (Stamp::of(metadata), sha256));
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => gid.to_string(),
    }
}

/// How a directory of a checked path is opened: no link followed, not inherited by commands.
const DIRECTORY: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_RDONLY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// The refusal of a path a name of which was replaced by a link (or a directory by a file)
/// after the path was checked.
fn moved(path: &Path) -> FileError {
    FileError::Precondition(format!(
        "{}: a directory of it was replaced while the agent was at it (by a link?): nothing done",
        path.display()
    ))
}

/// An error of a call on a checked path: a link where the check found none is [`moved`].
fn at_error(path: &Path, error: Errno) -> FileError {
    match error {
        Errno::ELOOP | Errno::ENOTDIR => moved(path),
        error => FileError::io(path, &error.into()),
    }
}

/// Opens `path` (absolute, with no link in it: a path as [`PushRoots::resolve`] gives it) as a
/// directory, one name at a time from `/`, following no link.
fn open_directory(path: &Path) -> Result<OwnedFd, FileError> {
    let mut directory = nix::fcntl::open("/", DIRECTORY, Mode::empty())
        .map_err(|error| FileError::io(Path::new("/"), &error.into()))?;
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => {
                directory = openat(&directory, name, DIRECTORY, Mode::empty())
                    .map_err(|error| at_error(path, error))?;
            }
            _ => return Err(moved(path)),
        }
    }
    Ok(directory)
}

/// The directory of `path` opened as [`open_directory`] does, and the file's name in it.
fn open_parent(path: &Path) -> Result<(OwnedFd, &OsStr), FileError> {
    let name = path.file_name().ok_or_else(|| moved(path))?;
    let directory = open_directory(path.parent().unwrap_or(Path::new("/")))?;
    Ok((directory, name))
}

/// Opens the file `name` of `directory` for reading, not following a link.
fn open_file(directory: &OwnedFd, name: &OsStr, path: &Path) -> Result<File, FileError> {
    openat(
        directory,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(|error| at_error(path, error))
}

/// What `name` is in `directory`, a link itself rather than what it names.
fn kind_in(directory: &OwnedFd, name: &OsStr) -> Option<SFlag> {
    fstatat(directory, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .ok()
        .map(|stat: FileStat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT)
}

/// A temporary file in the destination's directory (held open), removed when dropped unless it
/// was renamed into place.
#[derive(Debug)]
pub struct TempFile {
    directory: OwnedFd,
    name: OsString,
    path: PathBuf,
    kept: bool,
}

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept
            && let Err(error) = nix::unistd::unlinkat(
                &self.directory,
                self.name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            && error != Errno::ENOENT
        {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove a temporary file");
        }
    }
}

/// A push that passed every check: its temporary file (open for writing, returned beside it)
/// and where it goes.
#[derive(Debug)]
pub struct Prepared {
    pub temp: TempFile,
    /// The destination, its directories resolved.
    pub target: PathBuf,
    /// Its name in the temporary file's directory.
    name: OsString,
    owner: (Option<u32>, Option<u32>),
}

impl Prepared {
    /// The uid and gid the file is to be given (`None`: left as written).
    pub fn owner(&self) -> (Option<u32>, Option<u32>) {
        self.owner
    }

    /// The owner was given by other means (under systemd, by a unit of its own: see
    /// [`crate::executor::Executor::chown`]); [`finish`] leaves it.
    pub fn owner_given(&mut self) {
        self.owner = (None, None);
    }
}

/// Checks a push and opens its temporary file: the path under the roots, the size under the
/// limit, the owner known, the directory there (or created below `create_below`), the
/// destination not a directory. Nothing is written before all of these hold.
pub fn prepare(
    roots: &PushRoots,
    limit: u64,
    spec: &PushSpec,
) -> Result<(Prepared, File), FileError> {
    if spec.size > limit {
        return Err(FileError::TooLarge {
            path: spec.path.clone(),
            size: spec.size,
            limit,
        });
    }
    let resolved = roots.resolve(&spec.path)?;
    roots.check_not_protected(&spec.path, &resolved.path())?;
    check_missing_directories(spec, &resolved)?;
    let owner = owner_ids(&spec.owner)?;
    let target = resolved.path();
    let mut path = resolved.existing.clone();
    let mut directory = open_directory(&path)?;
    for name in &resolved.missing {
        path.push(name);
        // 0755 whatever the agent's umask (its unit sets 0077): a config tree must be readable
        // by the services it configures.
        let created = match mkdirat(
            &directory,
            name.as_os_str(),
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(error) => return Err(FileError::io(&path, &error.into())),
        };
        directory = openat(&directory, name.as_os_str(), DIRECTORY, Mode::empty())
            .map_err(|error| at_error(&path, error))?;
        if created {
            nix::sys::stat::fchmod(&directory, Mode::from_bits_truncate(0o755))
                .map_err(|error| FileError::io(&path, &error.into()))?;
        }
    }
    if kind_in(&directory, &resolved.file_name) == Some(SFlag::S_IFDIR) {
        return Err(FileError::Precondition(format!(
            "{} is a directory",
            spec.path
        )));
    }
    let (temp, file) = create_temp(directory, &path, &resolved.file_name)?;
    Ok((
        Prepared {
            temp,
            target,
            name: resolved.file_name,
            owner,
        },
        file,
    ))
}

/// Directories may be created only below the one the controller named.
fn check_missing_directories(spec: &PushSpec, resolved: &Resolved) -> Result<(), FileError> {
    let Some(first) = resolved.missing.first() else {
        return Ok(());
    };
    let mut existing = Path::new(&spec.path).parent().unwrap_or(Path::new("/"));
    for _ in &resolved.missing {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let missing = existing.join(first);
    match &spec.create_below {
        Some(below) if existing.starts_with(below) => Ok(()),
        _ => Err(FileError::Precondition(format!(
            "{}: no such directory",
            missing.display()
        ))),
    }
}

fn owner_ids(owner: &Owner) -> Result<(Option<u32>, Option<u32>), FileError> {
    let unknown = |what: &str, name: &str| {
        FileError::Precondition(format!("owner: no {what} '{name}' on this host"))
    };
    // chown(2) takes (uid_t)-1 for "leave it as it is": the file would keep its owner.
    let id = |what: &str, id: u32| {
        (id != u32::MAX)
            .then_some(id)
            .ok_or_else(|| FileError::Precondition(format!("owner: {id} is not a {what} id")))
    };
    let user = match &owner.user {
        None => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(uid) => id("user", uid)?,
            Err(_) => match nix::unistd::User::from_name(name) {
                Ok(Some(user)) => user.uid.as_raw(),
                _ => return Err(unknown("user", name)),
            },
        }),
    };
    let group = match &owner.group {
        None => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(gid) => id("group", gid)?,
            Err(_) => match nix::unistd::Group::from_name(name) {
                Ok(Some(group)) => group.gid.as_raw(),
                _ => return Err(unknown("group", name)),
            },
        }),
    };
    Ok((user, group))
}

/// `.NAME.volley-XXXXXXXXXXXX` in `directory` (at `path`), created exclusively and 0600.
fn create_temp(
    directory: OwnedFd,
    path: &Path,
    name: &OsStr,
) -> Result<(TempFile, File), FileError> {
    let random = ring::rand::SystemRandom::new();
    for _ in 0..8 {
        let mut bytes = [0u8; 6];
        ring::rand::SecureRandom::fill(&random, &mut bytes)
            .map_err(|_| FileError::Precondition("no randomness for a temporary name".into()))?;
        let mut file_name = OsString::from(".");
        file_name.push(name);
        file_name.push(format!(".volley-{}", hex(&bytes)));
        let created = openat(
            &directory,
            file_name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        );
        match created {
            Ok(file) => {
                let temp = TempFile {
                    directory,
                    path: path.join(&file_name),
                    name: file_name,
                    kept: false,
                };
                return Ok((temp, File::from(file)));
            }
            Err(Errno::EEXIST) => continue,
            Err(error) => return Err(FileError::io(path, &error.into())),
        }
    }
    Err(FileError::Precondition(format!(
        "{}: cannot find a free temporary name",
        path.display()
    )))
}

/// Puts a fully written and checked temporary file in place: owner, mode, sync, backup,
/// rename, directory sync.
pub fn finish(
    checksums: &Checksums,
    prepared: Prepared,
    file: File,
    spec: &PushSpec,
) -> Result<Pushed, FileError> {
    let Prepared {
        mut temp,
        target,
        name,
        owner,
    } = prepared;
    let failed = |error: io::Error| FileError::io(Path::new(&spec.path), &error);
    if owner != (None, None) {
        std::os::unix::fs::fchown(&file, owner.0, owner.1).map_err(failed)?;
    }
    file.set_permissions(fs::Permissions::from_mode(spec.mode))
        .map_err(failed)?;
    file.sync_all().map_err(failed)?;
    let mut backup = None;
    if let Some(suffix) = &spec.backup_suffix {
        // A link is kept as the link (linkat(2) does not follow it), not what it names.
        let replaced = matches!(
            kind_in(&temp.directory, &name),
            Some(SFlag::S_IFREG | SFlag::S_IFLNK)
        );
        if replaced {
            backup = Some(
                link_backup(&temp.directory, &name, &target, suffix)?
                    .display()
                    .to_string(),
            );
        }
    }
    renameat(
        &temp.directory,
        temp.name.as_os_str(),
        &temp.directory,
        name.as_os_str(),
    )
    .map_err(|error| failed(error.into()))?;
    temp.kept = true;
    match file.metadata() {
        Ok(metadata) => checksums.put(target.clone(), &metadata, spec.sha256.clone()),
        Err(error) => tracing::warn!(path = %target.display(), %error, "cannot stat a pushed file"),
    }
    drop(file);
    // The rename is durable only once the directory is synced; a failure here cannot undo it.
    if let Err(error) = nix::unistd::fsync(&temp.directory) {
        tracing::warn!(path = %target.display(), %error, "cannot sync a directory after a push");
    }
    Ok(Pushed { backup })
}

/// Hard-links the file (or link) about to be replaced to the first free backup name: `target` and
/// `suffix`, then the numbered suffixes, for a backup that an earlier push with the same stamp
/// left. An existing backup is never replaced: `link(2)` does not overwrite.
fn link_backup(
    directory: &OwnedFd,
    name: &OsStr,
    target: &Path,
    suffix: &str,
) -> Result<PathBuf, FileError> {
    for n in 0..BACKUP_NAMES {
        let suffix = match n {
            0 => suffix.to_string(),
            n => numbered_backup_suffix(suffix, n),
        };
        let mut backup = name.to_owned();
        backup.push(&suffix);
        let mut path = target.as_os_str().to_owned();
        path.push(&suffix);
        let path = PathBuf::from(path);
        match nix::unistd::linkat(
            directory,
            name,
            directory,
            backup.as_os_str(),
            AtFlags::empty(),
        ) {
            Ok(()) => return Ok(path),
            Err(Errno::EEXIST) => continue,
            Err(error) => return Err(FileError::io(&path, &error.into())),
        }
    }
    Err(FileError::Precondition(format!(
        "{}: {BACKUP_NAMES} backups with this push's stamp exist already",
        target.display()
    )))
}

/// Opens a file to fetch: under the roots once links are followed, a regular file, within the
/// size limit. Returns it with its size and permission bits.
pub fn open_for_fetch(
    roots: &PushRoots,
    limit: u64,
    path: &str,
) -> Result<(File, u64, u32), FileError> {
    let target = roots.resolve_target(path)?;
    let (directory, name) = open_parent(&target)?;
    let file = open_file(&directory, name, Path::new(path))?;
    let metadata = file
        .metadata()
        .map_err(|error| FileError::io(Path::new(path), &error))?;
    if roots.is_protected(&metadata) {
        return Err(Refusal::Protected {
            path: path.to_string(),
        }
        .into());
    }
    if !metadata.is_file() {
        return Err(FileError::Precondition(format!(
            "{path} is not a regular file"
        )));
    }
    if metadata.len() > limit {
        return Err(FileError::TooLarge {
            path: path.to_string(),
            size: metadata.len(),
            limit,
        });
    }
    Ok((file, metadata.len(), metadata.mode() & 0o7777))
}

#[cfg(test)]
mod tests;
