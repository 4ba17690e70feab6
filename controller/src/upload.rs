//! Putting a file on a host over SSH, atomically and verified: the one script that both
//! `volley agent install` (its binary, certificates, config) and `volley push` run, with the
//! file's bytes on its stdin.
//!
//! The bytes go to a hidden temporary file in the destination's directory (`.NAME.volley-XXXXXX`,
//! made by `mktemp` under umask 077, so it is never readable by others while it fills, and a
//! glob such as `conf.d/*.conf` never picks it up). Its SHA-256 is checked on the host against
//! the controller's, then owner and mode are applied, then it is renamed over the destination:
//! a reader sees the old file or the new one, never a part. On any failure, and when the
//! connection drops mid-upload (`cat` sees EOF early, the checksum differs), the temporary file
//! is removed and the destination is left as it was.

use volley_common::transfer::{BACKUP_NAMES, backup_suffix_parts};

use crate::shell::quote;

/// Which directories an upload may create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directories<'a> {
    /// The destination's directory must exist.
    MustExist,
    /// Missing directories may be made below this one, which must exist.
    Below(&'a str),
    /// Any missing directory is made, 0755 as `install -d` makes it (the agent's own paths
    /// under its prefix; its private `/etc/volley` is made before, 0700).
    Any,
}

/// One file to put in place.
#[derive(Clone, Debug)]
pub struct Upload<'a> {
    /// Absolute.
    pub path: &'a str,
    /// The content's SHA-256, lower-case hex.
    pub sha256: &'a str,
    /// Permission bits.
    pub mode: u32,
    /// `user:group`, `user` or `:group` for `chown`; `None` keeps the uploading user's.
    pub owner: Option<&'a str>,
    pub directories: Directories<'a>,
    /// Keep the replaced file (a hard link) as `path` followed by this suffix.
    pub backup_suffix: Option<&'a str>,
}

/// The script, for `/bin/sh`, reading the content on stdin. It prints `backup PATH` when it
/// kept a backup; on failure its last line on stderr says why.
pub fn script(upload: &Upload) -> String {
    let (directory, name) = match upload.path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((directory, name)) => (directory, name),
        None => (".", upload.path),
    };
    let mut script = format!(
        "set -eu\npath={}\ndir={}\nname={}\n",
        quote(upload.path),
        quote(directory),
        quote(name)
    );
    let missing_dir = r#"{ echo "$1: no such directory" >&2; exit 1; }"#;
    match upload.directories {
        Directories::MustExist => {
            script.push_str(&format!(
                "set -- \"$dir\"\n[ -d \"$dir\" ] || {missing_dir}\n"
            ));
        }
        Directories::Below(base) => {
            script.push_str(&format!(
                "set -- {base}\nif [ ! -d \"$dir\" ]; then [ -d \"$1\" ] || {missing_dir}; (umask 022; mkdir -p -- \"$dir\"); fi\n",
                base = quote(base)
            ));
        }
        Directories::Any => script.push_str("(umask 022; mkdir -p -- \"$dir\")\n"),
    }
    script.push_str(
        r#"if [ -d "$path" ] && [ ! -L "$path" ]; then echo "$path is a directory" >&2; exit 1; fi
umask 077
tmp=$(mktemp "$dir/.$name.volley-XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cat > "$tmp"
got=$(sha256sum < "$tmp")
got=${got%% *}
"#,
    );
    script.push_str(&format!(
        "if [ \"$got\" != {sha} ]; then echo \"checksum mismatch after the upload of $path: $got, expected {sha}\" >&2; exit 1; fi\n",
        sha = upload.sha256
    ));
    // chown before chmod: chown clears set-id bits.
    if let Some(owner) = upload.owner {
        // A user name this host does not know is said so, not as chown's `invalid user:
        // 'name:0'` with the group the push kept from the file it replaces.
        script.push_str(&format!(
            r#"owner={}
user=${{owner%%:*}}
case $user in
  ''|*[!0-9]*) [ -z "$user" ] || id -u -- "$user" >/dev/null 2>&1 || {{ echo "no user '$user' on this host" >&2; exit 1; }} ;;
esac
chown -- "$owner" "$tmp"
"#,
            quote(owner)
        ));
    }
    script.push_str(&format!("chmod {:o} \"$tmp\"\n", upload.mode));
    // Where `sync FILE` exists (coreutils 8.24+), the content is on disk before the rename.
    script.push_str("sync -- \"$tmp\" 2>/dev/null || :\n");
    if let Some(suffix) = upload.backup_suffix {
        // The first free name: a backup that an earlier push with the same stamp left is never
        // replaced (`ln` without -f fails rather than overwrite one made meanwhile).
        let (stem, end) = backup_suffix_parts(suffix);
        script.push_str(&format!(
            r#"if [ -L "$path" ] || [ -f "$path" ]; then
  backup="$path"{suffix}
  n=0
  while [ -e "$backup" ] || [ -L "$backup" ]; do
    n=$((n + 1))
    if [ "$n" -ge {BACKUP_NAMES} ]; then echo "$path: {BACKUP_NAMES} backups with this push's stamp exist already" >&2; exit 1; fi
    backup="$path"{stem}."$n"{end}
  done
  if [ -L "$path" ]; then
    # The link itself, not what it names (`ln -P`; `ln` links the link where -P is unknown).
    ln -P -- "$path" "$backup" 2>/dev/null || ln -- "$path" "$backup"
  else
    ln -- "$path" "$backup"
  fi
  echo "backup $backup"
fi
"#,
            suffix = quote(suffix),
            stem = quote(stem),
            end = quote(end),
        ));
    }
    // `mv` onto a link to a directory moves the file into that directory: the link itself is
    // replaced by rename(2) through GNU's and BusyBox's `-T` or BSD's `-h`.
    script.push_str(
        r#"if [ -L "$path" ] && [ -d "$path" ]; then
  if ! failed=$(mv -fT -- "$tmp" "$path" 2>&1); then
    mv -fh -- "$tmp" "$path" 2>/dev/null || { echo "cannot replace $path, a link to a directory: $failed" >&2; exit 1; }
  fi
else
  mv -f -- "$tmp" "$path"
fi
trap - EXIT
"#,
    );
    script
}

