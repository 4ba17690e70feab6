//! The systemd executor on the hosts that the lifecycle test installed: every command is a
//! transient unit of PID 1, outside the hardened agent's sandbox, and gets what it gets over
//! SSH and through a directly-run agent (`tests/tests/agent_run/`): the same session, output
//! streamed whole with backpressure and stdout and stderr apart, exit codes, signals by name, timeouts and
//! cancels that stop everything the command started (`setsid` children too, which a process
//! group loses), the agent's shutdown grace, the audit records, commands that outlive a killed
//! volley and are collected by `volley runs resume`, and an agent that dies leaves nothing
//! running once systemd has restarted it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use volley_tests::container::Container;
use volley_tests::remote::{SweepOnDrop, assert_none_left, unique_sleep, wait_until_running};
use volley_tests::report::{EXIT_IN_DOUBT, EXIT_INTERRUPTED, EXIT_NOT_REACHED, expect_outcome_via};
use volley_tests::systemd_fleet::OPERATOR;
use volley_tests::volley::RUN_DEADLINE;

use crate::battery::{
    HOSTS, SOME_FAILED, SUCCEEDED, Systemd, UNIT, journal, no_command_units_within, show, wait_for,
};

/// How long a started command gets to show up, and a stopped one to disappear.
const WITHIN: Duration = Duration::from_secs(30);

/// Lines of `seq -f '%09g'`: ten bytes each, 5 MB in all.
const LINES: usize = 500_000;

/// What the probe prints before its 5 MB, as `agent_run/semantics.rs` has it, and words that
/// systemd would change in a unit's command line if the agent let it (variables, `$$`,
/// specifiers, escapes).
const HEADER_COMMAND: &str = "echo $0 $HOME; umask; pwd; id; ulimit -n; env | sort; \
                              printf '%s|' \"${HOME}\" '${HOME}' '$$' '$HOME' '%n %%' '\\t'; echo";

/// The variables only an SSH connection has: they may be, and are, the only difference.
const SSH_ONLY: &[&str] = &["SSH_CLIENT", "SSH_CONNECTION"];

/// Output for the streaming test, and a generous bound on the agent's peak RSS: an idle agent
/// takes a few MiB, and one that held the output would pass 100.
const HUNDRED_MIB: u64 = 100 << 20;
const AGENT_PEAK_KIB: u64 = 64 << 10;

/// The agent's capability bounding set in the unit: CAP_DAC_OVERRIDE and CAP_FOWNER.
const AGENT_CAPABILITIES: &str = "000000000000000a";

/// What `/proc/PID/status` says of how a process is confined: its capability bounding set,
/// whether it may gain privileges, and how many system call filters it has (the container's
/// PID 1 already has nspawn's).
const CONFINEMENT: &str = "grep -E '^(CapBnd|NoNewPrivs|Seccomp_filters):'";

