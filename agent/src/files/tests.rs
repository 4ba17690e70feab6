use std::io::Write;
use std::os::unix::fs::symlink;

use super::*;

struct Root {
    dir: tempfile::TempDir,
    roots: PushRoots,
    checksums: Checksums,
}

fn root() -> Root {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("root")).unwrap();
    let roots = PushRoots::new(vec![dir.path().join("root")]).unwrap();
    Root {
        dir,
        roots,
        checksums: Checksums::default(),
    }
}

impl Root {
    fn path(&self, relative: &str) -> String {
        format!("{}/root/{relative}", self.dir.path().display())
    }

    /// Every name in the root, recursively, sorted: what a refused push must leave alone.
    fn names(&self) -> Vec<String> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).unwrap().flatten() {
                let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
                if entry.file_type().unwrap().is_dir() {
                    walk(&entry.path(), &format!("{name}/"), out);
                }
                out.push(name);
            }
        }
        let mut names = Vec::new();
        walk(&self.dir.path().join("root"), "", &mut names);
        names.sort();
        names
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn spec(path: String, content: &[u8]) -> PushSpec {
    PushSpec {
        execution_id: "test".to_string(),
        path,
        size: content.len() as u64,
        sha256: sha256(content),
        mode: 0o640,
        owner: Owner::default(),
        create_below: None,
        backup_suffix: None,
    }
}

fn push(root: &Root, spec: &PushSpec, content: &[u8]) -> Result<Pushed, FileError> {
    let (prepared, mut file) = prepare(&root.roots, 1 << 20, spec)?;
    file.write_all(content).unwrap();
    finish(&root.checksums, prepared, file, spec)
}

#[test]
fn a_push_replaces_the_file_with_its_mode_and_keeps_a_backup() {
    let root = root();
    let path = root.path("app.conf");
    fs::write(&path, "old\n").unwrap();
    let mut spec = spec(path.clone(), b"new\n");
    spec.backup_suffix = Some(".bak".to_string());
    let pushed = push(&root, &spec, b"new\n").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
    let mode = fs::metadata(&path).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert_eq!(pushed.backup, Some(format!("{path}.bak")));
    assert_eq!(fs::read_to_string(format!("{path}.bak")).unwrap(), "old\n");
    assert_eq!(root.names(), ["app.conf", "app.conf.bak"]);
}

#[test]
fn a_replaced_link_is_kept_as_the_link() {
    let root = root();
    fs::write(root.path("target"), "old\n").unwrap();
    let path = root.path("resolv.conf");
    symlink("target", &path).unwrap();
    let mut spec = spec(path.clone(), b"new\n");
    spec.backup_suffix = Some(".bak".to_string());
    let pushed = push(&root, &spec, b"new\n").unwrap();
    assert_eq!(pushed.backup, Some(format!("{path}.bak")));
    assert!(fs::symlink_metadata(&path).unwrap().is_file());
    let kept = format!("{path}.bak");
    assert_eq!(fs::read_link(&kept).unwrap(), Path::new("target"));
    assert_eq!(fs::read_to_string(root.path("target")).unwrap(), "old\n");
}

#[test]
fn pushes_with_the_same_backup_stamp_keep_every_replaced_version() {
    let root = root();
    let path = root.path("app.conf");
    fs::write(&path, "original\n").unwrap();
    let stamp = ".20261202T184055Z~";
    let mut backups = Vec::new();
    for content in [&b"a\n"[..], b"b\n", b"c\n"] {
        let mut spec = spec(path.clone(), content);
        spec.backup_suffix = Some(stamp.to_string());
        backups.push(push(&root, &spec, content).unwrap().backup.unwrap());
    }
    assert_eq!(
        backups,
        [
            format!("{path}.20261202T184055Z~"),
            format!("{path}.20261202T184055Z.1~"),
            format!("{path}.20261202T184055Z.2~"),
        ]
    );
    let kept: Vec<String> = backups
        .iter()
        .map(|backup| fs::read_to_string(backup).unwrap())
        .collect();
    assert_eq!(kept, ["original\n", "a\n", "b\n"]);
    assert_eq!(fs::read_to_string(&path).unwrap(), "c\n");
}

