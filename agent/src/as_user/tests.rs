use std::path::PathBuf;

use super::*;
use crate::session::Account;

fn session() -> Session {
    Session {
        account: Account {
            name: "nobody".to_string(),
            uid: 65534,
            gid: 65534,
            home: PathBuf::from("/nonexistent"),
            shell: "/bin/sh".to_string(),
        },
        switch_user: true,
        env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
    }
}

fn words(call: &HelperCall) -> Vec<String> {
    call.args
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_shell_command_runs_in_the_login_shell_as_the_user() {
    let call = call(
        &session(),
        &Program::Shell("echo $0".to_string()),
        None,
        Some(1024),
        true,
    )
    .unwrap();
    assert_eq!(
        words(&call),
        [
            "as-user",
            "--user",
            "nobody",
            "--uid=65534",
            "--gid=65534",
            "--nofile=1024",
            "--home",
            "/nonexistent",
            "--",
            "/bin/sh",
            "sh",
            "-c",
            "echo $0"
        ]
    );
    assert_eq!(call.env, session().env);
    let flagged = call.with_flag(ENV_FROM_STDIN);
    assert_eq!(words(&flagged)[..2], ["as-user", "--env-from-stdin"]);
    assert_eq!(words(&flagged).last().map(String::as_str), Some("echo $0"));
}

#[test]
fn a_working_directory_is_checked_only_where_the_agent_sees_the_host() {
    let program = Program::Shell("true".to_string());
    let error = call(&session(), &program, Some("/nonexistent"), None, true).unwrap_err();
    assert_eq!(
        error.to_string(),
        "working directory /nonexistent: not a directory"
    );
    let unchecked = call(&session(), &program, Some("/nonexistent"), None, false).unwrap();
    assert!(words(&unchecked).contains(&"/nonexistent".to_string()));
}

#[test]
fn the_environment_header_carries_every_variable_and_nothing_past_it() {
    let env: BTreeMap<String, String> = [
        ("HOME", "/root"),
        ("EMPTY", ""),
        ("ODD", "a=b\nc d\te"),
        ("UTF8", "déjà vu"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();
    let mut stdin = env_header(&env);
    stdin.extend_from_slice(b"the command's own input");
    let mut reader = stdin.as_slice();
    let read = read_env_header(&mut reader).unwrap();
    let read: BTreeMap<String, String> = read
        .into_iter()
        .map(|(name, value)| (name.into_string().unwrap(), value.into_string().unwrap()))
        .collect();
    assert_eq!(read, env);
    assert_eq!(reader, b"the command's own input");

    let mut empty = env_header(&BTreeMap::new());
    assert_eq!(empty, b"volley-env 0\n");
    empty.extend_from_slice(b"rest");
    let mut reader = empty.as_slice();
    assert!(read_env_header(&mut reader).unwrap().is_empty());
    assert_eq!(reader, b"rest");
}

#[test]
fn a_malformed_environment_header_is_refused() {
    for bad in [
        &b""[..],
        b"volley-env 10\nA=B\0",
        b"volley-env x\n",
        b"something else entirely, and long enough to be no header at all\n",
        b"volley-env 4\nAB\0\0",
    ] {
        let mut reader = bad;
        let error = read_env_header(&mut reader).expect_err("malformed");
        assert!(
            error.starts_with("the environment on stdin is malformed: "),
            "{bad:?}: {error}"
        );
    }
}
