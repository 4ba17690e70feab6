use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};

const INVENTORY: &str = r#"
user = "ops"
port = 2200
agent_prefix = "/srv/top"
[groups.web]
hosts = ["web[01-04]", "@db"]
user = "www"
[groups.db]
hosts = ["db1", "db2"]
identity_file = "~/.ssh/db_key"
agent_prefix = "/srv/db"
become = true
[groups.empty]
hosts = []
[hosts.web02]
address = "10.0.0.2"
port = 22
user = "root"
agent_prefix = "/srv/web02"
[hosts.db2]
become = false
"#;

const SSH_CONFIG: &str = "Host web03\n  HostName web03.internal\n  Port 2222\n  User admin\n\
                          Host bastion\n  HostName 10.9.9.9\n  Port 2202\n  User jumper\n\
                          \x20 IdentityFile ~/.ssh/jump_key\n\
                          Host inner\n  ProxyJump bastion\n\
                          Host app*\n  ProxyJump inner\n\
                          Host loop1\n  ProxyJump loop2\nHost loop2\n  ProxyJump loop1\n\
                          Host refused\n  ProxyCommand nc %h %p\n";

/// Builds a plan from `volley run ARGS -- true` against the inventory and ssh config above.
fn plan(args: &[&str]) -> Result<RunPlan, String> {
    plan_with(INVENTORY, args)
}

/// [`plan`] with another inventory.
fn plan_with(inventory_text: &str, args: &[&str]) -> Result<RunPlan, String> {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/config"), SSH_CONFIG).unwrap();
    let inventory = home.path().join("inventory.toml");
    std::fs::write(&inventory, inventory_text).unwrap();
    plan_in(home.path(), &inventory, args, &[]).map_err(|e| {
        e.to_string()
            .replace(&home.path().display().to_string(), "HOME")
    })
}

/// `volley run --inventory INVENTORY ARGS -- true` for the local user `me` with the home
/// directory `home` and the environment `variables`.
fn plan_in(
    home: &Path,
    inventory: &Path,
    args: &[&str],
    variables: &[(&str, &str)],
) -> Result<RunPlan, PlanError> {
    let argv = ["volley", "run", "--inventory", inventory.to_str().unwrap()];
    let argv = argv
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--", "true"]);
    let Command::Run(run) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!("the arguments start with `run`")
    };
    let env = Environment {
        home: home.to_path_buf(),
        local_user: "me".to_string(),
        variables: variables
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
    };
    RunPlan::new(&run, &env)
}

fn names(args: &[&str]) -> Result<Vec<String>, String> {
    plan(args).map(|plan| plan.hosts.into_iter().map(|host| host.name).collect())
}

fn check(args: &[&str], expected: Result<&[&str], &str>) {
    let expected = expected
        .map(|hosts| hosts.iter().map(|h| h.to_string()).collect())
        .map_err(str::to_string);
    assert_eq!(names(args), expected, "volley run {}", args.join(" "));
}

#[test]
fn targets_resolve_in_order_without_duplicates() {
    check(&["-w", "a,b,a"], Ok(&["a", "b"]));
    check(
        &["-w", "n[1-3]", "-w", "n2,n4"],
        Ok(&["n1", "n2", "n3", "n4"]),
    );
    check(&["-g", "db"], Ok(&["db1", "db2"]));
    check(
        &["-g", "web"],
        Ok(&["web01", "web02", "web03", "web04", "db1", "db2"]),
    );
    check(&["-w", "@db,x"], Ok(&["db1", "db2", "x"]));
    check(&["-w", "u@a:22,a,u@a:22"], Ok(&["u@a:22", "a"]));
}

#[test]
fn the_same_host_named_twice_runs_once_under_its_first_name() {
    // The local user is `me`, the inventory's `ops`, port 2200 at its top level.
    check(&["-w", "x,ops@x:2200"], Ok(&["x"]));
    check(&["-w", "ops@x:2200,X"], Ok(&["ops@x:2200"]));
    // Another user or port is another login.
    check(&["-w", "x,root@x,x:22"], Ok(&["x", "root@x", "x:22"]));
    // web02's inventory entry dials 10.0.0.2:22 as root: naming that address is naming web02.
    check(&["-w", "web02,root@10.0.0.2:22"], Ok(&["web02"]));
    // Through a group and a pattern: db1 by name, then again through @db.
    check(&["-g", "db", "-w", "db1"], Ok(&["db1", "db2"]));
    // The same name is the same host, in the place of its first mention.
    check(
        &["-w", "db1", "-g", "web"],
        Ok(&["db1", "web01", "web02", "web03", "web04", "db2"]),
    );
}

#[test]
fn an_address_written_two_ways_is_one_host() {
    check(
        &["-w", "[::1]:2240,[0:0::1]:2240,[::0001]:2240"],
        Ok(&["[::1]:2240"]),
    );
    check(
        &["-w", "web1.example,WEB1.example.,web1.example.:2200"],
        Ok(&["web1.example"]),
    );
}

