//! From raw flags to a validated [`RunPlan`]: targets resolved against the inventory, the hosts
//! files and ~/.ssh/config, each host's connection settings decided, limits parsed.
//!
//! Everything the operator can get wrong is caught here, before any connection is made, and
//! reported as a [`PlanError`] (exit status 64).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use volley_common::duration::parse_duration;
use volley_common::inventory::{HostSettings, Inventory, InventoryError, TransportChoice};
use volley_common::size::parse_size;
use volley_common::target::{Pattern, Target, glob_match, parse_list};

use crate::cli::{ColorChoice, RunArgs, TransportFlag};
use crate::rollout::RolloutPlan;
use crate::ssh_config::SshConfigError;

mod ssh;

use self::ssh::SshSources;
pub use self::ssh::{JumpHost, dialled};

pub const DEFAULT_PARALLEL: usize = 512;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_OUTPUT: u64 = 1 << 20;
pub const DEFAULT_AGENT_PORT: u16 = 7731;
/// Identity files tried when none is named, in OpenSSH's order.
const DEFAULT_IDENTITIES: &[&str] = &[".ssh/id_ed25519", ".ssh/id_ecdsa", ".ssh/id_rsa"];

/// One host, with everything needed to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    /// The host as the operator named it; what reports show.
    pub name: String,
    /// What is dialled, and what known_hosts is checked against (as OpenSSH does with HostName).
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Identity files for this host only (inventory, ssh config), tried before the global ones.
    pub identity_files: Vec<PathBuf>,
    /// The host's name without user and port: what its agent's certificate must name.
    pub host: String,
    pub agent_port: u16,
    pub transport: TransportChoice,
    /// Prefixes every path `volley agent` writes on the host (inventory `agent_prefix`).
    pub agent_prefix: Option<PathBuf>,
    /// Run the command (or the agent operation) as root through `sudo -n`.
    pub become_root: bool,
    /// The jump hosts SSH goes through, first hop first (`-J`, `ProxyJump`); empty to dial the
    /// host directly.
    pub jump: Vec<JumpHost>,
}

/// A validated `volley run`.
#[derive(Debug)]
pub struct RunPlan {
    pub hosts: Vec<HostSpec>,
    pub command: String,
    pub parallel: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Option<Duration>,
    pub max_output: usize,
    pub output: OutputMode,
    pub color: ColorChoice,
    pub known_hosts: PathBuf,
    pub accept_new_host_keys: bool,
    /// Identity files for every host; `explicit` when the operator named them (a missing one is
    /// then an error, a missing default is not).
    pub identity_files: Vec<PathBuf>,
    pub identity_files_explicit: bool,
    /// Where the agent transport finds the CA and the controller's certificate.
    pub pki: PathBuf,
    /// Batches, failure budget and connect retries.
    pub rollout: RolloutPlan,
    /// When old run journals are pruned.
    pub journal: JournalLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    SshConfig(#[from] SshConfigError),
    #[error("{0}")]
    Input(String),
}

/// What the plan needs from the process environment, passed in so that tests control it.
#[derive(Clone, Debug)]
pub struct Environment {
    pub home: PathBuf,
    pub local_user: String,
    pub variables: Vec<(String, String)>,
}

impl Environment {
    pub fn from_process() -> Result<Environment, PlanError> {
        let home = std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| PlanError::Input("HOME is not set".to_string()))?;
        let local_user = ["USER", "LOGNAME"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|user| !user.is_empty()))
            .or_else(user_from_passwd)
            .ok_or_else(|| {
                PlanError::Input(
                    "cannot tell the local user (USER is not set): give -l USER".to_string(),
                )
            })?;
        Ok(Environment {
            home,
            local_user,
            variables: std::env::vars().collect(),
        })
    }
}

