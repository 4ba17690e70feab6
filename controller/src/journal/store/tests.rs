//! The runs directory: where it is, ids, finding runs, and pruning.

use std::time::{Duration, UNIX_EPOCH};

use volley_common::journal::{FORMAT, Options, Targets};

use super::*;
use crate::journal::clock;

/// A journal file with a header only, as if `id` had started at `started`.
fn journal(dir: &Path, id: &str, started: &str, padding: usize) {
    let header = Header {
        format: FORMAT,
        id: id.to_string(),
        started: started.to_string(),
        user: "ops".to_string(),
        command: "x".repeat(padding),
        targets: Targets::default(),
        hosts: Vec::new(),
        batches: Vec::new(),
        options: Options::default(),
        arguments: Vec::new(),
        subcommand: Vec::new(),

        retry_of: None,
        retry_overrides: Vec::new(),
        cwd: None,
        variables: Default::default(),
        stdin: None,
    };
    let line = serde_json::to_string(&Entry::Header(Box::new(header))).unwrap() + "\n";
    std::fs::write(dir.join(format!("{id}.jsonl")), line).unwrap();
}

fn ids(dir: &Path) -> Vec<String> {
    list(dir).unwrap().into_iter().map(|run| run.id).collect()
}

#[test]
fn the_runs_dir_follows_xdg_state_home() {
    let check = |variables: &[(&str, &str)], expected: &str| {
        let env = Environment {
            home: PathBuf::from("/home/ops"),
            local_user: "ops".to_string(),
            variables: variables
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        };
        assert_eq!(runs_dir(&env), Path::new(expected), "{variables:?}");
    };
    check(&[], "/home/ops/.local/state/volley/runs");
    check(
        &[("XDG_STATE_HOME", "/var/state")],
        "/var/state/volley/runs",
    );
    // The XDG spec says a relative path is to be ignored.
    check(
        &[("XDG_STATE_HOME", "state")],
        "/home/ops/.local/state/volley/runs",
    );
    check(
        &[("XDG_STATE_HOME", "")],
        "/home/ops/.local/state/volley/runs",
    );
}

#[test]
fn runs_started_in_the_same_second_get_different_ids() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = clock::stamp(UNIX_EPOCH + Duration::from_secs(1_795_762_692));
    let created: Vec<String> = (0..20)
        .map(|_| create(dir.path(), &stamp).unwrap().0)
        .collect();
    for id in &created {
        assert!(id.starts_with("20261127T065812Z-"), "{id}");
        assert!(is_run_id(id), "{id}");
    }
    let distinct: std::collections::HashSet<&String> = created.iter().collect();
    assert_eq!(distinct.len(), created.len());
}

#[test]
fn run_ids_have_one_shape() {
    for (text, expected) in [
        ("20261127T065812Z-3f9a", true),
        ("20261127T065812Z-3F9A", false),
        ("20261127T065812Z-3f9", false),
        ("20261127T065812Z_3f9a", false),
        ("../../../etc/passwd", false),
        ("", false),
    ] {
        assert_eq!(is_run_id(text), expected, "{text:?}");
    }
}

#[test]
fn runs_are_listed_oldest_first_and_other_files_ignored() {
    let dir = tempfile::tempdir().unwrap();
    journal(
        dir.path(),
        "20261127T065812Z-ffff",
        "2026-11-27T06:58:12.100Z",
        0,
    );
    // Same second, started later, though its suffix sorts first.
    journal(
        dir.path(),
        "20261127T065812Z-0000",
        "2026-11-27T06:58:12.900Z",
        0,
    );
    journal(
        dir.path(),
        "20261126T000000Z-aaaa",
        "2026-11-26T00:00:00.000Z",
        0,
    );
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    std::fs::write(dir.path().join("20261127T065812Z-zzzz.jsonl"), "").unwrap();
    assert_eq!(
        ids(dir.path()),
        [
            "20261126T000000Z-aaaa",
            "20261127T065812Z-ffff",
            "20261127T065812Z-0000"
        ]
    );
    assert_eq!(list(&dir.path().join("missing")).unwrap(), Vec::new());
}

#[test]
fn runs_are_found_by_last_id_or_prefix() {
    let dir = tempfile::tempdir().unwrap();
    journal(
        dir.path(),
        "20261126T000000Z-aaaa",
        "2026-11-26T00:00:00.000Z",
        0,
    );
    journal(
        dir.path(),
        "20261127T065812Z-3f9a",
        "2026-11-27T06:58:12.000Z",
        0,
    );
    journal(
        dir.path(),
        "20261127T070000Z-1234",
        "2026-11-27T07:00:00.000Z",
        0,
    );
    let check = |given: &str, expected: Result<&str, &str>| {
        let found = find(dir.path(), given)
            .map(|run| run.id)
            .map_err(|e| e.to_string());
        assert_eq!(
            found,
            expected.map(str::to_string).map_err(str::to_string),
            "{given}"
        );
    };
    check("last", Ok("20261127T070000Z-1234"));
    check("20261127T065812Z-3f9a", Ok("20261127T065812Z-3f9a"));
    check("20261126", Ok("20261126T000000Z-aaaa"));
    check(
        "20261127",
        Err("ambiguous run '20261127': 2 runs start with it"),
    );
    check("nope", Err("unknown run 'nope' (see volley runs)"));
    check("", Err("unknown run '' (see volley runs)"));
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        find(empty.path(), "last").unwrap_err().to_string(),
        format!("no runs recorded in {}", empty.path().display())
    );
}

