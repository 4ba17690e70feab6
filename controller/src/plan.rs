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
use volley_common::target::Target;

use crate::admission::HandshakeLimit;
use crate::cli::{ColorChoice, RunArgs, TransportFlag};
use crate::rollout::RolloutPlan;
use crate::ssh_config::SshConfigError;

mod ssh;

use self::ssh::SshSources;
pub use self::ssh::{JumpHost, dialled};

use self::targets::{Disagreement, Membership, Resolved, Resolver, is_stdin, read_stdin};

pub const DEFAULT_PARALLEL: usize = 512;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_OUTPUT: u64 = 1 << 20;
pub const DEFAULT_AGENT_PORT: u16 = 7731;
/// The most `--stdin` may send: it is held in memory once and sent whole to every host.
pub const MAX_STDIN: u64 = 64 << 20;
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
    /// `IdentitiesOnly yes` in the ssh config: of the agent's keys, only those of the files.
    pub identities_only: bool,
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

impl HostSpec {
    /// What makes two targets the same machine (and, with the user, the same host): the address
    /// (names without case or a final dot, IP addresses however written: `::1` is `0:0::1`),
    /// the port, and the jump hosts on the way (the same private address behind two bastions
    /// can be two machines).
    pub fn machine(&self) -> (String, u16, Vec<JumpHost>) {
        (
            canonical_address(&self.address),
            self.port,
            self.jump.clone(),
        )
    }

    /// Whether the host's commands go through sudo (`--become`): a root login needs none.
    pub fn uses_sudo(&self) -> bool {
        self.become_root && self.user != "root"
    }
}

/// Where `auto` may not use an agent, the host goes over SSH; returns the hosts moved so because
/// they share an agent, for a warning where agents are in use.
///
/// - Through jump hosts: the agent transport dials each agent directly, and an address meant
///   from behind a bastion can be another machine from here (whose agent, for a target given
///   by its IP address, presents the certificate of that address).
/// - At an agent that targets dialled at different SSH endpoints would share
///   (`root@10.0.0.5:2222` and `root@10.0.0.5:2223`, a NAT's port forwards): nothing tells which
///   machine the agent is on, so none of them uses it, and each goes over SSH to the machine it
///   names; through the agent, the command would run twice on one machine and never on the
///   other. Targets at one SSH endpoint as different users share their agent rightly. Under
///   `--transport agent` there is no SSH to go to: an error.
fn agent_routes(hosts: &mut [HostSpec]) -> Result<Vec<String>, PlanError> {
    type Agent = (String, u16);
    let agent = |host: &HostSpec| (canonical_address(&host.address), host.agent_port);
    let mut endpoints: std::collections::HashMap<Agent, Vec<usize>> = Default::default();
    for (index, host) in hosts.iter_mut().enumerate() {
        match host.transport {
            TransportChoice::Ssh => continue,
            TransportChoice::Auto if !host.jump.is_empty() => {
                host.transport = TransportChoice::Ssh;
                continue;
            }
            TransportChoice::Auto | TransportChoice::Agent => {}
        }
        endpoints.entry(agent(host)).or_default().push(index);
    }
    // Agents that targets at more than one SSH endpoint would reach, in plan order.
    let mut shared: Vec<Vec<usize>> = endpoints
        .into_values()
        .filter(|indices| {
            let machines: HashSet<_> = indices.iter().map(|&i| hosts[i].machine()).collect();
            machines.len() > 1
        })
        .collect();
    shared.sort();
    let mut moved = Vec::new();
    for indices in shared {
        let names: Vec<&str> = indices.iter().map(|&i| hosts[i].name.as_str()).collect();
        let first = &hosts[indices[0]];
        let at = format!("{}:{}", first.address, first.agent_port);
        if indices
            .iter()
            .any(|&i| hosts[i].transport == TransportChoice::Agent)
        {
            return Err(PlanError::Input(format!(
                "{} would share the agent at {at} though dialled at different SSH ports or addresses: nothing tells which machine it is on; give them transport = \"ssh\"",
                names.join(", ")
            )));
        }
        moved.push(format!("{} (one agent, at {at})", names.join(", ")));
        for i in indices {
            hosts[i].transport = TransportChoice::Ssh;
        }
    }
    Ok(moved)
}