fn confinement(container: &Container, pid: &str) -> Vec<String> {
    container
        .check(&format!("{CONFINEMENT} /proc/{pid}/status"))
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn commands_run_outside_the_agents_sandbox(systemd: &Systemd) {
    let probe = format!(
        "{CONFINEMENT} /proc/self/status; \
         grep -o 'volley-exec-[^/]*[.]service' /proc/self/cgroup | sort -u | wc -l; \
         touch /root/.volley-probe /var/lib/.volley-probe \
         && rm /root/.volley-probe /var/lib/.volley-probe && echo wrote"
    );
    let output = systemd.run(&["--transport", "agent"], &probe);
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    for host in HOSTS {
        let container = systemd.container(host);
        let pid1 = confinement(container, "1");
        let filters = |lines: &[String]| -> u32 {
            lines
                .iter()
                .find_map(|line| line.strip_prefix("Seccomp_filters:"))
                .and_then(|count| count.trim().parse().ok())
                .unwrap_or_else(|| panic!("{host}: no filter count in {lines:?}"))
        };
        // The agent itself: three capabilities, no new privileges, filters of its own.
        let agent = confinement(container, &show(container, "MainPID")["MainPID"]);
        assert_eq!(
            agent[..2],
            [
                format!("CapBnd:\t{AGENT_CAPABILITIES}"),
                "NoNewPrivs:\t1".to_string()
            ],
            "{host}: the agent's own confinement"
        );
        assert!(
            filters(&agent) > filters(&pid1),
            "{host}: {agent:?} {pid1:?}"
        );
        // Its filter lets it raise its own open-file limit to the hard one (issue 8).
        let limits = container.check(&format!(
            "grep '^Max open files' /proc/{}/limits",
            show(container, "MainPID")["MainPID"]
        ));
        let numbers: Vec<&str> = limits.split_whitespace().skip(3).take(2).collect();
        assert!(
            numbers.len() == 2 && numbers[0] == numbers[1],
            "{host}: the agent did not raise its open-file limit: {limits}"
        );
        assert!(
            journal(container).contains("executor=\"systemd\""),
            "{host}: the agent did not pick the systemd executor:\n{}",
            journal(container)
        );
        // Its commands (root's, as c02 and c03 `become`): confined as PID 1 is and no more, in
        // a unit of their own, writing where the agent cannot.
        let record = expect_outcome_via(&output, &records, host, "succeeded", "agent");
        assert_eq!(
            record.stdout,
            format!("{}\n1\nwrote\n", pid1.join("\n")),
            "{host}"
        );
    }
}

pub fn the_same_probe_prints_the_same_over_ssh_and_through_the_agent(systemd: &Systemd) {
    let probe = format!("{HEADER_COMMAND}; seq -f '%09g' 1 {LINES}");
    let live = |transport: &str| -> Vec<String> {
        let output = systemd.stream_on("c01", &["-l", OPERATOR, "--transport", transport], &probe);
        output.assert_code(SUCCEEDED);
        assert!(
            output.stderr_of("c01").is_empty(),
            "{transport}: {}",
            output.describe()
        );
        output
            .stdout_of("c01")
            .into_iter()
            .map(str::to_string)
            .collect()
    };
    let over_ssh = live("ssh");
    let via_agent = live("agent");
    for (transport, lines) in [("ssh", &over_ssh), ("agent", &via_agent)] {
        assert!(lines.len() > LINES, "{transport}: {} lines", lines.len());
        assert_eq!(lines[lines.len() - LINES], "000000001", "{transport}");
        assert_eq!(lines[lines.len() - 1], "000500000", "{transport}");
    }
    let ssh_only = |line: &&String| {
        SSH_ONLY
            .iter()
            .any(|name| line.starts_with(&format!("{name}=")))
    };
    assert_eq!(
        over_ssh.iter().filter(ssh_only).count(),
        SSH_ONLY.len(),
        "{:#?}",
        &over_ssh[..over_ssh.len() - LINES]
    );
    let over_ssh: Vec<&String> = over_ssh.iter().filter(|line| !ssh_only(line)).collect();
    let via_agent: Vec<&String> = via_agent.iter().collect();
    let header = |lines: &[&String]| -> Vec<String> {
        lines[..lines.len() - LINES]
            .iter()
            .map(|line| line.to_string())
            .collect()
    };
    assert!(
        over_ssh == via_agent,
        "the probe differs:\nover ssh: {:#?}\nthrough the agent: {:#?}",
        header(&over_ssh),
        header(&via_agent)
    );
    // And what they agree on is the user's login session, as its user.
    let lines = header(&via_agent);
    let home = format!("/home/{OPERATOR}");
    assert_eq!(
        lines[..3],
        [format!("sh {home}"), "0022".to_string(), home.clone()]
    );
    assert!(
        lines[3].starts_with("uid=") && lines[3].contains(&format!("({OPERATOR})")),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!("USER={OPERATOR}"))
            && !lines.iter().any(|l| l.contains("INVOCATION_ID")),
        "{lines:#?}"
    );
}

