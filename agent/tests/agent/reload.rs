//! SIGHUP: a new certificate is served without a restart, and a bad one is refused while the
//! old one keeps serving; a controller taken out of `allowed_controllers` is refused from then
//! on, as root is from the next command when `session.allow_root` is taken away; other changed
//! settings are named as waiting for a restart, and a config file that does not parse changes
//! nothing.

use std::time::{Duration, Instant};

use rustix::process::Signal;
use volley_common::exec::{ExitStatus, Program};
use volley_proto::pb::InfoRequest;

use crate::fixture::{
    Agent, CONTROLLER, Options, PATIENCE, connect, poll_until, request_as, run, shell,
};
use crate::pki::Authority;

/// Replaces the agent's certificate and key files in place (the key keeps its mode 0600).
fn replace_credentials(agent: &Agent, certificate: &str, key: &str) {
    std::fs::write(agent.path("agent.pem"), certificate).expect("write the certificate");
    std::fs::write(agent.path("agent.key"), key).expect("write the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_new_certificate_without_a_restart() {
    let mut agent = Agent::start(Options::default());
    let controller = agent.ca.controller(CONTROLLER);
    let mut before = agent.controller().await;
    // The new certificate comes from another CA, so which one is served shows in who can verify.
    // The agent trusts both (a CA being rolled over), as it must to serve a certificate.
    let other = Authority::new("Another CA");
    let renewed = other.agent(crate::fixture::AGENT_NAME);
    let both = agent.ca.certificate() + &other.certificate();
    std::fs::write(agent.path("ca.pem"), both).expect("write the CA file");
    replace_credentials(&agent, &renewed.certificate, &renewed.key);
    assert!(
        connect(agent.address, &other.certificate(), Some(&controller))
            .await
            .is_err(),
        "new files alone must not change what is served"
    );

    agent.signal(Signal::HUP);
    let give_up = Instant::now() + PATIENCE;
    let served = loop {
        if let Ok(mut client) =
            connect(agent.address, &other.certificate(), Some(&controller)).await
            && client.info(InfoRequest {}).await.is_ok()
        {
            break true;
        }
        if Instant::now() >= give_up {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        served,
        "the new certificate was never served\n{}",
        agent.log()
    );
    assert!(
        connect(agent.address, &agent.ca.certificate(), Some(&controller))
            .await
            .is_err(),
        "the old certificate is still served"
    );
    // The connection made before the reload still works, and the agent never restarted.
    assert_eq!(
        run(&mut before, shell("true")).await.exited.status,
        ExitStatus::Code(0)
    );
    assert!(matches!(agent.child.try_wait(), Ok(None)));
    assert!(agent.log().contains("SIGHUP: reloaded"), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_mismatched_key_keeps_the_old_certificate() {
    let agent = Agent::start(Options::default());
    let original = std::fs::read_to_string(agent.path("agent.pem")).expect("certificate");
    let stranger = agent.ca.agent(crate::fixture::AGENT_NAME);
    replace_credentials(&agent, &original, &stranger.key);
    agent.signal(Signal::HUP);
    let refused = poll_until(PATIENCE, || agent.log().contains("SIGHUP: reload refused"));
    assert!(refused, "{}", agent.log());
    let mut client = agent.controller().await;
    assert_eq!(
        run(&mut client, shell("true")).await.exited.status,
        ExitStatus::Code(0)
    );
}

/// Rewrites the agent's config file with `edit` applied to its text.
fn edit_config(agent: &Agent, edit: impl FnOnce(String) -> String) {
    let path = agent.path("agent.toml");
    let text = std::fs::read_to_string(&path).expect("the config");
    std::fs::write(&path, edit(text)).expect("write the config");
}

/// Sends SIGHUP and waits for the log line of its outcome that contains `outcome`.
fn reload_and_wait(agent: &Agent, outcome: &str) {
    let before = agent.log().matches(outcome).count();
    agent.signal(Signal::HUP);
    assert!(
        poll_until(PATIENCE, || agent.log().matches(outcome).count() > before),
        "no {outcome:?} after SIGHUP\n{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_removed_from_the_config_is_refused_after_sighup() {
    let agent = Agent::start(Options {
        also_allowed: &["retired-controller"],
        ..Options::default()
    });
    let retired = agent.ca.controller("retired-controller");
    let mut before = agent.client(Some(&retired)).await.expect("still allowed");
    assert_eq!(
        run(&mut before, shell("true")).await.exited.status,
        ExitStatus::Code(0)
    );

    edit_config(&agent, |text| {
        text.replace(", \"retired-controller\"", "")
            .replace("127.0.0.1:0", "127.0.0.1:1")
            .replace("[limits]", "[limits]\nmax_timeout = \"2h\"")
    });
    reload_and_wait(&agent, "SIGHUP: reloaded");
    crate::peers::assert_refused(&agent, Some(&retired), "retired-controller").await;
    assert!(
        agent.log().contains(&format!(
            "SIGHUP: listen, limits.max_timeout changed in {}: they take effect at the next restart",
            agent.path("agent.toml").display()
        )),
        "{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_is_refused_from_the_next_command_once_allow_root_is_taken_away() {
    crate::session::require_root();
    let agent = Agent::start(Options::default());
    let mut client = agent.controller().await;
    let as_root = || request_as(Program::Shell("id -u".to_string()), Some("root"), false);
    let ran = run(&mut client, as_root()).await;
    assert_eq!(ran.exited.status, ExitStatus::Code(0));

    edit_config(&agent, |text| text + "\n[session]\nallow_root = false\n");
    reload_and_wait(&agent, "SIGHUP: reloaded");
    let refused = client.exec(as_root()).await.expect_err("refused");
    assert_eq!(
        refused.message(),
        "this agent does not run commands as root (session.allow_root = false in its config)"
    );
    assert!(
        !agent.log().contains("session.allow_root changed"),
        "{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_a_config_that_does_not_parse_changes_nothing() {
    let agent = Agent::start(Options {
        also_allowed: &["second-controller"],
        ..Options::default()
    });
    edit_config(&agent, |text| {
        text.replace(", \"second-controller\"", "") + "\nlisten = \n"
    });
    reload_and_wait(&agent, "SIGHUP: reload refused");
    assert!(
        agent.log().contains("TOML parse error"),
        "the reason is not logged\n{}",
        agent.log()
    );
    let second = agent.ca.controller("second-controller");
    let mut client = agent.client(Some(&second)).await.expect("still allowed");
    assert_eq!(
        run(&mut client, shell("true")).await.exited.status,
        ExitStatus::Code(0)
    );
}

/// A certificate of another CA than the agent's can never be accepted by a controller: the
/// reload refuses it, says why, and the old certificate serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_certificate_of_another_ca_keeps_the_old_certificate() {
    let agent = Agent::start(Options::default());
    let foreign = Authority::new("Another CA").agent(crate::fixture::AGENT_NAME);
    replace_credentials(&agent, &foreign.certificate, &foreign.key);
    reload_and_wait(&agent, "SIGHUP: reload refused");
    assert!(
        agent.log().contains(&format!(
            "certificate {}: it is not issued by the configured CA",
            agent.path("agent.pem").display()
        )),
        "{}",
        agent.log()
    );
    let mut client = agent.controller().await;
    assert_eq!(
        run(&mut client, shell("true")).await.exited.status,
        ExitStatus::Code(0)
    );
}

/// An expired certificate is served (the agent must stay up to be renewed), with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_an_expired_certificate_warns() {
    let agent = Agent::start(Options::default());
    let expired = agent.ca.expired_agent(crate::fixture::AGENT_NAME);
    replace_credentials(&agent, &expired.certificate, &expired.key);
    reload_and_wait(&agent, "SIGHUP: reloaded");
    assert!(
        agent.log().contains(&format!(
            "SIGHUP: certificate {} expired on 2021-01-01: controllers will refuse it; renew it \
             (volley agent renew)",
            agent.path("agent.pem").display()
        )),
        "{}",
        agent.log()
    );
}
