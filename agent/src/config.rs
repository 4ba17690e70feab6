//! The agent's configuration file: one TOML file read through the `config` crate, validated into
//! [`AgentConfig`] before anything else happens.
//!
//! ```toml
//! listen = "0.0.0.0:7731"            # an address, or an IP alone for port 7731
//! certificate = "/etc/volley/agent.pem"
//! key = "/etc/volley/agent.key"      # refused when readable by group or others
//! ca = "/etc/volley/ca.pem"
//! allowed_controllers = ["volley-controller"]   # client certificate Common Names
//! # audit_log = "/var/log/volley/audit.log"     # absent: audit records go to stderr
//! executor = "auto"                  # auto, direct or systemd: see executor/mod.rs
//! push_roots = ["/etc", "/srv", "/opt", "/usr/local"]   # where push and fetch may touch files;
//!                                                       # [] disables them
//! [limits]
//! max_concurrent_execs = 64
//! max_message_bytes = 4194304        # gRPC message limit, both directions; at least 128 KiB
//! max_concurrent_streams = 128       # HTTP/2 streams per connection
//! max_concurrent_handshakes = 128    # TLS handshakes in progress; a new one drops the oldest
//! max_timeout = "1h"                 # cap on any execution; "0": none
//! shutdown_grace = "30s"             # on SIGTERM, how long running executions may go on
//! max_file_bytes = 1073741824        # or "1GiB": the largest file a push writes or a fetch reads
//! [session]                          # see session.rs: commands run as sshd would run them
//! path = "/usr/local/bin:/usr/bin:/bin:/usr/games"                         # PATH of users
//! root_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"   # PATH of root
//! allow_root = true                  # false: refuse to run commands as root
//! env = {}                           # more variables for every command: { LANG = "C.UTF-8" }
//! [retention]                        # finished executions, for controllers that attach again
//! keep_for = "15m"                   # how long after its end; "0": not at all
//! max_executions = 1000              # the oldest beyond this are forgotten
//! max_bytes = "32MiB"                # kept output in all; beyond, the oldest lose their output
//! keep_output = "1MiB"               # the head of each stream kept per execution, at most
//! ```
//!
//! Every key is optional; the values above are the defaults (the two PATHs are those of
//! Debian's sshd). `limits.max_output_bytes`, from older agents, is still accepted and ignored
//! with a warning: the agent no longer caps output. Relative paths are relative to the
//! directory of the configuration file, so a test or a demo fleet can keep everything in one
//! folder. Unknown keys are errors: a misspelt limit must not silently fall back to its default.
//! A switch (`session.allow_root`) takes `true` or `false` only: `"no"`, `0` or `2` are errors,
//! where the `config` crate would have read them as a boolean, `2` as true.
//! Errors name the file and the key, on one line.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use volley_common::duration::parse_duration;
use volley_common::exec::AgentLimits;
use volley_common::size::parse_size;

use crate::executor::ExecutorChoice;
use crate::registry::Retention;
use crate::roots::PushRoots;

/// The agent's port when `listen` gives none.
pub const DEFAULT_PORT: u16 = 7731;

/// Output chunks are at most 64 KiB; a message limit below this could not carry one.
const MIN_MESSAGE_BYTES: u64 = 128 << 10;

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// The file this came from, for error messages.
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Subject Common Names of the client certificates allowed to use this agent.
    pub allowed_controllers: Vec<String>,
    /// Where audit records go; `None` sends them to stderr (the journal under systemd).
    pub audit_log: Option<PathBuf>,
    /// How commands are started and stopped.
    pub executor: ExecutorChoice,
    /// The directories under which pushes and fetches may touch files (absolute; empty
    /// disables them).
    pub push_roots: PushRoots,
    pub limits: Limits,
    pub session: SessionConfig,
    pub retention: Retention,
    /// What the file says that is accepted but deserves a word in the log (obsolete keys).
    pub warnings: Vec<String>,
}

