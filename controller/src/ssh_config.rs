//! The subset of `~/.ssh/config` that Volley honours: `Host` blocks with `HostName`, `User`,
//! `Port` and `IdentityFile`, and `Include`.
//!
//! Operators already describe their hosts there, so a host that `ssh web1` reaches should be
//! reached the same way by Volley. Semantics follow OpenSSH's `ssh_config(5)`: for each keyword
//! the first value obtained wins, across all blocks that match the host in file order, while
//! `IdentityFile` values accumulate. `Match` blocks (other than `Match all`) are not evaluated:
//! they never apply. Every other keyword is valid ssh config that Volley does not use, and is
//! ignored without a word.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use volley_common::target::wildcard_match;

/// OpenSSH's limit on nested `Include`s, which also stops include loops.
const MAX_INCLUDE_DEPTH: usize = 16;

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
}

#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    #[error("ssh config {}: cannot read: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("ssh config {}:{line}: bad Port '{value}'", path.display())]
    BadPort {
        path: PathBuf,
        line: usize,
        value: String,
    },
    #[error("ssh config {}:{line}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The settings under one `Host` line (or before the first), up to the next `Host` or `Match`.
#[derive(Clone, Debug)]
struct Block {
    /// All must hold. Usually one `Host` line; a file included from inside a block adds its own
    /// `Host` lines to the enclosing block's condition, as OpenSSH does.
    conditions: Vec<Condition>,
    settings: Vec<Setting>,
}

#[derive(Clone, Debug)]
enum Condition {
    /// The patterns of a `Host` line: one must match, and no negated one may.
    Host(Vec<String>),
    /// A `Match` we do not evaluate.
    Never,
}

/// A value as written; `%` tokens and `~` are expanded at lookup, when the host is known.
#[derive(Clone, Debug)]
enum Setting {
    HostName(String),
    User(String),
    Port(u16),
    IdentityFile(String),
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

    /// Parses `text`; `origin` is the file it came from, for error messages.
    pub fn parse(text: &str, origin: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
        let mut config = SshConfig {
            home: home.to_path_buf(),
            blocks: Vec::new(),
        };
        config.parse_file(text, origin, &[], 0)?;
        config.blocks.retain(|block| !block.settings.is_empty());
        Ok(config)
    }

