//! Files over SSH: `exec` requests on the host's one [`Session`], no SFTP. What a destination
//! holds comes from one POSIX sh script ([`PROBE`]); a file goes through the atomic upload
//! shared with `volley agent install` ([`crate::upload`]); a fetched file is `cat` into a local
//! writer and checked against the checksum the probe read.

use tokio::io::AsyncWrite;
use volley_common::transfer::{FileFacts, FileState, PushSpec, StatQuery};

use super::local::LocalFile;
use crate::transport::ssh::{Exit, Finished, Session, SessionError, sudo};
use crate::upload::{self, Directories, Upload};

/// Paths looked at by one probe: the whole command is one argument of the remote shell, which
/// Linux caps at 128 KiB.
const PROBE_BATCH: usize = 256;

/// Prints one line per `FOLLOW SIZE PATH` triple of arguments: `missing`, `other KIND`, or
/// `file SIZE MODE UID GID SHA256 USER:GROUP` (`-` for the checksum when the size differs from
/// SIZE; SIZE `-` always checksums). The names come last, after a colon that neither holds: a
/// directory service's names may hold spaces (`domain users`). A link is followed to what it
/// names when FOLLOW is 1 (a fetch), and reported as a link otherwise (a push replaces the link
/// itself).
const PROBE: &str = r#"set -eu
while [ $# -gt 2 ]; do
  follow=$1; want=$2; p=$3; shift 3
  if [ "$follow" != 1 ] && [ -L "$p" ]; then echo "other symbolic link"
  elif [ -d "$p" ]; then echo "other directory"
  elif [ -f "$p" ]; then
    facts=$(stat -L -c '%s %a %u %g' -- "$p")
    names=$(stat -L -c '%U:%G' -- "$p")
    sum=-
    if [ "$want" = - ] || [ "$want" = "${facts%% *}" ]; then
      [ -r "$p" ] || { echo "$p: permission denied (not readable by $(id -un))" >&2; exit 1; }
      # The size's first bytes: a file that grows (a log) has a stable prefix to fetch.
      sum=$(head -c "${facts%% *}" < "$p" | sha256sum); sum=${sum%% *}
    fi
    echo "file $facts $sum $names"
  elif [ -e "$p" ]; then echo "other special file"
  else
    # Missing: a file where its path needs a directory fails it now, before anything is written.
    d=${p%/*}
    while [ -n "$d" ] && [ ! -e "$d" ] && [ ! -L "$d" ]; do d=${d%/*}; done
    if [ -n "$d" ] && [ ! -d "$d" ]; then echo "$p: $d is not a directory" >&2; exit 1; fi
    echo missing
  fi
done
"#;

/// Runs a script under `/bin/sh` whatever the login shell, through `sudo -n` with `sudo`
/// (`--become`); a failure is the last line of its stderr.
async fn sh(
    session: &Session,
    sudo: bool,
    script: &str,
    args: &[String],
    input: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
    stdout: Option<&mut (dyn AsyncWrite + Unpin + Send)>,
) -> Result<Finished, String> {
    let args: Vec<&str> = std::iter::once("sh")
        .chain(args.iter().map(String::as_str))
        .collect();
    let command = sudo::shell_line(script, &args, sudo);
    let finished = session
        .run_streaming(&command, input, stdout)
        .await
        .map_err(|error: SessionError| error.to_string())?;
    match &finished.exit {
        Exit::Code(0) => Ok(finished),
        exit => {
            let line = finished.last_error_line();
            Err(match (line.is_empty(), exit) {
                (false, _) => line,
                (true, Exit::Code(code)) => format!("exited with status {code}"),
                (true, Exit::Signal(signal)) => format!("killed by signal {signal}"),
            })
        }
    }
}

/// What each queried path holds.
pub async fn stat(
    session: &Session,
    sudo: bool,
    queries: &[StatQuery],
) -> Result<Vec<FileState>, String> {
    let mut states = Vec::with_capacity(queries.len());
    for batch in queries.chunks(PROBE_BATCH) {
        let args: Vec<String> = batch
            .iter()
            .flat_map(|query| {
                let size = query.size.map_or("-".to_string(), |size| size.to_string());
                let follow = if query.follow_links { "1" } else { "0" };
                [follow.to_string(), size, query.path.clone()]
            })
            .collect();
        let finished = sh(session, sudo, PROBE, &args, &mut tokio::io::empty(), None).await?;
        let text = String::from_utf8_lossy(&finished.stdout);
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() < batch.len() {
            return Err(format!(
                "the probe answered {} lines for {} paths",
                lines.len(),
                batch.len()
            ));
        }
        // Its answers are the last lines: a login shell's startup files may print before it.
        for line in &lines[lines.len() - batch.len()..] {
            states.push(parse(line).ok_or_else(|| format!("unexpected probe line: {line}"))?);
        }
    }
    Ok(states)
}

fn parse(line: &str) -> Option<FileState> {
    if line == "missing" {
        return Some(FileState::Missing);
    }
    if let Some(kind) = line.strip_prefix("other ") {
        return Some(FileState::Other {
            kind: kind.to_string(),
        });
    }
    let fields: Vec<&str> = line.strip_prefix("file ")?.splitn(6, ' ').collect();
    let [size, mode, uid, gid, sum, names] = fields[..] else {
        return None;
    };
    let (user, group) = names.split_once(':')?;
    Some(FileState::File(FileFacts {
        sha256: (sum != "-").then(|| sum.to_string()),
        size: size.parse().ok()?,
        mode: u32::from_str_radix(mode, 8).ok()?,
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        user: user.to_string(),
        group: group.to_string(),
    }))
}

/// Writes one file by the atomic upload; returns the backup it kept, if any.
pub async fn put(
    session: &Session,
    sudo: bool,
    file: &LocalFile,
    spec: &PushSpec,
) -> Result<Option<String>, String> {
    let owner = (!spec.owner.is_empty()).then(|| spec.owner.chown_spec());
    let directories = match &spec.create_below {
        Some(base) => Directories::Below(base),
        None => Directories::MustExist,
    };
    let script = upload::script(&Upload {
        path: &spec.path,
        sha256: &spec.sha256,
        mode: spec.mode,
        owner: owner.as_deref(),
        directories,
        backup_suffix: spec.backup_suffix.as_deref(),
    });
    let mut content = file
        .open()
        .await
        .map_err(|error| format!("{}: {}", file.local.display(), error))?;
    let finished = sh(session, sudo, &script, &[], &mut content, None).await?;
    let stdout = String::from_utf8_lossy(&finished.stdout);
    Ok(stdout
        .lines()
        .find_map(|line| line.strip_prefix("backup "))
        .map(str::to_string))
}

/// Streams the first `size` bytes of a remote file into `out`: the bytes the probe checksummed,
/// though the file has grown since (a log being written).
pub async fn fetch(
    session: &Session,
    sudo: bool,
    path: &str,
    size: u64,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<(), String> {
    sh(
        session,
        sudo,
        "exec head -c \"$2\" -- \"$1\"",
        &[path.to_string(), size.to_string()],
        &mut tokio::io::empty(),
        Some(out),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Runs the probe with a local `/bin/sh`.
    fn probe(args: &[&str]) -> Vec<Option<FileState>> {
        let output = Command::new("/bin/sh")
            .arg("-c")
            .arg(PROBE)
            .arg("sh")
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(parse)
            .collect()
    }

    #[test]
    fn the_probe_tells_files_apart_and_checksums_only_matching_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a file");
        std::fs::write(&file, "abc").unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nothing"), dir.path().join("dangling"))
            .unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let states = probe(&[
            "0",
            "3",
            &path("a file"),
            "0",
            "4",
            &path("a file"),
            "0",
            "-",
            &path("link"),
            "0",
            "-",
            &path(""),
            "0",
            "-",
            &path("missing"),
            // A fetch's queries: links are followed.
            "1",
            "-",
            &path("link"),
            "1",
            "-",
            &path("dangling"),
        ]);
        let Some(FileState::File(facts)) = &states[0] else {
            panic!("{states:?}")
        };
        assert_eq!(facts.sha256, Some(upload::sha256_hex(b"abc")));
        assert_eq!(facts.size, 3);
        assert!(matches!(&states[1], Some(FileState::File(f)) if f.sha256.is_none()));
        let kind = |kind: &str| {
            Some(FileState::Other {
                kind: kind.to_string(),
            })
        };
        assert_eq!(states[2], kind("symbolic link"));
        assert_eq!(states[3], kind("directory"));
        assert_eq!(states[4], Some(FileState::Missing));
        // Followed, the link is the file it names: its size and checksum, not the link's.
        assert_eq!(states[5], states[0]);
        assert_eq!(states[6], Some(FileState::Missing));
    }

    #[test]
    fn a_file_in_place_of_a_directory_fails_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sub"), "a file").unwrap();
        for below in ["sub/b.conf", "sub/deeper/b.conf"] {
            let path = dir.path().join(below).display().to_string();
            let output = Command::new("/bin/sh")
                .arg("-c")
                .arg(PROBE)
                .args(["sh", "0", "-", &path])
                .output()
                .unwrap();
            assert!(!output.status.success(), "{below}");
            let expected = format!("{path}: {}/sub is not a directory\n", dir.path().display());
            assert_eq!(String::from_utf8_lossy(&output.stderr), expected);
        }
        // A missing path under directories that exist, or are missing too, is just missing.
        let missing = dir.path().join("new/dir/c.conf").display().to_string();
        assert_eq!(probe(&["0", "-", &missing]), [Some(FileState::Missing)]);
    }

    #[test]
    fn a_file_the_user_cannot_read_is_named_so() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
        let path = file.display().to_string();
        // Root reads anything: the probe runs as nobody then.
        let mut command = if rustix::process::geteuid().is_root() {
            let mut command = Command::new("setpriv");
            command.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/bin/sh",
            ]);
            command
        } else {
            Command::new("/bin/sh")
        };
        let output = command
            .arg("-c")
            .arg(PROBE)
            .args(["sh", "0", "-", &path])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with(&format!("{path}: permission denied (not readable by ")),
            "{stderr}"
        );
    }

    #[test]
    fn probe_lines_parse() {
        assert_eq!(
            parse("file 12 640 0 33 - root:www-data"),
            Some(FileState::File(FileFacts {
                sha256: None,
                size: 12,
                mode: 0o640,
                uid: 0,
                gid: 33,
                user: "root".to_string(),
                group: "www-data".to_string(),
            }))
        );
        assert_eq!(
            parse("file 5 644 0 54321 abc root:domain users"),
            Some(FileState::File(FileFacts {
                sha256: Some("abc".to_string()),
                size: 5,
                mode: 0o644,
                uid: 0,
                gid: 54321,
                user: "root".to_string(),
                group: "domain users".to_string(),
            }))
        );
        assert_eq!(parse("file 12 640"), None);
        assert_eq!(parse("file 12 640 0 33 - root www-data"), None);
        assert_eq!(parse("something"), None);
    }
}
