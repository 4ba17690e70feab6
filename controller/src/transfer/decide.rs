//! Whether a file must be written on a host, decided once for both transports from what the
//! host holds ([`FileState`]), and the line a host reports.
//!
//! A file is written when it is missing, when its content differs, or when `--mode` or
//! `--owner` ask for something else than it has. Without them an existing file keeps its mode
//! and owner (the new file is given them explicitly); a new file gets the local file's mode
//! and the writing user. A host where nothing differs writes nothing: its line starts with
//! `unchanged` (the install's convention: a line, not an outcome).

use volley_common::transfer::{FileFacts, FileState, Owner};

use super::local::LocalFile;

/// `--mode`, `--owner` and `--backup`, parsed.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub mode: Option<u32>,
    pub owner: Option<Owner>,
    /// `.20261127T065812Z~` with `--backup`.
    pub backup_suffix: Option<String>,
}

/// What to do with one file on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Unchanged,
    Write(Write),
}

/// A file to write, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Why: `new`, `content`, `mode`, `owner`, or what it replaces (`replaces a symbolic link`).
    pub reasons: Vec<String>,
    pub mode: u32,
    pub owner: Owner,
}

pub fn decide(file: &LocalFile, flags: &Flags, state: &FileState) -> Result<Decision, String> {
    let wanted_owner = || flags.owner.clone().unwrap_or_default();
    let facts = match state {
        FileState::Missing => {
            return Ok(Decision::Write(Write {
                reasons: vec!["new".to_string()],
                mode: flags.mode.unwrap_or(file.mode),
                owner: wanted_owner(),
            }));
        }
        FileState::Other { kind } if kind == "directory" => {
            return Err(format!("{} is a directory", file.remote));
        }
        FileState::Other { kind } => {
            return Ok(Decision::Write(Write {
                reasons: vec![format!("replaces a {kind}")],
                mode: flags.mode.unwrap_or(file.mode),
                owner: wanted_owner(),
            }));
        }
        FileState::File(facts) => facts,
    };
    let mut reasons = Vec::new();
    if facts.size != file.size || facts.sha256.as_deref() != Some(file.sha256.as_str()) {
        reasons.push("content".to_string());
    }
    let mode = flags.mode.unwrap_or(facts.mode);
    if mode != facts.mode {
        reasons.push("mode".to_string());
    }
    let asked = flags.owner.clone().unwrap_or_default();
    if !owned_by(facts, &asked) {
        reasons.push("owner".to_string());
    }
    // What `--owner` does not name is kept as it is, by number: the new file is chowned to
    // exactly what the old one had.
    let owner = Owner {
        user: asked.user.or_else(|| Some(facts.uid.to_string())),
        group: asked.group.or_else(|| Some(facts.gid.to_string())),
    };
    if reasons.is_empty() {
        return Ok(Decision::Unchanged);
    }
    Ok(Decision::Write(Write {
        reasons,
        mode,
        owner,
    }))
}

/// Whether the file already has the owner asked for, named or numbered.
fn owned_by(facts: &FileFacts, owner: &Owner) -> bool {
    let matches = |wanted: &Option<String>, name: &str, id: u32| {
        wanted
            .as_deref()
            .is_none_or(|wanted| wanted == name || wanted == id.to_string())
    };
    matches(&owner.user, &facts.user, facts.uid) && matches(&owner.group, &facts.group, facts.gid)
}

/// A file written on a host, for its line.
#[derive(Clone, Debug)]
pub struct Written {
    pub remote: String,
    pub reasons: Vec<String>,
    pub backup: Option<String>,
}

/// Files named in a line at most; the journal keeps them all.
const NAMED: usize = 10;

