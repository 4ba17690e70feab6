//! The inventory: groups of target patterns, per-group and per-host connection settings, and the
//! run settings, read from one TOML file through the `config` crate.
//!
//! Run settings live at the top level of the file so that `VOLLEY_PARALLEL=100` overrides
//! `parallel = 512`. Only the names in [`SETTINGS`] are taken from the environment, so that an
//! unrelated `VOLLEY_*` variable never breaks loading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod strict;

/// The run settings that `VOLLEY_<NAME>` environment variables override.
pub const SETTINGS: &[&str] = &[
    "user",
    "port",
    "parallel",
    "max_handshakes",
    "connect_timeout",
    "timeout",
    "max_output",
    "known_hosts",
    "identity_file",
    "transport",
    "agent_port",
    "agent_prefix",
    "become",
    "pki",
    "journal_keep_runs",
    "journal_max_bytes",
];

/// The [`SETTINGS`] that are whole numbers, and the one that is true or false; the others are
/// strings. A variable's text is read as its setting's type, so that `VOLLEY_TIMEOUT=30` is the
/// string a timeout is, and `VOLLEY_PORT=22` the number a port is.
const NUMBER_SETTINGS: &[&str] = &[
    "port",
    "parallel",
    "max_handshakes",
    "agent_port",
    "journal_keep_runs",
];
const BOOLEAN_SETTINGS: &[&str] = &["become"];

/// The value of `VOLLEY_<KEY>=text`, in its setting's type; the reason when it cannot be.
fn override_value(key: &str, text: &str) -> Result<config::Value, String> {
    if NUMBER_SETTINGS.contains(&key) {
        return text
            .parse::<i64>()
            .map(config::Value::from)
            .map_err(|_| format!("'{text}' is not a whole number"));
    }
    if BOOLEAN_SETTINGS.contains(&key) {
        return match text {
            "true" => Ok(true.into()),
            "false" => Ok(false.into()),
            _ => Err(format!("'{text}' is neither true nor false")),
        };
    }
    Ok(text.into())
}

/// The whole inventory file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default, deserialize_with = "strict::string")]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "strict::number")]
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "strict::number")]
    pub parallel: Option<usize>,
    /// Handshakes in flight at once; absent: adaptive.
    pub max_handshakes: Option<usize>,
    /// A duration such as `10s`.
    #[serde(default, deserialize_with = "strict::string")]
    pub connect_timeout: Option<String>,
    /// A duration such as `5m`.
    #[serde(default, deserialize_with = "strict::string")]
    pub timeout: Option<String>,
    /// A size such as `1MiB`.
    #[serde(default, deserialize_with = "strict::string")]
    pub max_output: Option<String>,
    #[serde(default, deserialize_with = "strict::path")]
    pub known_hosts: Option<PathBuf>,
    #[serde(default, deserialize_with = "strict::path")]
    pub identity_file: Option<PathBuf>,
    /// `auto` (the agent where one answers, SSH elsewhere), `agent` or `ssh`.
    pub transport: Option<TransportChoice>,
    #[serde(default, deserialize_with = "strict::number")]
    pub agent_port: Option<u16>,
    /// A directory that prefixes every path `volley agent install` writes on a host.
    #[serde(default, deserialize_with = "strict::path")]
    pub agent_prefix: Option<PathBuf>,
    /// Run commands and agent operations as root through `sudo -n` (`become` in the file).
    #[serde(rename = "become", default, deserialize_with = "strict::boolean")]
    pub become_root: Option<bool>,
    /// The PKI directory the agent transport takes its certificates from.
    #[serde(default, deserialize_with = "strict::path")]
    pub pki: Option<PathBuf>,
    /// How many run journals to keep; older ones are pruned when a run starts.
    #[serde(default, deserialize_with = "strict::number")]
    pub journal_keep_runs: Option<usize>,
    /// A size such as `100MiB`: the run journals' total size, beyond which the oldest go.
    #[serde(default, deserialize_with = "strict::string")]
    pub journal_max_bytes: Option<String>,
    #[serde(default)]
    pub groups: BTreeMap<String, Group>,
    #[serde(default)]
    pub hosts: BTreeMap<String, HostSettings>,
}

/// A named group of target patterns, with settings for its members.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Target patterns, `@other` groups included.
    #[serde(deserialize_with = "strict::strings")]
    pub hosts: Vec<String>,
    #[serde(default, deserialize_with = "strict::number")]
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "strict::string")]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "strict::path")]
    pub identity_file: Option<PathBuf>,
    pub transport: Option<TransportChoice>,
    #[serde(default, deserialize_with = "strict::number")]
    pub agent_port: Option<u16>,
    #[serde(default, deserialize_with = "strict::path")]
    pub agent_prefix: Option<PathBuf>,
    #[serde(rename = "become", default, deserialize_with = "strict::boolean")]
    pub become_root: Option<bool>,
}