/// An address as one machine has it: an IP address in its one written form, a name in lower
/// case without the final dot of a fully qualified name.
pub fn canonical_address(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => address
            .strip_suffix('.')
            .unwrap_or(address)
            .to_ascii_lowercase(),
    }
}

/// A validated `volley run`.
#[derive(Debug)]
pub struct RunPlan {
    /// The run's id, once its journal gave it one (empty before).
    pub run_id: String,
    pub hosts: Vec<HostSpec>,
    pub command: String,
    pub parallel: usize,
    /// How many hosts may be in their connect phase at once.
    pub handshakes: HandshakeLimit,
    pub connect_timeout: Duration,
    pub command_timeout: Option<Duration>,
    pub max_output: usize,
    pub output: OutputMode,
    pub color: ColorChoice,
    /// `HOST: ` before each streamed line.
    pub prefix: bool,
    /// `--out-dir`: where each host's output is also written.
    pub out_dir: Option<PathBuf>,
    /// `--list-hosts`: show the resolved hosts, run nothing.
    pub list_hosts: bool,
    /// `--stdin`: the bytes every host's command reads, then end of file.
    pub stdin: Option<bytes::Bytes>,
    pub known_hosts: PathBuf,
    pub accept_new_host_keys: bool,
    /// Identity files for every host; `explicit` when the operator named them (a missing one is
    /// then an error, a missing default is not).
    pub identity_files: Vec<PathBuf>,
    pub identity_files_explicit: bool,
    /// Where the agent transport finds the CA and the controller's certificate.
    pub pki: PathBuf,
    /// Whether the operator named it (`--pki`, `VOLLEY_PKI`, the inventory's `pki`): then it
    /// must be there; the default may be missing (no agents yet: SSH).
    pub pki_given: bool,
    /// Batches, failure budget and connect retries.
    pub rollout: RolloutPlan,
    /// When old run journals are pruned.
    pub journal: JournalLimits,
    /// What the operator gave that had no effect, to print before the run.
    pub warnings: Vec<String>,
    /// Targets that go over SSH though `auto`, since they would share one agent though dialled
    /// at different SSH endpoints: said where agents are in use.
    pub shared_agents: Vec<String>,
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
        let mut inventory = Inventory::load(
            &inventory_path,
            args.targets.inventory.is_some(),
            env.variables.clone(),
        )?;
        anchor_inventory_paths(&mut inventory, &inventory_path, env);
        if let Some(user) = &args.ssh.user
            && (user.is_empty() || user.contains(char::is_whitespace))
        {
            return Err(PlanError::Input(format!("-l '{user}': not a user name")));
        }
        let ssh = SshSources::load(&args.ssh, env)?;

        let from_stdin = args
            .targets
            .hosts_file
            .iter()
            .filter(|file| is_stdin(file))
            .count()
            + usize::from(args.stdin.as_deref().is_some_and(is_stdin));
        if from_stdin > 1 {
            return Err(PlanError::Input(
                "volley's stdin can be read once: give `-` to one --hosts-file or --stdin only"
                    .to_string(),
            ));
        }
        let resolver = Resolver {
            inventory: &inventory,
            inventory_path: &inventory_path,
        };
        // Every group is read first: a broken one is an error for every run (see memberships).
        let memberships = resolver.memberships()?;
        let Resolved {
            targets,
            named_out,
            mut exclusions,
        } = resolver.resolve(args)?;
        // The same host named twice runs once, with the settings of its first mention: the same
        // name (`web01` in a group and on the command line), or the same login at the same
        // address and port once the inventory and ssh config are applied (`web01,root@web01:22`).
        // Names stay unique: the journal, reports and retries know hosts by name.
        let (mut names, mut logins) = (HashSet::new(), HashSet::new());
        // A host takes the settings of the groups it belongs to, however it was named.
        let none = Membership::default();
        let mut disagreements = Vec::new();
        let spec = |target: Target, disagreements: &mut Vec<_>| {
            let membership = memberships.get(&target.host).unwrap_or(&none);
            host_spec(
                target,
                membership,
                args,
                &inventory,
                &ssh,
                env,
                disagreements,
            )
        };
        // A host left out by name is spared however else it is named: a target dialled at the
        // same address and port (through the same jump hosts) is the same machine. One whose
        // settings cannot be made (its ssh config refused) names no machine: leaving it out is
        // the way around its configuration.
        let spared: HashSet<_> = named_out
            .into_iter()
            .filter_map(|target| spec(target, &mut Vec::new()).ok())
            .map(|host| host.machine())
            .collect();
        let mut hosts = targets
            .into_iter()
            .map(|target| spec(target, &mut disagreements))
            .collect::<Result<Vec<HostSpec>, _>>()?
            .into_iter()
            .filter(|host| {
                let machine = host.machine();
                if spared.contains(&machine) || exclusions.by_login(host, &machine.0) {
                    return false;
                }
                let new_name = names.insert(host.name.clone());
                let new_login = logins.insert((host.user.clone(), machine));
                new_name && new_login
            })
            .collect::<Vec<_>>();
        let mut warnings = exclusions.finish(hosts.len())?;
        let shared_agents = agent_routes(&mut hosts)?;
        // Only for the hosts that run.
        let running: HashSet<&str> = hosts.iter().map(|host| host.host.as_str()).collect();
        disagreements.retain(|(host, _)| running.contains(host.as_str()));
        warnings.extend(disagreement_warnings(&inventory_path, disagreements));

