use super::*;

fn spec(user: Option<&str>, become_root: bool) -> ExecSpec {
    ExecSpec {
        execution_id: "test".to_string(),
        program: Program::Shell("true".to_string()),
        env: BTreeMap::new(),
        working_dir: None,
        timeout: None,
        max_output: None,
        user: user.map(str::to_string),
        become_root,
        keep_output: None,
        stdin: Default::default(),
    }
}

fn root_agent() -> AgentProcess {
    AgentProcess { uid: 0, tz: None }
}

fn account(name: &str, uid: u32, shell: &str) -> Account {
    Account {
        name: name.to_string(),
        uid,
        gid: uid,
        home: PathBuf::from(format!("/home/{name}")),
        shell: shell.to_string(),
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[test]
fn a_user_gets_what_sshd_sets_and_nothing_else() {
    let agent = AgentProcess {
        uid: 0,
        tz: Some("Europe/Paris".to_string()),
    };
    assert_eq!(
        login_environment(
            &account("deploy", 1001, "/bin/bash"),
            &SessionConfig::default(),
            &agent
        ),
        env(&[
            ("HOME", "/home/deploy"),
            ("LOGNAME", "deploy"),
            ("MAIL", "/var/mail/deploy"),
            ("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/games"),
            ("SHELL", "/bin/bash"),
            ("TZ", "Europe/Paris"),
            ("USER", "deploy"),
        ])
    );
}

#[test]
fn root_gets_the_superuser_path_and_an_empty_shell_field_means_sh() {
    let root = Account {
        home: PathBuf::from("/root"),
        ..account("root", 0, "")
    };
    let env = login_environment(&root, &SessionConfig::default(), &root_agent());
    assert_eq!(
        env["PATH"],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    assert_eq!(env["SHELL"], "/bin/sh");
    assert!(!env.contains_key("TZ"));
}

#[test]
fn configured_variables_come_after_the_login_ones() {
    let config = SessionConfig {
        env: env(&[("LANG", "C.UTF-8"), ("PATH", "/opt/bin:/usr/bin")]),
        ..SessionConfig::default()
    };
    let env = login_environment(&account("deploy", 1001, "/bin/sh"), &config, &root_agent());
    assert_eq!(env["LANG"], "C.UTF-8");
    assert_eq!(env["PATH"], "/opt/bin:/usr/bin");
}

#[test]
fn the_agent_itself_leaks_nothing_into_a_session() {
    // Whatever this test process has in its environment, only the login variables come out.
    let session = resolve(
        &spec(Some("root"), false),
        &SessionConfig::default(),
        &root_agent(),
    )
    .expect("root exists everywhere");
    let names: Vec<&str> = session.env.keys().map(String::as_str).collect();
    assert_eq!(names, ["HOME", "LOGNAME", "MAIL", "PATH", "SHELL", "USER"]);
    assert!(session.switch_user);
    assert_eq!(session.account.uid, 0);
}

#[test]
fn the_request_names_the_user_and_may_add_variables() {
    let mut asked = spec(Some("nobody"), false);
    asked.env = env(&[("GREETING", "hello"), ("USER", "spoofed")]);
    let session = resolve(&asked, &SessionConfig::default(), &root_agent())
        .expect("Debian has the user nobody");
    assert_eq!(session.account.name, "nobody");
    assert_ne!(session.account.uid, 0);
    assert_eq!(session.env["GREETING"], "hello");
    // The request's variables are the operator's: they win, as `env X=Y cmd` would.
    assert_eq!(session.env["USER"], "spoofed");
    assert_eq!(session.env["LOGNAME"], "nobody");
}

#[test]
fn become_root_runs_in_roots_session_and_says_who_asked() {
    let session = resolve(
        &spec(Some("nobody"), true),
        &SessionConfig::default(),
        &root_agent(),
    )
    .expect("root and nobody exist");
    assert_eq!(session.account.uid, 0);
    assert_eq!(session.env["USER"], "root");
    assert_eq!(session.env["SUDO_USER"], "nobody");
    let nobody = lookup("nobody").expect("nobody exists");
    assert_eq!(session.env["SUDO_UID"], nobody.uid.to_string());
    // Root becoming root is just root.
    let root = resolve(
        &spec(Some("root"), true),
        &SessionConfig::default(),
        &root_agent(),
    )
    .expect("root exists");
    assert!(!root.env.contains_key("SUDO_USER"), "{:?}", root.env);
}

#[test]
fn refusals_are_decided_before_anything_runs() {
    let no_root = SessionConfig {
        allow_root: false,
        ..SessionConfig::default()
    };
    let check = |spec: ExecSpec, config: &SessionConfig, agent: &AgentProcess, expected: &str| {
        let error = resolve(&spec, config, agent).expect_err("refused");
        assert_eq!(error.to_string(), expected, "{spec:?}");
    };
    check(
        spec(Some("no-such-user-volley"), false),
        &SessionConfig::default(),
        &root_agent(),
        "there is no user 'no-such-user-volley' on this host",
    );
    check(
        spec(Some("a:b"), false),
        &SessionConfig::default(),
        &root_agent(),
        "'a:b' is not a user name",
    );
    let refused =
        "this agent does not run commands as root (session.allow_root = false in its config)";
    check(spec(Some("root"), false), &no_root, &root_agent(), refused);
    check(spec(Some("nobody"), true), &no_root, &root_agent(), refused);
    // An agent that is not root runs commands as itself only.
    let nobody = lookup("nobody").expect("nobody exists");
    let as_nobody = AgentProcess {
        uid: nobody.uid,
        tz: None,
    };
    check(
        spec(Some("root"), false),
        &SessionConfig::default(),
        &as_nobody,
        "the agent runs as 'nobody', not as root, so it cannot run commands as 'root'",
    );
    let itself =
        resolve(&spec(None, false), &SessionConfig::default(), &as_nobody).expect("its own user");
    assert_eq!(itself.account.name, "nobody");
    assert!(!itself.switch_user);
}

#[test]
fn a_user_whose_shell_cannot_run_is_refused_for_shell_commands() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let text = dir.path().join("not-a-program");
    std::fs::write(&text, "").expect("write");
    let shell = text.display().to_string();
    let user = account("deploy", 1001, &shell);
    let error = build(
        &spec(None, false),
        user.clone(),
        None,
        &SessionConfig::default(),
        &root_agent(),
    )
    .expect_err("refused");
    assert_eq!(
        error.to_string(),
        format!("user 'deploy' cannot log in: its shell {shell} is not an executable file")
    );
    // A program run without a shell does not need one.
    let mut argv = spec(None, false);
    argv.program = Program::Argv(vec!["true".to_string()]);
    build(&argv, user, None, &SessionConfig::default(), &root_agent()).expect("no shell needed");
}

#[test]
fn programs_are_found_on_the_session_path() {
    assert_eq!(
        find_program("sh", Some("/nonexistent:/bin")),
        Some(PathBuf::from("/bin/sh"))
    );
    assert_eq!(find_program("sh", Some("/nonexistent")), None);
    assert_eq!(find_program("sh", None), None);
    assert_eq!(
        find_program("/bin/sh", None),
        Some(PathBuf::from("/bin/sh"))
    );
    assert_eq!(find_program("/nonexistent/program", Some("/bin")), None);
}