#[test]
fn refused_pushes_create_nothing() {
    let root = root();
    fs::create_dir(root.path("dir")).unwrap();
    let before = root.names();
    let refused = |spec: PushSpec, expected: &str| {
        let error = prepare(&root.roots, 8, &spec).unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
        assert_eq!(root.names(), before, "{expected}");
    };
    refused(spec(root.path("big"), b"123456789"), "max_file_bytes (8)");
    let outside = format!("{}/elsewhere", root.dir.path().display());
    refused(spec(outside, b"x"), "outside the agent's push_roots");
    refused(spec(root.path("new/sub/f"), b"x"), "new: no such directory");
    refused(spec(root.path("dir"), b"x"), "is a directory");
    let mut stranger = spec(root.path("f"), b"x");
    stranger.owner.user = Some("no-such-user-volley".to_string());
    refused(stranger, "no user 'no-such-user-volley'");
    // chown's "leave it as it is" is no owner: the file would keep its own.
    let mut unchanged = spec(root.path("f"), b"x");
    unchanged.owner.user = Some(u32::MAX.to_string());
    refused(unchanged, "owner: 4294967295 is not a user id");
    let mut unchanged = spec(root.path("f"), b"x");
    unchanged.owner.group = Some(u32::MAX.to_string());
    refused(unchanged, "owner: 4294967295 is not a group id");
    let mut not_below = spec(root.path("new/f"), b"x");
    not_below.create_below = Some(root.path("dir"));
    refused(not_below, "new: no such directory");
}

#[test]
fn directories_are_created_below_the_named_one() {
    let root = root();
    let mut spec = spec(root.path("tree/a/b/f"), b"x");
    spec.create_below = Some(root.path(""));
    push(&root, &spec, b"x").unwrap();
    assert_eq!(root.names(), ["tree", "tree/a", "tree/a/b", "tree/a/b/f"]);
}

#[test]
fn a_dropped_push_leaves_no_temporary_file() {
    let root = root();
    fs::write(root.path("f"), "old").unwrap();
    let spec = spec(root.path("f"), b"new");
    let (prepared, mut file) = prepare(&root.roots, 1 << 20, &spec).unwrap();
    file.write_all(b"ne").unwrap();
    let temp = prepared.temp.path().to_path_buf();
    let name = temp.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(".f.volley-"), "{name}");
    assert!(temp.exists());
    drop(prepared);
    assert!(!temp.exists());
    assert_eq!(root.names(), ["f"]);
    assert_eq!(fs::read_to_string(root.path("f")).unwrap(), "old");
}

#[test]
fn stat_tells_files_apart_and_skips_checksums_of_other_sizes() {
    let root = root();
    fs::write(root.path("f"), "abc").unwrap();
    fs::create_dir(root.path("d")).unwrap();
    symlink(root.path("f"), root.path("link")).unwrap();
    let query = |relative: &str, size| StatQuery {
        path: root.path(relative),
        size,
        follow_links: false,
    };
    let states = stat(
        &root.roots,
        &root.checksums,
        &[
            query("f", Some(3)),
            query("f", Some(4)),
            query("d", None),
            query("link", None),
            query("missing", None),
            query("missing-dir/f", None),
        ],
    )
    .unwrap();
    let FileState::File(facts) = &states[0] else {
        panic!("{states:?}")
    };
    assert_eq!(facts.sha256.as_deref(), Some(sha256(b"abc").as_str()));
    assert_eq!(facts.size, 3);
    assert!(matches!(&states[1], FileState::File(f) if f.sha256.is_none()));
    let kinds: Vec<&FileState> = states[2..].iter().collect();
    assert_eq!(
        kinds,
        [
            &FileState::Other {
                kind: "directory".into()
            },
            &FileState::Other {
                kind: "symbolic link".into()
            },
            &FileState::Missing,
            &FileState::Missing,
        ]
    );
    let outside = StatQuery {
        path: format!("{}/elsewhere", root.dir.path().display()),
        size: None,
        follow_links: false,
    };
    assert!(matches!(
        stat(&root.roots, &root.checksums, &[outside]),
        Err(FileError::Refused(_))
    ));
}

#[test]
fn a_fetchs_stat_follows_links_under_the_roots_only() {
    let root = root();
    fs::write(root.path("f"), "abc").unwrap();
    symlink(root.path("f"), root.path("link")).unwrap();
    symlink(root.path("nothing"), root.path("dangling")).unwrap();
    let outside = root.dir.path().join("secret");
    fs::write(&outside, "secret").unwrap();
    symlink(&outside, root.path("out")).unwrap();
    let query = |relative: &str| StatQuery {
        path: root.path(relative),
        size: None,
        follow_links: true,
    };
    let states = stat(
        &root.roots,
        &root.checksums,
        &[query("link"), query("dangling"), query("f")],
    )
    .unwrap();
    let FileState::File(facts) = &states[0] else {
        panic!("{states:?}")
    };
    assert_eq!(facts.sha256.as_deref(), Some(sha256(b"abc").as_str()));
    assert_eq!(facts.size, 3);
    assert_eq!(states[1], FileState::Missing);
    assert_eq!(states[2], states[0]);
    let error = stat(&root.roots, &root.checksums, &[query("out")]).unwrap_err();
    assert!(
        matches!(&error, FileError::Refused(_)) && error.to_string().contains("a link to"),
        "{error}"
    );
}

