//! What is on a host before an agent operation touches it, found by one script: checksums of the
//! files the install writes, the installed binary's version, the key's mode, the certificate,
//! whether the agent runs, and which supervisor the host has.
//!
//! The script prints `name=value` lines, then `--- certificate` and the certificate's PEM (a
//! public document). The key itself is never read by the script, only its mode; whether it is
//! the certificate's key is asked of the installed binary (`volley-agent check-key`), on the
//! host.

/// The host as the probe found it. A checksum is `None` when the file does not exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub root: bool,
    /// `/run/systemd/system` exists and `systemctl` is there.
    pub systemd: bool,
    pub binary: Option<String>,
    /// What the installed binary's `--version` says, such as `0.1.0`.
    pub version: Option<String>,
    pub config: Option<String>,
    pub ca: Option<String>,
    pub unit: Option<String>,
    /// The key's mode in octal (`600`), when there is a key.
    pub key_mode: Option<String>,
    /// Whether the key is the certificate's, as the installed binary says; `None` when there is
    /// no key, certificate or binary, or the binary cannot say (one older than `check-key`).
    pub key_matches: Option<bool>,
    pub previous_binary: bool,
    /// The agent runs: the unit is active, or the fallback's pid file names our live process.
    pub running: bool,
    /// The fallback's agent process, when it runs.
    pub pid: Option<u32>,
    pub certificate: Option<String>,
    /// The agent's config as it is, for the operator's settings an install keeps.
    pub config_text: Option<String>,
}

impl Found {
    pub fn installed(&self) -> bool {
        self.binary.is_some() && self.config.is_some()
    }
}

const MARKER: &str = "--- certificate\n";
/// Between the certificate and the config: on a line of its own, whatever the certificate's end.
const CONFIG_MARKER: &str = "\n--- config\n";

/// The probe script's body (see [`super::remote::Remote::script`]); the paths come from the
/// layout's shell variables.
pub fn script() -> String {
    format!(
        r#"echo "uid=$(id -u)"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  echo systemd=yes
  if systemctl is-active --quiet {unit}; then echo running=yes; fi
else
  echo systemd=no
  if pid=$(agent_pid); then echo running=yes; echo "pid=$pid"; fi
fi
echo "binary=$(sum "$BINARY")"
if [ -f "$BINARY" ] && [ -x "$BINARY" ]; then
  echo "version=$(limited "$BINARY" --version 2>/dev/null | head -n 1 || true)"
fi
if [ -f "$BINARY.prev" ]; then echo previous=yes; fi
echo "config=$(sum "$CONFIG")"
echo "ca=$(sum "$CA")"
echo "unit=$(sum "$UNIT")"
echo "key_mode=$(stat -c %a "$KEY" 2>/dev/null || echo -)"
if [ -f "$KEY" ] && [ -f "$CERTIFICATE" ] && [ -f "$BINARY" ] && [ -x "$BINARY" ]; then
  matches=0
  limited "$BINARY" check-key --key "$KEY" --certificate "$CERTIFICATE" >/dev/null 2>&1 || matches=$?
  case $matches in 0) echo key_matches=yes;; 1) echo key_matches=no;; esac
fi
echo '--- certificate'
cat "$CERTIFICATE" 2>/dev/null || true
if [ -f "$CONFIG" ]; then
  printf '\n--- config\n'
  cat "$CONFIG"
fi
"#,
        unit = super::layout::UNIT_NAME,
    )
}

/// Reads the probe's output.
pub fn parse(output: &str) -> Result<Found, String> {
    let (facts, certificate) = output
        .split_once(MARKER)
        .ok_or_else(|| "the probe's output is incomplete".to_string())?;
    let mut found = Found::default();
    let present = |value: &str| (value != "-" && !value.is_empty()).then(|| value.to_string());
    for line in facts.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        match name {
            "uid" => found.root = value == "0",
            "systemd" => found.systemd = value == "yes",
            "running" => found.running = value == "yes",
            "pid" => found.pid = value.parse().ok(),
            "binary" => found.binary = present(value),
            "version" => found.version = version(value),
            "previous" => found.previous_binary = value == "yes",
            "config" => found.config = present(value),
            "ca" => found.ca = present(value),
            "unit" => found.unit = present(value),
            "key_mode" => found.key_mode = present(value),
            "key_matches" => found.key_matches = Some(value == "yes"),
            _ => {}
        }
    }
    let (certificate, config) = match certificate.split_once(CONFIG_MARKER) {
        Some((certificate, config)) => (certificate, Some(config.to_string())),
        None => (certificate, None),
    };
    found.certificate = (!certificate.trim().is_empty()).then(|| certificate.to_string());
    found.config_text = config;
    Ok(found)
}

/// The version in an agent's `--version` line (`volley-agent 0.1.0` -> `0.1.0`); `None` for
/// any other program's, such as the controller's `volley 0.1.0`.
pub fn version(line: &str) -> Option<String> {
    match line.trim().split_once(' ')? {
        ("volley-agent", version) if !version.is_empty() && !version.contains(' ') => {
            Some(version.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_host_and_an_installed_one_are_told_apart() {
        let fresh = parse(
            "uid=0\nsystemd=no\nbinary=-\nconfig=-\nca=-\nunit=-\nkey_mode=-\n--- certificate\n",
        )
        .unwrap();
        assert_eq!(
            fresh,
            Found {
                root: true,
                ..Found::default()
            }
        );
        assert!(!fresh.installed());

        let installed = parse(
            "uid=0\nsystemd=yes\nrunning=yes\npid=4242\nbinary=ab12\nversion=volley-agent 0.1.0\n\
             previous=yes\nconfig=cd34\nca=ef56\nunit=-\nkey_mode=600\nkey_matches=no\n--- certificate\n\
             -----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(installed.installed() && installed.running && installed.systemd);
        assert_eq!(installed.pid, Some(4242));
        assert_eq!(installed.version.as_deref(), Some("0.1.0"));
        assert_eq!(installed.key_mode.as_deref(), Some("600"));
        assert_eq!(installed.key_matches, Some(false));
        assert!(installed.previous_binary);
        assert_eq!(installed.config_text, None);
        let with_config = parse(
            "uid=0\nconfig=cd34\n--- certificate\n-----END CERTIFICATE-----\n\n--- config\nlisten = \"x\"\n",
        )
        .unwrap();
        assert_eq!(with_config.config_text.as_deref(), Some("listen = \"x\"\n"));
        assert_eq!(
            with_config.certificate.as_deref(),
            Some("-----END CERTIFICATE-----\n")
        );
        assert!(
            installed
                .certificate
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }

    #[test]
    fn only_an_agents_version_line_gives_a_version() {
        for (line, expected) in [
            ("volley-agent 0.1.0\n", Some("0.1.0")),
            ("volley 0.1.0", None),
            ("volley-agent", None),
            ("volley-agent 0.1.0 extra", None),
            ("", None),
        ] {
            assert_eq!(version(line).as_deref(), expected, "{line:?}");
        }
    }

    #[test]
    fn output_without_the_marker_is_an_error() {
        assert!(parse("uid=0\n").is_err());
    }
}
