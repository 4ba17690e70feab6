//! Host-key verification against an OpenSSH `known_hosts` file.
//!
//! This module owns the run's view of `known_hosts`: the file is read once, before any host
//! connects, and indexed so that each of thousands of hosts is checked in microseconds (russh's
//! own checker re-reads the file per host and matches neither wildcards nor tab-separated lines).
//! It also appends the keys of hosts met for the first time, when the operator allows that.
//!
//! The format is OpenSSH's: `[marker] hosts keytype base64 [comment]`, fields separated by spaces
//! or tabs. `hosts` is a comma list of names, `[name]:port`, wildcards (`*`, `?`), negations
//! (`!pattern`) and hashed names (`|1|salt|hmac`). Only `@revoked` markers are honoured;
//! `@cert-authority` lines are ignored because Volley does not accept host certificates.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use volley_common::target::wildcard_match;

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_encoding::Encode;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

use crate::event::LearnedHostKey;

/// What `known_hosts` says about the key a host presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host holds this very key.
    Known,
    /// No line holds a key for this host.
    Unknown,
    /// Lines for this host hold other keys only: possibly an attack. Of the same algorithm, or,
    /// as OpenSSH also refuses it, of other algorithms only (the connection asks for the
    /// algorithms recorded first, so a host that presents none of them is not the host that
    /// was recorded, or has changed its keys). `line` is the first line of the same algorithm
    /// if any, else the first line for the host.
    Changed { line: usize },
    /// An `@revoked` line for this host holds this key; it must never be accepted.
    Revoked { line: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    #[error("known_hosts {}: cannot read: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("known_hosts {}: cannot create directory {}: {error}", path.display(), dir.display())]
    CreateDir {
        path: PathBuf,
        dir: PathBuf,
        error: io::Error,
    },
    #[error("known_hosts {}: cannot append: {error}", path.display())]
    Append { path: PathBuf, error: io::Error },
    #[error("known_hosts {}: cannot record host '{host}': not a plain host name or address", path.display())]
    BadHost { path: PathBuf, host: String },
    #[error("known_hosts {}: cannot encode the key of host '{host}': {reason}", path.display())]
    EncodeKey {
        path: PathBuf,
        host: String,
        reason: String,
    },
}

/// The host keys of one `known_hosts` file, shared by every host of a run.
pub struct KnownHosts {
    path: PathBuf,
    entries: RwLock<Entries>,
    /// Serialises appends from this process; other processes are kept out by an advisory lock.
    append: Mutex<()>,
    /// The scanned entries that matched each name looked up so far. A host is looked up more
    /// than once (`algorithms`, then `check`), and each hashed pattern costs an HMAC, so a file
    /// of 5,000 hashed lines would otherwise cost ~0.5 ms per lookup. It never goes stale: the
    /// scanned entries are fixed at load, as learned entries are plain names.
    scan_cache: Mutex<HashMap<String, Arc<[usize]>>>,
    /// Lines that were neither comments nor usable entries, kept for tests and the debug log.
    skipped: usize,
    /// The keys this run appended, in order, for the operator to see.
    learned: Mutex<Vec<LearnedHostKey>>,
    /// Every entry of the file names its hosts hashed (`ssh-keygen -H`, or `HashKnownHosts`):
    /// learned keys are written hashed too, as ssh writes them there.
    hashed: bool,
}

#[derive(Default)]
struct Entries {
    all: Vec<Entry>,
    /// Entries whose every positive pattern is a plain name, by that lowercased name (`host` or
    /// `[host]:port`). Most files are mostly such lines, so most checks are one hash lookup.
    by_name: HashMap<String, Vec<usize>>,
    /// Entries with a wildcard or hashed pattern: these are tried for every host. Only `load`
    /// adds to them (learned entries are plain names), which keeps `scan_cache` valid.
    scanned: Vec<usize>,
    /// The number the next appended line will have. Lines that other processes append during the
    /// run are not seen, so a learned entry's number can be low; it only serves in messages.
    next_line: usize,
}

struct Entry {
    line: usize,
    revoked: bool,
    key: KeyData,
    patterns: Vec<HostPattern>,
}

struct HostPattern {
    negated: bool,
    kind: PatternKind,
}

enum PatternKind {
    Plain(String),
    Wildcard(String),
    /// `|1|salt|hmac`: HMAC-SHA1 of the name keyed by the salt. The keyed state is prepared once
    /// here, which halves the cost of trying it against each host. (RustCrypto's SHA-1 uses the
    /// CPU's SHA instructions; ring's is 3.5 times slower, which matters at thousands of lines.)
    Hashed {
        key: Hmac<Sha1>,
        digest: Vec<u8>,
    },
}