/// How commands are run: in the login session sshd would give the requested user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// PATH of every user but root (sshd's compiled-in default path).
    pub path: String,
    /// PATH of root (sshd's superuser path).
    pub root_path: String,
    /// Whether a command may run as root (the user root, any uid 0, or `--become`).
    pub allow_root: bool,
    /// Variables every command gets on top of its login environment, such as those PAM's
    /// pam_env adds to SSH sessions on the host.
    pub env: BTreeMap<String, String>,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            path: "/usr/local/bin:/usr/bin:/bin:/usr/games".to_string(),
            root_path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            allow_root: true,
            env: BTreeMap::new(),
        }
    }
}

/// What the agent enforces on its clients and on the commands it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrent_execs: u32,
    pub max_message_bytes: u32,
    pub max_concurrent_streams: u32,
    /// TLS handshakes in progress at once; a new connection past it drops the oldest one.
    pub max_concurrent_handshakes: u32,
    /// Cap on every execution's run time; `None`: no cap.
    pub max_timeout: Option<Duration>,
    pub shutdown_grace: Duration,
    /// The largest file a push may write or a fetch may read.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_concurrent_execs: 64,
            max_message_bytes: 4 << 20,
            max_concurrent_streams: 128,
            max_concurrent_handshakes: 128,
            max_timeout: Some(Duration::from_secs(3600)),
            shutdown_grace: Duration::from_secs(30),
            max_file_bytes: 1 << 30,
        }
    }
}

