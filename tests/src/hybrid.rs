//! Inventories that mix transports: agent hosts of an [`crate::AgentFleet`], SSH hosts of an
//! [`crate::SshFleet`] (dead ones included), and hosts that have both, in one file with a group
//! `all` naming every host in the order given.
//!
//! Run volley on such an inventory with the SSH fleet's flags (known_hosts, key, user) and the
//! agent fleet's PKI: `RunFlags { inventory, pki: Some(..), ..ssh.flags() }`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::agents::AgentHost;
use crate::fleet::Host;
use crate::inventory::toml_string;
use crate::loopback::free_port;

/// One `[hosts.NAME]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryHost {
    pub name: String,
    pub address: Ipv4Addr,
    /// The SSH port; `None` leaves volley's default.
    pub port: Option<u16>,
    /// The agent port; `None` leaves volley's default.
    pub agent_port: Option<u16>,
}

impl InventoryHost {
    /// An agent host: its agent's address and port, no SSH port.
    pub fn agent(host: &AgentHost) -> InventoryHost {
        InventoryHost {
            name: host.name.clone(),
            address: *host.socket.ip(),
            port: None,
            agent_port: Some(host.socket.port()),
        }
    }

    /// An SSH host: its sshd's address and port, and as agent port one on which nothing listens
    /// (the kernel found it free a moment ago), so `auto` finds no agent there.
    pub fn ssh(host: &Host) -> InventoryHost {
        let address = *host.socket.ip();
        InventoryHost {
            name: host.name.clone(),
            address,
            port: Some(host.socket.port()),
            agent_port: Some(free_port(address)),
        }
    }

    /// An agent host that sshd also serves: `ssh_host` must share the agent's address, so that
    /// the fleet's known_hosts line for it applies.
    pub fn both(agent: &AgentHost, ssh_host: &Host) -> InventoryHost {
        assert_eq!(
            agent.socket.ip(),
            ssh_host.socket.ip(),
            "{} and {} do not share an address",
            agent.name,
            ssh_host.name
        );
        InventoryHost {
            port: Some(ssh_host.socket.port()),
            ..InventoryHost::agent(agent)
        }
    }
}

/// The inventory: group `all` naming every host in order, then one table per host.
pub fn inventory_text(hosts: &[InventoryHost]) -> String {
    let names: Vec<String> = hosts.iter().map(|host| toml_string(&host.name)).collect();
    let mut text = format!(
        "# Written by the volley-tests fleet.\n\n[groups.all]\nhosts = [{}]\n",
        names.join(", ")
    );
    for host in hosts {
        let _ = write!(
            text,
            "\n[hosts.{}]\naddress = {}\n",
            host.name,
            toml_string(&host.address.to_string())
        );
        if let Some(port) = host.port {
            let _ = writeln!(text, "port = {port}");
        }
        if let Some(port) = host.agent_port {
            let _ = writeln!(text, "agent_port = {port}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_names_every_host_with_its_ports() {
        let hosts = [
            InventoryHost {
                name: "a01".to_string(),
                address: Ipv4Addr::new(127, 40, 1, 1),
                port: None,
                agent_port: Some(40001),
            },
            InventoryHost {
                name: "h01".to_string(),
                address: Ipv4Addr::new(127, 41, 1, 1),
                port: Some(40002),
                agent_port: Some(40003),
            },
        ];
        assert_eq!(
            inventory_text(&hosts),
            "# Written by the volley-tests fleet.\n\n\
             [groups.all]\nhosts = [\"a01\", \"h01\"]\n\n\
             [hosts.a01]\naddress = \"127.40.1.1\"\nagent_port = 40001\n\n\
             [hosts.h01]\naddress = \"127.41.1.1\"\nport = 40002\nagent_port = 40003\n"
        );
    }
}
