//! Where `volley agent` puts things on a host, under the inventory's `agent_prefix`.
//!
//! Without a prefix these are the paths of `deploy/`: the binary in `/usr/local/bin`, the config,
//! certificate, key and CA in `/etc/volley`, the unit in `/etc/systemd/system`. The fallback
//! supervisor (hosts without systemd) adds a pid file and a log. A prefix is prepended to every
//! one of them, so several test hosts on one machine keep apart. Paths are plain text for the
//! remote shell: the inventory allows only characters that need no quoting in a prefix.

use std::path::Path;

/// The unit's name, with or without a prefix: systemd knows one agent per machine.
pub const UNIT_NAME: &str = "volley-agent.service";

/// Every path the install writes on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Empty without a prefix.
    pub prefix: String,
    pub binary: String,
    pub config: String,
    pub certificate: String,
    pub key: String,
    pub ca: String,
    pub unit: String,
    /// The fallback supervisor's pid file and log.
    pub pid_file: String,
    pub log: String,
    /// The one directory that is ours alone, removed on uninstall.
    pub config_dir: String,
}

impl Layout {
    pub fn new(prefix: Option<&Path>) -> Layout {
        let prefix = prefix
            .map(|prefix| prefix.to_string_lossy().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let path = |rest: &str| format!("{prefix}{rest}");
        Layout {
            binary: path("/usr/local/bin/volley-agent"),
            config: path("/etc/volley/agent.toml"),
            certificate: path("/etc/volley/agent.pem"),
            key: path("/etc/volley/agent.key"),
            ca: path("/etc/volley/ca.pem"),
            unit: path("/etc/systemd/system/volley-agent.service"),
            pid_file: path("/run/volley-agent.pid"),
            log: path("/var/log/volley-agent.log"),
            config_dir: path("/etc/volley"),
            prefix,
        }
    }

    /// The binary kept for a rollback, next to the binary so that swapping back is a rename.
    pub fn previous_binary(&self) -> String {
        format!("{}.prev", self.binary)
    }

    /// The binary being installed, next to the binary so that putting it in place is a rename.
    pub fn new_binary(&self) -> String {
        format!("{}.new", self.binary)
    }

    /// The config being installed, checked by the agent there before it is renamed into place.
    pub fn new_config(&self) -> String {
        format!("{}.new", self.config)
    }

    pub fn new_key(&self) -> String {
        format!("{}.new", self.key)
    }

    pub fn new_certificate(&self) -> String {
        format!("{}.new", self.certificate)
    }

    /// Every file an install or upgrade may leave, for uninstall; not the log, which under the
    /// fallback supervisor holds the agent's audit records: an uninstall removes no record of
    /// what ran.
    pub fn every_file(&self) -> Vec<String> {
        vec![
            self.binary.clone(),
            self.previous_binary(),
            self.new_binary(),
            self.config.clone(),
            self.certificate.clone(),
            self.new_certificate(),
            self.key.clone(),
            self.new_key(),
            self.ca.clone(),
            self.unit.clone(),
            self.pid_file.clone(),
        ]
    }

    /// The directories uninstall removes when they are empty, deepest first: under a prefix,
    /// every directory of the layout below it (`etc/volley`, `usr/local/bin`, `usr/local`, ...);
    /// without one only `/etc/volley`, since the system's own directories are not ours.
    pub fn directories(&self) -> Vec<String> {
        if self.prefix.is_empty() {
            return vec![self.config_dir.clone()];
        }
        let mut directories: Vec<String> = Vec::new();
        for file in self.every_file() {
            let mut directory = Path::new(&file).to_path_buf();
            let prefix = Path::new(&self.prefix);
            while directory.pop() && directory.starts_with(prefix) && directory != prefix {
                let text = directory.to_string_lossy().into_owned();
                if !directories.contains(&text) {
                    directories.push(text);
                }
            }
        }
        directories.sort_by_key(|directory| std::cmp::Reverse(directory.matches('/').count()));
        directories
    }

    /// Shell variable assignments naming the paths, for the scripts that run on the host.
    pub fn shell_variables(&self) -> String {
        let quote = crate::shell::quote;
        [
            ("PREFIX", &self.prefix),
            ("BINARY", &self.binary),
            ("CONFIG", &self.config),
            ("CERTIFICATE", &self.certificate),
            ("KEY", &self.key),
            ("CA", &self.ca),
            ("UNIT", &self.unit),
            ("PID_FILE", &self.pid_file),
            ("LOG", &self.log),
            ("CONFIG_DIR", &self.config_dir),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={}\n", quote(value)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_prefix_the_paths_are_those_of_deploy() {
        let layout = Layout::new(None);
        assert_eq!(layout.binary, "/usr/local/bin/volley-agent");
        assert_eq!(layout.config, "/etc/volley/agent.toml");
        assert_eq!(layout.key, "/etc/volley/agent.key");
        assert_eq!(layout.unit, "/etc/systemd/system/volley-agent.service");
        assert_eq!(layout.prefix, "");
    }

    #[test]
    fn uninstall_removes_only_the_layouts_own_directories_deepest_first() {
        assert_eq!(Layout::new(None).directories(), ["/etc/volley"]);
        let directories = Layout::new(Some(Path::new("/srv/h01"))).directories();
        let mut sorted = directories.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "/srv/h01/etc",
                "/srv/h01/etc/systemd",
                "/srv/h01/etc/systemd/system",
                "/srv/h01/etc/volley",
                "/srv/h01/run",
                "/srv/h01/usr",
                "/srv/h01/usr/local",
                "/srv/h01/usr/local/bin",
            ]
        );
        // Not var/log: the log stays, with the audit records of what ran.
        assert!(
            !Layout::new(None)
                .every_file()
                .contains(&Layout::new(None).log)
        );
        for (i, directory) in directories.iter().enumerate() {
            for later in &directories[i + 1..] {
                assert!(
                    !later.starts_with(&format!("{directory}/")),
                    "{later} comes after its parent {directory}"
                );
            }
        }
    }

    #[test]
    fn a_prefix_comes_before_every_path() {
        let layout = Layout::new(Some(Path::new("/tmp/fleet/h01/")));
        for path in layout.every_file() {
            assert!(path.starts_with("/tmp/fleet/h01/"), "{path}");
        }
        assert_eq!(
            layout.previous_binary(),
            "/tmp/fleet/h01/usr/local/bin/volley-agent.prev"
        );
        assert!(
            layout
                .shell_variables()
                .contains("CONFIG='/tmp/fleet/h01/etc/volley/agent.toml'\n")
        );
    }
}
