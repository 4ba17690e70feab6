//! Who is refused, through the controller: an agent whose certificate names another host, a
//! controller of another PKI, a controller certificate from another CA, a controller identity
//! the agents do not allow. Each refusal is `tls_rejected`, and the command, which appends a
//! line to a file of the fleet's, leaves no line there and no audit record of an execution.
//! Also: an agent refuses to start with a key that others can read or a CA that is none, a
//! controller refuses a `ca.pem` that is no CA before any host, and the TLS version and cipher
//! suite an accepted controller gets.

use std::ffi::OsString;
use std::net::{SocketAddrV4, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use volley_tests::agentd::{AgentConfig, Agentd, config_text};
use volley_tests::agents::CONTROLLER_IDENTITY;
use volley_tests::loopback::{AddressBlock, free_port};
use volley_tests::pki::Pki;
use volley_tests::volley::{volley_agent_binary, volley_binary};
use volley_tests::{AgentFleet, AgentFleetSpec, AgentKind, ProcessOutput};

use crate::{EXIT_NOT_REACHED, EXIT_SUCCESS, EXIT_USAGE, expect_outcome};

/// The file every command here appends a line to, one per host that runs it.
fn marker(fleet: &AgentFleet) -> PathBuf {
    fleet.dir().join("ran")
}

/// `volley run` on the fleet's inventory with the PKI at `pki`, forcing the agent transport.
fn run_with_pki(fleet: &AgentFleet, pki: &Path) -> ProcessOutput {
    run_through(fleet, pki, "agent")
}

/// `volley run --json` of the command that marks the hosts it runs on, on the fleet's
/// inventory, with the PKI at `pki` and `--transport transport`.
fn run_through(fleet: &AgentFleet, pki: &Path, transport: &str) -> ProcessOutput {
    let command = format!("echo ran >> '{}'", marker(fleet).display());
    let args: Vec<OsString> = vec![
        "run".into(),
        "--inventory".into(),
        fleet.inventory().into(),
        "--pki".into(),
        pki.into(),
        "-g".into(),
        "all".into(),
        "--transport".into(),
        transport.into(),
        "--json".into(),
        "--".into(),
        command.into(),
    ];
    fleet.run(args)
}

/// Whether the command ran on `host`, by its agent's audit record; and the lines in the marker
/// file must agree with the audit records of all the agents, so the file proves it too.
fn ran_on(fleet: &AgentFleet, host: &str) -> bool {
    let audited = |agent: &Agentd| agent.log().contains("exec started");
    let lines = std::fs::read_to_string(marker(fleet)).map_or(0, |text| text.lines().count());
    let audits = fleet.agents().iter().filter(|agent| audited(agent)).count();
    assert_eq!(
        lines,
        audits,
        "the marker file and the agents' audit logs disagree\n{}",
        fleet.logs()
    );
    audited(fleet.agent(host))
}

/// Every host of `fleet` is refused with `tls_rejected` and runs nothing.
fn assert_all_refused(fleet: &AgentFleet, output: &ProcessOutput) {
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    for host in fleet.hosts() {
        let record = expect_outcome(output, &records, &host.name, "tls_rejected", "agent");
        // What the operator reads is the cause, not a gRPC status in Debug form.
        let reason = record.reason.as_deref().unwrap_or_default();
        assert!(
            !reason.contains("tonic::") && !reason.contains("code: '"),
            "{reason}"
        );
        assert!(!ran_on(fleet, &host.name), "{} ran the command", host.name);
    }
}

/// The controller offers AES-128-GCM first (cheaper than AES-256 per byte, and its key schedule
/// hashes with SHA-256 only), and the agents take it: every connection of a run is TLS 1.3 with
/// that suite, as volley's own debug log says.
#[test]
fn connections_to_agents_are_tls_1_3_with_aes_128_gcm() {
    let fleet = AgentFleet::start(3);
    let mut process = fleet.volley();
    process
        .env("VOLLEY_LOG", "volley=debug")
        .args(fleet.run_args(["-g", "all", "--transport", "agent", "--", "true"]));
    let output = volley_tests::RunningProcess::spawn(&mut process)
        .finish(volley_tests::volley::RUN_DEADLINE);
    output.assert_code(EXIT_SUCCESS);
    let established: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| line.contains("TLS established"))
        .collect();
    assert_eq!(established.len(), 3, "{}", output.stderr);
    for line in established {
        assert!(
            line.contains("version=Some(TLSv1_3)")
                && line.contains("suite=Some(TLS13_AES_128_GCM_SHA256)"),
            "{line}"
        );
    }
}

