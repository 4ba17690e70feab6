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

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_encoding::Encode;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

/// What `known_hosts` says about the key a host presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host holds this very key.
    Known,
    /// No line for this host holds a key of this algorithm.
    Unknown,
    /// A line for this host holds another key of the same algorithm: possibly an attack.
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
        KnownHosts {
            path: path.to_path_buf(),
            entries: RwLock::new(entries),
            append: Mutex::new(()),
            scan_cache: Mutex::default(),
            skipped,
        }
    }

    /// Checks the key `host` presented. `host` is the name or address dialled; entries for port
    /// 22 are written bare, those for other ports as `[host]:port`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let key = key.key_data();
        let name = host_port(host, port);
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let mut known = false;
        let mut changed = None;
        for entry in entries.matching(&name, &self.scanned_matches(&entries, &name)) {
            if entry.revoked {
                // A revoked key is refused whatever other lines say.
                if entry.key == *key {
                    return Verdict::Revoked { line: entry.line };
                }
            } else if entry.key == *key {
                known = true;
            } else if changed.is_none() && entry.key.algorithm() == key.algorithm() {
                changed = Some(entry.line);
            }
        }
        match (known, changed) {
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
    /// creating it (mode 0600, missing directories 0700) if needed, and remembers it. A key that
    /// is already known is not written again; a revoked key stays revoked.
    ///
    /// Many hosts of one run may learn at once: appends are serialised by a mutex, and each line
    /// goes out in a single `write_all` on an `O_APPEND` descriptor, under an advisory lock, so
    /// that other processes appending to the same file do not interleave with it.
    pub fn learn(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), KnownHostsError> {
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
        let line = format!("{name} {} {}\n", algorithm.as_str(), BASE64.encode(&blob));

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
        Ok(())
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

/// OpenSSH's `match_pattern`: `*` matches any run of bytes, `?` exactly one.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Barrier;

    use russh::keys::EcdsaCurve;
    use russh::keys::ssh_key::public::Ed25519PublicKey;

    // Made with `ssh-keygen -t ... -C ''`; fingerprints from `ssh-keygen -lf`.
    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdbTLy94mjn+XBcuF9rTg9Abd/T5315Iq46HvIHN26W";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5Nb5j/Z62qO2Od9TyRJLrnGwEU479Wb2jQtyjOyuKs";
    const E: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKrTkwxWwH+KSS6uyAkwGcZ0Ea8d8rj0YSSI0doCA128QFaWeX1SrqKGSPuaLvtgL2PSNcg0xUadkTBf4YJiZ+o=";
    const R: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC6vbKZWGjJk0tY+UVhrnAZ0Lnztov8ZR+7Es++zcCBaqJOk4XKJwHlSYDY5yHpp0YYbCg5hi84pblwgjUkPUgVHUXjpbBiLbV7oeOjM59WwIoBg69Zvxb9qAgZTdM4L9+ARBB3f30CDnI9L97pzTQDoZEj4d89wkvDJaX5lhynFST6gI6yaynUGSuonNuHSUs33ktB6nB21EE9utdX1fMlbvac8TPd8vC3cmLWhQLJ+H2F38TdSfDExNQVWpYH2AA2N4+6YZ4u0X8xQzjr4tV1MvroOyXYYv8Ihav8vWFRkg7YxN11+WW8ufGyv2u4HwrjAjBGFivqQdU9Qxs3tUIN";
    // `ssh-keygen -H` of "web1.example.com A" and "[web2.example.com]:2222 B".
    const HASHED: &str = "|1|kU9c4Jfd3L4rCYjD7KBOrWRtizI=|lP4o0PDHwQCnFakrYbwH9jxTgfE= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdbTLy94mjn+XBcuF9rTg9Abd/T5315Iq46HvIHN26W\n\
        |1|jSX0Y/sPNNOYWXYN73kz5WfA8II=|616XmPOh/njF2lda0qnHooL5D9w= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5Nb5j/Z62qO2Od9TyRJLrnGwEU479Wb2jQtyjOyuKs\n";

    fn key(openssh: &str) -> PublicKey {
        PublicKey::from_openssh(openssh).unwrap()
    }

    /// A distinct Ed25519 key per `n`; the bytes need not be a valid curve point to be compared.
    fn numbered_key(n: u32) -> PublicKey {
        let mut bytes = [7u8; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        PublicKey::from(Ed25519PublicKey(bytes))
    }

    /// Replaces `{A}`, `{B}`, `{E}`, `{R}` with the keys, and `{A:tab}` with A's fields
    /// tab-separated.
    fn expand(text: &str) -> String {
        text.replace("{A:tab}", &A.replace(' ', "\t"))
            .replace("{A}", A)
            .replace("{B}", B)
            .replace("{E}", E)
            .replace("{R}", R)
    }

    fn known_hosts(text: &str) -> KnownHosts {
        KnownHosts::parse(Path::new("/test/known_hosts"), expand(text).as_bytes())
    }

    /// A hashed name as `ssh-keygen -H` writes it, with a fixed salt.
    fn hashed(name: &str) -> String {
        let salt = [0x5a_u8; 20];
        let digest = Hmac::<Sha1>::new_from_slice(&salt)
            .unwrap()
            .chain_update(name)
            .finalize()
            .into_bytes();
        format!("|1|{}|{}", BASE64.encode(&salt), BASE64.encode(&digest))
    }

    #[test]
    fn verdicts() {
        use Verdict::*;
        #[track_caller]
        fn check(text: &str, host: &str, port: u16, presented: &str, expected: Verdict) {
            let actual = known_hosts(text).check(host, port, &key(presented));
            assert_eq!(actual, expected, "{host}:{port} against {text:?}");
        }
        check("web1 {A}", "web1", 22, A, Known);
        check("Web1.Example.COM {A}", "WEB1.example.com", 22, A, Known);
        check("web1,web2,10.0.0.2 {A}", "10.0.0.2", 22, A, Known);
        check("web1,web1 {A}", "web1", 22, A, Known);
        check("web1 {A}", "web2", 22, A, Unknown);
        check("web1 {A}", "web", 22, A, Unknown);
        check("", "web1", 22, A, Unknown);
        // Ports: bare names are port 22 only, `[h]:p` that port only.
        check("[web1]:2222 {A}", "web1", 2222, A, Known);
        check("[web1]:2222 {A}", "web1", 22, A, Unknown);
        check("web1 {A}", "web1", 2222, A, Unknown);
        check("[web1]:22 {A}", "web1", 22, A, Unknown);
        check("[::1]:2222 {A}", "::1", 2222, A, Known);
        check("::1 {A}", "::1", 22, A, Known);
        // Hashed names, as written by `ssh-keygen -H`.
        check(HASHED, "web1.example.com", 22, A, Known);
        check(HASHED, "WEB1.example.com", 22, A, Known);
        check(HASHED, "web2.example.com", 2222, B, Known);
        check(HASHED, "web2.example.com", 22, B, Unknown);
        check(HASHED, "web1.example.com", 22, B, Changed { line: 1 });
        // Wildcards, also inside brackets.
        check("*.example.com {A}", "db.example.com", 22, A, Known);
        check("*.example.com {A}", "example.com", 22, A, Unknown);
        check("?eb1 {A}", "web1", 22, A, Known);
        check("?eb1 {A}", "wweb1", 22, A, Unknown);
        check("w*1*2 {A}", "w1x12", 22, A, Known);
        check("w*1*2 {A}", "w1x21", 22, A, Unknown);
        check("* {A}", "web1", 2222, A, Known);
        check("[10.0.0.*]:2222 {A}", "10.0.0.7", 2222, A, Known);
        check("[10.0.0.*]:2222 {A}", "10.0.0.7", 22, A, Unknown);
        check("[10.0.0.*]:2222 {A}", "10.0.1.7", 2222, A, Unknown);
        // A matching negation excludes the line, wherever it stands.
        check(
            "*.example.com,!db.example.com {A}",
            "db.example.com",
            22,
            A,
            Unknown,
        );
        check(
            "*.example.com,!db.example.com {A}",
            "web.example.com",
            22,
            A,
            Known,
        );
        check("!web1,web1 {A}", "web1", 22, A, Unknown);
        check("web1,!web1 {A}", "web1", 22, A, Unknown);
        check("web1,!db* {A}", "web1", 22, A, Known);
        check("!web1 {A}", "web2", 22, A, Unknown);
        // Layout: tabs, comments, blank lines, CRLF, trailing comments.
        check("web1\t\t{A:tab}\t# a comment", "web1", 22, A, Known);
        check("  \tweb1 {A}", "web1", 22, A, Known);
        check(
            "# web1 {A}\n\n   # indented\nweb1 {B}",
            "web1",
            22,
            A,
            Changed { line: 4 },
        );
        check("web1 {A}\r\n", "web1", 22, A, Known);
        check("web1 {A} root@somewhere else", "web1", 22, A, Known);
        // Changed only for a different key of the same algorithm.
        check("web1 {B}", "web1", 22, A, Changed { line: 1 });
        check("web1 {E}", "web1", 22, A, Unknown);
        check("web1 {E}\nweb1 {R}", "web1", 22, A, Unknown);
        check("web1 {B}\nweb1 {A}", "web1", 22, A, Known);
        check(
            "x {B}\nweb1 {E}\n* {B}\nweb1 {B}",
            "web1",
            22,
            A,
            Changed { line: 3 },
        );
        check("web1 {R}", "web1", 22, R, Known);
        check("web1 {E}", "web1", 22, E, Known);
        // Revoked wins over anything, for matching hosts only, and is no "changed" key.
        check(
            "web1 {A}\n@revoked web1 {A}",
            "web1",
            22,
            A,
            Revoked { line: 2 },
        );
        check(
            "@revoked * {A}\nweb1 {A}",
            "web1",
            22,
            A,
            Revoked { line: 1 },
        );
        check("@revoked web2 {A}\nweb1 {A}", "web1", 22, A, Known);
        check("@revoked web1 {B}\nweb1 {A}", "web1", 22, A, Known);
        check("@revoked web1 {B}", "web1", 22, A, Unknown);
        check(
            "@revoked\tweb1\t{A:tab}",
            "web1",
            22,
            A,
            Revoked { line: 1 },
        );
        // Lines we do not use.
        check(
            "@cert-authority *.example.com {A}",
            "a.example.com",
            22,
            A,
            Unknown,
        );
        check(
            "@cert-authority *.example.com {B}",
            "a.example.com",
            22,
            A,
            Unknown,
        );
        check("@bogus web1 {B}\nweb1 {A}", "web1", 22, A, Known);
    }

    #[test]
    fn generated_hashed_names() {
        for (written, host, port, expected) in [
            ("web1", "web1", 22, Verdict::Known),
            ("web1", "WEB1", 22, Verdict::Known),
            ("web1", "web1", 2222, Verdict::Unknown),
            ("[web1]:2222", "web1", 2222, Verdict::Known),
            ("[web1]:2222", "web1", 22, Verdict::Unknown),
            ("[10.1.2.3]:2200", "10.1.2.3", 2200, Verdict::Known),
        ] {
            let text = format!("{} {A}\n", hashed(written));
            let actual = known_hosts(&text).check(host, port, &key(A));
            assert_eq!(actual, expected, "{host}:{port} against hashed {written}");
        }
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let blob_of_a = A.split(' ').nth(1).unwrap();
        let text = format!(
            "web1\nweb1 ssh-ed25519\nweb1 ssh-ed25519 notbase64!!\nweb1 ssh-rsa {blob_of_a}\n\
             @bogus web1 {{A}}\n@revoked\n|1|nosalt {{A}}\n|1|!!|!! {{A}}\nweb1 {{A}}\n"
        );
        let mut bytes = expand(&text).into_bytes();
        bytes.extend_from_slice(b"web1 \xff\xfe {A}\n");
        let known = KnownHosts::parse(Path::new("kh"), &bytes);
        assert_eq!(known.skipped, 9);
        assert_eq!(known.check("web1", 22, &key(A)), Verdict::Known);
    }

    #[test]
    fn algorithms() {
        let rsa = [Some(HashAlg::Sha512), Some(HashAlg::Sha256), None]
            .map(|hash| Algorithm::Rsa { hash });
        let p256 = Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        };
        let text = "web1 {E}\nweb1,web3 {A}\n*.example.com {R}\n@revoked web2 {B}\nweb1 {B}\n[web1]:2222 {R}";
        let known = known_hosts(text);
        for (host, port, expected) in [
            ("web1", 22, vec![p256.clone(), Algorithm::Ed25519]),
            ("web3", 22, vec![Algorithm::Ed25519]),
            ("a.example.com", 22, rsa.to_vec()),
            ("web1", 2222, rsa.to_vec()),
            ("web2", 22, vec![]),
            ("nowhere", 22, vec![]),
        ] {
            assert_eq!(known.algorithms(host, port), expected, "{host}:{port}");
        }
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        assert_eq!(
            fingerprint(&key(A)),
            "SHA256:/VIanV3QlnBSoek4Pu/fdlIobug+tm8wrXQsHvvIEsk"
        );
        assert_eq!(
            fingerprint(&key(E)),
            "SHA256:bdGlMp7tVg1UUz6EpqZ1Tg87fYHXrpyVvDFCSFEPda0"
        );
        assert_eq!(
            fingerprint(&key(R)),
            "SHA256:jpkIj/F+H6o6BvB+jn8A4ZIs9cWP/oX3JAtXAscRXNw"
        );
    }

    #[test]
    fn many_lines_each_host_finds_its_own() {
        let mut text = String::new();
        for n in 0..1200_u32 {
            let line = numbered_key(n).to_openssh().unwrap();
            let host = match n % 3 {
                0 => format!("host{n}"),
                1 => format!("[host{n}]:2222"),
                _ => hashed(&format!("host{n}")),
            };
            text.push_str(&format!("{host} {line}\n"));
        }
        text.push_str("*.wild {A}\n");
        let known = known_hosts(&text);
        for n in 0..1200_u32 {
            let port = if n % 3 == 1 { 2222 } else { 22 };
            let host = format!("host{n}");
            assert_eq!(
                known.check(&host, port, &numbered_key(n)),
                Verdict::Known,
                "{host}"
            );
            let other = numbered_key(n + 1);
            assert_eq!(
                known.check(&host, port, &other),
                Verdict::Changed {
                    line: n as usize + 1
                }
            );
        }
    }

    #[test]
    fn missing_file_knows_no_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        let known = KnownHosts::load(&path).unwrap();
        assert_eq!(known.path(), path);
        assert_eq!(known.check("web1", 22, &key(A)), Verdict::Unknown);
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let error = KnownHosts::load(dir.path()).unwrap_err();
        assert!(matches!(error, KnownHostsError::Read { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "known_hosts {}: cannot read: ",
                dir.path().display()
            )),
            "{message}"
        );
        assert!(
            !message.contains('\n') && !message.ends_with('.'),
            "{message}"
        );
    }

    #[test]
    fn learn_then_check_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let known = KnownHosts::load(&path).unwrap();
        known.learn("Web1", 22, &key(A)).unwrap();
        known.learn("web2", 2222, &key(R)).unwrap();
        // Learning a known key again writes nothing.
        known.learn("web1", 22, &key(A)).unwrap();
        assert_eq!(known.check("web1", 22, &key(A)), Verdict::Known);
        assert_eq!(known.check("web2", 2222, &key(R)), Verdict::Known);
        assert_eq!(
            known.check("web1", 22, &key(B)),
            Verdict::Changed { line: 1 }
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("web1 {A}\n[web2]:2222 {R}\n")
        );
        let reloaded = KnownHosts::load(&path).unwrap();
        assert_eq!(reloaded.check("web2", 2222, &key(R)), Verdict::Known);
        assert_eq!(reloaded.skipped, 0);
    }

    #[test]
    fn learning_a_revoked_key_leaves_it_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, format!("@revoked * {A}\n")).unwrap();
        let known = KnownHosts::load(&path).unwrap();
        known.learn("web1", 22, &key(A)).unwrap();
        assert_eq!(
            known.check("web1", 22, &key(A)),
            Verdict::Revoked { line: 1 }
        );
    }

    #[test]
    fn learn_creates_private_file_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/known_hosts");
        KnownHosts::load(&path)
            .unwrap()
            .learn("web1", 22, &key(A))
            .unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
    }

    #[test]
    fn learn_after_a_last_line_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, format!("# keys\nweb1 {A}")).unwrap();
        let known = KnownHosts::load(&path).unwrap();
        known.learn("web2", 22, &key(B)).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("# keys\nweb1 {A}\nweb2 {B}\n")
        );
        // The learned line is numbered as it now stands in the file.
        assert_eq!(
            known.check("web2", 22, &key(A)),
            Verdict::Changed { line: 3 }
        );
        let reloaded = KnownHosts::load(&path).unwrap();
        assert_eq!(
            reloaded.check("web2", 22, &key(A)),
            Verdict::Changed { line: 3 }
        );
        assert_eq!(reloaded.check("web1", 22, &key(A)), Verdict::Known);
    }

    #[test]
    fn learn_refuses_names_that_would_change_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownHosts::load(&dir.path().join("known_hosts")).unwrap();
        for host in [
            "", "a b", "a,b", "*.x", "h?", "!h", "#h", "@h", "|1|x", "[h]:22", "a\nb",
        ] {
            let error = known.learn(host, 22, &key(A)).unwrap_err();
            assert!(
                matches!(error, KnownHostsError::BadHost { .. }),
                "{host:?}: {error:?}"
            );
        }
        assert!(!dir.path().join("known_hosts").exists());
    }

    #[test]
    fn many_threads_learning_at_once_write_whole_lines() {
        const THREADS: u32 = 200;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, format!("web1 {A}")).unwrap();
        let known = Arc::new(KnownHosts::load(&path).unwrap());
        let start = Arc::new(Barrier::new(THREADS as usize));
        let threads: Vec<_> = (0..THREADS)
            .map(|n| {
                let (known, start) = (known.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    known.learn(&format!("host{n}"), 22, &numbered_key(n))
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), THREADS as usize + 1);
        let reloaded = KnownHosts::load(&path).unwrap();
        assert_eq!(reloaded.skipped, 0);
        for n in 0..THREADS {
            let host = format!("host{n}");
            assert_eq!(
                reloaded.check(&host, 22, &numbered_key(n)),
                Verdict::Known,
                "{host}"
            );
        }
    }

    #[test]
    fn is_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<KnownHosts>();
    }
}
