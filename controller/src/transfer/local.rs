//! The local side of `volley push`: `LOCAL... REMOTE` turned into the list of files to send,
//! each with its remote path, size, SHA-256 and mode, read once before any host is contacted.
//! Every problem here is the operator's input (exit 64).
//!
//! Where files go: one file and a `REMOTE` not ending in `/` is that file's path. Otherwise
//! `REMOTE` is a directory, and each `LOCAL` goes into it by its name: a directory with its
//! whole tree (`volley push conf.d /etc/nginx/` writes `/etc/nginx/conf.d/...`), as `cp -r`
//! does. `REMOTE`'s own directory must exist on the hosts; the directories of a pushed tree are
//! made below it.
//!
//! Small files are kept in memory, shared by every host; larger ones are read from disk again
//! for each host, so the controller's memory does not grow with the file size.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::AsyncRead;

/// Files up to this size are kept in memory...
const MEMORY_FILE: u64 = 4 << 20;
/// ...as long as all of them together stay under this.
const MEMORY_TOTAL: u64 = 64 << 20;

/// One file to send.
#[derive(Clone, Debug)]
pub struct LocalFile {
    /// The file as found on this machine.
    pub local: PathBuf,
    /// Its absolute path on the hosts.
    pub remote: String,
    pub size: u64,
    pub sha256: String,
    /// The local file's permission bits, for a file the hosts do not have yet.
    pub mode: u32,
    pub content: Content,
    /// The existing remote directory below which this file's directories may be made (the
    /// files of a pushed tree); `None`: its directory must exist.
    pub create_below: Option<String>,
}

/// Where a file's bytes come from when a host needs them.
#[derive(Clone, Debug)]
pub enum Content {
    Memory(Bytes),
    Disk,
}

impl LocalFile {
    /// A reader of the content, for one host's upload.
    pub async fn open(&self) -> std::io::Result<Box<dyn AsyncRead + Unpin + Send>> {
        Ok(match &self.content {
            Content::Memory(bytes) => Box::new(std::io::Cursor::new(bytes.clone())),
            Content::Disk => Box::new(tokio::fs::File::open(&self.local).await?),
        })
    }
}

/// Checks an absolute remote path made of plain names; returns it with single slashes and
/// without a trailing one.
pub fn remote_path(what: &str, path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{what} '{path}': not an absolute path"));
    }
    if path.contains(['\n', '\0']) {
        return Err(format!("{what} '{path}': holds a newline or NUL"));
    }
    let names: Vec<&str> = path.split('/').filter(|name| !name.is_empty()).collect();
    if names.iter().any(|name| *name == "." || *name == "..") {
        return Err(format!("{what} '{path}': '.' and '..' are not allowed"));
    }
    Ok(format!("/{}", names.join("/")))
}

/// The files to send for `locals` to `remote`, in the order given (a directory's files sorted
/// by name). A push sends files, making their directories: the directories of a tree that hold
/// no file are added to `empty` (the outermost of each), for a warning.
pub fn manifest(
    locals: &[PathBuf],
    remote: &str,
    empty: &mut Vec<PathBuf>,
) -> Result<Vec<LocalFile>, String> {
    let normal = remote_path("REMOTE", remote)?;
    let mut kinds = Vec::new();
    for local in locals {
        let metadata = std::fs::metadata(local)
            .map_err(|error| format!("{}: {}", local.display(), crate::plan::io_reason(&error)))?;
        if !metadata.is_file() && !metadata.is_dir() {
            return Err(format!(
                "{}: not a regular file or a directory",
                local.display()
            ));
        }
        kinds.push(metadata.is_dir());
    }
    let into_directory = remote.ends_with('/') || locals.len() > 1 || kinds.iter().any(|d| *d);
    let mut found = Vec::new();
    if !into_directory {
        // `normal` is not `/`: a REMOTE of only slashes ends with one.
        found.push((locals[0].clone(), normal, None));
    } else {
        for (local, is_dir) in locals.iter().zip(kinds) {
            // `conf.d/.` (or `.`) is the directory's content, as `cp -r conf.d/. DEST` copies it.
            let content = is_dir && {
                use std::os::unix::ffi::OsStrExt;
                let bytes = local.as_os_str().as_bytes();
                bytes == b"." || bytes.ends_with(b"/.")
            };
            let base = if content {
                normal.clone()
            } else {
                join(&normal, &local_name(local)?)
            };
            if is_dir {
                let mut tree = Vec::new();
                walk(local, &base, &mut tree, empty)?;
                if tree.is_empty() {
                    return Err(format!("{}: holds no file to push", local.display()));
                }
                found.extend(
                    tree.into_iter()
                        .map(|(local, remote)| (local, remote, Some(normal.clone()))),
                );
            } else {
                found.push((local.clone(), base, None));
            }
        }
    }
    let mut seen = std::collections::HashMap::new();
    for (local, remote, _) in &found {
        if let Some(other) = seen.insert(remote.clone(), local.clone()) {
            return Err(format!(
                "{} and {} would both be written to {remote}",
                other.display(),
                local.display()
            ));
        }
    }
    let mut in_memory = 0;
    found
        .into_iter()
        .map(|(local, remote, create_below)| read(local, remote, create_below, &mut in_memory))
        .collect()
}

