//! The test fixture: a real `volley-agent` process on a loopback port chosen by the kernel, with
//! a fresh private CA ([`crate::pki`]), and a tonic client with mutual TLS.
//!
//! The agent reports readiness through sd_notify on a datagram socket the fixture binds, with
//! `STATUS=serving on ADDRESS` telling which port it got; no test guesses a port or sleeps to
//! wait for it. Dropping an [`Agent`] stops it with SIGTERM (then SIGKILL), so a failing test
//! leaves no agent behind, and its commands are killed by the agent's own shutdown.
//!
//! Async tests use the multi-thread runtime: the tests wait in blocking polls, and the tonic
//! client's connection task must keep running meanwhile (to send a stream's reset when it is
//! dropped, or to answer the agent's GOAWAY when it stops).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, Signal};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use volley_common::exec::{ExecEvent, ExecSpec, Exited, Program};
use volley_proto::pb;
use volley_proto::pb::agent_client::AgentClient;

pub use crate::pki::{Authority, Credentials};

/// The agent certificate's DNS name, which the client checks.
pub const AGENT_NAME: &str = "agent.test";
/// The controller identity the agent allows by default.
pub const CONTROLLER: &str = "volley-controller";
/// Upper bound of every wait in these tests.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How to start an agent; `Default` is a plain agent on 127.0.0.1:0.
pub struct Options {
    /// Lines of the `[limits]` table.
    pub limits: &'static str,
    /// Extra top-level lines.
    pub extra: &'static str,
    pub key_mode: u32,
    /// The key file's owner, if not the test's user.
    pub key_owner: Option<u32>,
    /// The `ca` setting; the fixture writes the CA to `ca.pem`.
    pub ca_file: &'static str,
    /// `NOTIFY_SOCKET` as an abstract name instead of a path.
    pub abstract_notify: bool,
    /// Controller identities allowed besides [`CONTROLLER`].
    pub also_allowed: &'static [&'static str],
    /// Shell commands run before the agent is exec'd in their place, such as `umask 077` or
    /// `ulimit -S -n 1024`; empty: the agent is started directly.
    pub before_start: &'static str,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            limits: "",
            extra: "",
            key_mode: 0o600,
            key_owner: None,
            ca_file: "ca.pem",
            abstract_notify: false,
            also_allowed: &[],
            before_start: "",
        }
    }
}

/// A `volley-agent` process and everything it was given.
pub struct Agent {
    pub ca: Authority,
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub address: SocketAddr,
    notify: UnixDatagram,
}

/// A unique number for names that must not collide between concurrent tests.
pub fn unique() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    u64::from(std::process::id()) * 1_000_000_000 + u64::from(nanos)
}

/// Writes the PKI and config into a fresh directory and spawns the agent; returns it with its
/// notify socket, without waiting for readiness.
pub fn spawn(options: &Options) -> (Authority, tempfile::TempDir, Child, UnixDatagram) {
    let ca = Authority::new("Volley test CA");
    let dir = tempfile::tempdir().expect("temporary directory");
    let agent = ca.agent(AGENT_NAME);
    write(dir.path(), "ca.pem", &ca.certificate(), 0o644);
    write(dir.path(), "agent.pem", &agent.certificate, 0o644);
    write(dir.path(), "agent.key", &agent.key, options.key_mode);
    if let Some(owner) = options.key_owner {
        std::os::unix::fs::chown(dir.path().join("agent.key"), Some(owner), None)
            .expect("the tests run as root, which may give the key another owner");
    }
    let allowed: Vec<String> = std::iter::once(CONTROLLER)
        .chain(options.also_allowed.iter().copied())
        .map(|name| format!("\"{name}\""))
        .collect();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ncertificate = \"agent.pem\"\nkey = \"agent.key\"\n\
         ca = \"{}\"\nallowed_controllers = [{}]\n{}\n[limits]\n{}\n",
        options.ca_file,
        allowed.join(", "),
        options.extra,
        options.limits
    );
    write(dir.path(), "agent.toml", &config, 0o644);
    let (notify, notify_name) = if options.abstract_notify {
        let name = format!("volley-agent-test-{}", unique());
        let address =
            std::os::unix::net::SocketAddr::from_abstract_name(&name).expect("abstract address");
        let socket = UnixDatagram::bind_addr(&address).expect("bind the abstract notify socket");
        (socket, format!("@{name}"))
    } else {
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        (socket, path.display().to_string())
    };
    notify
        .set_read_timeout(Some(PATIENCE))
        .expect("notify timeout");
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log file");
    let binary = env!("CARGO_BIN_EXE_volley-agent");
    let mut command = if options.before_start.is_empty() {
        Command::new(binary)
    } else {
        // `exec` keeps the pid: the child is the agent either way.
        let mut shell = Command::new("/bin/sh");
        shell
            .arg("-c")
            .arg(format!("{} && exec \"$0\" \"$@\"", options.before_start))
            .arg(binary);
        shell
    };
    let child = command
        .arg("--config")
        .arg(dir.path().join("agent.toml"))
        .env("NOTIFY_SOCKET", notify_name)
        .env("HOME", dir.path())
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn volley-agent");
    (ca, dir, child, notify)
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a fixture file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Agent {
    /// Starts an agent and waits until it reports READY.
    pub fn start(options: Options) -> Agent {
        let (ca, dir, child, notify) = spawn(&options);
        let mut agent = Agent {
            ca,
            dir,
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            notify,
        };
        let ready = agent.notification();
        let status = ready
            .lines()
            .find_map(|line| line.strip_prefix("STATUS=serving on "))
            .unwrap_or_else(|| panic!("READY without the address: {ready:?}"));
        assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
        agent.address = status.parse().expect("the address in STATUS");
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next sd_notify datagram, waiting at most [`PATIENCE`].
    pub fn notification(&mut self) -> String {
        let mut buffer = [0; 4096];
        let length = self.notify.recv(&mut buffer).unwrap_or_else(|error| {
            panic!("no sd_notify message: {error}; agent log:\n{}", self.log())
        });
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    }

    /// What the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn signal(&self, signal: Signal) {
        rustix::process::kill_process(Pid::from_child(&self.child), signal).expect("signal");
    }

    /// Waits (bounded) for the agent to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        wait_exit(&mut self.child, limit)
    }

    /// A client presenting `credentials` (none: no client certificate).
    pub async fn client(
        &self,
        credentials: Option<&Credentials>,
    ) -> Result<AgentClient<Channel>, tonic::transport::Error> {
        connect(self.address, &self.ca.certificate(), credentials).await
    }

    /// A client with the allowed controller's certificate.
    pub async fn controller(&self) -> AgentClient<Channel> {
        let credentials = self.ca.controller(CONTROLLER);
        self.client(Some(&credentials))
            .await
            .expect("the controller connects")
    }

    /// The VmRSS or VmHWM line of the agent's /proc status, in KiB.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the agent's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = rustix::process::kill_process(Pid::from_child(&self.child), Signal::TERM);
            if !poll_until(Duration::from_secs(10), || {
                !matches!(self.child.try_wait(), Ok(None))
            }) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let mut status = None;
    let exited = poll_until(limit, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    assert!(exited, "the process did not exit within {limit:?}");
    status.expect("an exit status")
}