#[test]
fn stat_takes_a_pushed_files_checksum_from_memory_until_the_file_changes() {
    let root = root();
    let path = root.path("app.conf");
    push(&root, &spec(path.clone(), b"new\n"), b"new\n").unwrap();
    let checksum = || {
        let query = StatQuery {
            path: path.clone(),
            size: Some(4),
            follow_links: false,
        };
        match &stat(&root.roots, &root.checksums, &[query]).unwrap()[..] {
            [FileState::File(facts)] => facts.sha256.clone().unwrap(),
            other => panic!("{other:?}"),
        }
    };
    // The push left its checksum under the path `stat` looks up; a planted one shows that
    // `stat` takes it from there rather than reading the file.
    let plant = || {
        let mut known = root.checksums.known.lock().unwrap();
        assert_eq!(known.len(), 1);
        for (_, sha256) in known.values_mut() {
            *sha256 = "planted".to_string();
        }
    };
    assert_eq!(checksum(), sha256(b"new\n"));
    plant();
    assert_eq!(checksum(), "planted");
    // Past a coarse clock tick, so that the test holds on kernels without fine-grained
    // timestamps too: a write of the same size, then a chmod alone, each make it read again.
    std::thread::sleep(std::time::Duration::from_millis(50));
    fs::write(&path, "NEW\n").unwrap();
    assert_eq!(checksum(), sha256(b"NEW\n"));
    push(&root, &spec(path.clone(), b"new\n"), b"new\n").unwrap();
    plant();
    std::thread::sleep(std::time::Duration::from_millis(50));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(checksum(), sha256(b"new\n"));
}

#[test]
fn fetch_opens_only_regular_files_within_the_limit() {
    let root = root();
    fs::write(root.path("f"), "abc").unwrap();
    fs::create_dir(root.path("d")).unwrap();
    let (_, size, _) = open_for_fetch(&root.roots, 3, &root.path("f")).unwrap();
    assert_eq!(size, 3);
    let error = |path: &str, limit| {
        open_for_fetch(&root.roots, limit, path)
            .unwrap_err()
            .to_string()
    };
    assert!(error(&root.path("f"), 2).contains("max_file_bytes"));
    assert!(error(&root.path("d"), 2).contains("not a regular file"));
    assert!(error(&root.path("missing"), 2).contains("No such file"));
}

/// A user who may write inside a root swaps a directory of a checked path for a link to a
/// directory outside the roots: what was opened stays the directory written in (the file goes
/// where that directory went, under the root), and a path opened after the swap is refused
/// rather than followed. Nothing is written, read or hashed outside the roots.
#[test]
fn a_directory_swapped_for_a_link_after_the_check_is_not_followed() {
    let root = root();
    let outside = root.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), "outside\n").unwrap();
    let sub = root.dir.path().join("root/user/sub");
    fs::create_dir_all(&sub).unwrap();
    fs::write(sub.join("secret"), "inside\n").unwrap();
    let content = b"pushed\n";
    let spec = spec(root.path("user/sub/secret"), content);
    let (prepared, mut file) = prepare(&root.roots, 1 << 20, &spec).unwrap();
    file.write_all(content).unwrap();

    // Checked and opened; now the directory is moved aside and a link put in its place.
    let moved_to = root.dir.path().join("root/user/moved");
    fs::rename(&sub, &moved_to).unwrap();
    symlink(&outside, &sub).unwrap();
    finish(&root.checksums, prepared, file, &spec).unwrap();
    assert_eq!(fs::read(moved_to.join("secret")).unwrap(), content);
    let outside_names: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(outside_names, ["secret"]);
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"outside\n");

    // The checked path, opened once the link is there: refused, for a push, a fetch or a stat.
    for path in [sub.clone(), sub.join("secret")] {
        let refused = match open_parent(&path.join("x")) {
            Err(FileError::Precondition(reason)) => reason,
            other => panic!("{other:?}"),
        };
        assert!(refused.contains("was replaced"), "{refused}");
    }
    assert!(matches!(
        state_of(&root.checksums, &sub.join("secret"), None),
        Err(FileError::Precondition(_))
    ));
}
