//! A plan's ssh settings: the config file (`-F`), `-o` options and `-J`, and the jump hosts on
//! each host's way, as `ssh -J` and `ProxyJump` lay them out. Each hop is resolved through the
//! ssh config file like a host of its own (`HostName`, `Port`, `User`, `IdentityFile`), and the
//! first hop's own `ProxyJump` comes before it, as OpenSSH's nested `ssh -W` does. The target's
//! settings (`-l`, `-o`, the inventory) are not applied to hops.

use std::path::{Path, PathBuf};

use super::{Environment, PlanError};
use crate::cli::SshArgs;
use crate::ssh_config::{JumpHop, SshConfig, parse_jumps};

/// A jump host on the way to a host, resolved through the ssh config like a host of its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JumpHost {
    /// The hop as `-J` or `ProxyJump` named it.
    pub name: String,
    /// What is dialled (or forwarded to), and what known_hosts is checked against.
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Identity files for this hop only (its ssh config), tried before the global ones.
    pub identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly yes` in its ssh config: no agent key but those of its files.
    pub identities_only: bool,
}

/// `address:port` as it is dialled, an IPv6 address in brackets: what failure reasons name.
pub fn dialled(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// The ssh settings of the command line and the ssh config file.
pub struct SshSources {
    pub config: SshConfig,
    /// `-o KEY=VALUE`, as a config that applies to every host.
    pub options: SshConfig,
    /// `-J HOPS`; `Some(empty)` for `-J none`.
    pub jump: Option<Vec<JumpHop>>,
}

impl SshSources {
    pub fn load(args: &SshArgs, env: &Environment) -> Result<SshSources, PlanError> {
        let config = match &args.ssh_config {
            Some(path) if path == Path::new("none") => SshConfig::empty(),
            Some(path) => {
                if !path.exists() {
                    return Err(PlanError::Input(format!(
                        "ssh config {}: file not found",
                        path.display()
                    )));
                }
                SshConfig::load(path, &env.home)?
            }
            None => SshConfig::load(&env.home.join(".ssh/config"), &env.home)?,
        };
        let jump = match &args.jump {
            Some(value) => Some(
                parse_jumps(value).map_err(|reason| PlanError::Input(format!("-J: {reason}")))?,
            ),
            None => None,
        };
        Ok(SshSources {
            options: SshConfig::from_options(&args.ssh_options, &env.home)?,
            config,
            jump,
        })
    }
}

/// How many jump hosts one route may hold, loops aside: far more than any real network needs.
const MAX_HOPS: usize = 16;

/// The route to a host through `hops`, first hop first. `target` names the host in errors.
pub fn route(
    target: &str,
    hops: &[JumpHop],
    ssh_config: &SshConfig,
    env: &Environment,
) -> Result<Vec<JumpHost>, PlanError> {
    let mut route = Vec::new();
    add_hops(target, hops, ssh_config, env, &mut Vec::new(), &mut route)?;
    Ok(route)
}

fn add_hops(
    target: &str,
    hops: &[JumpHop],
    ssh_config: &SshConfig,
    env: &Environment,
    visiting: &mut Vec<String>,
    route: &mut Vec<JumpHost>,
) -> Result<(), PlanError> {
    for (index, hop) in hops.iter().enumerate() {
        if visiting.contains(&hop.host) || route.len() >= MAX_HOPS {
            visiting.push(hop.host.clone());
            return Err(PlanError::Input(format!(
                "ProxyJump for {target}: the jump hosts loop: {}",
                visiting.join(" -> ")
            )));
        }
        let config = ssh_config.lookup(&hop.host, &env.local_user)?;
        if index == 0
            && let Some(inner) = config.proxy_jump.as_ref().filter(|inner| !inner.is_empty())
        {
            visiting.push(hop.host.clone());
            add_hops(target, inner, ssh_config, env, visiting, route)?;
            visiting.pop();
        }
        route.push(JumpHost {
            name: hop.host.clone(),
            address: config.hostname.unwrap_or_else(|| hop.host.clone()),
            port: hop.port.or(config.port).unwrap_or(22),
            user: hop
                .user
                .clone()
                .or(config.user)
                .unwrap_or_else(|| env.local_user.clone()),
            identity_files: config.identity_files,
            identities_only: config.identities_only,
        });
    }
    Ok(())
}

/// Refuses a route that passes through the host it leads to, or through one hop twice, as
/// OpenSSH refuses a "jumphost loop".
pub fn check_loops(
    name: &str,
    address: &str,
    port: u16,
    route: &[JumpHost],
) -> Result<(), PlanError> {
    for (index, hop) in route.iter().enumerate() {
        let again = route[..index]
            .iter()
            .any(|earlier| (&earlier.address, earlier.port) == (&hop.address, hop.port));
        if again || (hop.address.as_str(), hop.port) == (address, port) {
            return Err(PlanError::Input(format!(
                "ProxyJump for {name}: the jump hosts loop through {} ({})",
                hop.name,
                dialled(&hop.address, hop.port)
            )));
        }
    }
    Ok(())
}