/// `unchanged: /etc/a`, or `changed: /etc/a (content), /etc/b (new); 3 unchanged`.
pub fn line(written: &[Written], unchanged: &[&str]) -> String {
    let list = |names: Vec<String>| {
        let more = names.len().saturating_sub(NAMED);
        let mut text = names.into_iter().take(NAMED).collect::<Vec<_>>().join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    };
    if written.is_empty() {
        if unchanged.len() > 3 {
            return format!("unchanged: {} files", unchanged.len());
        }
        return format!("unchanged: {}", unchanged.join(", "));
    }
    let changed = written
        .iter()
        .map(|file| {
            let mut why = file.reasons.join(", ");
            if let Some(backup) = &file.backup {
                why.push_str(&format!(", backup {backup}"));
            }
            format!("{} ({why})", file.remote)
        })
        .collect();
    let mut text = format!("changed: {}", list(changed));
    if !unchanged.is_empty() {
        text.push_str(&format!("; {} unchanged", unchanged.len()));
    }
    text
}

/// `--mode`: octal permission bits.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    // Octal digits only, as chmod reads them (leading zeros included); no sign.
    let octal = !text.is_empty() && text.bytes().all(|b| matches!(b, b'0'..=b'7'));
    let significant = text.trim_start_matches('0');
    if !octal || significant.len() > 4 {
        return Err(format!("--mode '{text}': not an octal mode such as 0644"));
    }
    // Nothing left once the zeros are gone: mode 0.
    Ok(u32::from_str_radix(significant, 8).unwrap_or(0))
}