impl HostSettings {
    /// These settings, with what they leave out taken from `fallback`.
    pub fn or(self, fallback: HostSettings) -> HostSettings {
        HostSettings {
            address: self.address.or(fallback.address),
            port: self.port.or(fallback.port),
            user: self.user.or(fallback.user),
            identity_file: self.identity_file.or(fallback.identity_file),
            transport: self.transport.or(fallback.transport),
            agent_port: self.agent_port.or(fallback.agent_port),
            agent_prefix: self.agent_prefix.or(fallback.agent_prefix),
            become_root: self.become_root.or(fallback.become_root),
        }
    }
}

impl Group {
    pub fn settings(&self) -> HostSettings {
        HostSettings {
            address: None,
            port: self.port,
            user: self.user.clone(),
            identity_file: self.identity_file.clone(),
            transport: self.transport,
            agent_port: self.agent_port,
            agent_prefix: self.agent_prefix.clone(),
            become_root: self.become_root,
        }
    }
}

/// Connection settings of one host or group. Fields left out fall through to the next level.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// The address (or DNS name) to dial instead of the host's name.
    #[serde(default, deserialize_with = "strict::string")]
    pub address: Option<String>,
    #[serde(default, deserialize_with = "strict::number")]
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "strict::string")]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "strict::path")]
    pub identity_file: Option<PathBuf>,
    pub transport: Option<TransportChoice>,
    #[serde(default, deserialize_with = "strict::number")]
    pub agent_port: Option<u16>,
    /// Prefixes every path the agent install writes on the host (`/usr/local/bin/volley-agent`
    /// becomes `PREFIX/usr/local/bin/volley-agent`), so that test hosts sharing one machine do
    /// not share files. An absolute path of plain characters (letters, digits, `/._-`).
    #[serde(default, deserialize_with = "strict::path")]
    pub agent_prefix: Option<PathBuf>,
    /// `become = true`: the SSH user becomes root through `sudo -n` for commands and agent
    /// operations, as Ansible's `become` does.
    #[serde(rename = "become", default, deserialize_with = "strict::boolean")]
    pub become_root: Option<bool>,
}

/// Which transport runs a host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportChoice {
    /// The agent where one answers; SSH where none could be reached.
    #[default]
    Auto,
    Agent,
    Ssh,
}