    /// Settings for `host`, the name as the operator wrote it. `local_user` stands for `%u`, and
    /// for `%r` when the config names no user.
    pub fn lookup(&self, host: &str, local_user: &str) -> SshHostConfig {
        let (mut hostname, mut user, mut port) = (None, None, None);
        let mut identity_files = Vec::new();
        let blocks = self.blocks.iter().filter(|block| block.applies(host));
        for setting in blocks.flat_map(|block| &block.settings) {
            match setting {
                Setting::HostName(value) => hostname = hostname.or(Some(value)),
                Setting::User(value) => user = user.or(Some(value)),
                Setting::Port(value) => port = port.or(Some(*value)),
                Setting::IdentityFile(value) => identity_files.push(value),
            }
        }

        // OpenSSH lowercases the host name before it stands for `%h`.
        let lowercase_host = host.to_ascii_lowercase();
        let hostname = hostname.map(|value| {
            expand_tokens(value, |token| {
                (token == 'h').then(|| lowercase_host.clone())
            })
        });
        let home = self.home.to_string_lossy();
        let remote_host = hostname.as_deref().unwrap_or(&lowercase_host);
        let port_text = port.unwrap_or(22).to_string();
        let value_of = |token| {
            Some(match token {
                'd' => home.to_string(),
                'u' => local_user.to_string(),
                'h' => remote_host.to_string(),
                'n' => host.to_string(),
                'p' => port_text.clone(),
                'r' => user.map_or(local_user, String::as_str).to_string(),
                _ => return None,
            })
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for value in identity_files {
            let path = self.identity_path(value, &value_of);
            // OpenSSH offers a file named twice only once.
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        SshHostConfig {
            hostname,
            user: user.cloned(),
            port,
            identity_files: paths,
        }
    }

    /// `~` is expanded before the `%` tokens, as OpenSSH does, so that `%d/...` and `~/...` both
    /// work and a `%` in the home directory's name is never taken for a token.
    fn identity_path(&self, value: &str, value_of: &impl Fn(char) -> Option<String>) -> PathBuf {
        if value == "~" {
            return self.home.clone();
        }
        if let Some(rest) = value.strip_prefix("~/") {
            return self.home.join(expand_tokens(rest, value_of));
        }
        let path = PathBuf::from(expand_tokens(value, value_of));
        // OpenSSH would leave a relative path relative to the working directory. Volley anchors
        // it in ~/.ssh, like Include, so that a run names the same key wherever it is started.
        if path.is_relative() {
            self.home.join(".ssh").join(path)
        } else {
            path
        }
    }

    fn parse_file(
        &mut self,
        text: &str,
        origin: &Path,
        outer: &[Condition],
        depth: usize,
    ) -> Result<(), SshConfigError> {
        self.start_block(outer.to_vec());
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let invalid = |reason: String| SshConfigError::Invalid {
                path: origin.to_path_buf(),
                line: line_number,
                reason,
            };
            let Some((keyword, rest)) = split_keyword(line) else {
                continue;
            };
            let keyword = keyword.to_ascii_lowercase();
            let setting = match keyword.as_str() {
                "host" => {
                    let patterns = arguments(rest).map_err(invalid)?;
                    if patterns.is_empty() {
                        return Err(invalid("Host needs at least one pattern".to_string()));
                    }
                    let mut conditions = outer.to_vec();
                    conditions.push(Condition::Host(patterns));
                    self.start_block(conditions);
                    continue;
                }
                "match" => {
                    let criteria = arguments(rest).map_err(invalid)?;
                    let mut conditions = outer.to_vec();
                    // `Match all` is the usual way back to global settings after a block; it is
                    // the one criterion we can evaluate exactly.
                    if !matches!(criteria.as_slice(), [all] if all.eq_ignore_ascii_case("all")) {
                        tracing::debug!(
                            "ssh config {}:{line_number}: skipping a Match block: Volley does not \
                             evaluate Match",
                            origin.display()
                        );
                        conditions.push(Condition::Never);
                    }
                    self.start_block(conditions);
                    continue;
                }
                "include" => {
                    let files = arguments(rest).map_err(invalid)?;
                    if files.is_empty() {
                        return Err(invalid("Include needs a file".to_string()));
                    }
                    self.include(&files, origin, line_number, depth)?;
                    continue;
                }
                "hostname" => {
                    let value = single_value("HostName", rest).map_err(invalid)?;
                    check_tokens("HostName", &value, "h").map_err(invalid)?;
                    Setting::HostName(value)
                }
                "user" => Setting::User(single_value("User", rest).map_err(invalid)?),
                "port" => {
                    let value = single_value("Port", rest).map_err(invalid)?;
                    match value.parse::<u16>() {
                        Ok(port) if port > 0 => Setting::Port(port),
                        _ => {
                            return Err(SshConfigError::BadPort {
                                path: origin.to_path_buf(),
                                line: line_number,
                                value,
                            });
                        }
                    }
                }
                "identityfile" => {
                    let value = single_value("IdentityFile", rest).map_err(invalid)?;
                    if value.starts_with('~') && value != "~" && !value.starts_with("~/") {
                        return Err(invalid(format!(
                            "IdentityFile '{value}': ~user paths are not supported"
                        )));
                    }
                    check_tokens("IdentityFile", &value, "dhnpru").map_err(invalid)?;
                    Setting::IdentityFile(value)
                }
                _ => continue,
            };
            if let Some(block) = self.blocks.last_mut() {
                block.settings.push(setting);
            }
        }
        Ok(())
    }

    /// Reads each included file into the current block's context, then carries on in it. Paths
    /// are taken literally (no globbing); a relative one is in ~/.ssh, as OpenSSH has it for user
    /// configs; a missing one is skipped, as OpenSSH's glob skips it.
    fn include(
        &mut self,
        files: &[String],
        origin: &Path,
        line: usize,
        depth: usize,
    ) -> Result<(), SshConfigError> {
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(SshConfigError::Invalid {
                path: origin.to_path_buf(),
                line,
                reason: format!("Include nested more than {MAX_INCLUDE_DEPTH} deep"),
            });
        }
        let enclosing = self
            .blocks
            .last()
            .map(|block| block.conditions.clone())
            .unwrap_or_default();
        for file in files {
            if file.contains(['*', '?', '[']) {
                tracing::debug!(
                    "ssh config {}:{line}: skipping Include {file}: Volley does not expand \
                     wildcards",
                    origin.display()
                );
                continue;
            }
            let path = match file.strip_prefix("~/") {
                Some(rest) => self.home.join(rest),
                None if Path::new(file).is_relative() => self.home.join(".ssh").join(file),
                None => PathBuf::from(file),
            };
            let Some(text) = read(&path)? else {
                tracing::debug!(
                    "ssh config {}:{line}: Include {} does not exist",
                    origin.display(),
                    path.display()
                );
                continue;
            };
            self.parse_file(&text, &path, &enclosing, depth + 1)?;
            // Lines after the Include belong to the block it appeared in.
            self.start_block(enclosing.clone());
        }
        Ok(())
    }