impl RunPlan {
    pub fn new(args: &RunArgs, env: &Environment) -> Result<RunPlan, PlanError> {
        let inventory_path = args
            .targets
            .inventory
            .clone()
            .unwrap_or_else(|| env.home.join(".config/volley/inventory.toml"));
        let inventory = Inventory::load(
            &inventory_path,
            args.targets.inventory.is_some(),
            env.variables.clone(),
        )?;
        let ssh = SshSources::load(&args.ssh, env)?;

        let targets = Resolver {
            inventory: &inventory,
            inventory_path: &inventory_path,
        }
        .resolve(args)?;
        let hosts = targets
            .into_iter()
            .map(|(target, group)| host_spec(target, group, args, &inventory, &ssh, env))
            .collect::<Result<_, _>>()?;

        let duration = |flag: &str, value: &str| {
            parse_duration(value).map_err(|e| PlanError::Input(format!("{flag}: {e}")))
        };
        let connect_timeout = match args
            .limits
            .connect_timeout
            .as_ref()
            .or(inventory.connect_timeout.as_ref())
        {
            Some(value) => duration("--connect-timeout", value)?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let command_timeout = match args.limits.timeout.as_ref().or(inventory.timeout.as_ref()) {
            Some(value) => Some(duration("--timeout", value)?),
            None => None,
        };
        let max_output = match args.max_output.as_ref().or(inventory.max_output.as_ref()) {
            Some(value) => {
                parse_size(value).map_err(|e| PlanError::Input(format!("--max-output: {e}")))?
            }
            None => DEFAULT_MAX_OUTPUT,
        };
        let parallel = args
            .limits
            .parallel
            .or(inventory.parallel)
            .unwrap_or(DEFAULT_PARALLEL);
        if parallel == 0 {
            return Err(PlanError::Input(
                "--parallel: must be at least 1".to_string(),
            ));
        }
        if connect_timeout.is_zero() {
            return Err(PlanError::Input(
                "--connect-timeout: must be more than 0".to_string(),
            ));
        }

        let command = args.command.join(" ");
        if command.trim().is_empty() {
            return Err(PlanError::Input("the command is empty".to_string()));
        }
        let (identity_files, identity_files_explicit) = if !args.ssh.identity.is_empty() {
            (args.ssh.identity.clone(), true)
        } else if let Some(file) = &inventory.identity_file {
            (vec![expand_home(file, &env.home)], true)
        } else {
            (
                DEFAULT_IDENTITIES
                    .iter()
                    .map(|file| env.home.join(file))
                    .collect(),
                false,
            )
        };
        let known_hosts = args
            .ssh
            .known_hosts
            .clone()
            .or_else(|| {
                inventory
                    .known_hosts
                    .as_ref()
                    .map(|file| expand_home(file, &env.home))
            })
            .unwrap_or_else(|| env.home.join(".ssh/known_hosts"));

        Ok(RunPlan {
            hosts,
            command,
            parallel,
            connect_timeout,
            command_timeout,
            max_output: usize::try_from(max_output).unwrap_or(usize::MAX),
            output: if args.output.json {
                OutputMode::Json
            } else if args.output.gather {
                OutputMode::Gather
            } else {
                OutputMode::Stream
            },
            color: args.output.color,
            known_hosts,
            accept_new_host_keys: args.ssh.accept_new_host_keys,
            identity_files,
            identity_files_explicit,
            pki: args
                .pki
                .dir
                .clone()
                .or_else(|| {
                    inventory
                        .pki
                        .as_ref()
                        .map(|dir| expand_home(dir, &env.home))
                })
                .unwrap_or_else(|| env.home.join(".config/volley/pki")),
            rollout: RolloutPlan::from_args(&args.rollout)
                .map_err(|e| PlanError::Input(e.to_string()))?,
            journal: JournalLimits::from_inventory(&inventory).map_err(PlanError::Input)?,
        })
    }
}

/// Decides one host's settings. The most specific source wins: the pattern itself, then the
/// command line (`-l`, `-o`, `-J`), the inventory's host entry, the group it came through,
/// ~/.ssh/config, and last the inventory's top-level defaults.
fn host_spec(
    target: Target,
    group: Option<&str>,
    args: &RunArgs,
    inventory: &Inventory,
    sources: &SshSources,
    env: &Environment,
) -> Result<HostSpec, PlanError> {
    let none = HostSettings::default();
    let host = inventory.hosts.get(&target.host).unwrap_or(&none);
    let group = group
        .and_then(|name| inventory.groups.get(name))
        .map(|group| group.settings());
    let group = group.as_ref().unwrap_or(&none);
    let options = sources.options.lookup(&target.host, &env.local_user)?;
    let ssh = sources.config.lookup(&target.host, &env.local_user)?;

    let address = options
        .hostname
        .or_else(|| host.address.clone())
        .or(ssh.hostname)
        .unwrap_or_else(|| target.host.clone());
    let port = target
        .port
        .or(options.port)
        .or(host.port)
        .or(group.port)
        .or(ssh.port)
        .or(inventory.port)
        .unwrap_or(22);
    let user = target
        .user
        .clone()
        .or_else(|| args.ssh.user.clone())
        .or(options.user)
        .or_else(|| host.user.clone())
        .or_else(|| group.user.clone())
        .or(ssh.user)
        .or_else(|| inventory.user.clone())
        .unwrap_or_else(|| env.local_user.clone());
    let identity_files = options
        .identity_files
        .into_iter()
        .chain(
            host.identity_file
                .iter()
                .chain(group.identity_file.iter())
                .map(|file| expand_home(file, &env.home)),
        )
        .chain(ssh.identity_files)
        .collect();
    let hops = sources
        .jump
        .clone()
        .or(options.proxy_jump)
        .or(ssh.proxy_jump)
        .unwrap_or_default();
    let name = target.to_string();
    let jump = ssh::route(&name, &hops, &sources.config, env)?;
    ssh::check_loops(&name, &address, port, &jump)?;
    let transport = match args.transport {
        Some(TransportFlag::Auto) => TransportChoice::Auto,
        Some(TransportFlag::Agent) => TransportChoice::Agent,
        Some(TransportFlag::Ssh) => TransportChoice::Ssh,
        None => host
            .transport
            .or(group.transport)
            .or(inventory.transport)
            .unwrap_or_default(),
    };
    let agent_port = host
        .agent_port
        .or(group.agent_port)
        .or(inventory.agent_port)
        .unwrap_or(DEFAULT_AGENT_PORT);
    let agent_prefix = host
        .agent_prefix
        .clone()
        .or_else(|| group.agent_prefix.clone())
        .or_else(|| inventory.agent_prefix.clone());
    let become_root = args.ssh.become_root
        || host
            .become_root
            .or(group.become_root)
            .or(inventory.become_root)
            .unwrap_or(false);
    Ok(HostSpec {
        name,
        address,
        port,
        user,
        identity_files,
        host: target.host,
        agent_port,
        transport,
        agent_prefix,
        become_root,
        jump,
    })
}

/// The name of the user running volley, from /etc/passwd, for environments (cron, CI, containers)
/// that set no USER.
fn user_from_passwd() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid).then(|| name.to_string())
    })
}