pub fn exit_codes_signals_and_streams_are_reported_as_on_the_direct_path(systemd: &Systemd) {
    // Without input, stdin is /dev/null, as over SSH: nothing of what the agent hands the
    // helper reaches the command.
    let output = systemd.run(
        &["--transport", "agent"],
        "readlink /proc/self/fd/0; wc -c; echo out; echo err >&2; exit 3",
    );
    output.assert_code(SOME_FAILED);
    let records = output.records_by_host();
    for host in HOSTS {
        let record = expect_outcome_via(&output, &records, host, "non_zero_exit", "agent");
        assert_eq!(
            (
                record.exit_code,
                record.stdout.as_str(),
                record.stderr.as_str()
            ),
            (Some(3), "/dev/null\n0\nout\n", "err\n"),
            "{host}: {record:?}"
        );
    }
    // With `--stdin`, exactly its bytes, then end of file.
    let input = systemd.fleet.dir().join("input");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    std::fs::write(&input, &bytes).expect("write the input");
    let input = input.display().to_string();
    let output = systemd.run(
        &["--transport", "agent", "--stdin", &input],
        "cksum; echo end",
    );
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    // The same program on this machine, on the file itself.
    let local = std::process::Command::new("cksum")
        .stdin(std::fs::File::open(&input).expect("the input"))
        .output()
        .expect("cksum runs here");
    let expected = String::from_utf8_lossy(&local.stdout).into_owned();
    assert!(expected.ends_with(" 300000\n"), "{expected}");
    for host in HOSTS {
        let record = expect_outcome_via(&output, &records, host, "succeeded", "agent");
        assert_eq!(record.stdout, format!("{expected}end\n"), "{host}");
    }
    let output = systemd.run(&["--transport", "agent"], "kill -SEGV $$");
    output.assert_code(SOME_FAILED);
    let records = output.records_by_host();
    for host in HOSTS {
        let record = expect_outcome_via(&output, &records, host, "signalled", "agent");
        assert_eq!(record.signal.as_deref(), Some("SEGV"), "{host}: {record:?}");
    }
    // Each execution is audited, naming the unit it ran as.
    let audit = journal(systemd.container("c01"));
    let started = audit
        .lines()
        .filter(|line| line.contains("exec started"))
        .collect::<Vec<_>>();
    assert!(
        !started.is_empty()
            && started
                .iter()
                .all(|line| line.contains("unit=\"volley-exec-")),
        "{audit}"
    );
    assert!(
        audit
            .lines()
            .any(|line| line.contains("exec ended") && line.contains("signal=\"SEGV\"")),
        "{audit}"
    );
}

pub fn a_hundred_mebibytes_stream_through_with_backpressure(systemd: &Systemd) {
    let c01 = systemd.container("c01");
    let output = systemd.run_on(
        "c01",
        &["--transport", "agent", "--max-output", "1MiB"],
        &format!("yes | head -c {HUNDRED_MIB}"),
    );
    output.assert_code(SUCCEEDED);
    let records = output.records_by_host();
    let record = expect_outcome_via(&output, &records, "c01", "succeeded", "agent");
    assert_eq!(
        (record.stdout_bytes, record.stdout_truncated),
        (HUNDRED_MIB, true)
    );
    assert!(record.stdout.starts_with("y\ny\n"));
    // The agent read the unit's pipe no faster than the controller took the output: its peak
    // memory stayed far below what it streamed.
    let agent = show(c01, "MainPID")["MainPID"].clone();
    let peak: u64 = c01
        .check(&format!(
            "sed -n 's/^VmHWM:[^0-9]*\\([0-9]*\\) kB$/\\1/p' /proc/{agent}/status"
        ))
        .parse()
        .expect("a size in KiB");
    assert!(
        peak < AGENT_PEAK_KIB,
        "the agent's peak RSS reached {peak} KiB for 100 MiB of output (bound {AGENT_PEAK_KIB} KiB)"
    );
}

