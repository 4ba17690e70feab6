//! Hosts where a push cannot complete: each is its own outcome, the old file stays, nothing is
//! left beside it, and `volley retry` finishes the job once the host is fixed.

use std::path::Path;

use volley_tests::isolation::HostFiles;

use crate::deployment::{Deployment, record, text};

/// The names in `dir` on a host that are not the ones expected: a temporary file left behind.
fn leftovers(files: &HostFiles, dir: &Path, expected: &[&str]) -> Vec<String> {
    files
        .names(dir)
        .into_iter()
        .filter(|name| !expected.contains(&name.as_str()))
        .collect()
}

/// On `*01` the destination's disk is full, on `*02` it is read-only, `*03` is fine; over SSH
/// (`h`) and through agents (`a`) alike.
#[test]
fn a_full_or_read_only_destination_fails_its_host_and_keeps_the_old_file() {
    let deployment = Deployment::start(3, 3);
    let dir = deployment.remote("data");
    let conf = deployment.remote("data/app.bin");
    let filler = deployment.remote("data/filler");
    for host in deployment.hosts() {
        let files = deployment.files(&host);
        match &host[1..] {
            "01" => {
                files.mount_small_disk(&dir, "1m");
                files.write(&conf, "old");
                files.write(&filler, vec![0u8; 640 << 10]);
            }
            "02" => {
                files.write(&conf, "old");
                files.make_read_only(&dir);
            }
            _ => files.write(&conf, "old"),
        }
    }
    let new = vec![7u8; 512 << 10];
    let local = deployment.local("app.bin", &new);
    let args = || {
        vec![
            "-g".into(),
            "all".into(),
            "--json".into(),
            local.clone().into_os_string(),
            conf.clone().into_os_string(),
        ]
    };
    let output = deployment.volley("push", args());
    output.assert_code(1);
    let records = output.records_by_host();
    for host in deployment.hosts() {
        let files = deployment.files(&host);
        let record = match &host[1..] {
            "03" => {
                assert_eq!(files.read(&conf), Some(new.clone()), "{host}");
                record(&output, &records, &host, "succeeded")
            }
            kind => {
                let record = record(&output, &records, &host, "step_failed");
                let reason = record.reason.as_deref().unwrap_or_default();
                let expected = if kind == "01" {
                    "No space left on device"
                } else {
                    "Read-only file system"
                };
                assert!(
                    reason.starts_with("upload failed: ") && reason.contains(expected),
                    "{host}: {reason}"
                );
                assert_eq!(text(&files, &conf).as_deref(), Some("old"), "{host}");
                assert_eq!(record.changed, Some(vec![]), "{host}: nothing changed");
                record
            }
        };
        let left = leftovers(&files, &dir, &["app.bin", "filler"]);
        assert!(left.is_empty(), "{host} left {left:?}: {record:?}");
    }

    // Room is made on the full hosts; a retry pushes to the hosts that failed, and only those.
    for host in ["h01", "a01"] {
        std::fs::remove_file(deployment.files(host).path(&filler)).expect("remove the filler");
    }
    let mut retry = deployment.ssh.volley();
    retry.args(["retry", "last"]);
    let retried = volley_tests::RunningProcess::spawn(&mut retry).finish(super::RUN_DEADLINE);
    retried.assert_code(1);
    let records = retried.records_by_host();
    assert_eq!(
        records.keys().collect::<Vec<_>>(),
        ["a01", "a02", "h01", "h02"],
        "{}",
        retried.describe()
    );
    for host in ["h01", "a01"] {
        record(&retried, &records, host, "succeeded");
        assert_eq!(
            deployment.files(host).read(&conf),
            Some(new.clone()),
            "{host}"
        );
    }
    for host in ["h02", "a02"] {
        record(&retried, &records, host, "step_failed");
    }
}