impl KnownHosts {
    /// Reads the file once. A missing file is an empty set ("no host is known"), never "don't
    /// check". An unreadable file is an error naming it. Malformed lines are skipped, as OpenSSH
    /// does, and reported through `tracing::debug!`.
    pub fn load(path: &Path) -> Result<KnownHosts, KnownHostsError> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                return Err(KnownHostsError::Read {
                    path: path.to_path_buf(),
                    error,
                });
            }
        };
        Ok(KnownHosts::parse(path, &text))
    }

    fn parse(path: &Path, text: &[u8]) -> KnownHosts {
        let mut entries = Entries::default();
        let mut skipped = 0;
        for (index, line) in text.split(|&byte| byte == b'\n').enumerate() {
            let parsed = std::str::from_utf8(line)
                .map_err(|_| "not UTF-8")
                .and_then(|line| parse_line(line, index + 1));
            match parsed {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {}
                Err(reason) => {
                    skipped += 1;
                    tracing::debug!(
                        "known_hosts {}:{}: skipping line: {reason}",
                        path.display(),
                        index + 1
                    );
                }
            }
        }
        // An unterminated last line is a line too; the next append goes after it.
        let newlines = text.iter().filter(|&&byte| byte == b'\n').count();
        entries.next_line = newlines + 1 + usize::from(!text.is_empty() && !text.ends_with(b"\n"));
        if skipped > 0 {
            tracing::debug!(
                "known_hosts {}: skipped {skipped} malformed lines",
                path.display()
            );
        }
        let hashed = !entries.all.is_empty()
            && entries.all.iter().all(|entry| {
                entry
                    .patterns
                    .iter()
                    .all(|pattern| matches!(pattern.kind, PatternKind::Hashed { .. }))
            });
        KnownHosts {
            path: path.to_path_buf(),
            entries: RwLock::new(entries),
            append: Mutex::new(()),
            scan_cache: Mutex::default(),
            skipped,
            learned: Mutex::default(),
            hashed,
        }
    }

    /// Checks the key `host` presented. `host` is the name or address dialled; entries for port
    /// 22 are written bare, those for other ports as `[host]:port`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let key = key.key_data();
        let name = host_port(host, port);
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let mut known = false;
        let (mut same_algorithm, mut other) = (None, None);
        for entry in entries.matching(&name, &self.scanned_matches(&entries, &name)) {
            if entry.revoked {
                // A revoked key is refused whatever other lines say.
                if entry.key == *key {
                    return Verdict::Revoked { line: entry.line };
                }
            } else if entry.key == *key {
                known = true;
            } else if entry.key.algorithm() == key.algorithm() {
                same_algorithm = same_algorithm.or(Some(entry.line));
            } else {
                other = other.or(Some(entry.line));
            }
        }
        match (known, same_algorithm.or(other)) {
            (true, _) => Verdict::Known,
            (false, Some(line)) => Verdict::Changed { line },
            (false, None) => Verdict::Unknown,
        }
    }

    /// Key algorithms recorded for this host, in file order, so the connection can prefer them
    /// as OpenSSH does; empty if none. An RSA key stands for the three signature algorithms it
    /// can serve, strongest first.
    pub fn algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = host_port(host, port);
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let mut algorithms = Vec::new();
        for entry in entries.matching(&name, &self.scanned_matches(&entries, &name)) {
            if entry.revoked {
                continue;
            }
            let expanded = match entry.key.algorithm() {
                Algorithm::Rsa { .. } => [Some(HashAlg::Sha512), Some(HashAlg::Sha256), None]
                    .map(|hash| Algorithm::Rsa { hash })
                    .to_vec(),
                algorithm => vec![algorithm],
            };
            for algorithm in expanded {
                if !algorithms.contains(&algorithm) {
                    algorithms.push(algorithm);
                }
            }
        }
        algorithms
    }

    /// Records a new key: appends `host keytype base64` (or `[host]:port ...`) to the file,
    /// creating it (mode 0600, missing directories 0700) if needed, and remembers it, with
    /// `host_name` (the host as the operator named it) for [`KnownHosts::learned`]. A key that is already
    /// known is not written again; a revoked key stays revoked.
    ///
    /// Many hosts of one run may learn at once: appends are serialised by a mutex, and each line
    /// goes out in a single `write_all` on an `O_APPEND` descriptor, under an advisory lock, so
    /// that other processes appending to the same file do not interleave with it.
    pub fn learn(
        &self,
        host_name: &str,
        host: &str,
        port: u16,
        key: &PublicKey,
    ) -> Result<(), KnownHostsError> {
        if !is_plain_host(host) {
            return Err(KnownHostsError::BadHost {
                path: self.path.clone(),
                host: host.to_string(),
            });
        }
        let name = host_port(host, port);
        let blob = key
            .key_data()
            .encode_vec()
            .map_err(|error| KnownHostsError::EncodeKey {
                path: self.path.clone(),
                host: host.to_string(),
                reason: error.to_string(),
            })?;
        let algorithm = key.algorithm();
        let written = match self.hashed {
            true => hashed_name(&name.to_ascii_lowercase()),
            false => name.clone(),
        };
        let line = format!(
            "{written} {} {}\n",
            algorithm.as_str(),
            BASE64.encode(&blob)
        );

        let _append = self.append.lock().unwrap_or_else(PoisonError::into_inner);
        if self.check(host, port, key) == Verdict::Known {
            return Ok(());
        }
        self.append_line(&line)?;
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let entry = Entry {
            line: entries.next_line,
            revoked: false,
            key: key.key_data().clone(),
            patterns: vec![HostPattern {
                negated: false,
                kind: PatternKind::Plain(name),
            }],
        };
        entries.next_line += 1;
        entries.push(entry);
        drop(entries);
        self.learned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(LearnedHostKey {
                host: host_name.to_string(),
                address: crate::plan::dialled(host, port),
                key_type: key_type(&algorithm).to_string(),
                fingerprint: fingerprint(key),
            });
        Ok(())
    }

    /// The keys recorded so far by this run, in the order they were written.
    pub fn learned(&self) -> Vec<LearnedHostKey> {
        self.learned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn append_line(&self, line: &str) -> Result<(), KnownHostsError> {
        let append_error = |error| KnownHostsError::Append {
            path: self.path.clone(),
            error,
        };
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|error| KnownHostsError::CreateDir {
                    path: self.path.clone(),
                    dir: dir.to_path_buf(),
                    error,
                })?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(append_error)?;
        // The lock only orders us against other processes that lock too (other Volley runs);
        // where the file system has no locks, the single O_APPEND write is still atomic enough.
        if let Err(error) = file.lock() {
            tracing::debug!(
                "known_hosts {}: appending without a lock: {error}",
                self.path.display()
            );
        }
        let mut buffer = Vec::with_capacity(line.len() + 1);
        if !ends_with_newline(&file).map_err(append_error)? {
            buffer.push(b'\n');
        }
        buffer.extend_from_slice(line.as_bytes());
        (&file).write_all(&buffer).map_err(append_error)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn scanned_matches(&self, entries: &Entries, name: &str) -> Arc<[usize]> {
        let cache = || {
            self.scan_cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(found) = cache().get(name) {
            return found.clone();
        }
        // Computed outside the lock: two tasks may both compute one name, which is harmless.
        let found: Arc<[usize]> = entries
            .scanned
            .iter()
            .copied()
            .filter(|&index| entries.all[index].matches(name))
            .collect();
        cache().insert(name.to_string(), found.clone());
        found
    }
}

impl fmt::Debug for KnownHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("KnownHosts")
            .field("path", &self.path)
            .field("entries", &entries.all.len())
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// A key type as OpenSSH names it next to a fingerprint: `ED25519`, `ECDSA`, `RSA`.
fn key_type(algorithm: &Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Ed25519 => "ED25519",
        Algorithm::Ecdsa { .. } => "ECDSA",
        Algorithm::Rsa { .. } => "RSA",
        Algorithm::Dsa => "DSA",
        Algorithm::SkEd25519 => "ED25519-SK",
        Algorithm::SkEcdsaSha2NistP256 => "ECDSA-SK",
        _ => "KEY",
    }
}

