//! The session a command runs in: the user the request names, its login shell, home, groups,
//! umask 022, a clean environment; `become_root`; and the refusals, which run nothing. The agent
//! runs as root here, as it does on a fleet. The open-file limit is tested end to end in
//! `tests/tests/agent_run/hardening.rs`.
//! The same command over SSH and through an agent is compared end to end in
//! `tests/tests/agent_run/semantics.rs`.

use tonic::Code;
use volley_common::exec::{ExitStatus, Program};

use crate::fixture::{Agent, Options, request_as, run};

/// The agent switches users only as root; without root these tests cannot mean anything.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests start the agent as root, as it runs on a fleet: run them as root"
    );
}

fn sh(line: &str) -> Program {
    Program::Argv(vec!["sh".to_string(), "-c".to_string(), line.to_string()])
}

fn lines(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_as_its_user_with_that_users_groups_home_umask_and_environment() {
    require_root();
    // The agent itself runs with umask 077 (as under its unit) and with variables of its own.
    let agent = Agent::start(Options {
        before_start: "umask 077",
        ..Options::default()
    });
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("the password database")
        .expect("Debian has the user nobody");
    let mut client = agent.controller().await;
    let probe = sh("id -un; id -u; id -G; umask; pwd; env");
    let ran = run(&mut client, request_as(probe, Some("nobody"), false)).await;
    assert_eq!(ran.exited.status, ExitStatus::Code(0), "{ran:?}");
    let out = lines(&ran.stdout);
    assert_eq!(
        out[..5],
        [
            "nobody".to_string(),
            nobody.uid.to_string(),
            nobody.gid.to_string(),
            "0022".to_string(),
            // nobody's home does not exist: sshd's warning, and the command starts in `/`.
            "/".to_string(),
        ]
    );
    assert_eq!(
        String::from_utf8_lossy(&ran.stderr),
        format!(
            "Could not chdir to home directory {}: No such file or directory\n",
            nobody.dir.display()
        )
    );
    let mut env: Vec<&str> = out[5..]
        .iter()
        .map(|line| line.split('=').next().unwrap_or_default())
        .collect();
    env.sort_unstable();
    // What sshd sets, and what sh adds (PWD); nothing of the agent's own environment
    // (HOME of its own, RUST_LOG, NOTIFY_SOCKET).
    assert_eq!(
        env,
        ["HOME", "LOGNAME", "MAIL", "PATH", "PWD", "SHELL", "USER"],
        "{out:?}"
    );
    assert!(
        out.contains(&format!("HOME={}", nobody.dir.display()))
            && out.contains(&"PATH=/usr/local/bin:/usr/bin:/bin:/usr/games".to_string())
            && out.contains(&"MAIL=/var/mail/nobody".to_string()),
        "{out:?}"
    );
    let log = agent.log();
    assert!(
        log.contains("exec started") && log.contains("user=nobody"),
        "the user is audited: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_command_runs_in_the_users_login_shell_with_c() {
    require_root();
    let agent = Agent::start(Options::default());
    let root = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0))
        .expect("the password database")
        .expect("root");
    let shell_path = root.shell.display().to_string();
    let name = shell_path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut client = agent.controller().await;
    let ran = run(
        &mut client,
        request_as(
            Program::Shell("echo $0; echo $SHELL; pwd".to_string()),
            Some("root"),
            false,
        ),
    )
    .await;
    assert_eq!(
        lines(&ran.stdout),
        [name, shell_path, root.dir.display().to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn become_root_runs_as_root_and_names_who_asked() {
    require_root();
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let ran = run(
        &mut client,
        request_as(sh("id -u; echo $USER $SUDO_USER"), Some("nobody"), true),
    )
    .await;
    assert_eq!(lines(&ran.stdout), ["0", "root nobody"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sessions_run_nothing_and_say_why() {
    require_root();
    let agent = Agent::start(Options {
        extra: "[session]\nallow_root = false",
        ..Options::default()
    });
    let mut client = agent.controller().await;
    let marker = agent.path("ran");
    let touch = || sh(&format!("touch {}", marker.display()));
    let cases = [
        (
            request_as(touch(), Some("no-such-user-volley"), false),
            "there is no user 'no-such-user-volley' on this host",
        ),
        (
            request_as(touch(), Some("root"), false),
            "this agent does not run commands as root (session.allow_root = false in its config)",
        ),
        (
            request_as(touch(), Some("nobody"), true),
            "this agent does not run commands as root (session.allow_root = false in its config)",
        ),
        // No user named: the agent's own, root here.
        (
            request_as(touch(), None, false),
            "this agent does not run commands as root (session.allow_root = false in its config)",
        ),
    ];
    for (request, reason) in cases {
        let refused = client.exec(request).await.expect_err("refused");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert_eq!(refused.message(), reason);
    }
    assert!(!marker.exists(), "a refused command ran");
    assert_eq!(
        agent.log().matches("exec refused").count(),
        4,
        "{}",
        agent.log()
    );
    // Other users still run.
    let ran = run(&mut client, request_as(sh("id -un"), Some("nobody"), false)).await;
    assert_eq!(lines(&ran.stdout), ["nobody"]);

    // A refusal's reason quotes what the request said, newlines escaped: a record is one
    // line, and a user name cannot write a record of its own.
    let forged = "2026-12-03T19:50:00.000000Z  INFO audit: exec started peer=forged";
    let refused = client
        .exec(request_as(
            touch(),
            Some(&format!("nobody\n{forged}")),
            false,
        ))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let log = agent.log();
    assert!(!log.lines().any(|line| line.starts_with(forged)), "{log}");
    assert_eq!(log.matches("exec refused").count(), 5, "{log}");
}

/// A request's variables are the command's environment, never that of the helper that starts
/// it as root: an `LD_PRELOAD` among them is loaded into the command as its user, and never
/// first as root, even on an agent that runs nothing as root (`allow_root = false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_ld_preload_is_never_loaded_as_root() {
    use std::os::unix::fs::PermissionsExt;

    require_root();
    let agent = Agent::start(Options {
        extra: "[session]\nallow_root = false",
        ..Options::default()
    });
    // A library that writes down, in a file anyone may append to, the euid of every process it
    // is loaded into.
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = dir.path().join("loaded");
    std::fs::write(&marker, "").unwrap();
    std::fs::set_permissions(&marker, std::fs::Permissions::from_mode(0o666)).unwrap();
    let source = dir.path().join("preload.c");
    std::fs::write(
        &source,
        format!(
            "#include <fcntl.h>\n#include <stdio.h>\n#include <unistd.h>\n\
             __attribute__((constructor)) static void loaded(void) {{\n\
             int fd = open(\"{}\", O_WRONLY | O_APPEND);\n\
             if (fd >= 0) {{ dprintf(fd, \"%d\\n\", (int)geteuid()); close(fd); }}\n}}\n",
            marker.display()
        ),
    )
    .unwrap();
    let library = dir.path().join("preload.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .output()
        .expect("cc, which building volley needs, runs");
    assert!(built.status.success(), "{built:?}");

    let nobody = nix::unistd::User::from_name("nobody")
        .expect("the password database")
        .expect("Debian has the user nobody");
    let mut client = agent.controller().await;
    let mut request = request_as(sh("true"), Some("nobody"), false);
    request
        .env
        .insert("LD_PRELOAD".to_string(), library.display().to_string());
    let ran = run(&mut client, request).await;
    assert_eq!(ran.exited.status, ExitStatus::Code(0), "{ran:?}");
    let loaded = std::fs::read_to_string(&marker).unwrap();
    assert!(
        !loaded.is_empty(),
        "the library was never loaded: the test shows nothing"
    );
    for euid in loaded.lines() {
        assert_eq!(
            euid,
            nobody.uid.to_string(),
            "loaded as euid {euid}: {loaded:?}"
        );
    }
}

/// An audit log that takes no record (a full disk; here /dev/full): the agent says so on
/// stderr and starts nothing it could not record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_runs_that_the_audit_log_cannot_record() {
    let agent = Agent::start(Options {
        extra: "audit_log = \"/dev/full\"",
        ..Options::default()
    });
    let mut client = agent.controller().await;
    let marker = agent.path("ran");
    let refused = client
        .exec(crate::fixture::shell(&format!(
            "touch {}",
            marker.display()
        )))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("audit log cannot be written"),
        "{refused:?}"
    );
    assert!(!marker.exists(), "a command ran unrecorded");
    let log = agent.log();
    assert_eq!(log.matches("cannot write a record").count(), 1, "{log}");
}