    fn start_block(&mut self, conditions: Vec<Condition>) {
        self.blocks.push(Block {
            conditions,
            settings: Vec::new(),
        });
    }
}

impl Block {
    fn applies(&self, host: &str) -> bool {
        self.conditions.iter().all(|condition| match condition {
            Condition::Never => false,
            Condition::Host(patterns) => host_matches(host, patterns),
        })
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

/// Splits a line into its keyword and the rest, as OpenSSH does: the keyword ends at a space, a
/// tab or `=`, and one `=` with spaces around it may separate it from the value. `None` for blank
/// lines and comments.
fn split_keyword(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find([' ', '\t', '=']).unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    Some((keyword, rest.trim_start_matches([' ', '\t'])))
}

/// Splits a value into arguments as OpenSSH's `argv_split` does: separated by spaces or tabs,
/// quoted with `"` or `'` (quotes may sit inside an argument), `\` escaping a quote, a backslash
/// or a space, and a `#` that starts an argument beginning a comment.
fn arguments(text: &str) -> Result<Vec<String>, String> {
    let mut arguments = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
        if matches!(chars.peek(), None | Some('#')) {
            return Ok(arguments);
        }
        let mut argument = String::new();
        let mut quote = None;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&next @ ('\'' | '"' | '\\')) => {
                        argument.push(next);
                        chars.next();
                    }
                    Some(' ') if quote.is_none() => {
                        argument.push(' ');
                        chars.next();
                    }
                    _ => argument.push('\\'),
                },
                ' ' | '\t' if quote.is_none() => break,
                '"' | '\'' if quote.is_none() => quote = Some(c),
                _ if quote == Some(c) => quote = None,
                _ => argument.push(c),
            }
        }
        if quote.is_some() {
            return Err("unterminated quote".to_string());
        }
        arguments.push(argument);
    }
}

/// The one value of a keyword that takes exactly one.
fn single_value(keyword: &str, rest: &str) -> Result<String, String> {
    let mut values = arguments(rest)?;
    match values.len() {
        1 if !values[0].is_empty() => Ok(values.remove(0)),
        0 | 1 => Err(format!("{keyword} needs a value")),
        _ => Err(format!("{keyword} takes one value")),
    }
}

/// Rejects `%` tokens outside `allowed` (and `%%`), as OpenSSH refuses unknown tokens, rather
/// than connecting with a name or key path that was never meant.
fn check_tokens(keyword: &str, value: &str, allowed: &str) -> Result<(), String> {
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some(token) if token == '%' || allowed.contains(token) => {}
                Some(token) => {
                    return Err(format!(
                        "{keyword} '{value}': token %{token} is not supported"
                    ));
                }
                None => return Err(format!("{keyword} '{value}': lone % at the end")),
            }
        }
    }
    Ok(())
}

/// Replaces `%%` and the tokens `value_of` knows; any other token is left as written (parsing
/// has already refused them).
fn expand_tokens(value: &str, value_of: impl Fn(char) -> Option<String>) -> String {
    let mut expanded = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            expanded.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => expanded.push('%'),
            Some(token) => match value_of(token) {
                Some(value) => expanded.push_str(&value),
                None => {
                    expanded.push('%');
                    expanded.push(token);
                }
            },
            None => expanded.push('%'),
        }
    }
    expanded
}

#[cfg(test)]
mod tests;