/// The SHA256 fingerprint as OpenSSH prints it: `SHA256:base64-without-padding`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl Entries {
    fn push(&mut self, entry: Entry) {
        let index = self.all.len();
        let positive = || entry.patterns.iter().filter(|pattern| !pattern.negated);
        if positive().all(|pattern| matches!(pattern.kind, PatternKind::Plain(_))) {
            for pattern in positive() {
                if let PatternKind::Plain(name) = &pattern.kind {
                    let lines = self.by_name.entry(name.clone()).or_default();
                    // A name listed twice on one line must not count that line twice.
                    if lines.last() != Some(&index) {
                        lines.push(index);
                    }
                }
            }
        } else {
            self.scanned.push(index);
        }
        self.all.push(entry);
    }

    /// The entries for `name` (`host` or `[host]:port`, lowercased), in file order, given the
    /// scanned entries that match it.
    fn matching(&self, name: &str, scanned: &[usize]) -> impl Iterator<Item = &Entry> {
        let by_name = self
            .by_name
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // A plain name can still be excluded by a negation on its line.
        let mut found: Vec<usize> = by_name
            .iter()
            .copied()
            .filter(|&index| self.all[index].matches(name))
            .chain(scanned.iter().copied())
            .collect();
        // Both lists are in file order and disjoint; sorting merges them.
        found.sort_unstable();
        found.into_iter().map(|index| &self.all[index])
    }
}

