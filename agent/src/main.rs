//! `volley-agent`: the daemon on each server that runs commands for the Volley controller, over
//! gRPC on one persistent HTTP/2 connection with mutual TLS.
//!
//! ```text
//! volley-agent [--config FILE]      (default /etc/volley/agent.toml; see config.rs)
//! volley-agent keygen --key FILE --name NAME [--address IP]...   (see keygen.rs)
//! volley-agent check-key --key FILE --certificate FILE          (see key_check.rs)
//! volley-agent [--config FILE] check-config
//! ```
//!
//! (`volley-agent as-user`, hidden, is the agent's own step before each command: as_user.rs.)
//!
//! At start the soft open-file limit is raised to the hard limit, so that idle or slow peers
//! cannot starve the agent of descriptors; commands get the limit the agent was started with.
//!
//! SIGHUP reloads the certificate, key and CA and `allowed_controllers`, and reopens the audit
//! log (see reload.rs); SIGTERM and SIGINT stop.
//!
//! `check-config` reads the config and the certificate, key and CA it names as a start would,
//! and exits 0, or with the daemon's status and line for what it found (78 for the config).
//! The installer runs it on a config before putting it in place.
//!
//! Exit statuses of the daemon (`keygen` and `check-key` exit 1 on any error):
//! - 0: stopped by SIGTERM or SIGINT, after the running executions ended or were killed;
//! - 64 (EX_USAGE): bad command line;
//! - 78 (EX_CONFIG): the configuration cannot be used: the file is missing or invalid, the key
//!   is readable by group or others, the certificate, key or CA cannot be read or used, the
//!   certificate is not issued by the CA (an expired one is only warned about), the
//!   audit log cannot be opened, `executor = "systemd"` where systemd does not run. systemd
//!   shows it as `status=78/CONFIG`; restarting will not help;
//! - 1: a failure while running, such as an address that cannot be bound, or the system D-Bus
//!   out of reach of the systemd executor.
//!
//! Errors are printed on one line to stderr; this is the only place that picks exit statuses.
//!
//! Layout: [`config`] the file, [`tls`] the server configuration and the controller check,
//! [`certificate`] the agent's own certificate judged as controllers judge it,
//! [`listener`] accepts and handshakes, [`service`] the gRPC methods and the audit,
//! [`exec`] one command's life, [`executor`] how a command is started and stopped (its own
//! process group, or a transient unit of systemd), [`execution`] its kept output and its
//! follower, [`registry`] executions by id and how long finished ones are kept, [`transfer`]
//! `Stat`/`Push`/`Fetch` over [`files`] under the [`roots`], [`shutdown`] the stop sequence,
//! [`notify`] sd_notify,
//! [`logging`] where logs and audit records go, [`host`] and [`signals`] small facts,
//! [`reload`] SIGHUP, [`keygen`] the key and certificate request made at install,
//! [`key_check`] whether a key on disk is its certificate's,
//! [`session`] the login session a command gets, [`as_user`] the step that enters it.
#![forbid(unsafe_code)]

mod as_user;
mod certificate;
mod config;
mod exec;
mod execution;
mod executor;
mod files;
mod host;
mod key_check;
mod keygen;
mod listener;
mod logging;
mod notify;
mod registry;
mod reload;
mod roots;
mod service;
mod session;
mod shutdown;
mod signals;
mod tls;
mod transfer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use volley_proto::pb::agent_server::AgentServer;

use crate::config::AgentConfig;
use crate::executor::Executor;
use crate::registry::Registry;
use crate::service::{AgentService, ServiceContext};
use crate::session::AgentProcess;
use crate::shutdown::StopSignals;

const EX_USAGE: u8 = 64;
const EX_CONFIG: u8 = 78;

/// HTTP/2 pings find a controller that vanished without closing its connection (a crash, a
/// partition), so that its connection and streams are let go; its executions run on, and their
/// outcomes are kept for when it attaches again.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How often finished executions past their retention are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// After the executions have ended, how long connections get to deliver their last events.
const CONNECTIONS_CLOSE: Duration = Duration::from_secs(5);