        // A setting comes from its flag, else its VOLLEY_ variable, else the inventory: an
        // error names the one it came from.
        let source = Sources {
            env,
            inventory: &inventory_path,
        };
        let duration = |flag: &str, value: &str| {
            parse_duration(value).map_err(|e| PlanError::Input(format!("{flag}: {e}")))
        };
        let connect_timeout = match source.pick(
            "--connect-timeout",
            args.limits.connect_timeout.as_ref(),
            "connect_timeout",
            inventory.connect_timeout.as_ref(),
        ) {
            Some((name, value)) => {
                let timeout = duration(&name, value)?;
                if timeout.is_zero() {
                    return Err(PlanError::Input(format!("{name}: must be more than 0")));
                }
                timeout
            }
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        // `--timeout 0` is no timeout, so that the command line can lift an inventory's.
        let command_timeout = match source.pick(
            "--timeout",
            args.limits.timeout.as_ref(),
            "timeout",
            inventory.timeout.as_ref(),
        ) {
            Some((name, value)) => Some(duration(&name, value)?).filter(|t| !t.is_zero()),
            None => None,
        };
        let max_output = match source.pick(
            "--max-output",
            args.max_output.as_ref(),
            "max_output",
            inventory.max_output.as_ref(),
        ) {
            Some((name, value)) => {
                parse_size(value).map_err(|e| PlanError::Input(format!("{name}: {e}")))?
            }
            None => DEFAULT_MAX_OUTPUT,
        };
        let parallel = match source.pick(
            "--parallel",
            args.limits.parallel.as_ref(),
            "parallel",
            inventory.parallel.as_ref(),
        ) {
            Some((name, 0)) => {
                return Err(PlanError::Input(format!("{name}: must be at least 1")));
            }
            Some((_, parallel)) => *parallel,
            None => DEFAULT_PARALLEL,
        };
        let handshakes = match &args.limits.max_handshakes {
            Some(text) => parse_handshakes(text)?,
            None => match source.pick(
                "--max-handshakes",
                None,
                "max_handshakes",
                inventory.max_handshakes.as_ref(),
            ) {
                Some((name, 0)) => {
                    return Err(PlanError::Input(format!("{name}: must be at least 1")));
                }
                Some((_, limit)) => HandshakeLimit::Fixed(*limit),
                None => HandshakeLimit::Adaptive,
            },
        };

        let command = args.command.join(" ");
        if command.trim().is_empty() && !args.output.list_hosts {
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
            run_id: String::new(),
            warnings,
            shared_agents,
            hosts,
            command,
            parallel,
            handshakes,
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
            color: args.output.color.unwrap_or(ColorChoice::Auto),
            prefix: !args.output.no_prefix,
            out_dir: args.output.out_dir.clone(),
            list_hosts: args.output.list_hosts,
            stdin: match &args.stdin {
                Some(source) => Some(read_stdin(source)?),
                None => None,
            },
            known_hosts,
            accept_new_host_keys: args.ssh.accept_new_host_keys,
            identity_files,
            identity_files_explicit,
            pki_given: args.pki.dir.is_some() || inventory.pki.is_some(),
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
            // The problem is "KEY: reason".
            journal: JournalLimits::from_inventory(&inventory).map_err(|problem| {
                PlanError::Input(match problem.split_once(": ") {
                    Some((key, reason)) => format!("{}: {reason}", source.named(key)),
                    None => problem,
                })
            })?,
        })
    }
}