/// One agent runs a command once, on the machine it is on: targets dialled at different SSH
/// endpoints that would reach the same agent (a NAT's port forwards) go over SSH, each to the
/// machine it names, since nothing tells which machine the agent is on; one SSH endpoint as
/// two users shares its agent. Through jump hosts, `auto` never dials agents directly (an
/// address meant from behind a bastion can be another machine from here).
#[test]
fn auto_uses_an_agent_only_where_it_names_one_machine_and_not_through_jump_hosts() {
    let transports = |args: &[&str]| {
        let plan = plan(args).unwrap();
        let hosts = plan.hosts.iter();
        let got: Vec<(String, TransportChoice)> = hosts
            .map(|host| (host.name.clone(), host.transport))
            .collect();
        (got, plan.shared_agents)
    };
    let (got, shared) = transports(&[
        "-w",
        "root@10.0.0.5:2222,alice@10.0.0.5:2223,root@10.0.0.6,alice@10.0.0.6,root@10.0.0.7:2222,root@10.0.0.7",
    ]);
    let expected = [
        ("root@10.0.0.5:2222", TransportChoice::Ssh),
        ("alice@10.0.0.5:2223", TransportChoice::Ssh),
        ("root@10.0.0.6", TransportChoice::Auto),
        ("alice@10.0.0.6", TransportChoice::Auto),
        ("root@10.0.0.7:2222", TransportChoice::Ssh),
        ("root@10.0.0.7", TransportChoice::Ssh),
    ];
    assert_eq!(
        got,
        expected.map(|(name, choice)| (name.to_string(), choice))
    );
    assert_eq!(
        shared,
        [
            "root@10.0.0.5:2222, alice@10.0.0.5:2223 (one agent, at 10.0.0.5:7731)",
            "root@10.0.0.7:2222, root@10.0.0.7 (one agent, at 10.0.0.7:7731)"
        ]
    );
    let (got, shared) = transports(&["-w", "appserver", "-J", "bastion"]);
    assert_eq!(got, [("appserver".to_string(), TransportChoice::Ssh)]);
    assert!(shared.is_empty(), "{shared:?}");
    // Through the agent only, there is no SSH to go to: refused before anything runs.
    let refused = plan(&[
        "-w",
        "root@10.0.0.5:2222,root@10.0.0.5:2223",
        "--transport",
        "agent",
    ])
    .unwrap_err();
    assert_eq!(
        refused,
        "root@10.0.0.5:2222, root@10.0.0.5:2223 would share the agent at 10.0.0.5:7731 though dialled at different SSH ports or addresses: nothing tells which machine it is on; give them transport = \"ssh\""
    );
}

#[test]
fn an_excluded_host_is_spared_under_every_name_it_is_dialled_by() {
    // web02 dials 10.0.0.2:22 (as root): that machine is left out, whoever logs in to it and
    // however it is named; another port there is another machine.
    check(
        &[
            "-w",
            "web02,10.0.0.2:22,me@10.0.0.2:22,10.0.0.2:2222,web01",
            "-x",
            "web02",
        ],
        Ok(&["10.0.0.2:2222", "web01"]),
    );
    check(
        &["-w", "web0[1-2]", "-x", "web0*"],
        Err("no targets left: -x 'web0*' leaves out all 2 of them"),
    );
    // A name has no case, nor a final dot, in an exclusion as in a target.
    check(&["-w", "web01,web02", "-x", "WEB02"], Ok(&["web01"]));
    check(&["-w", "web01,web02", "-x", "WEB02."], Ok(&["web01"]));
    check(&["-w", "web01,web02", "-x", "root@WEB02."], Ok(&["web01"]));
    // A host whose ssh config volley refuses can still be left out, and so get out of the way.
    check(&["-w", "refused,web01", "-x", "refused"], Ok(&["web01"]));
    // And the other way: an address leaves out the host dialled there, whatever its name.
    check(&["-w", "web01,web02", "-x", "10.0.0.2"], Ok(&["web01"]));
    check(&["-w", "web01,web02", "-x", "10.0.0.2:22"], Ok(&["web01"]));
    check(
        &["-w", "web01,web02", "-x", "root@10.0.0.2"],
        Ok(&["web01"]),
    );
    let planned = plan(&["-w", "web01,web02", "-x", "10.0.0.2:2200"]).unwrap();
    assert_eq!(
        planned.warnings,
        ["-x '10.0.0.2:2200' leaves out none of the 2 targets"]
    );
}

