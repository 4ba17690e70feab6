//! Which files an `Include` argument names, as OpenSSH finds them for a user's config: `~/`
//! is the home directory, a relative path is in `~/.ssh`, and `*` and `?` are expanded in any
//! path component, as glob(3) does (a leading `.` is matched only by a pattern that starts with
//! one), the matches sorted. A pattern that matches nothing names no file: it is not an error.

use std::fs;
use std::path::{Component, Path, PathBuf};

use volley_common::target::wildcard_match;

/// The existing files `argument` names, in order.
pub fn expand(argument: &str, home: &Path) -> Result<Vec<PathBuf>, String> {
    if argument.contains('[') {
        return Err(format!(
            "Include '{argument}': [...] patterns are not supported (use * and ?)"
        ));
    }
    let path = match argument.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if Path::new(argument).is_relative() => home.join(".ssh").join(argument),
        None => PathBuf::from(argument),
    };
    let mut found = vec![PathBuf::new()];
    for component in path.components() {
        let Component::Normal(name) = component else {
            for path in &mut found {
                path.push(component);
            }
            continue;
        };
        let name = name.to_string_lossy();
        if !name.contains(['*', '?']) {
            for path in &mut found {
                path.push(name.as_ref());
            }
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            // An unreadable or missing directory matches nothing, as glob(3) skips it.
            let Ok(entries) = fs::read_dir(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|entry| !entry.starts_with('.') || name.starts_with('.'))
                .filter(|entry| wildcard_match(name.as_bytes(), entry.as_bytes()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|entry| dir.join(entry)));
        }
        found = next;
    }
    found.retain(|path| path.exists());
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_expand_in_order_and_skip_hidden_files() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        for file in [
            "conf.d/b.conf",
            "conf.d/a.conf",
            "conf.d/.hidden.conf",
            "conf.d/c.txt",
        ] {
            let path = ssh.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }
        fs::create_dir_all(ssh.join("other.d/x")).unwrap();
        fs::write(ssh.join("other.d/x/z.conf"), "").unwrap();
        let names = |argument: &str| -> Vec<String> {
            expand(argument, home.path())
                .unwrap()
                .iter()
                .map(|path| path.strip_prefix(&ssh).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names("conf.d/*.conf"), ["conf.d/a.conf", "conf.d/b.conf"]);
        assert_eq!(names("conf.d/.*"), ["conf.d/.hidden.conf"]);
        assert_eq!(
            names("~/.ssh/conf.d/?.conf"),
            ["conf.d/a.conf", "conf.d/b.conf"]
        );
        assert_eq!(names("*.d/*/z.conf"), ["other.d/x/z.conf"]);
        assert_eq!(names("conf.d/a.conf"), ["conf.d/a.conf"]);
        let absolute = ssh.join("conf.d/c.*").display().to_string();
        assert_eq!(names(&absolute), ["conf.d/c.txt"]);
        assert!(names("conf.d/*.nothing").is_empty());
        assert!(names("missing").is_empty());
        assert!(names("nodir/*").is_empty());
        assert_eq!(
            expand("conf.d/[ab].conf", home.path()).unwrap_err(),
            "Include 'conf.d/[ab].conf': [...] patterns are not supported (use * and ?)"
        );
    }
}