fn join(directory: &str, name: &str) -> String {
    if directory == "/" {
        format!("/{name}")
    } else {
        format!("{directory}/{name}")
    }
}

/// The name a local file or directory has on the hosts.
fn local_name(local: &Path) -> Result<String, String> {
    let name = local
        .file_name()
        .filter(|_| !local.ends_with(".."))
        .ok_or_else(|| format!("{}: has no name to give it on the hosts", local.display()))?;
    name.to_str()
        .filter(|name| !name.contains('\n'))
        .map(str::to_string)
        .ok_or_else(|| format!("{}: its name is not UTF-8 text", local.display()))
}

/// Every file under `dir`, with its remote path under `remote`, sorted by name, and the
/// outermost directories under it that hold no file. Links to files are followed; links to
/// directories and special files are refused.
fn walk(
    dir: &Path,
    remote: &str,
    found: &mut Vec<(PathBuf, String)>,
    empty: &mut Vec<PathBuf>,
) -> Result<(), String> {
    let failed = |path: &Path, error: std::io::Error| {
        format!("{}: {}", path.display(), crate::plan::io_reason(&error))
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|error| failed(dir, error))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .map_err(|error| failed(dir, error))?;
    entries.sort();
    for path in entries {
        let name = local_name(&path)?;
        let link = std::fs::symlink_metadata(&path)
            .map_err(|error| failed(&path, error))?
            .file_type()
            .is_symlink();
        let metadata = std::fs::metadata(&path).map_err(|error| failed(&path, error))?;
        let remote = join(remote, &name);
        if metadata.is_dir() && link {
            return Err(format!(
                "{}: a link to a directory (volley push follows links to files only)",
                path.display()
            ));
        } else if metadata.is_dir() {
            let before = found.len();
            walk(&path, &remote, found, empty)?;
            if found.len() == before {
                empty.retain(|inner| !inner.starts_with(&path));
                empty.push(path);
            }
        } else if metadata.is_file() {
            found.push((path, remote));
        } else {
            return Err(format!(
                "{}: not a regular file or a directory",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Reads a file once: its checksum, and its bytes when it is small enough to keep.
fn read(
    local: PathBuf,
    remote: String,
    create_below: Option<String>,
    in_memory: &mut u64,
) -> Result<LocalFile, String> {
    use std::os::unix::fs::MetadataExt;
    let failed =
        |error: std::io::Error| format!("{}: {}", local.display(), crate::plan::io_reason(&error));
    let mut file = std::fs::File::open(&local).map_err(failed)?;
    let metadata = file.metadata().map_err(failed)?;
    let size = metadata.len();
    let keep = size <= MEMORY_FILE && *in_memory + size <= MEMORY_TOTAL;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut kept = Vec::new();
    let mut buffer = vec![0; 64 << 10];
    let mut read_bytes = 0;
    loop {
        let count = file.read(&mut buffer).map_err(failed)?;
        if count == 0 {
            break;
        }
        digest.update(&buffer[..count]);
        read_bytes += count as u64;
        if keep {
            kept.extend_from_slice(&buffer[..count]);
        }
    }
    if read_bytes != size {
        return Err(format!("{}: changed while it was read", local.display()));
    }
    let content = if keep {
        *in_memory += size;
        Content::Memory(Bytes::from(kept))
    } else {
        Content::Disk
    };
    Ok(LocalFile {
        local,
        remote,
        size,
        sha256: data_encoding::HEXLOWER.encode(digest.finish().as_ref()),
        mode: metadata.mode() & 0o777,
        content,
        create_below,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("nginx.conf"), "events {}\n").unwrap();
        std::fs::create_dir_all(root.join("conf.d/sub")).unwrap();
        std::fs::write(root.join("conf.d/b.conf"), "b").unwrap();
        std::fs::write(root.join("conf.d/a.conf"), "a").unwrap();
        std::fs::write(root.join("conf.d/sub/c.conf"), "c").unwrap();
        dir
    }

    /// `(remote, create_below)` of each file of the manifest.
    fn remotes(locals: &[PathBuf], remote: &str) -> Result<Vec<(String, Option<String>)>, String> {
        Ok(manifest(locals, remote, &mut Vec::new())?
            .into_iter()
            .map(|file| (file.remote, file.create_below))
            .collect())
    }

    fn pair(remote: &str, below: Option<&str>) -> (String, Option<String>) {
        (remote.to_string(), below.map(str::to_string))
    }

    #[test]
    fn a_file_goes_to_remote_or_into_it() {
        let dir = tree();
        let file = vec![dir.path().join("nginx.conf")];
        assert_eq!(
            remotes(&file, "/etc/nginx/nginx.conf").unwrap(),
            [pair("/etc/nginx/nginx.conf", None)]
        );
        assert_eq!(
            remotes(&file, "/etc//nginx/").unwrap(),
            [pair("/etc/nginx/nginx.conf", None)]
        );
        let two = vec![
            dir.path().join("nginx.conf"),
            dir.path().join("conf.d/a.conf"),
        ];
        assert_eq!(
            remotes(&two, "/etc/nginx").unwrap(),
            [
                pair("/etc/nginx/nginx.conf", None),
                pair("/etc/nginx/a.conf", None)
            ]
        );
    }

    #[test]
    fn a_directory_goes_into_remote_with_its_tree() {
        let dir = tree();
        let below = Some("/etc/nginx");
        assert_eq!(
            remotes(&[dir.path().join("conf.d")], "/etc/nginx").unwrap(),
            [
                pair("/etc/nginx/conf.d/a.conf", below),
                pair("/etc/nginx/conf.d/b.conf", below),
                pair("/etc/nginx/conf.d/sub/c.conf", below),
            ]
        );
        // `conf.d/.` is conf.d's content.
        assert_eq!(
            remotes(&[dir.path().join("conf.d/.")], "/etc/nginx/conf.d").unwrap(),
            [
                pair("/etc/nginx/conf.d/a.conf", Some("/etc/nginx/conf.d")),
                pair("/etc/nginx/conf.d/b.conf", Some("/etc/nginx/conf.d")),
                pair("/etc/nginx/conf.d/sub/c.conf", Some("/etc/nginx/conf.d")),
            ]
        );
        // Directories that hold no file are not sent, and named (the outermost of each).
        let conf = dir.path().join("conf.d");
        for empty in ["empty/inner/deeper", "empty/also", "sub/none"] {
            std::fs::create_dir_all(conf.join(empty)).unwrap();
        }
        let mut empty = Vec::new();
        let files = manifest(std::slice::from_ref(&conf), "/etc/nginx", &mut empty).unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(empty, [conf.join("empty"), conf.join("sub/none")]);
    }

    #[test]
    fn files_are_read_once_with_their_checksum() {
        let dir = tree();
        let files = manifest(
            &[dir.path().join("nginx.conf")],
            "/etc/nginx.conf",
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(files[0].size, 10);
        assert_eq!(files[0].sha256, crate::upload::sha256_hex(b"events {}\n"));
        assert!(matches!(&files[0].content, Content::Memory(bytes) if bytes.len() == 10));
    }

    #[test]
    fn bad_input_is_one_line_naming_it() {
        let dir = tree();
        let file = vec![dir.path().join("nginx.conf")];
        let error = |locals: &[PathBuf], remote: &str| remotes(locals, remote).unwrap_err();
        assert_eq!(
            error(&file, "etc/nginx.conf"),
            "REMOTE 'etc/nginx.conf': not an absolute path"
        );
        assert_eq!(
            error(&file, "/etc/../root/x"),
            "REMOTE '/etc/../root/x': '.' and '..' are not allowed"
        );
        let missing = dir.path().join("missing");
        assert_eq!(
            error(std::slice::from_ref(&missing), "/etc/"),
            format!("{}: file not found", missing.display())
        );
        let twice = vec![
            dir.path().join("conf.d/a.conf"),
            dir.path().join("conf.d/a.conf"),
        ];
        assert!(error(&twice, "/etc/").contains("would both be written to /etc/a.conf"));
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        assert!(error(&[dir.path().join("empty")], "/etc/").contains("holds no file"));
    }
}