/// Runs commands for the Volley controller over gRPC with mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "volley-agent", version, about)]
struct Args {
    /// The configuration file (TOML).
    #[arg(
        long,
        short,
        value_name = "FILE",
        default_value = "/etc/volley/agent.toml"
    )]
    config: PathBuf,

    #[command(subcommand)]
    command: Option<Subcommand>,
}

#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// Write a new private key (0600) and print a certificate signing request for it
    Keygen(keygen::KeygenArgs),
    /// Exit 0 when the key is the private key of the certificate, 1 (saying why) otherwise
    CheckKey(key_check::CheckKeyArgs),
    /// Exit 0 when the config and the files it names can be used, as at a start; otherwise
    /// the status a start would exit with (78), saying why
    CheckConfig,
    /// Run a command in its user's session (the agent's own step; see as_user.rs)
    #[command(name = as_user::SUBCOMMAND, hide = true)]
    AsUser(as_user::AsUserArgs),
}

#[derive(Debug, thiserror::Error)]
enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    AuditLog(#[from] logging::AuditLogError),
    #[error(transparent)]
    Executor(#[from] executor::ExecutorError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot handle SIGTERM/SIGINT/SIGHUP: {0}")]
    Signals(std::io::Error),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Serve(String),
}

impl AgentError {
    fn exit_code(&self) -> u8 {
        match self {
            AgentError::Config(_) | AgentError::Tls(_) | AgentError::AuditLog(_) => EX_CONFIG,
            AgentError::Executor(error) if error.is_configuration() => EX_CONFIG,
            _ => 1,
        }
    }
}

fn main() -> ExitCode {
    // One crypto provider for the whole process (see deps.md: ring only).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Some(Subcommand::AsUser(as_user)) = &args.command {
        return as_user::run(as_user);
    }
    if let Some(Subcommand::Keygen(keygen)) = &args.command {
        return match keygen::keygen(keygen) {
            Ok(request) => {
                print!("{request}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("volley-agent keygen: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Subcommand::CheckKey(check)) = &args.command {
        return match key_check::check_key(check) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("volley-agent check-key: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Subcommand::CheckConfig) = &args.command {
        return match check_config(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("volley-agent check-config: {error}");
                ExitCode::from(error.exit_code())
            }
        };
    }
    match start(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("volley-agent: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// The config and the TLS setup of the files it names: what a start checks before anything
/// else, and all that `check-config` checks.
fn checked_config(args: &Args) -> Result<(AgentConfig, tls::Served), AgentError> {
    let config = AgentConfig::load(&args.config)?;
    let tls = tls::server_config(&config)?;
    Ok((config, tls))
}

fn check_config(args: &Args) -> Result<(), AgentError> {
    checked_config(args).map(|_| ())
}

/// Everything that can be checked is checked before the runtime starts and the port opens.
fn start(args: &Args) -> Result<(), AgentError> {
    let (config, tls) = checked_config(args)?;
    let audit = logging::init(config.audit_log.as_deref())?;
    for warning in &config.warnings {
        tracing::warn!("config {}: {warning}", config.path.display());
    }
    if let Some(warning) = &tls.warning {
        tracing::warn!("{warning}");
    }
    let nofile = raise_open_file_limit();
    // One thread: the agent mostly waits on sockets and pipes, and a single thread keeps its
    // idle memory small (one stack, one malloc arena).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Password database lookups (one per command, maybe from a directory server) run off
        // the runtime thread; a few threads are plenty, and keep a burst from costing a stack
        // each.
        .max_blocking_threads(4)
        .build()
        .map_err(AgentError::Runtime)?;
    runtime.block_on(serve(config, tls.server, audit, nofile))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, so that a flood of idle connections or a
/// busy fleet cannot exhaust the agent's descriptors; returns the soft limit it was started
/// with, which commands get back.
fn raise_open_file_limit() -> Option<u64> {
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit");
            return None;
        }
    };
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(raised) => tracing::info!(from = soft, to = raised, hard, "open-file limit"),
        Err(error) => tracing::warn!(%error, soft, hard, "cannot raise the open-file limit"),
    }
    Some(soft)
}

async fn serve(
    config: AgentConfig,
    tls: Arc<ServerConfig>,
    audit: Option<Arc<logging::AuditLog>>,
    nofile: Option<u64>,
) -> Result<(), AgentError> {
    let mut signals = StopSignals::install().map_err(AgentError::Signals)?;
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(AgentError::Signals)?;
    let executor = Executor::new(config.executor).await?;
    tracing::info!(
        executor = executor.name(),
        "commands run through this executor"
    );
    // The first record: when the agent (re)started; and an audit log that takes no record is
    // known before the first command, which it then refuses.
    tracing::info!(
        target: service::AUDIT,
        version = env!("CARGO_PKG_VERSION"),
        pid = std::process::id(),
        "agent started"
    );
    // Listed before this agent starts any command, so that only an earlier agent's are.
    let leftovers = executor.leftovers().await;
    let (current_tls, tls) = tokio::sync::watch::channel(tls);
    let (current_session, session) = tokio::sync::watch::channel(config.session.clone());
    tokio::spawn(reload::on_hangup(
        config.clone(),
        audit.clone(),
        hangups,
        reload::Applied {
            tls: current_tls,
            session: current_session,
        },
    ));
    let listen_error = |source| AgentError::Listen {
        address: config.listen,
        source,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(listen_error)?;
    let address = listener.local_addr().map_err(listen_error)?;
    let limits = config.limits;
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let executions = TaskTracker::new();
    let registry = Arc::new(Registry::new(config.retention));
    tokio::spawn(forget_expired(registry.clone()));
    let service = AgentService::new(ServiceContext {
        limits,
        host: host::Host::current(),
        session,
        process: AgentProcess::current(),
        executor: executor.clone(),
        nofile,
        stop: stop.clone(),
        kill: kill.clone(),
        executions: executions.clone(),
        registry,
        audit,
        push_roots: config.push_roots.clone(),
        checksums: Arc::default(),
    });
    let message_bytes = limits.max_message_bytes as usize;
    let incoming = listener::incoming(
        listener,
        tls,
        limits.max_concurrent_handshakes as usize,
        stop.clone(),
    );
    let server = Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // A pushed chunk (64 KiB and its framing) arrives in one HTTP/2 frame, not five, and in
        // fewer TLS records: a 500-host push made 40% fewer writev calls.
        .max_frame_size(128 << 10)
        .add_service(
            AgentServer::new(service)
                .max_decoding_message_size(message_bytes)
                .max_encoding_message_size(message_bytes),
        )
        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
    let mut server = tokio::spawn(server);
    tracing::info!(
        %address,
        controllers = ?config.allowed_controllers,
        version = env!("CARGO_PKG_VERSION"),
        "serving"
    );
    // STATUS shows in `systemctl status`, and tells tests which port 0 became.
    notify::notify(&format!("READY=1\nSTATUS=serving on {address}"));
    tokio::spawn(async move { executor.stop_leftovers(leftovers).await });

    let signal = tokio::select! {
        signal = signals.next() => signal,
        ended = &mut server => {
            let reason = match ended {
                Ok(Ok(())) => "it ended by itself".to_string(),
                Ok(Err(error)) => error.to_string(),
                Err(error) => error.to_string(),
            };
            return Err(AgentError::Serve(reason));
        }
    };
    tracing::info!(
        signal,
        running = executions.len(),
        grace = ?limits.shutdown_grace,
        "stopping: no new connections; running executions may finish"
    );
    notify::notify("STOPPING=1");
    stop.cancel();
    shutdown::drain(&executions, &kill, limits.shutdown_grace, &mut signals).await;
    // A controller that keeps its connection open must not keep the agent from exiting.
    if tokio::time::timeout(CONNECTIONS_CLOSE, server)
        .await
        .is_err()
    {
        tracing::debug!("connections still open at exit");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Finished executions past their retention are also forgotten when nobody asks for them, so
/// that an idle agent gives their memory back.
async fn forget_expired(registry: Arc<Registry>) {
    let mut every = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        every.tick().await;
        registry.sweep();
        let (running, kept, kept_bytes) = registry.sizes();
        tracing::debug!(running, kept, kept_bytes, "executions");
    }
}
