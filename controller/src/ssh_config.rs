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

    const HOME: &str = "/home/op";
    const ORIGIN: &str = "/home/op/.ssh/config";

    /// The settings in one line, `None`s left out: `hostname=h user=u port=22 id=/a id=/b`.
    fn describe(config: &SshHostConfig) -> String {
        let mut parts = Vec::new();
        parts.extend(
            config
                .hostname
                .iter()
                .map(|value| format!("hostname={value}")),
        );
        parts.extend(config.user.iter().map(|value| format!("user={value}")));
        parts.extend(config.port.iter().map(|value| format!("port={value}")));
        let ids = config.identity_files.iter();
        parts.extend(ids.map(|path| format!("id={}", path.display())));
        parts.join(" ")
    }

    #[track_caller]
    fn check(text: &str, host: &str, expected: &str) {
        let config = SshConfig::parse(text, Path::new(ORIGIN), Path::new(HOME)).unwrap();
        let actual = describe(&config.lookup(host, "op"));
        assert_eq!(actual, expected, "{host} in {text:?}");
    }

    #[test]
    fn lookups() {
        check("", "web1", "");
        // The first value obtained wins, across blocks in file order.
        let text = "Host web1\n User a\nHost *\n User b\n Port 2200\n Port 2201";
        check(text, "web1", "user=a port=2200");
        check(text, "db1", "user=b port=2200");
        // Lines before any Host apply to every host, and come first.
        check(
            "User pre\nHost web1\n User a\n Port 2",
            "web1",
            "user=pre port=2",
        );
        check("User pre\nHost web1\n User a", "db1", "user=pre");
        // Patterns: several per line, wildcards, negations; compared case-sensitively.
        check("Host a web1 c\n User u", "web1", "user=u");
        check("Host *.example.com\n User w", "db.example.com", "user=w");
        check("Host *.example.com\n User w", "example.com", "");
        check("Host web?\n User w", "web1", "user=w");
        check("Host web?\n User w", "web10", "");
        check("Host * !db*\n User u", "web1", "user=u");
        check("Host * !db*\n User u", "db1", "");
        check("Host !db1 *\n User u", "db1", "");
        check("Host !db1\n User u", "web1", "");
        check("Host web1\n User u", "WEB1", "");
        // Keywords in any case, `=` with or without spaces, tabs, CRLF.
        check(
            "HOST web1\n uSeR u\n PORT 22\n hostNAME h",
            "web1",
            "hostname=h user=u port=22",
        );
        check(
            "Host=web1\nUser=a\nPort = 2200\nHostName =h",
            "web1",
            "hostname=h user=a port=2200",
        );
        check("Host\tweb1\r\n\tUser\tu\r\n", "web1", "user=u");
        // Quotes and escapes, as OpenSSH splits arguments.
        check("Host \"web1\"\n User \"a b\"", "web1", "user=a b");
        check(
            "IdentityFile \"~/my keys/id\"",
            "h",
            "id=/home/op/my keys/id",
        );
        check("IdentityFile '/x y/z'", "h", "id=/x y/z");
        check("IdentityFile /a\"b c\"d", "h", "id=/ab cd");
        check("IdentityFile /a\\ b", "h", "id=/a b");
        check("User \"\\\"q\\\"\"", "h", "user=\"q\"");
        // Comments.
        check(
            "# c\nHost web1 # trailing\n  # indented\n User u # comment",
            "web1",
            "user=u",
        );
        check("User a#b", "h", "user=a#b");
        // Match blocks never apply, except `Match all`.
        check(
            "Match host web1\n User m\nHost *\n User u",
            "web1",
            "user=u",
        );
        check(
            "Match exec true\n User x\nMatch all\n User y",
            "web1",
            "user=y",
        );
        let text = "Host db\n User d\nMatch all\n Port 2200";
        check(text, "db", "user=d port=2200");
        check(text, "web1", "port=2200");
        check("Host web1\n User a\nMatch All\n User b", "web2", "user=b");
        // HostName tokens: %h is the host, lowercased as OpenSSH does.
        check(
            "Host *\n HostName %h.internal",
            "web1",
            "hostname=web1.internal",
        );
        check(
            "Host *\n HostName %h.internal",
            "WEB1",
            "hostname=web1.internal",
        );
        check("HostName a%%b", "h", "hostname=a%b");
        // Keywords we do not use, with or without values.
        check(
            "Host *\n ForwardAgent yes\n ProxyJump b\n Compression\n NewThing x\n User u",
            "h",
            "user=u",
        );
    }

    #[test]
    fn identity_files() {
        let text = "Host *\n User remote\n HostName h.example.com\n Port 2200\n\
                    IdentityFile ~/.ssh/id_%h_%r_%u_%n_%p\n IdentityFile %d/k\n\
                    IdentityFile relative\n IdentityFile /abs/%%x\n IdentityFile ~";
        let expected = "hostname=h.example.com user=remote port=2200 \
                        id=/home/op/.ssh/id_h.example.com_remote_op_web1_2200 id=/home/op/k \
                        id=/home/op/.ssh/relative id=/abs/%x id=/home/op";
        check(text, "web1", expected);
        // Without HostName, User or Port: the host, the local user, 22.
        check("IdentityFile ~/%h-%r-%p", "Web1", "id=/home/op/web1-op-22");
        // Values accumulate across blocks; a file named twice is offered once.
        let text = "Host web1\n IdentityFile ~/a\nHost *\n IdentityFile ~/b\n IdentityFile ~/a";
        check(text, "web1", "id=/home/op/a id=/home/op/b");
        check(text, "db1", "id=/home/op/b id=/home/op/a");
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, expected) in [
            ("Host web1\n Port abc", "2: bad Port 'abc'"),
            ("Port 0", "1: bad Port '0'"),
            ("Port 65536", "1: bad Port '65536'"),
            ("Port -1", "1: bad Port '-1'"),
            // Every line is checked, also in blocks that match no host.
            ("Host nothing\n\n Port 22x", "3: bad Port '22x'"),
            ("Port", "1: Port needs a value"),
            ("User \"\"", "1: User needs a value"),
            ("Port 22 23", "1: Port takes one value"),
            ("User \"a", "1: unterminated quote"),
            ("Host", "1: Host needs at least one pattern"),
            (
                "Host # only a comment",
                "1: Host needs at least one pattern",
            ),
            ("Include", "1: Include needs a file"),
            ("HostName %x", "1: HostName '%x': token %x is not supported"),
            (
                "IdentityFile ~/k%",
                "1: IdentityFile '~/k%': lone % at the end",
            ),
            (
                "IdentityFile %l",
                "1: IdentityFile '%l': token %l is not supported",
            ),
            (
                "IdentityFile ~bob/k",
                "1: IdentityFile '~bob/k': ~user paths are not supported",
            ),
        ] {
            let error = SshConfig::parse(text, Path::new(ORIGIN), Path::new(HOME)).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("ssh config {ORIGIN}:{expected}"),
                "{text:?}"
            );
        }
    }

    /// A home directory holding `.ssh/` files.
    fn home_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = home.path().join(".ssh").join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        home
    }

    fn load_from(home: &tempfile::TempDir) -> Result<SshConfig, SshConfigError> {
        SshConfig::load(&home.path().join(".ssh/config"), home.path())
    }

    #[test]
    fn includes() {
        let home = home_with(&[
            (
                "config",
                "Include conf.d/web ~/.ssh/absent\nHost *\n User fallback",
            ),
            ("conf.d/web", "Host web1\n User inc\n Port 2201"),
        ]);
        let config = load_from(&home).unwrap();
        assert_eq!(describe(&config.lookup("web1", "op")), "user=inc port=2201");
        assert_eq!(describe(&config.lookup("db1", "op")), "user=fallback");

        // Included inside a block: the file's lines are under that block's condition, its Host
        // lines cannot reach beyond it, and the block goes on after the Include.
        let home = home_with(&[
            (
                "config",
                "Host web*\n Include extra\n Port 2202\nHost *\n Port 2203",
            ),
            (
                "extra",
                "User inner\nHost web1\n IdentityFile id_w1\nHost db\n User escaped",
            ),
        ]);
        let config = load_from(&home).unwrap();
        let id = home.path().join(".ssh/id_w1");
        let expected = format!("user=inner port=2202 id={}", id.display());
        assert_eq!(describe(&config.lookup("web1", "op")), expected);
        assert_eq!(
            describe(&config.lookup("web2", "op")),
            "user=inner port=2202"
        );
        assert_eq!(describe(&config.lookup("db", "op")), "port=2203");

        // Included from a Match block: never applies. Wildcard Includes are skipped.
        let home = home_with(&[
            (
                "config",
                "Match exec x\n Include extra\nHost *\n Include conf.d/*\n Port 1",
            ),
            ("extra", "User never"),
            ("conf.d/a", "User never"),
        ]);
        let config = load_from(&home).unwrap();
        assert_eq!(describe(&config.lookup("web1", "op")), "port=1");
    }

    #[test]
    fn include_errors() {
        // An error in an included file names that file.
        let home = home_with(&[("config", "Include other"), ("other", "\nPort x")]);
        let error = load_from(&home).unwrap_err().to_string();
        let other = home.path().join(".ssh/other");
        assert_eq!(
            error,
            format!("ssh config {}:2: bad Port 'x'", other.display())
        );

        let home = home_with(&[("config", "Include config")]);
        let error = load_from(&home).unwrap_err().to_string();
        assert!(
            error.ends_with(":1: Include nested more than 16 deep"),
            "{error}"
        );
    }

    #[test]
    fn missing_file_is_empty_and_unreadable_is_an_error() {
        let home = home_with(&[]);
        let config = load_from(&home).unwrap();
        assert_eq!(config.lookup("web1", "op"), SshHostConfig::default());
        assert_eq!(
            SshConfig::empty().lookup("web1", "op"),
            SshHostConfig::default()
        );

        let error = SshConfig::load(home.path(), home.path()).unwrap_err();
        let message = error.to_string();
        let prefix = format!("ssh config {}: cannot read: ", home.path().display());
        assert!(message.starts_with(&prefix), "{message}");
    }
}