impl<'de> Deserialize<'de> for TransportChoice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = strict::string(deserializer)?.unwrap_or_default();
        match text.as_str() {
            "auto" => Ok(TransportChoice::Auto),
            "agent" => Ok(TransportChoice::Agent),
            "ssh" => Ok(TransportChoice::Ssh),
            _ => Err(serde::de::Error::custom(format!(
                "'{text}' is not a transport (auto, agent or ssh)"
            ))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("inventory {path}: file not found")]
    NotFound { path: PathBuf },
    /// A `VOLLEY_<NAME>` variable that does not hold a value of its setting's type.
    #[error("{name}: {message}")]
    Variable { name: String, message: String },
    #[error("inventory {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Inventory {
    /// Loads `path` with the `VOLLEY_*` overrides from `environment`.
    ///
    /// A missing file is an error when `required`; otherwise it reads as an empty inventory
    /// (the default path need not exist).
    pub fn load(
        path: &Path,
        required: bool,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Inventory, InventoryError> {
        // Read here, not by `config`, which takes a directory or an unreadable file for none.
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !required => {
                String::new()
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(InventoryError::NotFound {
                    path: path.to_path_buf(),
                });
            }
            Err(error) => {
                return Err(InventoryError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("cannot read it: {error}"),
                });
            }
        };
        let invalid = |error: config::ConfigError| InventoryError::Invalid {
            path: path.to_path_buf(),
            message: error.to_string(),
        };
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml));
        let mut overridden = Vec::new();
        for (name, text) in environment {
            let Some(key) = name.strip_prefix("VOLLEY_").map(str::to_ascii_lowercase) else {
                continue;
            };
            if !SETTINGS.contains(&key.as_str()) {
                continue;
            }
            let value =
                override_value(&key, &text).map_err(|message| InventoryError::Variable {
                    name: name.clone(),
                    message,
                })?;
            builder = builder.set_override(key.as_str(), value).map_err(invalid)?;
            overridden.push((key, name));
        }
        let inventory: Inventory = builder
            .build()
            .map_err(invalid)?
            .try_deserialize()
            .map_err(|error| {
                // A value that a variable gave and that does not fit its setting (a port of
                // 70000, an unknown transport) is that variable's fault, not the file's.
                let message = error.to_string();
                match overridden.iter().find_map(|(key, name)| {
                    let message = message.strip_suffix(&format!(" for key `{key}`"))?;
                    Some((name, message))
                }) {
                    Some((name, message)) => InventoryError::Variable {
                        name: name.clone(),
                        message: message.to_string(),
                    },
                    None => invalid(error),
                }
            })?;
        inventory.validate().map_err(|message| {
            // A bad top-level value that a variable gave is that variable's fault.
            match overridden
                .iter()
                .find(|(key, _)| message.starts_with(&format!("{key}: ")))
            {
                Some((key, name)) => InventoryError::Variable {
                    name: name.clone(),
                    message: message[key.len() + 2..].to_string(),
                },
                None => InventoryError::Invalid {
                    path: path.to_path_buf(),
                    message,
                },
            }
        })?;
        Ok(inventory)
    }

    fn validate(&self) -> Result<(), String> {
        for name in self.groups.keys() {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                return Err(format!(
                    "groups.{name}: a group name may hold only letters, digits, '_', '.' and '-'"
                ));
            }
        }
        for name in self.hosts.keys() {
            // The key is looked up by the target's host name: anything else never matches.
            let plain = crate::target::Target::parse(name).is_ok_and(|target| {
                target.user.is_none() && target.port.is_none() && target.host == *name
            });
            if !plain {
                return Err(format!(
                    "hosts.\"{name}\": not a host name (a host entry takes one name or address, without user@, :port, ranges or globs)"
                ));
            }
        }
        let levels = std::iter::once((
            String::new(),
            HostSettings {
                address: None,
                port: self.port,
                user: self.user.clone(),
                identity_file: self.identity_file.clone(),
                transport: None,
                agent_port: self.agent_port,
                agent_prefix: None,
                become_root: None,
            },
        ))
        .chain(
            self.groups
                .iter()
                .map(|(name, group)| (format!("groups.{name}."), group.settings())),
        )
        .chain(
            self.hosts
                .iter()
                .map(|(name, settings)| (format!("hosts.{name}."), settings.clone())),
        );
        for (key, settings) in levels {
            check_settings(&settings).map_err(|problem| format!("{key}{problem}"))?;
        }
        if self.known_hosts.as_deref().is_some_and(blank) {
            return Err("known_hosts: an empty path".to_string());
        }
        let prefixes =
            std::iter::once(("agent_prefix".to_string(), &self.agent_prefix))
                .chain(self.groups.iter().map(|(name, group)| {
                    (format!("groups.{name}.agent_prefix"), &group.agent_prefix)
                }))
                .chain(self.hosts.iter().map(|(name, settings)| {
                    (format!("hosts.{name}.agent_prefix"), &settings.agent_prefix)
                }));
        for (key, prefix) in prefixes {
            if let Some(prefix) = prefix {
                check_prefix(prefix).map_err(|problem| format!("{key}: {problem}"))?;
            }
        }
        Ok(())
    }
}

/// A path of nothing but white space, which names no file.
fn blank(path: &Path) -> bool {
    path.to_string_lossy().trim().is_empty()
}

/// Values that would only fail later, on the host or in the dark: an empty or spaced user or
/// address, port 0, an empty identity file. The problem starts with the setting's name.
fn check_settings(settings: &HostSettings) -> Result<(), String> {
    let word = |text: &str| !text.is_empty() && !text.contains(char::is_whitespace);
    if let Some(user) = settings.user.as_deref().filter(|user| !word(user)) {
        return Err(format!("user: '{user}' is not a user name"));
    }
    if let Some(address) = settings.address.as_deref().filter(|address| !word(address)) {
        return Err(format!("address: '{address}' is not an address"));
    }
    for (name, port) in [("port", settings.port), ("agent_port", settings.agent_port)] {
        if port == Some(0) {
            return Err(format!("{name}: 0 is not a port"));
        }
    }
    if settings.identity_file.as_deref().is_some_and(blank) {
        return Err("identity_file: an empty path".to_string());
    }
    Ok(())
}