#[test]
fn pruning_keeps_the_newest_runs_within_count_and_size() {
    let limits = |keep_runs, max_bytes| JournalLimits {
        keep_runs,
        max_bytes,
    };
    let fill = |dir: &Path| {
        for day in 1..=5 {
            let id = format!("2026110{day}T000000Z-aaaa");
            journal(dir, &id, &format!("2026-11-0{day}T00:00:00.000Z"), 1000);
        }
        std::fs::write(dir.join("notes.txt"), "x".repeat(100_000)).unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let one = std::fs::metadata(dir.path().join("20261101T000000Z-aaaa.jsonl"))
        .unwrap()
        .len();
    let days =
        |dir: &Path| -> Vec<String> { ids(dir).iter().map(|id| id[6..8].to_string()).collect() };

    assert_eq!(prune(dir.path(), &limits(10, u64::MAX), "").unwrap(), 0);
    assert_eq!(prune(dir.path(), &limits(3, u64::MAX), "").unwrap(), 2);
    assert_eq!(days(dir.path()), ["03", "04", "05"]);
    // Two journals' worth of bytes keeps two.
    assert_eq!(prune(dir.path(), &limits(10, 2 * one), "").unwrap(), 1);
    assert_eq!(days(dir.path()), ["04", "05"]);
    // The current run is never pruned, even when it is the oldest.
    assert_eq!(
        prune(dir.path(), &limits(1, u64::MAX), "20261104T000000Z-aaaa").unwrap(),
        1
    );
    assert_eq!(days(dir.path()), ["04"]);
    assert!(dir.path().join("notes.txt").exists(), "not a journal");

    // Nor is a run another volley still writes: it holds its journal's lock.
    fill(dir.path());
    let live = dir.path().join("20261102T000000Z-aaaa.jsonl");
    let writer = File::open(&live).unwrap();
    writer.try_lock().unwrap();
    assert!(in_use(&live));
    assert_eq!(prune(dir.path(), &limits(1, u64::MAX), "").unwrap(), 3);
    assert_eq!(days(dir.path()), ["02", "05"]);
    drop(writer);
    assert!(!in_use(&live), "the lock goes with its volley");
    assert_eq!(prune(dir.path(), &limits(1, u64::MAX), "").unwrap(), 1);
    assert_eq!(days(dir.path()), ["05"]);

    // Nor, for a day, a run killed while an agent ran its command: `volley runs resume`
    // needs it to collect the command, or to tell it is in doubt.
    fill(dir.path());
    let killed = dir.path().join("20261102T000000Z-aaaa.jsonl");
    let header = std::fs::read_to_string(&killed)
        .unwrap()
        .replace("\"hosts\":[]", "\"hosts\":[\"h1\"]");
    let started = Entry::Started(volley_common::journal::StartedEntry {
        host: "h1".to_string(),
        execution_id: "20261102T000000Z-aaaa/h1".to_string(),
        started: "2026-11-02T00:00:01.000Z".to_string(),
    });
    let started = serde_json::to_string(&started).unwrap();
    std::fs::write(&killed, format!("{header}{started}\n")).unwrap();
    assert_eq!(prune(dir.path(), &limits(1, u64::MAX), "").unwrap(), 3);
    assert_eq!(days(dir.path()), ["02", "05"]);
    let old = std::time::SystemTime::now() - AWAITS_RESUME_FOR - Duration::from_secs(60);
    File::options()
        .write(true)
        .open(&killed)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(prune(dir.path(), &limits(1, u64::MAX), "").unwrap(), 1);
    assert_eq!(days(dir.path()), ["05"]);
}

/// A journal whose header cannot be read (emptied, torn by a crash) counts as the newest of its
/// second: `last` is never an older run than it, whose command a retry would run instead.
#[test]
fn a_journal_without_a_readable_header_is_the_newest_of_its_second() {
    let dir = tempfile::tempdir().unwrap();
    journal(
        dir.path(),
        "20261127T065812Z-aaaa",
        "2026-11-27T06:58:12.100Z",
        0,
    );
    journal(
        dir.path(),
        "20261127T065812Z-0000",
        "2026-11-27T06:58:12.900Z",
        0,
    );
    std::fs::write(dir.path().join("20261127T065812Z-ffff.jsonl"), "").unwrap();
    journal(
        dir.path(),
        "20261127T065811Z-9999",
        "2026-11-27T06:58:11.999Z",
        0,
    );
    assert_eq!(
        ids(dir.path()),
        [
            "20261127T065811Z-9999",
            "20261127T065812Z-aaaa",
            "20261127T065812Z-0000",
            "20261127T065812Z-ffff"
        ]
    );
    let last = find(dir.path(), "last").unwrap();
    assert_eq!(last.id, "20261127T065812Z-ffff");
    assert!(load(&last).is_err(), "and it is refused when read");
}