fn expand_home(path: &Path, home: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

/// Expands patterns, groups and hosts files into the ordered, de-duplicated target list.
struct Resolver<'a> {
    inventory: &'a Inventory,
    inventory_path: &'a Path,
}

impl<'a> Resolver<'a> {
    /// Returns each target with the inventory group it was first reached through.
    fn resolve(&self, args: &RunArgs) -> Result<Vec<(Target, Option<&'a str>)>, PlanError> {
        let mut lists: Vec<String> = args.targets.targets.clone();
        lists.extend(
            args.targets
                .groups
                .iter()
                .map(|group| format!("@{}", group.trim())),
        );
        for file in &args.targets.hosts_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                PlanError::Input(format!("hosts file {}: {}", file.display(), io_reason(&e)))
            })?;
            lists.extend(
                text.lines()
                    .map(|line| line.split('#').next().unwrap_or("").trim())
                    .filter(|line| !line.is_empty())
                    .map(str::to_string),
            );
        }
        if lists.is_empty() {
            return Err(PlanError::Input(
                "no targets: give -w PATTERNS, -g GROUP or --hosts-file FILE".to_string(),
            ));
        }

        let mut targets = Vec::new();
        for list in &lists {
            for pattern in parse_list(list).map_err(|e| PlanError::Input(e.to_string()))? {
                self.push(pattern, None, &mut Vec::new(), &mut targets)?;
            }
        }

        let exclude = Exclusions::new(self, &args.targets.exclude)?;
        let mut seen = HashSet::new();
        targets.retain(|(target, _)| !exclude.matches(&target.host) && seen.insert(target.clone()));
        if targets.is_empty() {
            return Err(PlanError::Input(
                "no targets left after --exclude".to_string(),
            ));
        }
        Ok(targets)
    }

    fn push(
        &self,
        pattern: Pattern,
        group: Option<&'a str>,
        trail: &mut Vec<String>,
        out: &mut Vec<(Target, Option<&'a str>)>,
    ) -> Result<(), PlanError> {
        match pattern {
            Pattern::Hosts(hosts) => out.extend(hosts.into_iter().map(|target| (target, group))),
            Pattern::Group(name) => {
                let (key, members) = self.group(&name)?;
                if trail.contains(&name) {
                    trail.push(name);
                    return Err(PlanError::Input(format!(
                        "inventory {}: groups include each other: {}",
                        self.inventory_path.display(),
                        trail.join(" -> ")
                    )));
                }
                trail.push(name);
                for list in members {
                    let patterns = parse_list(list).map_err(|e| {
                        PlanError::Input(format!(
                            "inventory {}: groups.{key}.hosts: {e}",
                            self.inventory_path.display()
                        ))
                    })?;
                    for pattern in patterns {
                        self.push(pattern, Some(group.unwrap_or(key)), trail, out)?;
                    }
                }
                trail.pop();
            }
        }
        Ok(())
    }

    fn group(&self, name: &str) -> Result<(&'a str, &'a [String]), PlanError> {
        match self.inventory.groups.get_key_value(name) {
            Some((key, group)) => Ok((key, &group.hosts)),
            None => {
                let known: Vec<&str> = self.inventory.groups.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                Err(PlanError::Input(format!(
                    "unknown group '{name}' (groups in {}: {known})",
                    self.inventory_path.display()
                )))
            }
        }
    }
}