/// A prefix goes into shell commands and a systemd unit on the host: it must be absolute and
/// made of characters that need no quoting anywhere.
fn check_prefix(prefix: &Path) -> Result<(), String> {
    let text = prefix.to_string_lossy();
    if !prefix.is_absolute() {
        return Err(format!("'{text}' is not an absolute path"));
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
        || text.split('/').any(|part| part == "..")
    {
        return Err(format!(
            "'{text}': use only letters, digits and '/', '.', '_', '-' (no '..')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, environment: &[(&str, &str)]) -> Result<Inventory, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.toml");
        std::fs::write(&path, text).unwrap();
        let environment = environment
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()));
        Inventory::load(&path, true, environment)
            .map_err(|e| e.to_string().replace(&path.display().to_string(), "FILE"))
    }

    #[test]
    fn reads_groups_hosts_and_settings() {
        let inventory = load(
            r#"
            user = "deploy"
            parallel = 100
            connect_timeout = "5s"
            [groups.web]
            hosts = ["web[01-20].example.com", "@db"]
            port = 2222
            [groups.db]
            hosts = ["db1"]
            [hosts.db1]
            address = "10.0.0.5"
            identity_file = "/keys/db"
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(inventory.user.as_deref(), Some("deploy"));
        assert_eq!(inventory.parallel, Some(100));
        assert_eq!(
            inventory.groups["web"].hosts,
            ["web[01-20].example.com", "@db"]
        );
        assert_eq!(inventory.groups["web"].port, Some(2222));
        assert_eq!(inventory.hosts["db1"].address.as_deref(), Some("10.0.0.5"));
    }

    #[test]
    fn environment_overrides_settings_only() {
        let inventory = load(
            "parallel = 100\n",
            &[
                ("VOLLEY_PARALLEL", "7"),
                ("VOLLEY_USER", "ops"),
                ("VOLLEY_LOG", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(inventory.parallel, Some(7));
        assert_eq!(inventory.user.as_deref(), Some("ops"));
    }

    #[test]
    fn a_variable_is_read_in_its_settings_type_and_its_errors_name_it() {
        let inventory = load(
            "",
            &[
                ("VOLLEY_TIMEOUT", "0"),
                ("VOLLEY_CONNECT_TIMEOUT", "30"),
                ("VOLLEY_MAX_OUTPUT", "4096"),
                ("VOLLEY_JOURNAL_MAX_BYTES", "104857600"),
                ("VOLLEY_USER", "1000"),
                ("VOLLEY_PORT", "2222"),
            ],
        )
        .unwrap();
        assert_eq!(inventory.timeout.as_deref(), Some("0"));
        assert_eq!(inventory.connect_timeout.as_deref(), Some("30"));
        assert_eq!(inventory.max_output.as_deref(), Some("4096"));
        assert_eq!(inventory.journal_max_bytes.as_deref(), Some("104857600"));
        assert_eq!(inventory.user.as_deref(), Some("1000"));
        assert_eq!(inventory.port, Some(2222));
        for (variable, text, expected) in [
            (
                "VOLLEY_PORT",
                "ssh",
                "VOLLEY_PORT: 'ssh' is not a whole number",
            ),
            ("VOLLEY_PORT", "0", "VOLLEY_PORT: 0 is not a port"),
            ("VOLLEY_PORT", "70000", "VOLLEY_PORT: 70000 is out of range"),
            (
                "VOLLEY_TRANSPORT",
                "bogus",
                "VOLLEY_TRANSPORT: 'bogus' is not a transport (auto, agent or ssh)",
            ),
            (
                "VOLLEY_BECOME",
                "yes",
                "VOLLEY_BECOME: 'yes' is neither true nor false",
            ),
        ] {
            assert_eq!(
                load("port = 22\n", &[(variable, text)]).unwrap_err(),
                expected
            );
        }
        // The file's own mistakes are still the file's.
        assert_eq!(
            load("port = 0\n", &[("VOLLEY_USER", "ops")]).unwrap_err(),
            "inventory FILE: port: 0 is not a port"
        );
    }

    #[test]
    fn become_is_read_at_every_level_and_overridden() {
        let inventory = load(
            "become = false\n[groups.web]\nhosts = [\"w1\"]\nbecome = true\n\
             [hosts.w1]\nbecome = false\n",
            &[],
        )
        .unwrap();
        assert_eq!(inventory.become_root, Some(false));
        assert_eq!(inventory.groups["web"].settings().become_root, Some(true));
        assert_eq!(inventory.hosts["w1"].become_root, Some(false));
        let inventory = load("", &[("VOLLEY_BECOME", "true")]).unwrap();
        assert_eq!(inventory.become_root, Some(true));
    }

    #[test]
    fn journal_settings_are_read_and_overridden() {
        let inventory = load(
            "journal_keep_runs = 50\njournal_max_bytes = \"10MiB\"\n",
            &[("VOLLEY_JOURNAL_KEEP_RUNS", "3")],
        )
        .unwrap();
        assert_eq!(inventory.journal_keep_runs, Some(3));
        assert_eq!(inventory.journal_max_bytes.as_deref(), Some("10MiB"));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let check = |text: &str, expected: &str| {
            let error = load(text, &[]).unwrap_err();
            assert!(error.starts_with("inventory FILE: "), "{error}");
            assert!(
                error.contains(expected),
                "{error:?} should contain {expected:?}"
            );
        };
        check("[hosts.a]\nport = \"abc\"\n", "hosts.a.port");
        check("[groups.web]\nhosts = \"web1\"\n", "groups.web.hosts");
        check("[groups.web]\nhots = [\"web1\"]\n", "hots");
        check("parallel = -1\n", "parallel");
        check("[hosts.a]\nport = 0\n", "hosts.a.port: 0 is not a port");
        check("[groups.web]\nhosts = []\naddress = \"x\"\n", "address");
        check("user = \n", "");
        // Wrong types are refused, not converted.
        check(
            "user = 5\n",
            "invalid type: integer `5`, expected a string (in quotes) for key `user`",
        );
        check(
            "port = \"22\"\n",
            "expected a whole number (without quotes) for key `port`",
        );
        check("[hosts.a]\naddress = 10\n", "for key `hosts.a.address`");
        check(
            "[groups.g]\nhosts = [\"a\", 5]\n",
            "for key `groups.g.hosts",
        );
        check("parallel = 1.5\n", "for key `parallel`");
        check(
            "become = \"yes\"\n",
            "expected true or false (without quotes) for key `become`",
        );
        check(
            "[groups.g]\nhosts = []\nbecome = 1\n",
            "for key `groups.g.become`",
        );
        check("user = \"\"\n", "user: '' is not a user name");
        check(
            "[groups.g]\nhosts = []\nuser = \"a b\"\n",
            "groups.g.user: 'a b' is not a user name",
        );
        check(
            "[hosts.a]\naddress = \"\"\n",
            "hosts.a.address: '' is not an address",
        );
        check("agent_port = 0\n", "agent_port: 0 is not a port");
        check(
            "[hosts.a]\nidentity_file = \"\"\n",
            "hosts.a.identity_file: an empty path",
        );
        check("identity_file = \" \"\n", "identity_file: an empty path");
        check("known_hosts = \"\"\n", "known_hosts: an empty path");
        for name in ["web[01-02]", "root@web03", "web04:22", "web0*", "a b"] {
            check(
                &format!("[hosts.\"{name}\"]\nuser = \"x\"\n"),
                &format!("hosts.\"{name}\": not a host name"),
            );
        }
        assert!(load("[hosts.\"::1\"]\nport = 2\n[hosts.\"10.0.0.1\"]\n", &[]).is_ok());
        check(
            "[groups.web]\nhosts = []\ntransport = \"carrier-pigeon\"\n",
            "'carrier-pigeon' is not a transport (auto, agent or ssh) for key `groups.web.transport`",
        );
        check(
            "transport = 1\n",
            "expected a string (in quotes) for key `transport`",
        );
        check(
            "agent_port = 70000\n",
            "70000 is out of range for key `agent_port`",
        );
        check(
            "agent_prefix = \"rel/dir\"\n",
            "agent_prefix: 'rel/dir' is not an absolute path",
        );
        check(
            "[hosts.a]\nagent_prefix = \"/a b\"\n",
            "hosts.a.agent_prefix: '/a b': use only",
        );
        check(
            "[groups.g]\nhosts = []\nagent_prefix = \"/a/../b\"\n",
            "groups.g.agent_prefix: '/a/../b': use only",
        );
    }

    #[test]
    fn a_missing_required_file_is_an_error() {
        let error = Inventory::load(Path::new("/nonexistent/inv.toml"), true, []).unwrap_err();
        assert_eq!(
            error.to_string(),
            "inventory /nonexistent/inv.toml: file not found"
        );
        let inventory = Inventory::load(Path::new("/nonexistent/inv.toml"), false, []).unwrap();
        assert_eq!(inventory, Inventory::default());
    }

    #[test]
    fn a_directory_given_as_the_inventory_is_an_error_even_where_none_is_required() {
        let dir = tempfile::tempdir().unwrap();
        for required in [true, false] {
            let error = Inventory::load(dir.path(), required, []).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "inventory {}: cannot read it: Is a directory (os error 21)",
                    dir.path().display()
                )
            );
        }
    }
}