#[test]
fn exclusions_take_names_ranges_groups_and_globs() {
    check(
        &["-g", "web", "-x", "web02"],
        Ok(&["web01", "web03", "web04", "db1", "db2"]),
    );
    check(
        &["-g", "web", "-x", "web[01-03]"],
        Ok(&["web04", "db1", "db2"]),
    );
    check(
        &["-g", "web", "-x", "@db"],
        Ok(&["web01", "web02", "web03", "web04"]),
    );
    check(&["-g", "web", "-x", "web*,db2"], Ok(&["db1"]));
    // A user or port narrows an exclusion to the target named so.
    check(
        &["-w", "alice@h1,bob@h1,h1:2222,h2", "-x", "bob@h1,h1:2222"],
        Ok(&["alice@h1", "h2"]),
    );
    check(&["-w", "alice@h1,bob@h1,h2", "-x", "h1"], Ok(&["h2"]));
    // ... as the host is dialled, whatever settled its user and port: web02's inventory entry
    // (root), web03's ssh config (port 2222), web01's group (www).
    check(
        &["-g", "web", "-x", "root@web02,web03:2222,www@web01"],
        Ok(&["web04", "db1", "db2"]),
    );
    let planned = plan(&["-g", "web", "-x", "ops@web01,web04:22"]).unwrap();
    assert_eq!(planned.hosts.len(), 6);
    assert_eq!(
        planned.warnings,
        [
            "-x 'ops@web01' leaves out none of the 6 targets",
            "-x 'web04:22' leaves out none of the 6 targets",
        ]
    );
    // A group leaves out its hosts however they are named, its entries' users and ports aside.
    let inventory = "[groups.web]\nhosts = [\"root@web09:2200\", \"web10\"]\n";
    let planned = plan_with(inventory, &["-w", "web09,web10,web11", "-x", "@web"]).unwrap();
    let names: Vec<&str> = planned
        .hosts
        .iter()
        .map(|host| host.name.as_str())
        .collect();
    assert_eq!(names, ["web11"]);
    // A group entry's user and port make the host that login, however it is named.
    let planned = plan_with(
        inventory,
        &["-w", "web09,web10,root@web09:2200", "-x", "root@web09:2200"],
    )
    .unwrap();
    let names: Vec<&str> = planned
        .hosts
        .iter()
        .map(|host| host.name.as_str())
        .collect();
    assert_eq!(names, ["web10"]);
    assert_eq!(
        plan_with(inventory, &["-w", "web09", "-x", "root@web09:2200"]).unwrap_err(),
        "no targets left: -x 'root@web09:2200' leaves out all 1 of them"
    );
    // `-g @web` is `-g web`.
    check(&["-g", "@db"], Ok(&["db1", "db2"]));
    check(&["-g", "web", "-x", "web0?", "-x", "db1"], Ok(&["db2"]));
}

#[test]
fn input_errors_are_one_line_and_name_the_input() {
    check(
        &[],
        Err("no targets: give -w PATTERNS, -g GROUP or --hosts-file FILE"),
    );
    check(
        &["-w", "web[01-"],
        Err("bad target pattern 'web[01-': unclosed '[' at column 4"),
    );
    check(
        &["-g", "nope"],
        Err("unknown group 'nope' (groups in HOME/inventory.toml: db, empty, web)"),
    );

    check(
        &["-w", "a", "-x", "a"],
        Err("no targets left: -x 'a' leaves out all 1 of them"),
    );
    check(&["-w", ""], Err("no targets: -w '' names no host"));
    check(&["-g", " "], Err("-g ' ': an empty group name"));
    check(
        &["-g", "web db"],
        Err(
            "-g 'web db': bad target pattern '@web db': invalid character ' ' in group name at column 5",
        ),
    );
    check(
        &["-w", "a", "-x", ""],
        Err("-x '': an empty pattern leaves out no host"),
    );
    check(
        &["-w", "a", "-x", " , "],
        Err("-x ' , ': an empty pattern leaves out no host"),
    );
    check(
        &["-w", "a", "-x", "b,c["],
        Err("-x 'b,c[': bad target pattern 'c[': unclosed '[' at column 2"),
    );
    check(&["-w", "a", "-l", ""], Err("-l '': not a user name"));
    check(
        &["-w", "a[1-600000]", "-w", "b[1-600000]"],
        Err("the targets name more than 1000000 hosts"),
    );
    check(
        &["-w", " ", "-g", "empty"],
        Err("no targets: -w ' ', -g 'empty' name no host"),
    );
    check(
        &["--hosts-file", "/nonexistent/hosts"],
        Err("hosts file /nonexistent/hosts: file not found"),
    );
    for (flag, value, message) in [
        (
            "--timeout",
            "soon",
            "--timeout: bad duration 'soon': expected a number (examples: 30s, 250ms, 1m30s)",
        ),
        (
            "--max-output",
            "lots",
            "--max-output: bad size 'lots': expected a number (examples: 1MiB, 64KiB, 4096)",
        ),
        ("--parallel", "0", "--parallel: must be at least 1"),
        (
            "--max-handshakes",
            "0",
            "--max-handshakes: must be at least 1 (or auto)",
        ),
        (
            "--max-handshakes",
            "many",
            "--max-handshakes: 'many' is not a number or `auto`",
        ),
        (
            "--connect-timeout",
            "0s",
            "--connect-timeout: must be more than 0",
        ),
    ] {
        check(&["-w", "a", flag, value], Err(message));
    }
}