/// Where run settings come from, to name the right one in an error.
struct Sources<'a> {
    env: &'a Environment,
    inventory: &'a Path,
}

impl Sources<'_> {
    /// The flag's value if given, else the inventory's (which `VOLLEY_<KEY>` overrides), each
    /// with the name an error should give: `--timeout`, `VOLLEY_TIMEOUT`, or `inventory FILE:
    /// timeout`.
    fn pick<'v, T>(
        &self,
        flag: &str,
        given: Option<&'v T>,
        key: &str,
        inventory: Option<&'v T>,
    ) -> Option<(String, &'v T)> {
        if let Some(value) = given {
            return Some((flag.to_string(), value));
        }
        Some((self.named(key), inventory?))
    }

    /// The name of the inventory's `key` for an error: `VOLLEY_<KEY>` when that variable gave
    /// it, else `inventory FILE: key`.
    fn named(&self, key: &str) -> String {
        let variable = format!("VOLLEY_{}", key.to_ascii_uppercase());
        if self.env.variables.iter().any(|(name, _)| *name == variable) {
            return variable;
        }
        format!("inventory {}: {key}", self.inventory.display())
    }
}

/// The settings a host takes from its groups, nearest first (see [`memberships`]): each from
/// the first group that has it.
fn group_settings(inventory: &Inventory, groups: &[&str]) -> HostSettings {
    groups
        .iter()
        .filter_map(|name| inventory.groups.get(*name))
        .fold(HostSettings::default(), |settings, group| {
            settings.or(group.settings())
        })
}

/// Each setting a group can give, by its inventory key, as text for a warning.
type Read = fn(&HostSettings) -> Option<String>;
const GROUP_SETTINGS: [(&str, Read); 7] = [
    ("user", |s| s.user.clone()),
    ("port", |s| s.port.map(|port| port.to_string())),
    ("identity_file", |s| {
        s.identity_file
            .as_ref()
            .map(|path| path.display().to_string())
    }),
    ("transport", |s| {
        s.transport.map(|t| format!("{t:?}").to_ascii_lowercase())
    }),
    ("agent_port", |s| s.agent_port.map(|port| port.to_string())),
    ("agent_prefix", |s| {
        s.agent_prefix
            .as_ref()
            .map(|path| path.display().to_string())
    }),
    ("become", |s| s.become_root.map(|on| on.to_string())),
];

/// Whether `settings` give `setting` (a key of [`GROUP_SETTINGS`]).
fn gives(settings: &HostSettings, setting: &str) -> bool {
    GROUP_SETTINGS
        .iter()
        .any(|(key, read)| *key == setting && read(settings).is_some())
}

/// For each setting that the host's groups give and `nearer` does not, a group as near the host
/// as the first that gives it, giving another value.
fn group_disagreements<'i>(
    inventory: &'i Inventory,
    membership: &Membership<'i>,
    nearer: &HostSettings,
) -> Vec<Disagreement<'i>> {
    // Only groups as near as one another can disagree: one group, nothing to compare.
    if membership.groups.len() < 2 {
        return Vec::new();
    }
    let groups: Vec<(&str, usize, HostSettings)> = membership
        .groups
        .iter()
        .zip(&membership.distances)
        .filter_map(|(name, distance)| {
            let (name, group) = inventory.groups.get_key_value(*name)?;
            Some((name.as_str(), *distance, group.settings()))
        })
        .collect();
    let mut found = Vec::new();
    for (setting, read) in GROUP_SETTINGS {
        if read(nearer).is_some() {
            continue;
        }
        let mut given = groups
            .iter()
            .filter_map(|(name, distance, settings)| Some((*name, *distance, read(settings)?)));
        let Some((applies, nearest, applied)) = given.next() else {
            continue;
        };
        let mut others: Vec<(&str, String)> = Vec::new();
        for (other, _, value) in given.take_while(|(_, distance, _)| *distance == nearest) {
            if value != applied && !others.contains(&(other, value.clone())) {
                others.push((other, value));
            }
        }
        if !others.is_empty() {
            found.push(Disagreement {
                setting,
                applies: (applies, applied),
                others,
            });
        }
    }
    found
}