/// Checks `condition` every 20 ms until it holds or `limit` passes; whether it held.
pub fn poll_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= give_up {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process whose command line matches `pattern` exists.
pub fn process_exists(pattern: &str) -> bool {
    Command::new("pgrep")
        .arg("-f")
        .arg(pattern)
        .stdout(Stdio::null())
        .status()
        .expect("pgrep runs")
        .success()
}

pub async fn connect(
    address: SocketAddr,
    ca: &str,
    credentials: Option<&Credentials>,
) -> Result<AgentClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(AGENT_NAME);
    if let Some(credentials) = credentials {
        tls = tls.identity(Identity::from_pem(
            &credentials.certificate,
            &credentials.key,
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{address}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(AgentClient::new(channel))
}

/// An `Exec` request for a shell command line.
pub fn shell(line: &str) -> pb::ExecRequest {
    request(Program::Shell(line.to_string()))
}

pub fn request(program: Program) -> pb::ExecRequest {
    pb::ExecRequest::from(ExecSpec {
        execution_id: format!("test-{}", unique()),
        program,
        env: BTreeMap::new(),
        working_dir: None,
        timeout: None,
        max_output: None,
        user: None,
        become_root: false,
        keep_output: None,
        stdin: Default::default(),
    })
}

/// An `Exec` request for `program` as `user` (`None`: the agent's own user).
pub fn request_as(program: Program, user: Option<&str>, become_root: bool) -> pb::ExecRequest {
    let mut request = request(program);
    request.user = user.unwrap_or_default().to_string();
    request.become_root = become_root;
    request
}

/// Everything one execution sent.
#[derive(Debug)]
pub struct Run {
    pub events: Vec<ExecEvent>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exited: Exited,
}

/// Reads a stream to its end.
pub async fn collect(mut stream: tonic::Streaming<pb::ExecEvent>) -> Run {
    let mut events = Vec::new();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Some(event) = stream.message().await.expect("a well-formed stream") {
        let event = ExecEvent::try_from(event).expect("a valid event");
        match &event {
            ExecEvent::Stdout(data) => stdout.extend_from_slice(data),
            ExecEvent::Stderr(data) => stderr.extend_from_slice(data),
            _ => {}
        }
        events.push(event);
    }
    let exited = match events.last() {
        Some(ExecEvent::Exited(exited)) => exited.clone(),
        other => panic!("the stream ended with {other:?}, not Exited"),
    };
    Run {
        events,
        stdout,
        stderr,
        exited,
    }
}

/// Runs `request` with the allowed controller and reads it to its end.
pub async fn run(client: &mut AgentClient<Channel>, request: pb::ExecRequest) -> Run {
    let stream = client
        .exec(request)
        .await
        .expect("Exec accepted")
        .into_inner();
    collect(stream).await
}