#[test]
fn handshakes_are_adaptive_unless_a_number_is_given() {
    use crate::admission::HandshakeLimit;
    let limit = |extra: &[&str]| {
        let mut args = vec!["-w", "a"];
        args.extend(extra);
        plan(&args).unwrap().handshakes
    };
    assert_eq!(limit(&[]), HandshakeLimit::Adaptive);
    assert_eq!(
        limit(&["--max-handshakes", "auto"]),
        HandshakeLimit::Adaptive
    );
    assert_eq!(
        limit(&["--max-handshakes", "64"]),
        HandshakeLimit::Fixed(64)
    );
}

#[test]
fn timeout_zero_means_no_timeout() {
    assert_eq!(
        plan(&["-w", "a", "--timeout", "0"])
            .unwrap()
            .command_timeout,
        None
    );
    assert_eq!(
        plan(&["-w", "a", "-t", "90s"]).unwrap().command_timeout,
        Some(Duration::from_secs(90))
    );
}

#[test]
fn settings_from_the_inventory_or_the_environment_are_named_so_in_errors() {
    let home = tempfile::tempdir().unwrap();
    let inventory = home.path().join("inventory.toml");
    let check = |text: &str, variables: &[(&str, &str)], expected: &str| {
        std::fs::write(&inventory, text).unwrap();
        let error = plan_in(home.path(), &inventory, &["-w", "a"], variables)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error.replace(&home.path().display().to_string(), "HOME"),
            expected
        );
    };
    check(
        "timeout = \"soon\"\n",
        &[],
        "inventory HOME/inventory.toml: timeout: bad duration 'soon': expected a number (examples: 30s, 250ms, 1m30s)",
    );
    check(
        "parallel = 0\n",
        &[],
        "inventory HOME/inventory.toml: parallel: must be at least 1",
    );
    check(
        "max_handshakes = 0\n",
        &[],
        "inventory HOME/inventory.toml: max_handshakes: must be at least 1",
    );
    check(
        "connect_timeout = \"0s\"\n",
        &[],
        "inventory HOME/inventory.toml: connect_timeout: must be more than 0",
    );
    check(
        "",
        &[("VOLLEY_MAX_OUTPUT", "lots")],
        "VOLLEY_MAX_OUTPUT: bad size 'lots': expected a number (examples: 1MiB, 64KiB, 4096)",
    );
    check(
        "journal_keep_runs = 0\n",
        &[],
        "inventory HOME/inventory.toml: journal_keep_runs: must be at least 1",
    );
    check(
        "",
        &[("VOLLEY_JOURNAL_KEEP_RUNS", "0")],
        "VOLLEY_JOURNAL_KEEP_RUNS: must be at least 1",
    );
}

#[test]
fn hosts_files_take_one_pattern_per_line_with_comments() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hosts.txt");
    std::fs::write(&file, "# fleet\nweb[01-02]  # two\n\n  db1\n@db\n").unwrap();
    check(
        &["--hosts-file", file.to_str().unwrap()],
        Ok(&["web01", "web02", "db1", "db2"]),
    );
    // A bad line is named by the file and its number.
    std::fs::write(&file, "web01\n# next\nweb[02\n").unwrap();
    check(
        &["--hosts-file", file.to_str().unwrap()],
        Err(&format!(
            "hosts file {} line 3: bad target pattern 'web[02': unclosed '[' at column 4",
            file.display()
        )),
    );
    std::fs::write(&file, "web01\n@nosuch\n").unwrap();
    check(
        &["--hosts-file", file.to_str().unwrap()],
        Err(&format!(
            "hosts file {} line 2: unknown group 'nosuch' (groups in HOME/inventory.toml: db, empty, web)",
            file.display()
        )),
    );
}

#[test]
fn an_exclusion_that_leaves_out_no_target_is_warned_of() {
    // web01 is named twice, and counted once.
    let planned = plan(&[
        "-g",
        "web",
        "-w",
        "web01",
        "-x",
        "web09,db1",
        "-x",
        "web0?",
        "-x",
        "web01,mail*",
    ]);
    let planned = planned.unwrap();
    let names: Vec<&str> = planned
        .hosts
        .iter()
        .map(|host| host.name.as_str())
        .collect();
    assert_eq!(names, ["db2"]);
    // `db1` left one out, `web0?` four, `web01` one that `web0?` also left out.
    assert_eq!(
        planned.warnings,
        [
            "-x 'web09' leaves out none of the 6 targets",
            "-x 'mail*' leaves out none of the 6 targets",
        ]
    );
    assert!(
        plan(&["-g", "web", "-x", "web01"])
            .unwrap()
            .warnings
            .is_empty()
    );
}

