//! OpenSSH's client config as Volley reads it (`~/.ssh/config`, `-F FILE`, `-o KEY=VALUE`):
//! what it honours, and the refusal of what it does not.
//!
//! Operators already describe their hosts there, so a host that `ssh web1` reaches should be
//! reached the same way by Volley, or not at all: a directive that would send Volley elsewhere,
//! or make it trust another key or present other credentials than `ssh` does, and that Volley
//! does not implement, is an error when it applies to a targeted host, naming the file, the line
//! and the directive. [`directives`] is the table of what is honoured, refused and ignored.
//!
//! Semantics follow `ssh_config(5)`: blocks apply in file order, for each keyword the first
//! value obtained wins (`ProxyJump` and `ProxyCommand` share one slot), and `IdentityFile`
//! values accumulate. Layout: [`syntax`] (lines, arguments, `%` tokens), `parse` (lines into
//! blocks, `Include`), [`matching`] (`Match`), [`include`] (`Include` globs), [`jump`]
//! (`ProxyJump` values), `options` (`-o`).

mod directives;
mod include;
mod jump;
mod matching;
mod options;
mod parse;
mod syntax;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use volley_common::target::wildcard_match;

use self::directives::Directive;
pub use self::jump::{JumpHop, parse_jumps};
use self::matching::{MatchLine, Subject, Verdict, list_matches};
use self::syntax::{expand_tokens, expand_variables};

/// A parsed ssh config, ready to answer for any host.
#[derive(Clone, Debug, Default)]
pub struct SshConfig {
    home: PathBuf,
    blocks: Vec<Block>,
}

/// What the config says about one host; `None` or empty where it says nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SshHostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly yes`: of the agent's keys, only those of `identity_files`.
    pub identities_only: bool,
    /// The jump hosts, in the order they are visited; `Some(empty)` for `ProxyJump none`.
    pub proxy_jump: Option<Vec<JumpHop>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    #[error("ssh config {}: cannot read: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("ssh config {}:{line}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("ssh config {}:{line}: {keyword} applies to {host}, but {why}", path.display())]
    Refused {
        path: PathBuf,
        line: usize,
        keyword: String,
        host: String,
        why: &'static str,
    },
    #[error(
        "ssh config {}:{line}: unknown directive {keyword} applies to {host} (list it in \
         IgnoreUnknown to have it skipped)",
        path.display()
    )]
    Unknown {
        path: PathBuf,
        line: usize,
        keyword: String,
        host: String,
    },
    #[error(
        "ssh config {}:{line}: this Match block may apply to {host}, but volley cannot evaluate \
         '{criterion}' (only all, host, originalhost and localuser)",
        path.display()
    )]
    Match {
        path: PathBuf,
        line: usize,
        criterion: String,
        host: String,
    },
    #[error("-o '{option}': {reason}")]
    Option { option: String, reason: String },
}

/// The settings under one `Host` or `Match` line (or before the first), up to the next one or
/// an `Include`, all from one file.
#[derive(Clone, Debug)]
struct Block {
    /// All must hold. Usually one `Host` or `Match` line; a file included from inside a block
    /// adds its own lines to the enclosing block's condition, as OpenSSH does.
    conditions: Vec<Condition>,
    origin: Arc<Path>,
    lines: Vec<Line>,
}

#[derive(Clone, Debug)]
enum Condition {
    /// The patterns of a `Host` line: one must match, and no negated one may.
    Host(Vec<String>),
    Match {
        origin: Arc<Path>,
        line: usize,
        criteria: MatchLine,
    },
}

#[derive(Clone, Debug)]
struct Line {
    number: usize,
    setting: Setting,
}

/// A value as written; `%` tokens and `~` are expanded at lookup, when the host is known.
#[derive(Clone, Debug)]
enum Setting {
    HostName(String),
    User(String),
    Port(u16),
    IdentityFile(String),
    IdentitiesOnly(bool),
    ProxyJump(String),
    /// Refused unless `none`, and only if it wins the slot it shares with `ProxyJump`.
    ProxyCommand(String),
    IgnoreUnknown(String),
    /// A directive the table refuses, with its value.
    Refused(&'static Directive, String),
    /// A keyword the table does not know, as written.
    Unknown(String),
}

/// What the blocks applying to a host said so far, first value first.
#[derive(Default)]
struct Found<'a> {
    hostname: Option<&'a str>,
    user: Option<&'a str>,
    port: Option<u16>,
    /// Each with the file and line that gave it, for an error.
    identity_files: Vec<(&'a str, &'a Path, usize)>,
    identities_only: Option<bool>,
    proxy: Option<(&'a Setting, &'a Path, usize)>,
    ignore_unknown: Option<&'a str>,
    /// Refused keywords met, lowercased: only the first occurrence of one counts.
    refused: Vec<String>,
}