pub fn a_timeout_and_a_cancel_stop_the_whole_unit(systemd: &Systemd) {
    for stop in ["timeout", "cancel"] {
        // A child in a session of its own escapes a process group, not a cgroup.
        let detached = unique_sleep("3141.");
        let foreground = unique_sleep("2718.");
        let _sweep = (
            SweepOnDrop(detached.clone()),
            SweepOnDrop(foreground.clone()),
        );
        let command = format!("setsid {detached} & {foreground}");
        let extra: &[&str] = match stop {
            "timeout" => &["--transport", "agent", "--timeout", "5s"],
            _ => &["--transport", "agent"],
        };
        let mut volley = systemd.spawn_on("@all", extra, &command);
        for sleep in [&detached, &foreground] {
            let running = wait_until_running(sleep, HOSTS.len(), WITHIN, || volley.has_exited());
            assert_eq!(
                running.len(),
                HOSTS.len(),
                "{stop}: `{sleep}` did not run everywhere"
            );
        }
        let (code, outcome) = match stop {
            "timeout" => (EXIT_NOT_REACHED, "command_timeout"),
            _ => {
                volley.interrupt();
                (EXIT_INTERRUPTED, "cancelled")
            }
        };
        let output = volley.finish(RUN_DEADLINE);
        output.assert_code(code);
        let records = output.records_by_host();
        for host in HOSTS {
            expect_outcome_via(&output, &records, host, outcome, "agent");
        }
        assert_none_left(&detached, WITHIN);
        assert_none_left(&foreground, WITHIN);
        for host in HOSTS {
            let container = systemd.container(host);
            assert_eq!(
                no_command_units_within(container, WITHIN),
                "",
                "{host}: {stop} left a unit"
            );
        }
    }
}

pub fn stopping_the_agent_gives_commands_the_grace_period_then_stops_them(systemd: &Systemd) {
    let c03 = systemd.container("c03");
    let config = "/etc/volley/agent.toml";
    // The install writes no [limits]; a grace of a few seconds keeps the test short.
    c03.check(&format!(
        "cp {config} {config}.test && ! grep -q '^\\[limits\\]' {config} && \
         printf '\\n[limits]\\nshutdown_grace = \"5s\"\\n' >> {config} && systemctl restart {UNIT}"
    ));
    let release = "/run/volley-release";
    let finishing = unique_sleep("0.");
    let killed = unique_sleep("3600.");
    let _sweep = (SweepOnDrop(finishing.clone()), SweepOnDrop(killed.clone()));
    let mut short = systemd.spawn_on(
        "c03",
        &["--transport", "agent"],
        &format!("echo started; while [ ! -e {release} ]; do {finishing}; done; echo finished"),
    );
    let mut long = systemd.spawn_on("c03", &["--transport", "agent"], &killed);
    for (sleep, run) in [(&finishing, &mut short), (&killed, &mut long)] {
        let running = wait_until_running(sleep, 1, WITHIN, || run.has_exited());
        assert_eq!(running.len(), 1, "`{sleep}` did not start");
    }
    // The agent stops accepting at once; the running commands may go on for the grace period.
    c03.check(&format!("systemctl stop --no-block {UNIT}"));
    let stopping = wait_for(c03, "ActiveState", |shown| shown["ActiveState"] != "active");
    assert_eq!(stopping["ActiveState"], "deactivating");
    c03.check(&format!("touch {release}"));
    let output = short.finish(RUN_DEADLINE);
    output.assert_code(SUCCEEDED);
    let record = &output.records()[0];
    assert_eq!(record.stdout, "started\nfinished\n", "{record:?}");
    // Past the grace period the agent stops the rest, and reports it.
    let output = long.finish(RUN_DEADLINE);
    output.assert_code(SOME_FAILED);
    let records = output.records_by_host();
    let record = expect_outcome_via(&output, &records, "c03", "signalled", "agent");
    assert_eq!(record.signal.as_deref(), Some("TERM"), "{record:?}");
    assert_none_left(&killed, WITHIN);
    let stopped = wait_for(c03, "ActiveState", |shown| {
        shown["ActiveState"] == "inactive"
    });
    assert_eq!(stopped["ActiveState"], "inactive");
    assert!(
        journal(c03)
            .lines()
            .any(|line| line.contains("exec ended") && line.contains("killed_at_shutdown=true")),
        "{}",
        journal(c03)
    );
    assert_eq!(no_command_units_within(c03, WITHIN), "");
    c03.check(&format!(
        "rm {release} && mv {config}.test {config} && systemctl start {UNIT}"
    ));
}