#[test]
fn the_most_specific_setting_wins() {
    let plan = plan(&["-w", "web01,web02,web03,deploy@web04:2022,@db"]).unwrap();
    let host = |name: &str| {
        plan.hosts
            .iter()
            .find(|host| host.name == name)
            .unwrap()
            .clone()
    };
    // Named alone, web01 still takes its group's user; the port comes from the top level.
    let web01 = host("web01");
    assert_eq!(
        (web01.address.as_str(), web01.port, web01.user.as_str()),
        ("web01", 2200, "www")
    );
    // The inventory's host entry.
    let web02 = host("web02");
    assert_eq!(
        (web02.address.as_str(), web02.port, web02.user.as_str()),
        ("10.0.0.2", 22, "root")
    );
    // ~/.ssh/config wins over the inventory's top level (address, port), its group over
    // ~/.ssh/config (user).
    let web03 = host("web03");
    assert_eq!(
        (web03.address.as_str(), web03.port, web03.user.as_str()),
        ("web03.internal", 2222, "www")
    );
    // The pattern wins over everything.
    let web04 = host("deploy@web04:2022");
    assert_eq!(
        (web04.address.as_str(), web04.port, web04.user.as_str()),
        ("web04", 2022, "deploy")
    );
    // In db, and in web through @db: db's identity file, and web's user, which db leaves out.
    let db1 = host("db1");
    assert_eq!(db1.user, "www");
    assert!(
        db1.identity_files[0].ends_with(".ssh/db_key"),
        "{:?}",
        db1.identity_files
    );
    assert!(db1.identity_files[0].is_absolute());
}

/// A host takes its groups' settings however it is named, nearest group first: those that list
/// it themselves, in name order, then those that take it in through another group.
#[test]
fn a_host_takes_its_groups_settings_nearest_first() {
    let inventory = r#"
        [groups.all]
        hosts = ["@web", "@db", "mail1"]
        user = "everyone"
        become = true
        [groups.web]
        hosts = ["web1", "both1"]
        user = "www"
        [groups.db]
        hosts = ["db1", "both1"]
        user = "dbu"
        port = 2201
        [groups.zz]
        hosts = ["web1"]
        user = "zz"
        port = 2299
    "#;
    for args in [
        &["-w", "web1,both1,db1,mail1,other"][..],
        &["-g", "all", "-w", "other"],
    ] {
        let plan = plan_with(inventory, args).unwrap();
        let mut settings: Vec<(&str, &str, u16, bool)> = plan
            .hosts
            .iter()
            .map(|host| {
                let name = host.name.as_str();
                (name, host.user.as_str(), host.port, host.become_root)
            })
            .collect();
        settings.sort_unstable();
        assert_eq!(
            settings,
            [
                ("both1", "dbu", 2201, true),
                ("db1", "dbu", 2201, true),
                ("mail1", "everyone", 22, true),
                ("other", "me", 22, false),
                ("web1", "www", 2299, true),
            ],
            "{args:?}"
        );
    }
}

/// A group entry's `user@host:port` is how that group reaches the host: named on its own, the
/// host is reached so too, and named both ways it is one host.
#[test]
fn a_group_entrys_user_and_port_apply_to_the_host_however_it_is_named() {
    let inventory = r#"
        [groups.web]
        hosts = ["root@web09:2200", "web10"]
        user = "www"
        port = 2222
    "#;
    let login = |args: &[&str]| -> Vec<(String, String, u16)> {
        let plan = plan_with(inventory, args).unwrap();
        let hosts = plan.hosts.iter();
        hosts
            .map(|host| (host.name.clone(), host.user.clone(), host.port))
            .collect()
    };
    assert_eq!(
        login(&["-w", "web09"]),
        [("web09".into(), "root".into(), 2200)]
    );
    assert_eq!(
        login(&["-w", "web09", "-g", "web"]),
        [
            ("web09".into(), "root".into(), 2200),
            ("web10".into(), "www".into(), 2222)
        ]
    );
    // The pattern still wins.
    assert_eq!(
        login(&["-w", "ops@web09"]),
        [("ops@web09".into(), "ops".into(), 2200)]
    );
}