impl Limits {
    /// The limits as the protocol reports them in `Info`.
    pub fn agent_limits(&self) -> AgentLimits {
        AgentLimits {
            max_concurrent_execs: self.max_concurrent_execs,
            max_message_bytes: self.max_message_bytes,
            max_concurrent_streams: self.max_concurrent_streams,
            max_timeout: self.max_timeout,
            max_file_bytes: Some(self.max_file_bytes),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: file not found")]
    NotFound { path: PathBuf },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A size or a duration may be written as a number or as text (`"1MiB"`, `"30s"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

/// A value as the file wrote it, for a switch that the `config` crate must not coerce: it would
/// read `"no"` and `0` as false, and `2` as true. Only a TOML boolean sets a switch.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Written {
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Text(String),
    /// An array or a table.
    Other(serde::de::IgnoredAny),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    allowed_controllers: Option<Vec<String>>,
    audit_log: Option<PathBuf>,
    executor: Option<String>,
    push_roots: Option<Vec<PathBuf>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    retention: RawRetention,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_for: Option<NumberOrText>,
    max_executions: Option<usize>,
    max_bytes: Option<NumberOrText>,
    keep_output: Option<NumberOrText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    path: Option<String>,
    root_path: Option<String>,
    allow_root: Option<Written>,
    env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_concurrent_execs: Option<u32>,
    /// Obsolete: accepted so that an upgraded agent starts with its old file, and ignored.
    max_output_bytes: Option<NumberOrText>,
    max_message_bytes: Option<NumberOrText>,
    max_concurrent_streams: Option<u32>,
    max_concurrent_handshakes: Option<u32>,
    max_timeout: Option<NumberOrText>,
    shutdown_grace: Option<NumberOrText>,
    max_file_bytes: Option<NumberOrText>,
}

impl AgentConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        // `config` reports a missing file in its own words; this one names the file plainly.
        if !path.exists() {
            return Err(ConfigError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|error| invalid(describe(error)))?;
        let base = path.parent().unwrap_or(Path::new("/"));
        AgentConfig::validate(raw, path, base).map_err(invalid)
    }

    fn validate(raw: RawConfig, path: &Path, base: &Path) -> Result<AgentConfig, String> {
        let listen = match raw.listen {
            None => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            Some(text) => parse_listen(&text).ok_or_else(|| {
                format!("listen: '{text}' is not an address such as 0.0.0.0:7731")
            })?,
        };
        let file =
            |value: Option<PathBuf>, default: &str| base.join(value.unwrap_or(default.into()));
        let allowed_controllers = raw
            .allowed_controllers
            .unwrap_or_else(|| vec!["volley-controller".to_string()]);
        if allowed_controllers.is_empty() || allowed_controllers.iter().any(|n| n.is_empty()) {
            return Err(
                "allowed_controllers: name at least one controller identity, none empty"
                    .to_string(),
            );
        }
        let executor = match raw.executor.as_deref() {
            None => ExecutorChoice::default(),
            Some(text) => ExecutorChoice::parse(text).ok_or_else(|| {
                format!("executor: '{text}' is none of \"auto\", \"direct\", \"systemd\"")
            })?,
        };
        let key = file(raw.key, "/etc/volley/agent.key");
        let push_roots = match raw.push_roots {
            Some(roots) => PushRoots::new(roots.into_iter().map(|root| base.join(root)).collect())?,
            None => PushRoots::defaults(),
        };
        let mut warnings = Vec::new();
        if raw.limits.max_output_bytes.is_some() {
            warnings.push(
                "limits.max_output_bytes is obsolete and ignored: the agent streams all output, \
                 and the controller caps what it keeps (--max-output)"
                    .to_string(),
            );
        }
        Ok(AgentConfig {
            path: path.to_path_buf(),
            listen,
            certificate: file(raw.certificate, "/etc/volley/agent.pem"),
            push_roots: push_roots.protecting(vec![key.clone()]),
            key,
            ca: file(raw.ca, "/etc/volley/ca.pem"),
            allowed_controllers,
            audit_log: raw.audit_log.map(|log| base.join(log)),
            executor,
            limits: validate_limits(raw.limits)?,
            session: validate_session(raw.session)?,
            retention: validate_retention(raw.retention)?,
            warnings,
        })
    }
}

/// The `config` crate's error on one line, naming the key, without its idea of the file's path
/// (the caller names the file).
fn describe(error: config::ConfigError) -> String {
    match error {
        config::ConfigError::FileParse { cause, .. } => one_line(&cause.to_string()),
        config::ConfigError::Type {
            unexpected,
            expected,
            key: Some(key),
            ..
        } => format!("{key}: expected {expected}, found {unexpected}"),
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } => format!("{key}: {}", describe(*error)),
        other => one_line(&other.to_string()),
    }
}

/// Joins a multi-line parser message into one line, leaving out the source excerpt that TOML
/// errors draw (`1 | listen =` and the `^` marker under it).
fn one_line(message: &str) -> String {
    let excerpt = |line: &str| {
        let line = line.trim_start();
        line.starts_with('|')
            || line
                .split_once(" |")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
    };
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !excerpt(line))
        .collect::<Vec<_>>()
        .join(": ")
}

fn parse_listen(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| Some(SocketAddr::new(text.parse::<IpAddr>().ok()?, DEFAULT_PORT)))
}

/// A size setting (`"1MiB"` or a number of bytes); errors name `key`, such as `limits.x`.
fn size_setting(key: &str, value: Option<NumberOrText>, default: u64) -> Result<u64, String> {
    match value {
        None => Ok(default),
        Some(NumberOrText::Number(bytes)) => Ok(bytes),
        Some(NumberOrText::Text(text)) => {
            parse_size(&text).map_err(|error| format!("{key}: {error}"))
        }
    }
}

/// A duration setting (`"30s"` or a number of seconds); errors name `key`.
fn duration_setting(
    key: &str,
    value: Option<NumberOrText>,
    default: Option<Duration>,
) -> Result<Option<Duration>, String> {
    match value {
        None => Ok(default),
        Some(NumberOrText::Number(seconds)) => Ok(Some(Duration::from_secs(seconds))),
        Some(NumberOrText::Text(text)) => parse_duration(&text)
            .map(Some)
            .map_err(|error| format!("{key}: {error}")),
    }
}

/// A switch: `true` or `false`, nothing else; errors name `key`.
fn boolean_setting(key: &str, value: Option<Written>, default: bool) -> Result<bool, String> {
    let found = match value {
        None => return Ok(default),
        Some(Written::Boolean(value)) => return Ok(value),
        Some(Written::Integer(number)) => format!("integer {number}"),
        Some(Written::Float(number)) => format!("float {number}"),
        Some(Written::Text(text)) => format!("string {text:?}"),
        Some(Written::Other(_)) => "an array or a table".to_string(),
    };
    Err(format!("{key}: expected true or false, found {found}"))
}

fn validate_retention(raw: RawRetention) -> Result<Retention, String> {
    let default = Retention::default();
    let size =
        |key: &str, value, default| size_setting(&format!("retention.{key}"), value, default);
    Ok(Retention {
        keep_for: duration_setting("retention.keep_for", raw.keep_for, Some(default.keep_for))?
            .unwrap_or_default(),
        max_executions: raw.max_executions.unwrap_or(default.max_executions),
        max_bytes: size("max_bytes", raw.max_bytes, default.max_bytes)?,
        keep_output: size("keep_output", raw.keep_output, default.keep_output)?,
    })
}

fn validate_limits(raw: RawLimits) -> Result<Limits, String> {
    let default = Limits::default();
    let size = |key: &str, value, default| size_setting(&format!("limits.{key}"), value, default);
    let duration =
        |key: &str, value, default| duration_setting(&format!("limits.{key}"), value, default);
    let at_least_one = |key: &str, value: Option<u32>, default: u32| match value {
        Some(0) => Err(format!("limits.{key}: must be at least 1")),
        value => Ok(value.unwrap_or(default)),
    };
    let max_message_bytes = size(
        "max_message_bytes",
        raw.max_message_bytes,
        u64::from(default.max_message_bytes),
    )?;
    if !(MIN_MESSAGE_BYTES..=u64::from(u32::MAX)).contains(&max_message_bytes) {
        return Err(format!(
            "limits.max_message_bytes: must be between {MIN_MESSAGE_BYTES} and {} bytes",
            u32::MAX
        ));
    }
    let max_timeout =
        duration("max_timeout", raw.max_timeout, default.max_timeout)?.filter(|cap| !cap.is_zero());
    let shutdown_grace = duration(
        "shutdown_grace",
        raw.shutdown_grace,
        Some(default.shutdown_grace),
    )?
    .unwrap_or_default();
    if let Some(obsolete) = raw.max_output_bytes {
        // Still checked: a value that does not parse is a typo worth knowing about.
        size("max_output_bytes", Some(obsolete), 0)?;
    }
    Ok(Limits {
        max_concurrent_execs: at_least_one(
            "max_concurrent_execs",
            raw.max_concurrent_execs,
            default.max_concurrent_execs,
        )?,
        max_message_bytes: u32::try_from(max_message_bytes).unwrap_or(u32::MAX),
        max_concurrent_streams: at_least_one(
            "max_concurrent_streams",
            raw.max_concurrent_streams,
            default.max_concurrent_streams,
        )?,
        max_concurrent_handshakes: at_least_one(
            "max_concurrent_handshakes",
            raw.max_concurrent_handshakes,
            default.max_concurrent_handshakes,
        )?,
        max_timeout,
        shutdown_grace,
        max_file_bytes: size("max_file_bytes", raw.max_file_bytes, default.max_file_bytes)?,
    })
}

fn validate_session(raw: RawSession) -> Result<SessionConfig, String> {
    let default = SessionConfig::default();
    let path = |key: &str, value: Option<String>, default: String| match value {
        Some(path) if path.is_empty() || path.contains('\0') => Err(format!(
            "session.{key}: must be a non-empty list of directories"
        )),
        value => Ok(value.unwrap_or(default)),
    };
    let env = raw.env.unwrap_or_default();
    if let Some((name, _)) = env
        .iter()
        .find(|(name, value)| name.is_empty() || name.contains(['=', '\0']) || value.contains('\0'))
    {
        return Err(format!(
            "session.env: {name:?}: a variable name must be non-empty, without '=' or NUL, \
             and its value without NUL"
        ));
    }
    Ok(SessionConfig {
        path: path("path", raw.path, default.path)?,
        root_path: path("root_path", raw.root_path, default.root_path)?,
        allow_root: boolean_setting("session.allow_root", raw.allow_root, default.allow_root)?,
        env,
    })
}

#[cfg(test)]
mod tests;