#[test]
fn the_controller_refuses_an_agent_whose_certificate_names_another_host() {
    let fleet = AgentFleet::with_spec(AgentFleetSpec::new(1).with(AgentKind::NamesAnotherHost));
    let impostor = fleet.only(AgentKind::NamesAnotherHost).name.clone();
    let output = run_with_pki(&fleet, fleet.pki().dir());

    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    expect_outcome(&output, &records, "a01", "succeeded", "agent");
    assert!(ran_on(&fleet, "a01"));
    expect_outcome(&output, &records, &impostor, "tls_rejected", "agent");
    assert!(!ran_on(&fleet, &impostor), "{impostor} ran the command");
}

/// `volley agent status` of a host whose agent answers with a certificate the controller
/// refuses, and no SSH: the agent's refusal is the outcome, not SSH's absence.
#[test]
fn status_tells_an_agent_refused_for_its_certificate_where_ssh_fails_too() {
    let fleet = AgentFleet::with_spec(AgentFleetSpec::new(0).with(AgentKind::NamesAnotherHost));
    let impostor = fleet.only(AgentKind::NamesAnotherHost).name.clone();
    let (inventory, pki) = (fleet.inventory(), fleet.pki().dir());
    let output = fleet.run([
        "agent".as_ref(),
        "status".as_ref(),
        "--inventory".as_ref(),
        inventory.as_os_str(),
        "--pki".as_ref(),
        pki.as_os_str(),
        "-g".as_ref(),
        "all".as_ref(),
        "--connect-timeout".as_ref(),
        "5s".as_ref(),
        "--json".as_ref(),
    ]);
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, &impostor, "tls_rejected", "ssh");
    let reason = record.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("not valid for name") && reason.contains("; and over SSH: "),
        "{reason}"
    );
}

#[test]
fn a_controller_of_another_pki_is_refused_and_runs_nothing() {
    let fleet = AgentFleet::start(2);
    let other = Pki::init(
        &volley_binary(),
        fleet.client_home(),
        &fleet.dir().join("other-pki"),
        CONTROLLER_IDENTITY,
    );
    assert_all_refused(&fleet, &run_with_pki(&fleet, other.dir()));

    // The same run with the fleet's own PKI does leave its lines: their absence above meant
    // something.
    run_with_pki(&fleet, fleet.pki().dir()).assert_code(EXIT_SUCCESS);
    assert!(ran_on(&fleet, "a01") && ran_on(&fleet, "a02"));
}

#[test]
fn agents_refuse_a_controller_certificate_from_another_ca() {
    let fleet = AgentFleet::start(2);
    // A controller that trusts the fleet's CA, so the agents' certificates verify, but presents
    // a certificate of its own CA: only the agents can refuse it.
    let other = Pki::init(
        &volley_binary(),
        fleet.client_home(),
        &fleet.dir().join("other-pki"),
        CONTROLLER_IDENTITY,
    );
    std::fs::copy(fleet.pki().ca(), other.ca()).expect("the PKI directory is writable");
    assert_all_refused(&fleet, &run_with_pki(&fleet, other.dir()));
}

#[test]
fn agents_refuse_a_controller_identity_they_do_not_allow() {
    let fleet = AgentFleet::with_spec(AgentFleetSpec::new(2).allowing(&["another-controller"]));
    assert_all_refused(&fleet, &run_with_pki(&fleet, fleet.pki().dir()));
}