pub fn pushes_write_files_with_their_owner_and_mode_through_the_sandboxed_agent(systemd: &Systemd) {
    let local = systemd.fleet.dir().join("pushed.conf");
    let remote = "/etc/volley-pushed.conf";
    let stat = format!("stat -c '%U:%G %a' {remote}; cat {remote}");
    let mut expected_owner = "root:root";
    for (content, extra, mode) in [
        // A new file, then a replaced one given an owner and a mode, then one that keeps them.
        ("first\n", &[][..], "644"),
        (
            "second\n",
            &["--owner", "volley-ops:users", "--mode", "0640"][..],
            "640",
        ),
        ("third\n", &[][..], "640"),
    ] {
        std::fs::write(&local, content).expect("write the local file");
        std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut args = vec!["--transport", "agent"];
        args.extend(extra);
        let local = local.display().to_string();
        args.extend([local.as_str(), remote]);
        let output = systemd.push(&args);
        output.assert_code(SUCCEEDED);
        let records = output.records_by_host();
        if mode == "640" {
            expected_owner = "volley-ops:users";
        }
        for host in HOSTS {
            expect_outcome_via(&output, &records, host, "succeeded", "agent");
            assert_eq!(
                systemd.container(host).check(&stat),
                format!("{expected_owner} {mode}\n{content}").trim_end(),
                "{host}"
            );
        }
    }
}

/// `kill -9` of volley mid-command: the command's unit runs on to its end, and `volley runs
/// resume` collects its whole output from the agent, as it does from a directly-run agent
/// (`agent_run/resume.rs`).
pub fn a_command_outlives_a_killed_volley_and_resume_collects_it(systemd: &Systemd) {
    let sleep = unique_sleep("3.");
    let _sweep = SweepOnDrop(sleep.clone());
    let command = format!("echo started; {sleep}; echo done");
    let mut volley = systemd.spawn_on("c01", &["--transport", "agent"], &command);
    let running = wait_until_running(&sleep, 1, WITHIN, || volley.has_exited());
    assert_eq!(running.len(), 1, "`{sleep}` did not start");
    volley.kill_hard();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        wait_until_running(&sleep, 1, WITHIN, || true),
        running,
        "the command must outlive volley"
    );
    let resumed = systemd.fleet.run(["runs", "resume", "last", "--json"]);
    resumed.assert_code(SUCCEEDED);
    let records = resumed.records_by_host();
    let record = expect_outcome_via(&resumed, &records, "c01", "succeeded", "agent");
    assert_eq!(record.stdout, "started\ndone\n", "{record:?}");
}

pub fn a_killed_agent_is_restarted_and_its_commands_stopped(systemd: &Systemd) {
    let c01 = systemd.container("c01");
    let orphan = unique_sleep("2999.");
    let _sweep = SweepOnDrop(orphan.clone());
    let mut volley = systemd.spawn_on("c01", &["--transport", "agent"], &orphan);
    let running = wait_until_running(&orphan, 1, WITHIN, || volley.has_exited());
    assert_eq!(running.len(), 1, "`{orphan}` did not start");

    let before = show(c01, "MainPID,NRestarts");
    c01.check(&format!("kill -9 {}", before["MainPID"]));
    let restarts = (before["NRestarts"].parse::<u32>().expect("a count") + 1).to_string();
    let after = wait_for(c01, "MainPID,NRestarts,ActiveState", |shown| {
        shown["NRestarts"] == restarts
            && shown["ActiveState"] == "active"
            && shown["MainPID"] != "0"
    });
    assert!(
        after["NRestarts"] == restarts
            && after["ActiveState"] == "active"
            && !["0", before["MainPID"].as_str()].contains(&after["MainPID"].as_str()),
        "systemd did not restart the killed agent: {before:?} -> {after:?}"
    );
    // The run lost its agent mid-command and attaches again: the new agent does not know the
    // execution, so the host is in doubt. The new agent stops what the old one left.
    let output = volley.finish(RUN_DEADLINE);
    output.assert_code(EXIT_IN_DOUBT);
    let records = output.records_by_host();
    expect_outcome_via(&output, &records, "c01", "in_doubt", "agent");
    assert_none_left(&orphan, WITHIN);
    assert!(
        journal(c01).contains("stopping the commands that an earlier agent left running"),
        "{}",
        journal(c01)
    );
}