/// The warnings for groups that disagree on hosts' settings, one per pair of groups and
/// setting, naming the hosts.
fn disagreement_warnings(inventory: &Path, found: Vec<(String, Disagreement<'_>)>) -> Vec<String> {
    let mut hosts: std::collections::BTreeMap<Disagreement<'_>, Vec<String>> = Default::default();
    for (host, disagreement) in found {
        hosts.entry(disagreement).or_default().push(host);
    }
    hosts
        .into_iter()
        .map(|(d, hosts)| {
            let hosts = volley_common::fold::fold(hosts.iter().map(String::as_str));
            let (applies, applied) = d.applies;
            let setting = d.setting;
            let mut groups = vec![applies];
            let mut values = vec![format!("'{applied}'")];
            for (group, value) in d.others {
                if !groups.contains(&group) {
                    groups.push(group);
                }
                values.push(format!("'{value}'"));
            }
            let values = and_list(&values);
            if groups.len() == 1 {
                format!(
                    "inventory {}: group {applies} gives {hosts} {setting} {values}: the first applies",
                    inventory.display()
                )
            } else {
                format!(
                    "inventory {}: groups {}, equally near {hosts}, give {setting} {values}: {applies}'s applies, the first in name order; set it for the host, or in one group",
                    inventory.display(),
                    and_list(&groups)
                )
            }
        })
        .collect()
}

/// `a`, `a and b`, `a, b and c`.
fn and_list<T: AsRef<str>>(items: &[T]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [rest @ .., last] => {
            let rest: Vec<&str> = rest.iter().map(AsRef::as_ref).collect();
            format!("{} and {}", rest.join(", "), last.as_ref())
        }
    }
}