impl SshConfig {
    pub fn empty() -> SshConfig {
        SshConfig::default()
    }

    /// Reads `path`. A missing file is an empty config; an unreadable one is an error naming it.
    /// `home` stands for `~` and anchors relative `Include` and `IdentityFile` paths.
    pub fn load(path: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
        match read(path)? {
            Some(text) => SshConfig::parse(&text, path, home),
            None => Ok(SshConfig {
                home: home.to_path_buf(),
                blocks: Vec::new(),
            }),
        }
    }

    /// Settings for `host`, the name as the operator wrote it. `local_user` stands for `%u`, and
    /// for `%r` when the config names no user. A refused directive, an unknown one or a `Match`
    /// Volley cannot evaluate, in a block that applies to `host`, is an error.
    pub fn lookup(&self, host: &str, local_user: &str) -> Result<SshHostConfig, SshConfigError> {
        // OpenSSH lowercases the host name before it stands for `%h`.
        let lowercase_host = host.to_ascii_lowercase();
        let expand_hostname = |value: &str| {
            expand_tokens(value, |token| {
                (token == 'h').then(|| lowercase_host.clone())
            })
        };
        let mut found = Found::default();
        for block in &self.blocks {
            let hostname = found.hostname.map(expand_hostname);
            let subject = Subject {
                host: hostname.as_deref().unwrap_or(host),
                original: host,
                local_user,
            };
            if !block.applies(&subject)? {
                continue;
            }
            for line in &block.lines {
                found.take(line, &block.origin, host)?;
            }
        }

        let hostname = found.hostname.map(expand_hostname);
        let home = self.home.to_string_lossy();
        let remote_host = hostname.as_deref().unwrap_or(&lowercase_host);
        let port_text = found.port.unwrap_or(22).to_string();
        let value_of = |token| {
            Some(match token {
                'd' => home.to_string(),
                'u' => local_user.to_string(),
                'h' => remote_host.to_string(),
                'n' => host.to_string(),
                'p' => port_text.clone(),
                'r' => found.user.unwrap_or(local_user).to_string(),
                _ => return None,
            })
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for (value, origin, line) in &found.identity_files {
            let path =
                self.identity_path(value, &value_of)
                    .map_err(|reason| SshConfigError::Invalid {
                        path: origin.to_path_buf(),
                        line: *line,
                        reason: format!("IdentityFile '{value}': {reason}"),
                    })?;
            // OpenSSH offers a file named twice only once.
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        let proxy_jump = match found.proxy {
            Some((Setting::ProxyJump(value), origin, line)) => Some(
                parse_jumps(&expand_tokens(value, value_of)).map_err(|reason| {
                    SshConfigError::Invalid {
                        path: origin.to_path_buf(),
                        line,
                        reason: format!("ProxyJump {reason}"),
                    }
                })?,
            ),
            // `ProxyCommand none` took the slot: no proxy at all.
            Some(_) => Some(Vec::new()),
            None => None,
        };
        Ok(SshHostConfig {
            hostname,
            user: found.user.map(str::to_string),
            port: found.port,
            identity_files: paths,
            identities_only: found.identities_only.unwrap_or(false),
            proxy_jump,
        })
    }

    /// `~` is expanded first, then `${VARIABLE}`s from the environment, then the `%` tokens, as
    /// OpenSSH does, so that `%d/...` and `~/...` both work and a `%` in the home directory's
    /// name is never taken for a token. A variable that is not set is an error, as in OpenSSH.
    fn identity_path(
        &self,
        value: &str,
        value_of: &impl Fn(char) -> Option<String>,
    ) -> Result<PathBuf, String> {
        if value == "~" {
            return Ok(self.home.clone());
        }
        let expand = |value: &str| -> Result<String, String> {
            Ok(expand_tokens(&expand_variables(value)?, value_of))
        };
        if let Some(rest) = value.strip_prefix("~/") {
            return Ok(self.home.join(expand(rest)?));
        }
        let path = PathBuf::from(expand(value)?);
        // OpenSSH would leave a relative path relative to the working directory. Volley anchors
        // it in ~/.ssh, like Include, so that a run names the same key wherever it is started.
        Ok(if path.is_relative() {
            self.home.join(".ssh").join(path)
        } else {
            path
        })
    }
}

impl<'a> Found<'a> {
    fn take(&mut self, line: &'a Line, origin: &'a Path, host: &str) -> Result<(), SshConfigError> {
        match &line.setting {
            Setting::HostName(value) => _ = self.hostname.get_or_insert(value),
            Setting::User(value) => _ = self.user.get_or_insert(value),
            Setting::Port(value) => _ = self.port.get_or_insert(*value),
            Setting::IdentityFile(value) => self.identity_files.push((value, origin, line.number)),
            Setting::IdentitiesOnly(value) => _ = self.identities_only.get_or_insert(*value),
            Setting::IgnoreUnknown(value) => _ = self.ignore_unknown.get_or_insert(value),
            Setting::ProxyJump(_) | Setting::ProxyCommand(_) if self.proxy.is_some() => {}
            Setting::ProxyJump(_) => self.proxy = Some((&line.setting, origin, line.number)),
            Setting::ProxyCommand(value) => {
                let directive = directives::directive("ProxyCommand");
                let treatment = directive.map(|directive| directive.treatment);
                if !treatment.is_some_and(|treatment| treatment.is_harmless(value)) {
                    return Err(refused(origin, line.number, "ProxyCommand", host));
                }
                self.proxy = Some((&line.setting, origin, line.number));
            }
            Setting::Refused(directive, value) => {
                let keyword = directive.keyword.to_ascii_lowercase();
                if self.refused.contains(&keyword) {
                    return Ok(());
                }
                self.refused.push(keyword);
                if !directive.treatment.is_harmless(value) {
                    return Err(refused(origin, line.number, directive.keyword, host));
                }
            }
            Setting::Unknown(keyword) => {
                let ignored = self.ignore_unknown.is_some_and(|list| {
                    list_matches(&keyword.to_ascii_lowercase(), &list.to_ascii_lowercase())
                });
                if !ignored {
                    return Err(SshConfigError::Unknown {
                        path: origin.to_path_buf(),
                        line: line.number,
                        keyword: keyword.clone(),
                        host: host.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn refused(origin: &Path, line: usize, keyword: &str, host: &str) -> SshConfigError {
    let why = match directives::directive(keyword).map(|directive| directive.treatment) {
        Some(directives::Treatment::Refused { why, .. }) => why,
        _ => "volley does not support it",
    };
    SshConfigError::Refused {
        path: origin.to_path_buf(),
        line,
        keyword: keyword.to_string(),
        host: host.to_string(),
        why,
    }
}

impl Block {
    /// Whether the block applies; an error when that hangs on a `Match` criterion Volley cannot
    /// evaluate (a block is kept only if it has settings, so it would matter).
    fn applies(&self, subject: &Subject<'_>) -> Result<bool, SshConfigError> {
        for condition in &self.conditions {
            match condition {
                Condition::Host(patterns) => {
                    if !host_matches(subject.original, patterns) {
                        return Ok(false);
                    }
                }
                Condition::Match {
                    origin,
                    line,
                    criteria,
                } => match criteria.evaluate(subject) {
                    Verdict::Applies => {}
                    Verdict::DoesNotApply => return Ok(false),
                    Verdict::Unknown(criterion) => {
                        return Err(SshConfigError::Match {
                            path: origin.to_path_buf(),
                            line: *line,
                            criterion,
                            host: subject.original.to_string(),
                        });
                    }
                },
            }
        }
        Ok(true)
    }
}

/// OpenSSH's `Host` rule: some pattern matches and no negated one does. Like OpenSSH, it compares
/// with the host as written, case-sensitively.
fn host_matches(host: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(negated) if wildcard_match(negated.as_bytes(), host.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= wildcard_match(pattern.as_bytes(), host.as_bytes()),
        }
    }
    matched
}

/// The file's text, `None` if it does not exist.
fn read(path: &Path) -> Result<Option<String>, SshConfigError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(SshConfigError::Read {
            path: path.to_path_buf(),
            error,
        }),
    }
}

#[cfg(test)]
mod tests;