/// A malformed entry in any group, an unknown group it names, or groups that include each
/// other are an error, even where that group is not targeted: a host named on its own would
/// otherwise lose the group's settings without a word.
#[test]
fn a_malformed_group_is_an_error_however_its_hosts_are_named() {
    for (inventory, expected) in [
        (
            "[groups.db]\nhosts = [\"db1,db[2\"]\nuser = \"dbu\"\n",
            "groups.db.hosts: bad target pattern 'db[2': unclosed '[' at column 3",
        ),
        (
            "[groups.web]\nhosts = [\"web01\", \"@canray\"]\n[groups.canary]\nhosts = []\n",
            "groups.web.hosts: unknown group 'canray'",
        ),
        (
            "[groups.a]\nhosts = [\"@b\"]\n[groups.b]\nhosts = [\"@c\", \"db1\"]\n\
             [groups.c]\nhosts = [\"@a\"]\n",
            "groups include each other: a -> b -> c -> a",
        ),
    ] {
        let error = plan_with(inventory, &["-w", "db1"]).unwrap_err();
        assert_eq!(error, format!("inventory HOME/inventory.toml: {expected}"));
    }
    // A group that names an unknown one is named, targeted or not.
    let unknown = "[groups.g]\nhosts = [\"h1\", \"@nope\"]\n";
    assert_eq!(
        plan_with(unknown, &["-g", "g"]).unwrap_err(),
        "inventory HOME/inventory.toml: groups.g.hosts: unknown group 'nope'"
    );
    // Groups nested past any real inventory's depth are refused, not walked until the stack
    // runs out.
    let deep: String = (0..100)
        .map(|level| format!("[groups.g{level}]\nhosts = [\"@g{}\"]\n", level + 1))
        .chain(["[groups.g100]\nhosts = [\"h\"]\n".to_string()])
        .collect();
    assert_eq!(
        plan_with(&deep, &["-w", "h"]).unwrap_err(),
        "inventory HOME/inventory.toml: groups nest more than 64 deep, from group g0"
    );
    // 64 deep is still fine: g37 takes in g38 ... g100, 64 groups in all.
    let deep: String = deep
        .split("[groups.")
        .skip(38)
        .map(|group| format!("[groups.{group}"))
        .collect();
    assert!(plan_with(&deep, &["-w", "h"]).is_ok());
    // A group taken in many times over costs one walk, and names no host twice.
    let twice: String = (0..30)
        .map(|level| {
            format!(
                "[groups.t{level}]\nhosts = [\"@t{0}\", \"@t{0}\"]\n",
                level + 1
            )
        })
        .chain(["[groups.t30]\nhosts = [\"h\"]\n".to_string()])
        .collect();
    assert!(plan_with(&twice, &["-w", "h"]).is_ok());
    // Targeted or not, a loop is told from its first group in name order.
    let looped = "[groups.a]\nhosts = [\"@b\"]\n[groups.b]\nhosts = [\"@a\"]\n";
    assert_eq!(
        plan_with(looped, &["-g", "b"]).unwrap_err(),
        "inventory HOME/inventory.toml: groups include each other: a -> b -> a"
    );
}

#[test]
fn the_command_line_user_beats_the_inventory() {
    let plan = plan(&["-w", "web01,web02", "-l", "cli"]).unwrap();
    assert!(plan.hosts.iter().all(|host| host.user == "cli"));
}

#[test]
fn ssh_options_sit_with_the_command_line() {
    let options = ["-o", "User=opt", "-o", "Port=23", "-o", "HostName=%h.lan"];
    let mut args = vec!["-w", "web02,web03,x@web01:24"];
    args.extend(options);
    let plan = plan(&args).unwrap();
    let settings: Vec<(&str, u16, &str)> = plan
        .hosts
        .iter()
        .map(|host| (host.address.as_str(), host.port, host.user.as_str()))
        .collect();
    // Over the inventory's host entry and the ssh config; under the pattern.
    assert_eq!(
        settings,
        [
            ("web02.lan", 23, "opt"),
            ("web03.lan", 23, "opt"),
            ("web01.lan", 24, "x")
        ]
    );
    args.extend(["-l", "cli"]);
    let plan = self::plan(&args).unwrap();
    assert_eq!(plan.hosts[0].user, "cli");
}

/// `NAME=user@address:port` for each hop of the first host.
fn route(args: &[&str]) -> Result<Vec<String>, String> {
    let plan = plan(args)?;
    Ok(plan.hosts[0]
        .jump
        .iter()
        .map(|hop| {
            format!(
                "{}={}@{}",
                hop.name,
                hop.user,
                dialled(&hop.address, hop.port)
            )
        })
        .collect())
}

#[test]
fn jump_hosts_come_from_dash_j_then_dash_o_then_the_ssh_config() {
    let through_inner = ["bastion=jumper@10.9.9.9:2202", "inner=me@inner:22"];
    // The ssh config: the first hop's own ProxyJump comes first; -l is not for hops.
    assert_eq!(route(&["-w", "app1", "-l", "root"]).unwrap(), through_inner);
    assert_eq!(route(&["-w", "app1", "-J", "none"]).unwrap(), [""; 0]);
    assert_eq!(route(&["-w", "plain"]).unwrap(), [""; 0]);
    assert_eq!(
        route(&["-w", "app1", "-o", "ProxyJump=op@gw:2"]).unwrap(),
        ["gw=op@gw:2"]
    );
    assert_eq!(
        route(&["-w", "app1", "-J", "[::1]:3,bastion", "-o", "ProxyJump=gw"]).unwrap(),
        ["::1=me@[::1]:3", "bastion=jumper@10.9.9.9:2202"]
    );
    let plan = plan(&["-w", "db9", "-J", "bastion"]).unwrap();
    assert!(plan.hosts[0].jump[0].identity_files[0].ends_with(".ssh/jump_key"));
}

