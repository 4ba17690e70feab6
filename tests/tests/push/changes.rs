//! What changes, and where `--then` runs.

use std::os::unix::fs::MetadataExt;

use crate::deployment::{Deployment, record, text};

/// Three SSH hosts and three agents: one of each holds the file already, one holds another
/// version, one has none. Only the last two kinds are written, and only there does `--then`
/// run; the second push finds every host unchanged and runs nothing.
#[test]
fn only_hosts_where_a_file_differs_are_written_and_run_then() {
    let deployment = Deployment::start(3, 3);
    let conf = deployment.remote("app/app.conf");
    let marker = deployment.remote("app/reloads");
    let new = "listen 8080;\n";
    for host in deployment.hosts() {
        let files = deployment.files(&host);
        match &host[1..] {
            "01" => files.write(&conf, new),
            "02" => files.write(&conf, "listen 80;\n"),
            _ => std::fs::create_dir_all(files.path(&deployment.remote("app"))).unwrap(),
        }
    }
    let local = deployment.local("app.conf", new);
    let then = format!("echo reload >> {}; echo reloaded", marker.display());
    let push = || {
        deployment.volley(
            "push",
            [
                "-g".into(),
                "all".into(),
                "--json".into(),
                "--then".into(),
                then.clone().into(),
                local.clone().into_os_string(),
                conf.clone().into_os_string(),
            ],
        )
    };
    let output = push();
    output.assert_code(0);
    // The push's limit when no --timeout is given: 10 minutes, as recorded.
    assert_eq!(deployment.header()["options"]["timeout_ms"], 600_000);
    let records = output.records_by_host();
    let conf_text = conf.display().to_string();
    for host in deployment.hosts() {
        let record = record(&output, &records, &host, "succeeded");
        let files = deployment.files(&host);
        assert_eq!(text(&files, &conf).as_deref(), Some(new), "{host}");
        let expected = match &host[1..] {
            "01" => format!("unchanged: {conf_text}\n"),
            "02" => format!("changed: {conf_text} (content)\nreloaded\n"),
            _ => format!("changed: {conf_text} (new)\nreloaded\n"),
        };
        assert_eq!(record.stdout, expected, "{host}");
        let unchanged = host.ends_with("01");
        let reloads = if unchanged { None } else { Some("reload\n") };
        assert_eq!(text(&files, &marker).as_deref(), reloads, "{host}");
        let changed = if unchanged {
            vec![]
        } else {
            vec![conf_text.clone()]
        };
        assert_eq!(record.changed.as_ref(), Some(&changed), "{host}");
        // What changed is journalled per host too.
        let journal = deployment.journal();
        assert_eq!(
            journal[&host]["changed"],
            serde_json::json!(changed),
            "{host}"
        );
    }

    let again = push();
    again.assert_code(0);
    let records = again.records_by_host();
    for host in deployment.hosts() {
        let record = record(&again, &records, &host, "succeeded");
        assert_eq!(record.stdout, format!("unchanged: {conf_text}\n"), "{host}");
        let files = deployment.files(&host);
        let reloads = if host.ends_with("01") {
            None
        } else {
            Some("reload\n")
        };
        assert_eq!(
            text(&files, &marker).as_deref(),
            reloads,
            "{host}: --then ran again"
        );
    }
}

/// A failing `--then` is its host's failure, after the file is in place; `volley retry` runs
/// it again there although the file is then unchanged, since it never completed.
#[test]
fn a_failing_then_fails_its_host_and_a_retry_runs_it_again() {
    let deployment = Deployment::start(1, 1);
    let conf = deployment.remote("site.conf");
    let runs = deployment.remote("then-runs");
    let ready = deployment.remote("ready");
    for host in deployment.hosts() {
        deployment.files(&host).write(&conf, "old\n");
    }
    let local = deployment.local("site.conf", "new\n");
    let then = format!(
        "echo ran >> {}; test -e {} || {{ echo checking >&2; exit 3; }}",
        runs.display(),
        ready.display()
    );
    let output = deployment.volley(
        "push",
        [
            "-g".into(),
            "all".into(),
            "--json".into(),
            "--mode".into(),
            "0640".into(),
            "--owner".into(),
            "root:daemon".into(),
            "--backup".into(),
            "--then".into(),
            then.into(),
            local.into_os_string(),
            conf.clone().into_os_string(),
        ],
    );
    output.assert_code(1);
    let records = output.records_by_host();
    for host in deployment.hosts() {
        let record = record(&output, &records, &host, "non_zero_exit");
        assert_eq!(record.exit_code, Some(3), "{host}");
        assert_eq!(record.stderr, "checking\n", "{host}");
        let files = deployment.files(&host);
        assert_eq!(text(&files, &conf).as_deref(), Some("new\n"), "{host}");
        let metadata = std::fs::metadata(files.path(&conf)).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o640, "{host}");
        assert_eq!(
            (metadata.uid(), metadata.gid()),
            (0, 1),
            "{host}: root:daemon"
        );
        let names = files.names(&deployment.remote(""));
        let backup = names
            .iter()
            .find(|name| name.ends_with('~'))
            .expect("a backup");
        assert!(
            backup.starts_with("site.conf.") && backup.contains('T'),
            "{backup}"
        );
        let kept = deployment.remote(backup);
        assert_eq!(text(&files, &kept).as_deref(), Some("old\n"), "{host}");
        assert!(
            record
                .stdout
                .contains(&format!("backup {}", kept.display())),
            "{host}: {record:?}"
        );
        assert_eq!(record.changed, Some(vec![conf.display().to_string()]));
        files.write(&ready, "");
    }

    let mut retry = deployment.ssh.volley();
    retry.args(["retry", "last"]);
    let retried = volley_tests::RunningProcess::spawn(&mut retry).finish(crate::RUN_DEADLINE);
    retried.assert_code(0);
    let records = retried.records_by_host();
    for host in deployment.hosts() {
        let record = record(&retried, &records, &host, "succeeded");
        assert!(
            record.stdout.starts_with(&format!(
                "unchanged: {}; --then runs again: it did not complete in run",
                conf.display()
            )),
            "{host}: {record:?}"
        );
        assert_eq!(record.changed, Some(vec![]), "{host}");
        let files = deployment.files(&host);
        assert_eq!(text(&files, &runs).as_deref(), Some("ran\nran\n"), "{host}");
    }
}