/// `--owner`: `USER`, `USER:GROUP` or `:GROUP`, each a name or a number.
pub fn parse_owner(text: &str) -> Result<Owner, String> {
    let bad =
        || format!("--owner '{text}': expected USER, USER:GROUP or :GROUP (names or numbers)");
    let name = |part: &str| -> Result<Option<String>, String> {
        // Names as directory services give them too: `domain users`, `jane@corp.example`.
        let valid = !part.is_empty()
            && !part.starts_with(['-', ' '])
            && !part.ends_with(' ')
            && part.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$' | ' ' | '@')
            });
        // An id is a 32-bit number, and chown(2) takes the largest, (uid_t)-1, for "leave it
        // as it is": the file would keep its owner while the push said it changed.
        let id = |text: &str| text.parse::<u32>().is_ok_and(|id| id < u32::MAX);
        if part.bytes().all(|b| b.is_ascii_digit()) && !part.is_empty() && !id(part) {
            return Err(format!(
                "--owner '{text}': {part} is not a user or group id (ids go up to {})",
                u32::MAX - 1
            ));
        }
        valid.then(|| Some(part.to_string())).ok_or_else(bad)
    };
    match text.split_once(':') {
        None => Ok(Owner {
            user: name(text)?,
            group: None,
        }),
        Some(("", group)) => Ok(Owner {
            user: None,
            group: name(group)?,
        }),
        Some((user, group)) => Ok(Owner {
            user: name(user)?,
            group: name(group)?,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::local::Content;

    fn file() -> LocalFile {
        LocalFile {
            local: "nginx.conf".into(),
            remote: "/etc/nginx/nginx.conf".to_string(),
            size: 3,
            sha256: "a".repeat(64),
            mode: 0o600,
            content: Content::Disk,
            create_below: None,
        }
    }

    fn existing(sha256: &str, mode: u32) -> FileState {
        FileState::File(FileFacts {
            sha256: Some(sha256.to_string()),
            size: 3,
            mode,
            uid: 0,
            gid: 33,
            user: "root".to_string(),
            group: "www-data".to_string(),
        })
    }

    fn owner(user: Option<&str>, group: Option<&str>) -> Owner {
        Owner {
            user: user.map(str::to_string),
            group: group.map(str::to_string),
        }
    }

    fn check(flags: &Flags, state: &FileState, expected: Result<Decision, &str>) {
        assert_eq!(
            decide(&file(), flags, state),
            expected.map_err(str::to_string),
            "{flags:?} {state:?}"
        );
    }

    fn write(reasons: &[&str], mode: u32, owner: Owner) -> Result<Decision, &'static str> {
        Ok(Decision::Write(Write {
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            mode,
            owner,
        }))
    }

    #[test]
    fn decisions() {
        let same = existing(&"a".repeat(64), 0o644);
        let kept = owner(Some("0"), Some("33"));
        let none = Flags::default();
        check(&none, &same, Ok(Decision::Unchanged));
        check(
            &none,
            &existing(&"b".repeat(64), 0o644),
            write(&["content"], 0o644, kept.clone()),
        );
        check(
            &none,
            &FileState::Missing,
            write(&["new"], 0o600, Owner::default()),
        );
        let strict = Flags {
            mode: Some(0o640),
            owner: Some(owner(Some("root"), Some("33"))),
            backup_suffix: None,
        };
        check(
            &strict,
            &FileState::Missing,
            write(&["new"], 0o640, owner(Some("root"), Some("33"))),
        );
        check(
            &strict,
            &same,
            write(&["mode"], 0o640, owner(Some("root"), Some("33"))),
        );
        let other_owner = Flags {
            owner: Some(owner(None, Some("nginx"))),
            ..Flags::default()
        };
        check(
            &other_owner,
            &same,
            write(&["owner"], 0o644, owner(Some("0"), Some("nginx"))),
        );
        let same_owner = Flags {
            owner: Some(owner(Some("0"), Some("www-data"))),
            ..Flags::default()
        };
        check(&same_owner, &same, Ok(Decision::Unchanged));
        let link = FileState::Other {
            kind: "symbolic link".to_string(),
        };
        check(
            &none,
            &link,
            write(&["replaces a symbolic link"], 0o600, Owner::default()),
        );
        let directory = FileState::Other {
            kind: "directory".to_string(),
        };
        check(
            &none,
            &directory,
            Err("/etc/nginx/nginx.conf is a directory"),
        );
        let unhashed = FileState::File(FileFacts {
            sha256: None,
            size: 4,
            ..match same {
                FileState::File(facts) => facts,
                _ => unreachable!(),
            }
        });
        check(&none, &unhashed, write(&["content"], 0o644, kept));
    }

    #[test]
    fn lines_say_what_changed() {
        assert_eq!(line(&[], &["/etc/a"]), "unchanged: /etc/a");
        assert_eq!(line(&[], &["/a", "/b", "/c", "/d"]), "unchanged: 4 files");
        let written = |remote: &str, reasons: &[&str], backup: Option<&str>| Written {
            remote: remote.to_string(),
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            backup: backup.map(str::to_string),
        };
        assert_eq!(
            line(
                &[
                    written("/etc/a", &["content"], Some("/etc/a.X~")),
                    written("/etc/b", &["new"], None)
                ],
                &["/etc/c"]
            ),
            "changed: /etc/a (content, backup /etc/a.X~), /etc/b (new); 1 unchanged"
        );
        let many: Vec<Written> = (0..12)
            .map(|n| written(&format!("/f{n}"), &["new"], None))
            .collect();
        assert!(line(&many, &[]).ends_with("/f9 (new) and 2 more"));
    }

    #[test]
    fn modes_and_owners_parse_or_say_what_is_wrong() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        assert_eq!(parse_mode("00000644"), Ok(0o644));
        assert_eq!(parse_mode("000"), Ok(0));
        for bad in [
            "",
            "8",
            "rw-r--r--",
            "17777",
            "-1",
            "+644",
            " 644",
            "77777777777777",
        ] {
            assert_eq!(
                parse_mode(bad),
                Err(format!("--mode '{bad}': not an octal mode such as 0644"))
            );
        }
        assert_eq!(parse_owner("www-data"), Ok(owner(Some("www-data"), None)));
        assert_eq!(parse_owner("0:33"), Ok(owner(Some("0"), Some("33"))));
        assert_eq!(parse_owner(":nginx"), Ok(owner(None, Some("nginx"))));
        assert_eq!(
            parse_owner("4294967294"),
            Ok(owner(Some("4294967294"), None))
        );
        for id in ["4294967295", ":4294967295", "0:99999999999"] {
            let refused = parse_owner(id).expect_err(id);
            assert!(refused.contains("is not a user or group id"), "{refused}");
        }
        assert_eq!(
            parse_owner("jane@corp.example:domain users"),
            Ok(owner(Some("jane@corp.example"), Some("domain users")))
        );
        for bad in ["", "user:", " ab", "ab ", "a\tb", "-rf", "u:g:x"] {
            assert!(parse_owner(bad).is_err(), "{bad}");
        }
    }
}