#[test]
fn jump_host_errors_stop_the_plan() {
    for (args, expected) in [
        (
            &["-w", "z", "-J", "loop1"][..],
            "ProxyJump for z: the jump hosts loop: loop1 -> loop2 -> loop1",
        ),
        (
            &["-w", "bastion", "-J", "bastion"],
            "ProxyJump for bastion: the jump hosts loop through bastion (10.9.9.9:2202)",
        ),
        (&["-w", "z", "-J", "a,,b"], "-J: bad jump host '': no host"),
        (
            &["-w", "z", "-J", "refused"],
            "ssh config HOME/.ssh/config:19: ProxyCommand applies to refused, but volley \
             reaches hosts directly or through ProxyJump (-J) only",
        ),
        (
            &["-w", "z", "-o", "ProxyCommand=nc %h %p"],
            "-o 'ProxyCommand=nc %h %p': volley does not support ProxyCommand: volley reaches \
             hosts directly or through ProxyJump (-J) only",
        ),
    ] {
        assert_eq!(route(args).unwrap_err(), expected, "{args:?}");
    }
}

#[test]
fn agent_prefix_comes_from_the_host_then_its_group_then_the_top_level() {
    let plan = plan(&["-g", "db", "-w", "web02,x"]).unwrap();
    let prefixes: Vec<(String, Option<PathBuf>)> = plan
        .hosts
        .into_iter()
        .map(|host| (host.name, host.agent_prefix))
        .collect();
    // Patterns (-w) come before groups (-g).
    let expected = [
        ("web02", "/srv/web02"),
        ("x", "/srv/top"),
        ("db1", "/srv/db"),
        ("db2", "/srv/db"),
    ];
    let expected: Vec<(String, Option<PathBuf>)> = expected
        .iter()
        .map(|(name, prefix)| (name.to_string(), Some(PathBuf::from(prefix))))
        .collect();
    assert_eq!(prefixes, expected);
}

#[test]
fn become_comes_from_the_flag_then_the_host_its_group_and_the_top_level() {
    let become_root = |args: &[&str]| -> Vec<(String, bool)> {
        plan(args)
            .unwrap()
            .hosts
            .into_iter()
            .map(|host| (host.name, host.become_root))
            .collect()
    };
    let owned = |expected: &[(&str, bool)]| -> Vec<(String, bool)> {
        expected
            .iter()
            .map(|(name, value)| (name.to_string(), *value))
            .collect()
    };
    assert_eq!(
        become_root(&["-w", "x", "-g", "db"]),
        owned(&[("x", false), ("db1", true), ("db2", false)])
    );
    // The flag turns it on everywhere, a host's `become = false` included.
    assert_eq!(
        become_root(&["-w", "x", "-g", "db", "--become"]),
        owned(&[("x", true), ("db1", true), ("db2", true)])
    );
}

#[test]
fn rollout_flags_are_checked_before_anything_runs() {
    for (args, message) in [
        (
            &["--batch", "0"][..],
            "--batch '0': a batch must hold at least one host",
        ),
        (
            &["--batch", "10x"],
            "--batch '10x': '10x' is not a number of hosts (25) or a percentage (10%)",
        ),
        (
            &["--max-failures", "abc"],
            "--max-failures 'abc': 'abc' is not a number of hosts (25) or a percentage (10%)",
        ),
        (
            &["--batch", "2", "--batch-delay", "soon"],
            "--batch-delay: bad duration 'soon': expected a number (examples: 30s, 250ms, 1m30s)",
        ),
    ] {
        let mut all = vec!["-w", "a"];
        all.extend_from_slice(args);
        check(&all, Err(message));
    }
    let plan = plan(&["-w", "a[1-9]", "--batch", "1,50%", "--abort-on-failure"]).unwrap();
    assert_eq!(plan.rollout.batches(9).len(), 3);
    assert_eq!(plan.rollout.allowed_failures(9), Some(0));
}

#[test]
fn journal_limits_come_from_the_inventory() {
    let check = |keep: Option<usize>, max: Option<&str>, expected: Result<(usize, u64), &str>| {
        let inventory = Inventory {
            journal_keep_runs: keep,
            journal_max_bytes: max.map(str::to_string),
            ..Inventory::default()
        };
        let limits = JournalLimits::from_inventory(&inventory)
            .map(|limits| (limits.keep_runs, limits.max_bytes));
        assert_eq!(limits, expected.map_err(str::to_string), "{keep:?} {max:?}");
    };
    check(None, None, Ok((200, 100 << 20)));
    check(Some(5), Some("1KiB"), Ok((5, 1024)));
    check(Some(0), None, Err("journal_keep_runs: must be at least 1"));
    check(
        None,
        Some("lots"),
        Err("journal_max_bytes: bad size 'lots': expected a number (examples: 1MiB, 64KiB, 4096)"),
    );
}