/// A directory goes into REMOTE with its tree; its directories are made on the hosts.
#[test]
fn a_directory_tree_is_pushed_and_compared_file_by_file() {
    let deployment = Deployment::start(1, 1);
    let tree = deployment.local("conf.d/a.conf", "a\n");
    deployment.local("conf.d/sub/b.conf", "b\n");
    let conf_d = tree.parent().unwrap().to_path_buf();
    let target = deployment.remote("nginx");
    for host in deployment.hosts() {
        let files = deployment.files(&host);
        files.write(&deployment.remote("nginx/conf.d/a.conf"), "a\n");
    }
    let output = deployment.volley(
        "push",
        [
            "-g".into(),
            "all".into(),
            "--json".into(),
            conf_d.into_os_string(),
            format!("{}/", target.display()).into(),
        ],
    );
    output.assert_code(0);
    let records = output.records_by_host();
    let b = deployment.remote("nginx/conf.d/sub/b.conf");
    for host in deployment.hosts() {
        let record = record(&output, &records, &host, "succeeded");
        assert_eq!(
            record.stdout,
            format!("changed: {} (new); 1 unchanged\n", b.display()),
            "{host}"
        );
        assert_eq!(text(&deployment.files(&host), &b).as_deref(), Some("b\n"));
    }
}

/// A non-root SSH user cannot replace root's file; with `--become` every step goes through
/// `sudo -n` and the file is root's, as `volley run --become` would have written it.
#[test]
fn become_pushes_as_root_over_ssh() {
    let deployment = Deployment::start(1, 0);
    let user = volley_tests::users::ensure(volley_tests::users::Sudo::Passwordless);
    let conf = deployment.remote("root.conf");
    let files = deployment.files("h01");
    files.write(&conf, "old\n");
    let local = deployment.local("root.conf", "new\n");
    let push = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = ["-w", "h01", "--json"].map(Into::into).to_vec();
        args.extend(extra.iter().map(Into::into));
        args.extend([
            local.clone().into_os_string(),
            conf.clone().into_os_string(),
        ]);
        let command = deployment.args_as(user, "push", args);
        volley_tests::RunningProcess::spawn(deployment.ssh.volley().args(command))
            .finish(crate::RUN_DEADLINE)
    };
    let refused = push(&[]);
    refused.assert_code(1);
    let records = refused.records_by_host();
    let failed = record(&refused, &records, "h01", "step_failed");
    let reason = failed.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("Permission denied"), "{reason}");
    assert_eq!(text(&files, &conf).as_deref(), Some("old\n"));

    let output = push(&["--become"]);
    output.assert_code(0);
    let records = output.records_by_host();
    record(&output, &records, "h01", "succeeded");
    assert_eq!(text(&files, &conf).as_deref(), Some("new\n"));
    let metadata = std::fs::metadata(files.path(&conf)).unwrap();
    assert_eq!((metadata.uid(), metadata.gid()), (0, 0), "still root's");
}

/// The probe's answers come after whatever the login shell prints (Debian's bash reads
/// `~/.bashrc` for the commands sshd runs): a greeting changes neither what is found changed nor
/// what is found unchanged.
#[test]
fn a_greeting_login_shell_does_not_confuse_the_probe() {
    let ssh = volley_tests::FleetSpec::new(1).with_login_environment();
    let deployment = Deployment::with_specs(ssh, volley_tests::AgentFleetSpec::new(0));
    let user = volley_tests::users::ensure(volley_tests::users::Sudo::Greeted);
    let conf = deployment.remote("greeted.conf");
    let files = deployment.files("h01");
    files.write(&conf, "old\n");
    let local = deployment.local("greeted.conf", "new\n");
    let push = || {
        let args: Vec<std::ffi::OsString> = vec![
            "-w".into(),
            "h01".into(),
            "--become".into(),
            "--json".into(),
            local.clone().into_os_string(),
            conf.clone().into_os_string(),
        ];
        let command = deployment.args_as(user, "push", args);
        volley_tests::RunningProcess::spawn(deployment.ssh.volley().args(command))
            .finish(crate::RUN_DEADLINE)
    };
    let output = push();
    output.assert_code(0);
    let records = output.records_by_host();
    let changed = record(&output, &records, "h01", "succeeded");
    assert_eq!(
        changed.stdout,
        format!("changed: {} (content)\n", conf.display()),
        "{}",
        output.describe()
    );
    assert_eq!(text(&files, &conf).as_deref(), Some("new\n"));

    let output = push();
    output.assert_code(0);
    let records = output.records_by_host();
    let unchanged = record(&output, &records, "h01", "succeeded");
    assert_eq!(
        unchanged.stdout,
        format!("unchanged: {}\n", conf.display()),
        "{}",
        output.describe()
    );
    assert_eq!(unchanged.changed.as_ref(), Some(&vec![]));
}
