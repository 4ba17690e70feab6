//! Bad input: one line naming it (or clap's message for a missing argument), exit 64, and no
//! host contacted (no run is even journalled).

use volley_tests::ProcessOutput;
use volley_tests::report::EXIT_USAGE;
use volley_tests::volley::{RUN_DEADLINE, volley_command};

#[test]
fn bad_input_is_one_line_and_exit_64_before_any_host() {
    let home = tempfile::tempdir().unwrap();
    let local = home.path().join("app.conf");
    std::fs::write(&local, "x").unwrap();
    let local = local.display().to_string();
    let missing = home.path().join("missing").display().to_string();
    // A target nobody could reach: had volley tried, it would have failed differently.
    let target = "nowhere.invalid";
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["push", "-w", target, &missing, "/srv/app.conf"],
            format!("volley: {missing}: file not found"),
        ),
        (
            vec!["push", "-w", target, &local, "srv/app.conf"],
            "volley: REMOTE 'srv/app.conf': not an absolute path".to_string(),
        ),
        (
            vec!["push", "-w", target, &local, "/srv/../etc/app.conf"],
            "volley: REMOTE '/srv/../etc/app.conf': '.' and '..' are not allowed".to_string(),
        ),
        (
            vec![
                "push",
                "-w",
                target,
                "--mode",
                "0999",
                &local,
                "/srv/app.conf",
            ],
            "volley: --mode '0999': not an octal mode such as 0644".to_string(),
        ),
        (
            vec![
                "push",
                "-w",
                target,
                "--owner",
                "root:",
                &local,
                "/srv/app.conf",
            ],
            "volley: --owner 'root:': expected USER, USER:GROUP or :GROUP (names or numbers)"
                .to_string(),
        ),
        (
            vec!["push", "-w", target, "--then", " ", &local, "/srv/app.conf"],
            "volley: --then: the command is empty".to_string(),
        ),
        (
            vec!["fetch", "-w", target, "etc/app.conf", "out"],
            "volley: REMOTE 'etc/app.conf': not an absolute path".to_string(),
        ),
        (
            vec!["fetch", "-w", target, "/etc/app.conf/", "out"],
            "volley: REMOTE '/etc/app.conf/': ends in '/', which names a directory; fetch brings back files".to_string(),
        ),
        // DIR is made and written to before any host: a file in its way is named so.
        (
            vec!["fetch", "-w", target, "/etc/app.conf", &local],
            format!(
                "volley: {local}: not a directory (a file or a link is in its place, or in place of a directory above it)"
            ),
        ),
    ];
    for (args, expected) in cases {
        let output: ProcessOutput =
            volley_tests::RunningProcess::spawn(volley_command(home.path()).args(&args))
                .finish(RUN_DEADLINE);
        output.assert_code(EXIT_USAGE);
        assert_eq!(output.stderr, format!("{expected}\n"), "{args:?}");
        assert_eq!(output.stdout, "", "{args:?}");
    }
    let missing_remote = volley_tests::RunningProcess::spawn(
        volley_command(home.path()).args(["push", "-w", target, &local]),
    )
    .finish(RUN_DEADLINE);
    missing_remote.assert_code(EXIT_USAGE);
    // clap's own message, with the usage line.
    assert!(
        missing_remote
            .stderr
            .starts_with("error: the following required arguments were not provided")
            && missing_remote.stderr.contains("volley push"),
        "{}",
        missing_remote.stderr
    );
    assert!(
        !home.path().join(".local/state/volley/runs").exists(),
        "a run was journalled"
    );
}

/// `--list-hosts` says where a push would go and sends nothing: the paths are not even read.
#[test]
fn list_hosts_shows_the_targets_and_pushes_nothing() {
    let deployment = crate::deployment::Deployment::start(1, 1);
    let output = deployment.volley(
        "push",
        [
            "-g",
            "all",
            "--list-hosts",
            "/nonexistent/app.conf",
            "/srv/app.conf",
        ],
    );
    output.assert_code(0);
    for host in deployment.hosts() {
        assert!(
            output.stdout.lines().any(|line| line.starts_with(&host)),
            "{host} is not listed:\n{}",
            output.describe()
        );
    }
    assert!(!deployment.ssh.runs_dir().exists(), "a run was journalled");
    let fetch = deployment.volley(
        "fetch",
        ["-g", "all", "--list-hosts", "/srv/app.conf", "out"],
    );
    fetch.assert_code(0);
    assert_eq!(fetch.stdout, output.stdout);
}
