//! Keys an ssh-agent holds, offered in ssh's order: an identity file's key first (an encrypted
//! one through the agent's copy of it), then the agent's other keys, none of them with
//! `IdentitiesOnly yes`. A host whose sshd ends the connection after `MaxAuthTries` (6) failures
//! is reached however many other keys the agent holds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use volley_tests::keys::KeyPair;
use volley_tests::process::RunningProcess;
use volley_tests::volley::RUN_DEADLINE;
use volley_tests::{SshFleet, tools};

use crate::{EXIT_NOT_REACHED, EXIT_SUCCESS, expect_outcome};

/// An ssh-agent of the test's own, on a socket in its directory; killed on drop.
struct SshAgent {
    child: Child,
    socket: PathBuf,
}

impl SshAgent {
    fn start(dir: &Path) -> SshAgent {
        let socket = dir.join("agent.sock");
        let child = Command::new(tools::on_path(
            "ssh-agent",
            "apt-get install -y openssh-client",
        ))
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ssh-agent");
        let agent = SshAgent { child, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// Adds the key at `path`, decrypted with `passphrase` (given through SSH_ASKPASS).
    fn add(&self, path: &Path, passphrase: Option<&str>) {
        let mut add = Command::new(tools::on_path(
            "ssh-add",
            "apt-get install -y openssh-client",
        ));
        add.arg(path)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stdin(Stdio::null());
        if let Some(passphrase) = passphrase {
            let askpass = path.with_extension("askpass");
            std::fs::write(&askpass, format!("#!/bin/sh\necho '{passphrase}'\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
            add.env("SSH_ASKPASS", &askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0");
        }
        tools::run_tool(&mut add);
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_identity_file_s_key_goes_first_through_the_agent_and_identities_only_holds() {
    let fleet = SshFleet::start(1);
    let dir = fleet.dir().join("agent-keys");
    std::fs::create_dir(&dir).unwrap();
    let agent = SshAgent::start(&dir);
    // Six keys the host does not take, first in the agent: its sshd would end the connection
    // before a seventh key.
    for n in 1..=6 {
        agent.add(
            KeyPair::generate(&dir.join(format!("other{n}")), None).path(),
            None,
        );
    }
    // The key the host takes, encrypted on disk, last in the agent.
    let right = dir.join("right");
    std::fs::copy(fleet.client_key().path(), &right).unwrap();
    tools::run_tool(
        Command::new(tools::ssh_keygen())
            .args(["-q", "-p", "-P", "", "-N", "secret", "-f"])
            .arg(&right),
    );
    agent.add(&right, Some("secret"));

    let run = |config: String| {
        let file = dir.join("ssh_config");
        std::fs::write(&file, config).unwrap();
        let mut volley = fleet.volley();
        volley.env("SSH_AUTH_SOCK", &agent.socket).args([
            "run".as_ref(),
            "--inventory".as_ref(),
            fleet.inventory().as_os_str(),
            "--known-hosts".as_ref(),
            fleet.known_hosts().as_os_str(),
            "-l".as_ref(),
            fleet.user().as_ref(),
            "-F".as_ref(),
            file.as_os_str(),
            "-g".as_ref(),
            "all".as_ref(),
            "--json".as_ref(),
            "--".as_ref(),
            "echo ran".as_ref(),
        ]);
        RunningProcess::spawn(&mut volley).finish(RUN_DEADLINE)
    };
    let output = run(format!("Host h01\n  IdentityFile {}\n", right.display()));
    output.assert_code(EXIT_SUCCESS);

    // IdentitiesOnly: the file's key, which the host does not take, and none of the agent's.
    let other = dir.join("other1");
    let output = run(format!(
        "Host h01\n  IdentityFile {}\n  IdentitiesOnly yes\n",
        other.display()
    ));
    output.assert_code(EXIT_NOT_REACHED);
    let records = output.records_by_host();
    let record = expect_outcome(&output, &records, "h01", "auth_failed");
    let reason = record.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("with the one key offered"), "{reason}");
}