#[test]
fn groups_equally_near_that_disagree_on_a_setting_are_warned_of() {
    // What follows the inventory's path in each warning.
    let warned = |inventory: &str, args: &[&str]| -> Vec<String> {
        plan_with(inventory, args)
            .unwrap()
            .warnings
            .iter()
            .map(|w| w.split_once("inventory.toml: ").unwrap().1.to_string())
            .collect()
    };
    let both = "[groups.all]\nhosts = [\"web[01-03]\", \"db1\"]\nuser = \"ops\"\nbecome = true\n\
                [groups.web]\nhosts = [\"web[01-03]\"]\nuser = \"www\"\nbecome = false\n\
                transport = \"ssh\"\n";
    let planned = plan_with(both, &["-g", "web", "-w", "db1"]).unwrap();
    assert_eq!(
        planned.hosts[0].user, "ops",
        "the first group in name order"
    );
    assert_eq!(
        warned(both, &["-g", "web", "-w", "db1"]),
        [
            "groups all and web, equally near web[01-03], give become 'true' and 'false': all's \
             applies, the first in name order; set it for the host, or in one group",
            "groups all and web, equally near web[01-03], give user 'ops' and 'www': all's \
             applies, the first in name order; set it for the host, or in one group",
        ]
    );
    // Only for the hosts that run; not where something nearer settles the setting.
    assert_eq!(warned(both, &["-w", "db1"]), Vec::<String>::new());
    assert_eq!(
        warned(both, &["-w", "web02", "-l", "root", "--become"]),
        Vec::<String>::new()
    );
    let own = format!("{both}[hosts.web02]\nuser = \"root\"\n");
    assert_eq!(warned(&own, &["-w", "web02"]).len(), 1, "become only");
    // A nearer group is no disagreement: `all` takes web's hosts in through `@web`.
    let nested = "[groups.all]\nhosts = [\"@web\"]\nuser = \"ops\"\n\
                  [groups.web]\nhosts = [\"web01\"]\nuser = \"www\"\n";
    assert_eq!(warned(nested, &["-w", "web01"]), Vec::<String>::new());
    assert_eq!(
        plan_with(nested, &["-w", "web01"]).unwrap().hosts[0].user,
        "www"
    );
    // Group entries that give a host two logins.
    let entries = "[groups.a]\nhosts = [\"root@h:2200\"]\n[groups.b]\nhosts = [\"admin@h\"]\n\
                   [groups.c]\nhosts = [\"x@k\", \"y@k\"]\n";
    assert_eq!(
        warned(entries, &["-w", "h,k"]),
        [
            "groups a and b, equally near h, give user 'root' and 'admin': a's applies, the \
             first in name order; set it for the host, or in one group",
            "group c gives k user 'x' and 'y': the first applies",
        ]
    );
    assert_eq!(
        warned(entries, &["-w", "admin@h,z@k"]),
        Vec::<String>::new()
    );
    // Every group that gives another value is named.
    let three = format!("{entries}[groups.d]\nhosts = [\"ops@h\"]\n");
    assert_eq!(
        warned(&three, &["-w", "h"]),
        [
            "groups a, b and d, equally near h, give user 'root', 'admin' and 'ops': a's \
             applies, the first in name order; set it for the host, or in one group",
        ]
    );
    let settings = "[groups.a]\nhosts = [\"h\"]\nuser = \"x\"\n[groups.b]\nhosts = [\"h\"]\n\
                    user = \"y\"\n[groups.c]\nhosts = [\"h\"]\nuser = \"z\"\n";
    assert_eq!(
        warned(settings, &["-w", "h"]),
        [
            "groups a, b and c, equally near h, give user 'x', 'y' and 'z': a's applies, the \
             first in name order; set it for the host, or in one group",
        ]
    );
}

#[test]
fn relative_inventory_paths_are_read_from_the_inventory_s_directory() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("inv");
    std::fs::create_dir(&dir).unwrap();
    let inventory = dir.join("fleet.toml");
    std::fs::write(
        &inventory,
        "known_hosts = \"kh\"\nidentity_file = \"~/k\"\n[groups.web]\nhosts = [\"w1\"]\n\
         identity_file = \"keys/web\"\n[hosts.w1]\nidentity_file = \"/abs/w1\"\n",
    )
    .unwrap();
    let plan = |variables: &[(&str, &str)]| {
        plan_in(home.path(), &inventory, &["-g", "web"], variables).unwrap()
    };
    let planned = plan(&[]);
    assert_eq!(planned.known_hosts, dir.join("kh"));
    assert_eq!(planned.identity_files, [home.path().join("k")]);
    assert_eq!(
        planned.hosts[0].identity_files,
        [PathBuf::from("/abs/w1"), dir.join("keys/web")]
    );
    // A variable's path is the operator's, from where volley runs.
    let planned = plan(&[("VOLLEY_KNOWN_HOSTS", "here/kh")]);
    assert_eq!(planned.known_hosts, PathBuf::from("here/kh"));
}