/// An agent refuses a path outside its `push_roots`, also when a link inside the root leads
/// out, and writes nothing there.
#[test]
fn a_path_outside_push_roots_is_refused() {
    let deployment = Deployment::start(0, 1);
    let outside = deployment.ssh.dir().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let files = deployment.files("a01");
    let link = deployment.remote("escape");
    std::fs::create_dir_all(files.path(&deployment.remote(""))).unwrap();
    std::os::unix::fs::symlink(&outside, files.path(&link)).unwrap();
    let local = deployment.local("f", "x");
    for target in [outside.join("f"), link.join("f")] {
        let output = deployment.volley(
            "push",
            [
                "-g".into(),
                "all".into(),
                "--json".into(),
                local.clone().into_os_string(),
                target.clone().into_os_string(),
            ],
        );
        output.assert_code(1);
        let records = output.records_by_host();
        let record = record(&output, &records, "a01", "step_failed");
        let reason = record.reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with("probe failed: ")
                && reason.contains("outside the agent's push_roots"),
            "{target:?}: {reason}"
        );
        assert_eq!(record.changed, None, "nothing was even compared");
    }
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
}

/// A file over the agent's `max_file_bytes` fails its host before anything is written: the
/// files before it in the push are not left in place, half a deployment, with `--then` unrun.
#[test]
fn a_file_over_the_agent_s_size_limit_fails_the_host_before_any_file_is_written() {
    let agents =
        volley_tests::AgentFleetSpec::new(1).with_config("[limits]\nmax_file_bytes = 1000\n");
    let deployment = Deployment::with_specs(volley_tests::FleetSpec::new(0), agents);
    let dir = deployment.remote("app");
    let files = deployment.files("a01");
    std::fs::create_dir_all(files.path(&dir)).unwrap();
    let small = deployment.local("conf/a-first.conf", "small\n");
    let big = deployment.local("conf/z-big.bin", vec![1u8; 5000]);
    let output = deployment.volley(
        "push",
        [
            "-g".into(),
            "all".into(),
            "--json".into(),
            small.into_os_string(),
            big.into_os_string(),
            format!("{}/", dir.display()).into(),
        ],
    );
    output.assert_code(1);
    let records = output.records_by_host();
    let record = record(&output, &records, "a01", "step_failed");
    let reason = record.reason.as_deref().unwrap_or_default();
    assert_eq!(
        reason,
        format!(
            "upload failed: {}/z-big.bin: 5000 bytes is more than the agent's max_file_bytes (1000); nothing was written",
            dir.display()
        )
    );
    assert_eq!(files.read(&dir.join("a-first.conf")), None, "not written");
    assert_eq!(files.names(&dir), Vec::<String>::new(), "nothing left");
}

/// Batches and the failure budget apply to a push as to a command: the canary's failure stops
/// the rollout, the other hosts are skipped and keep their file, and the journal says so.
#[test]
fn a_failing_canary_stops_a_batched_push() {
    let deployment = Deployment::start(2, 1);
    let dir = deployment.remote("app");
    let conf = deployment.remote("app/app.conf");
    for host in deployment.hosts() {
        deployment.files(&host).write(&conf, "old");
    }
    deployment.files("h01").make_read_only(&dir);
    let local = deployment.local("app.conf", "new");
    let output = deployment.volley(
        "push",
        [
            "-g".into(),
            "all".into(),
            "--json".into(),
            "--batch".into(),
            "1".into(),
            "--abort-on-failure".into(),
            "--then".into(),
            "echo reloaded".into(),
            local.into_os_string(),
            conf.clone().into_os_string(),
        ],
    );
    output.assert_code(3);
    let records = output.records_by_host();
    let canary = volley_tests::report::expect_outcome(&output, &records, "h01", "step_failed");
    assert_eq!(canary.batch, 1);
    for host in ["h02", "a01"] {
        let skipped = volley_tests::report::expect_outcome(&output, &records, host, "skipped");
        // Never started: no transport either (`a01` would be an agent's, `h02` SSH's).
        assert_eq!(
            (
                skipped.attempts,
                skipped.changed.as_ref(),
                skipped.transport.as_str()
            ),
            (0, None, "-"),
            "{host}"
        );
        let files = deployment.files(host);
        assert_eq!(text(&files, &conf).as_deref(), Some("old"), "{host}");
    }
    let journal = deployment.journal();
    assert_eq!(journal["h02"]["outcome"]["kind"], "skipped");
    assert_eq!(journal["h02"]["transport"], serde_json::Value::Null);
    assert_eq!(journal["h01"]["changed"], serde_json::json!([]));
}