/// Decides one host's settings. The most specific source wins: the pattern itself (or a group
/// entry's `user@host:port`), then the command line (`-l`, `-o`, `-J`), the inventory's host
/// entry, its groups, ~/.ssh/config, and last the inventory's top-level defaults.
fn host_spec<'i>(
    target: Target,
    membership: &Membership<'i>,
    args: &RunArgs,
    inventory: &'i Inventory,
    sources: &SshSources,
    env: &Environment,
    disagreements: &mut Vec<(String, Disagreement<'i>)>,
) -> Result<HostSpec, PlanError> {
    let none = HostSettings::default();
    let host = inventory.hosts.get(&target.host).unwrap_or(&none);
    let group = &group_settings(inventory, &membership.groups);
    let options = sources.options.lookup(&target.host, &env.local_user)?;
    let ssh = sources.config.lookup(&target.host, &env.local_user)?;

    // What the sources nearer than the host's groups give: the pattern (or a group entry's
    // `user@host:port`), the command line, the host's own entry. Identity files are not among
    // them: they add up, and a group's is tried whatever the host's.
    let transport_flag = args.transport.map(|flag| match flag {
        TransportFlag::Auto => TransportChoice::Auto,
        TransportFlag::Agent => TransportChoice::Agent,
        TransportFlag::Ssh => TransportChoice::Ssh,
    });
    let nearer = HostSettings {
        address: options.hostname.clone().or_else(|| host.address.clone()),
        port: target
            .port
            .or(membership.port)
            .or(options.port)
            .or(host.port),
        user: target
            .user
            .clone()
            .or_else(|| membership.user.clone())
            .or_else(|| args.ssh.user.clone())
            .or_else(|| options.user.clone())
            .or_else(|| host.user.clone()),
        identity_file: None,
        transport: transport_flag.or(host.transport),
        agent_port: host.agent_port,
        agent_prefix: host.agent_prefix.clone(),
        become_root: args.ssh.become_root.then_some(true).or(host.become_root),
    };

    // Where groups equally near disagree on a setting that nothing nearer settles, the first
    // in name order decides: say so. Group entries' own disagreements (user, port) are settled
    // only by the pattern.
    let pattern = HostSettings {
        user: target.user.clone(),
        port: target.port,
        ..HostSettings::default()
    };
    let unsettled = membership
        .disagreements
        .iter()
        .filter(|disagreement| !gives(&pattern, disagreement.setting))
        .cloned()
        .chain(group_disagreements(inventory, membership, &nearer));
    disagreements.extend(unsettled.map(|disagreement| (target.host.clone(), disagreement)));

    let address = nearer
        .address
        .or(ssh.hostname)
        .unwrap_or_else(|| target.host.clone());
    let port = nearer
        .port
        .or(group.port)
        .or(ssh.port)
        .or(inventory.port)
        .unwrap_or(22);
    let user = nearer
        .user
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
    let identities_only = ssh.identities_only;
    let hops = sources
        .jump
        .clone()
        .or(options.proxy_jump)
        .or(ssh.proxy_jump)
        .unwrap_or_default();
    let name = target.to_string();
    let jump = ssh::route(&name, &hops, &sources.config, env)?;
    ssh::check_loops(&name, &address, port, &jump)?;
    let transport = nearer
        .transport
        .or(group.transport)
        .or(inventory.transport)
        .unwrap_or_default();
    let agent_port = nearer
        .agent_port
        .or(group.agent_port)
        .or(inventory.agent_port)
        .unwrap_or(DEFAULT_AGENT_PORT);
    let agent_prefix = nearer
        .agent_prefix
        .or_else(|| group.agent_prefix.clone())
        .or_else(|| inventory.agent_prefix.clone());
    let become_root = nearer
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
        identities_only,
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

/// Makes the inventory's paths (`known_hosts`, `identity_file`, `pki`, top level, per group and
/// per host) what they name wherever volley runs: `~` is the home directory, and a relative
/// path is read from the inventory file's directory, as the agent reads its config's, unless a
/// `VOLLEY_<KEY>` variable gave it (then from where volley runs, as any path on a command line).
fn anchor_inventory_paths(inventory: &mut Inventory, path: &Path, env: &Environment) {
    let dir = path.parent().unwrap_or(Path::new(""));
    let from_variable = |key: &str| {
        let variable = format!("VOLLEY_{}", key.to_ascii_uppercase());
        env.variables.iter().any(|(name, _)| *name == variable)
    };
    let anchor = |path: &mut PathBuf, in_file: bool| {
        let expanded = expand_home(path, &env.home);
        *path = if expanded.is_relative() && in_file {
            dir.join(expanded)
        } else {
            expanded
        };
    };
    for (key, path) in [
        ("known_hosts", &mut inventory.known_hosts),
        ("identity_file", &mut inventory.identity_file),
        ("pki", &mut inventory.pki),
    ] {
        if let Some(path) = path {
            anchor(path, !from_variable(key));
        }
    }
    let groups = inventory.groups.values_mut().map(|g| &mut g.identity_file);
    let hosts = inventory.hosts.values_mut().map(|h| &mut h.identity_file);
    for path in groups.chain(hosts).flatten() {
        anchor(path, true);
    }
}

fn expand_home(path: &Path, home: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

/// `--max-handshakes`: a number of at least 1, or `auto`.
fn parse_handshakes(text: &str) -> Result<HandshakeLimit, PlanError> {
    match text.trim() {
        "auto" => Ok(HandshakeLimit::Adaptive),
        number => match number.parse::<usize>() {
            Ok(0) => Err(PlanError::Input(
                "--max-handshakes: must be at least 1 (or auto)".to_string(),
            )),
            Ok(n) => Ok(HandshakeLimit::Fixed(n)),
            Err(_) => Err(PlanError::Input(format!(
                "--max-handshakes: '{text}' is not a number or `auto`"
            ))),
        },
    }
}

/// The run's identity files (`identities`) offered to a host after its own (`own`): all of them
/// when the operator named them (`explicit`: `-i`, the inventory's `identity_file`), the defaults
/// (`~/.ssh/id_*`) only to a host that has none of its own, as ssh adds its defaults only where
/// no `IdentityFile` applies.
pub fn offered_after<'a>(
    own: &[PathBuf],
    identities: &'a [PathBuf],
    explicit: bool,
) -> &'a [PathBuf] {
    if explicit || own.is_empty() {
        identities
    } else {
        &[]
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

mod targets;
#[cfg(test)]
mod tests;