/// The hosts that `-x` leaves out: exact names (ranges and groups expanded) and globs.
struct Exclusions {
    names: HashSet<String>,
    globs: Vec<String>,
}

impl Exclusions {
    fn new(resolver: &Resolver<'_>, lists: &[String]) -> Result<Exclusions, PlanError> {
        let mut exclusions = Exclusions {
            names: HashSet::new(),
            globs: Vec::new(),
        };
        for list in lists {
            // A glob is taken whole; the rest goes through the same expansion as targets.
            let (globs, patterns): (Vec<&str>, Vec<&str>) = list
                .split(',')
                .map(str::trim)
                .filter(|element| !element.is_empty())
                .partition(|element| element.contains(['*', '?']) && !element.contains('['));
            exclusions
                .globs
                .extend(globs.iter().map(|glob| glob.to_string()));
            let mut targets = Vec::new();
            for pattern in
                parse_list(&patterns.join(",")).map_err(|e| PlanError::Input(e.to_string()))?
            {
                resolver.push(pattern, None, &mut Vec::new(), &mut targets)?;
            }
            exclusions
                .names
                .extend(targets.into_iter().map(|(target, _)| target.host));
        }
        Ok(exclusions)
    }

    fn matches(&self, host: &str) -> bool {
        self.names.contains(host) || self.globs.iter().any(|glob| glob_match(glob, host))
    }
}

pub fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "file not found".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => error.to_string(),
    }
}

/// How host results are shown while and after the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// Each line of output as it arrives, prefixed with its host.
    Stream,
    /// One JSON object per host on stdout, nothing else there.
    Json,
    /// Identical results grouped at the end.
    Gather,
}

/// Journals kept when the inventory does not say.
pub const DEFAULT_KEEP_RUNS: usize = 200;
/// Total size of the journals kept when the inventory does not say.
pub const DEFAULT_MAX_BYTES: u64 = 100 << 20;

/// When old journals are pruned: beyond this many runs, or this many bytes in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalLimits {
    pub keep_runs: usize,
    pub max_bytes: u64,
}

impl Default for JournalLimits {
    fn default() -> JournalLimits {
        JournalLimits {
            keep_runs: DEFAULT_KEEP_RUNS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl JournalLimits {
    /// The inventory's `journal_keep_runs` and `journal_max_bytes`; the reason when one is bad.
    pub fn from_inventory(inventory: &Inventory) -> Result<JournalLimits, String> {
        let keep_runs = inventory.journal_keep_runs.unwrap_or(DEFAULT_KEEP_RUNS);
        if keep_runs == 0 {
            // The journal of the run itself is always kept while it runs.
            return Err("journal_keep_runs: must be at least 1".to_string());
        }
        let max_bytes = match &inventory.journal_max_bytes {
            Some(text) => parse_size(text).map_err(|e| format!("journal_max_bytes: {e}"))?,
            None => DEFAULT_MAX_BYTES,
        };
        Ok(JournalLimits {
            keep_runs,
            max_bytes,
        })
    }
}

#[cfg(test)]
mod tests;