/// SHA-256 in lower-case hex, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    data_encoding::HEXLOWER.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::{Command, Output, Stdio};

    use super::*;

    fn upload<'a>(path: &'a str, sha256: &'a str) -> Upload<'a> {
        Upload {
            path,
            sha256,
            mode: 0o640,
            owner: None,
            directories: Directories::MustExist,
            backup_suffix: None,
        }
    }

    /// Runs the script with a local `/bin/sh`, `input` on its stdin.
    fn run(upload: &Upload, input: &[u8]) -> Output {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script(upload))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A script that refuses early exits without reading: a broken pipe here is fine.
        let _ = child.stdin.take().unwrap().write_all(input);
        child.wait_with_output().unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn stderr(output: &Output) -> String {
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    #[test]
    fn a_verified_upload_replaces_the_file_with_its_mode_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("it's a file").display().to_string();
        std::fs::write(&path, "old").unwrap();
        let sha = sha256_hex(b"new");
        let mut spec = upload(&path, &sha);
        spec.backup_suffix = Some(".~1~");
        let output = run(&spec, b"new");
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("backup {path}.~1~\n")
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(names(dir.path()), ["it's a file", "it's a file.~1~"]);
    }

    #[test]
    fn uploads_with_the_same_backup_stamp_keep_every_replaced_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.conf").display().to_string();
        std::fs::write(&path, "original").unwrap();
        let mut backups = String::new();
        for content in [&b"a"[..], b"b", b"c"] {
            let sha = sha256_hex(content);
            let mut spec = upload(&path, &sha);
            spec.backup_suffix = Some(".20261202T184055Z~");
            let output = run(&spec, content);
            assert!(output.status.success(), "{}", stderr(&output));
            backups.push_str(&String::from_utf8_lossy(&output.stdout));
        }
        assert_eq!(
            backups,
            format!(
                "backup {path}.20261202T184055Z~\nbackup {path}.20261202T184055Z.1~\nbackup {path}.20261202T184055Z.2~\n"
            )
        );
        let kept = |suffix: &str| std::fs::read_to_string(format!("{path}{suffix}")).unwrap();
        assert_eq!(
            [
                kept(".20261202T184055Z~"),
                kept(".20261202T184055Z.1~"),
                kept(".20261202T184055Z.2~")
            ],
            ["original", "a", "b"]
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c");
    }

    #[test]
    fn a_link_is_replaced_itself_even_when_it_names_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("target"), "old").unwrap();
        for (link, to) in [("to-dir", "real"), ("to-file", "target")] {
            let path = dir.path().join(link);
            std::os::unix::fs::symlink(to, &path).unwrap();
            let path = path.display().to_string();
            let sha = sha256_hex(b"new");
            let output = run(&upload(&path, &sha), b"new");
            assert!(output.status.success(), "{}", stderr(&output));
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            assert!(metadata.is_file(), "{link} is still a link");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        }
        // With --backup, a replaced link is kept as the link.
        let path = dir.path().join("kept").display().to_string();
        std::os::unix::fs::symlink("target", &path).unwrap();
        let sha = sha256_hex(b"new");
        let mut spec = upload(&path, &sha);
        spec.backup_suffix = Some(".~1~");
        let output = run(&spec, b"new");
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("backup {path}.~1~\n")
        );
        let kept = std::fs::read_link(format!("{path}.~1~")).unwrap();
        assert_eq!(kept, Path::new("target"));
        std::fs::remove_file(format!("{path}.~1~")).unwrap();
        std::fs::remove_file(&path).unwrap();
        // What the links named is as it was: nothing moved into the directory.
        assert!(names(&dir.path().join("real")).is_empty());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("target")).unwrap(),
            "old"
        );
        assert_eq!(names(dir.path()), ["real", "target", "to-dir", "to-file"]);
    }

    #[test]
    fn an_owner_the_host_does_not_know_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f").display().to_string();
        std::fs::write(&path, "old").unwrap();
        let sha = sha256_hex(b"new");
        let mut spec = upload(&path, &sha);
        spec.owner = Some("no-such-user-here:0");
        let output = run(&spec, b"new");
        assert!(!output.status.success());
        assert_eq!(
            stderr(&output),
            "no user 'no-such-user-here' on this host\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn a_short_or_corrupt_upload_leaves_the_old_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f").display().to_string();
        std::fs::write(&path, "old").unwrap();
        let sha = sha256_hex(b"the whole content");
        // What `cat` reads when the connection drops halfway.
        let output = run(&upload(&path, &sha), b"the whole");
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains("checksum mismatch"),
            "{}",
            stderr(&output)
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn directories_are_made_only_where_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let deep = format!("{base}/a/b/f");
        let sha = sha256_hex(b"x");
        let output = run(&upload(&deep, &sha), b"x");
        assert_eq!(stderr(&output), format!("{base}/a/b: no such directory\n"));
        let mut below = upload(&deep, &sha);
        below.directories = Directories::Below(&base);
        assert!(run(&below, b"x").status.success());
        assert_eq!(std::fs::read_to_string(&deep).unwrap(), "x");
        let missing_base = format!("{base}/nope");
        let elsewhere = format!("{base}/nope/c/f");
        let mut outside = upload(&elsewhere, &sha);
        outside.directories = Directories::Below(&missing_base);
        let output = run(&outside, b"x");
        assert_eq!(
            stderr(&output),
            format!("{missing_base}: no such directory\n")
        );
        let output = run(&upload(&format!("{base}/a"), &sha), b"x");
        assert_eq!(stderr(&output), format!("{base}/a is a directory\n"));
        // Any: every missing directory, 0755 whatever the umask the script was started with.
        let nested = format!("{base}/usr/local/bin/f");
        let mut any = upload(&nested, &sha);
        any.directories = Directories::Any;
        let output = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("umask 077; {}", script(&any)))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "the empty input cannot match");
        for dir in ["usr", "usr/local", "usr/local/bin"] {
            let mode = std::fs::metadata(format!("{base}/{dir}"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755, "{dir}");
        }
    }
}