impl Entry {
    /// OpenSSH's rule: a negated pattern that matches excludes the line, whatever else matches.
    fn matches(&self, name: &str) -> bool {
        let mut positive = false;
        for pattern in &self.patterns {
            if pattern.kind.matches(name) {
                if pattern.negated {
                    return false;
                }
                positive = true;
            }
        }
        positive
    }
}

impl PatternKind {
    fn parse(pattern: &str) -> Result<PatternKind, &'static str> {
        if let Some(hashed) = pattern.strip_prefix("|1|") {
            let (salt, digest) = hashed.split_once('|').ok_or("bad hashed host")?;
            let salt = BASE64
                .decode(salt.as_bytes())
                .map_err(|_| "bad hashed host salt")?;
            let digest = BASE64
                .decode(digest.as_bytes())
                .map_err(|_| "bad hashed host digest")?;
            let key = Hmac::<Sha1>::new_from_slice(&salt).map_err(|_| "bad hashed host salt")?;
            Ok(PatternKind::Hashed { key, digest })
        } else if pattern.contains(['*', '?']) {
            Ok(PatternKind::Wildcard(pattern.to_ascii_lowercase()))
        } else {
            Ok(PatternKind::Plain(pattern.to_ascii_lowercase()))
        }
    }

    /// `name` is already lowercased.
    fn matches(&self, name: &str) -> bool {
        match self {
            PatternKind::Plain(plain) => plain == name,
            PatternKind::Wildcard(pattern) => wildcard_match(pattern.as_bytes(), name.as_bytes()),
            PatternKind::Hashed { key, digest } => {
                key.clone().chain_update(name).verify_slice(digest).is_ok()
            }
        }
    }
}

/// `|1|salt|hmac`: `name` hashed as OpenSSH hashes it, with a fresh random salt.
fn hashed_name(name: &str) -> String {
    let mut salt = [0; 20];
    // The salt only hides the name; should the system's source fail, a fixed one still does.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
    let digest = Hmac::<Sha1>::new_from_slice(&salt)
        .expect("HMAC takes a key of any length")
        .chain_update(name)
        .finalize()
        .into_bytes();
    format!("|1|{}|{}", BASE64.encode(&salt), BASE64.encode(&digest))
}

/// Parses one line; `Ok(None)` for comments, blank lines and lines we deliberately ignore.
fn parse_line(line: &str, number: usize) -> Result<Option<Entry>, &'static str> {
    let mut fields = line
        .trim_end_matches('\r')
        .split([' ', '\t'])
        .filter(|field| !field.is_empty());
    let Some(first) = fields.next() else {
        return Ok(None);
    };
    let (revoked, hosts) = match first {
        _ if first.starts_with('#') => return Ok(None),
        "@cert-authority" => return Ok(None),
        "@revoked" => (true, fields.next().ok_or("no host after marker")?),
        _ if first.starts_with('@') => return Err("unknown marker"),
        _ => (false, first),
    };
    let key_type = fields.next().ok_or("no key type")?;
    let blob = fields.next().ok_or("no key")?;
    let key = PublicKey::from_openssh(&format!("{key_type} {blob}")).map_err(|_| "bad key")?;
    let patterns = hosts
        .split(',')
        .filter(|pattern| !pattern.is_empty())
        .map(|pattern| {
            let (negated, pattern) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern),
            };
            Ok(HostPattern {
                negated,
                kind: PatternKind::parse(pattern)?,
            })
        })
        .collect::<Result<Vec<_>, &'static str>>()?;
    Ok(Some(Entry {
        line: number,
        revoked,
        key: key.key_data().clone(),
        patterns,
    }))
}

/// The name a host is recorded under: bare for port 22, `[host]:port` otherwise.
fn host_port(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Whether `host` can be written as a known_hosts name without changing the file's meaning.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && !host.starts_with(['#', '@', '|'])
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ",*?![]".contains(c))
}

/// Whether the file is empty or ends with a newline, so that an append starts a line.
fn ends_with_newline(file: &File) -> io::Result<bool> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(true);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, length - 1)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests;