/// Starts one agent with its own fresh PKI, after `spoil` has changed what it is given (its
/// key, certificate and CA, as paths), and expects it to refuse to start: exit 78 (EX_CONFIG),
/// nothing listening. Returns its log.
fn refused_start(spoil: impl FnOnce(&Pki, &mut [PathBuf; 3])) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("a fresh directory");
    let pki = Pki::init(
        &volley_binary(),
        &home,
        &dir.path().join("pki"),
        CONTROLLER_IDENTITY,
    );
    let address = AddressBlock::random().next_address();
    let listen = SocketAddrV4::new(address, free_port(address));
    pki.issue(&[("a01", Some(address))]);
    let mut paths = [pki.key("a01"), pki.certificate("a01"), pki.ca()];
    spoil(&pki, &mut paths);
    let [key, certificate, ca] = &paths;
    let config = dir.path().join("a01.toml");
    let controllers = [CONTROLLER_IDENTITY.to_string()];
    std::fs::write(
        &config,
        config_text(&AgentConfig {
            listen,
            certificate,
            key,
            ca,
            allowed_controllers: &controllers,
            push_roots: None,
        }),
    )
    .expect("the directory is writable");

    let mut agent = Agentd::spawn(&volley_agent_binary(), &config, listen, &home);
    let status = agent.wait_exit(Duration::from_secs(20));
    let log = agent.log();
    assert_eq!(status.code(), Some(78), "EX_CONFIG expected; log:\n{log}");
    assert!(
        TcpStream::connect_timeout(&listen.into(), Duration::from_secs(1)).is_err(),
        "something listens on {listen}"
    );
    log
}

#[test]
fn an_agent_whose_key_others_can_read_refuses_to_start() {
    let mut key = PathBuf::new();
    let log = refused_start(|_, [spoiled, _, _]| {
        std::fs::set_permissions(&*spoiled, std::fs::Permissions::from_mode(0o644))
            .expect("the key is ours");
        key.clone_from(spoiled);
    });
    assert!(
        log.contains(&key.display().to_string()) && log.contains("0644"),
        "the error does not name the key and its mode:\n{log}"
    );
}

/// Its own certificate given as its CA (an easy slip: both are PEM files in one directory)
/// would verify no controller; the agent names the mistake instead of refusing everyone.
#[test]
fn an_agent_given_a_certificate_that_is_no_ca_as_its_ca_refuses_to_start() {
    let mut ca = PathBuf::new();
    let log = refused_start(|_, [_, certificate, spoiled]| {
        spoiled.clone_from(certificate);
        ca.clone_from(certificate);
    });
    assert!(
        log.contains(&format!(
            "CA {}: it is not a CA certificate (no basicConstraints CA:TRUE)",
            ca.display()
        )),
        "the error does not name the CA file and why:\n{log}"
    );
}

/// A `ca.pem` that holds no certificate, or a certificate that is no CA, or none beside the
/// controller's certificate and key, is an input error before anything runs. With `auto` it would otherwise make every agent's certificate fail to
/// verify, and every host fall back to SSH without a word about the broken PKI.
#[test]
fn a_controller_whose_ca_file_is_no_ca_stops_before_any_host() {
    let fleet = AgentFleet::start(1);
    let other = Pki::init(
        &volley_binary(),
        fleet.client_home(),
        &fleet.dir().join("other-pki"),
        CONTROLLER_IDENTITY,
    );
    let bad_ca = |reason: &str| {
        format!(
            "volley: pki {}: bad CA certificate in ca.pem: {reason}",
            other.dir().display()
        )
    };
    let leaf = std::fs::read(other.controller_certificate()).expect("the PKI is readable");
    for (content, expected) in [
        (
            b"not a certificate\n".to_vec(),
            bad_ca("no PEM certificate in it"),
        ),
        (
            leaf,
            bad_ca("it is not a CA certificate (no basicConstraints CA:TRUE)"),
        ),
        // A PEM block whose body is no certificate.
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
            bad_ca("a certificate that does not parse: "),
        ),
        // No ca.pem at all, beside the controller's certificate and key.
        (
            Vec::new(),
            format!(
                "volley: pki {}: no ca.pem: copy it from where the CA is kept",
                other.dir().display()
            ),
        ),
    ] {
        if content.is_empty() {
            std::fs::remove_file(other.ca()).expect("the PKI directory is writable");
        } else {
            std::fs::write(other.ca(), content).expect("the PKI directory is writable");
        }
        let output = run_through(&fleet, other.dir(), "auto");
        output.assert_code(EXIT_USAGE);
        assert!(
            output.stderr.starts_with(&expected) && output.stderr.lines().count() == 1,
            "expected one line starting {expected:?}\n{}",
            output.describe()
        );
        assert!(!marker(&fleet).exists(), "the command ran");
    }
}
