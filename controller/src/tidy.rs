//! Tests that hold ARCHITECTURE.md's layout invariants to the source, so that a change breaking
//! one fails here instead of being found by the next reader: what may know russh (and, in the
//! agent, zbus), which of the run's modules may import which, and that no comment sends a reader
//! outside the repository.

use std::fs;
use std::path::{Path, PathBuf};

/// The controller's source directory.
fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// This file: it names what the others must not contain.
const TIDY: &str = "tidy.rs";

/// Every file under `dir` whose name ends in one of `endings`, with its path relative to `base`
/// and its text; this file excepted.
fn files(dir: &Path, base: &Path, endings: &[&str], found: &mut Vec<(String, String)>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        if path.is_dir() {
            files(&path, base, endings, found);
        } else if endings.iter().any(|ending| name.ends_with(ending)) && name != TIDY {
            let text =
                fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let relative = path.strip_prefix(base).expect("under base");
            found.push((relative.to_string_lossy().into_owned(), text));
        }
    }
}

fn controller_files() -> Vec<(String, String)> {
    let mut found = Vec::new();
    files(&source_dir(), &source_dir(), &[".rs"], &mut found);
    assert!(found.len() > 50, "the controller's sources were not found");
    found
}

/// The lines of `text` that are code, not comments.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(index, line)| (index + 1, line))
}

/// The top-level module a file belongs to: `transport/ssh/mod.rs` -> `transport`.
fn module_of(path: &str) -> &str {
    let first = path.split('/').next().unwrap_or(path);
    first.strip_suffix(".rs").unwrap_or(first)
}

#[test]
fn only_transport_ssh_knows_russh() {
    let mut offenders = Vec::new();
    for (path, text) in controller_files() {
        if path.starts_with("transport/ssh/") {
            continue;
        }
        for (number, line) in code_lines(&text) {
            if line.contains("russh::") || line.contains("use russh") {
                offenders.push(format!("{path}:{number}: {}", line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "russh outside transport/ssh/:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn only_the_agents_systemd_executor_knows_zbus() {
    let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src");
    let mut found = Vec::new();
    files(&agent, &agent, &[".rs"], &mut found);
    assert!(
        found
            .iter()
            .any(|(path, text)| path == "executor/systemd/bus.rs" && text.contains("use zbus")),
        "the agent's D-Bus code was not found"
    );
    let mut offenders = Vec::new();
    for (path, text) in found {
        if path == "executor/systemd.rs" || path.starts_with("executor/systemd/") {
            continue;
        }
        for (number, line) in code_lines(&text) {
            if line.contains("zbus") {
                offenders.push(format!("{path}:{number}: {}", line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "zbus outside the agent's systemd executor:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn executing_and_rendering_meet_only_at_event() {
    // For each module of the run's pipeline, the crate modules it must not import.
    let forbidden: &[(&str, &[&str])] = &[
        (
            "plan",
            &["report", "journal", "transport", "scheduler", "event"],
        ),
        (
            "event",
            &["plan", "report", "journal", "transport", "scheduler"],
        ),
        ("report", &["journal", "transport", "scheduler"]),
        ("journal", &["report", "transport", "scheduler"]),
        ("transport", &["report", "journal", "scheduler"]),
        ("transfer", &["report", "journal", "scheduler"]),
        ("scheduler", &["report", "journal"]),
    ];
    let mut offenders = Vec::new();
    for (path, text) in controller_files() {
        let module = module_of(&path);
        let Some((_, banned)) = forbidden.iter().find(|(name, _)| *name == module) else {
            continue;
        };
        for (number, line) in code_lines(&text) {
            for other in *banned {
                if line.contains(&format!("crate::{other}::"))
                    || line.contains(&format!("crate::{other};"))
                    || line.contains(&format!("crate::{other}}}"))
                {
                    offenders.push(format!(
                        "{path}:{number} ({module} -> {other}): {}",
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "imports against the layout:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn no_comment_points_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    for crate_dir in [
        "common",
        "proto",
        "controller",
        "agent",
        "tests",
        "bench",
        "deploy",
    ] {
        let mut found = Vec::new();
        let endings = [".rs", ".sh", ".toml", ".service", ".proto"];
        files(&root.join(crate_dir), &root, &endings, &mut found);
        for (path, text) in found {
            for (number, line) in text.lines().enumerate() {
                if line.contains("../shared") || line.contains("/work/") {
                    offenders.push(format!("{path}:{}: {}", number + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "references outside the repository:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The scanners must be able to fail: they find russh where it is allowed, and an import
    // where one exists.
    let files = controller_files();
    assert!(
        files
            .iter()
            .any(|(path, text)| path.starts_with("transport/ssh/")
                && code_lines(text).any(|(_, line)| line.contains("use russh")))
    );
    assert!(files.iter().any(|(path, text)| module_of(path) == "report"
        && code_lines(text).any(|(_, line)| line.contains("crate::event::"))));
    assert_eq!(module_of("transport/ssh/mod.rs"), "transport");
    assert_eq!(module_of("plan.rs"), "plan");
}
