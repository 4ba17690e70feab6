//! Plain tables, and `--list-hosts`: the hosts a run would reach, with what it would dial.

use std::io::{self, Write};

use volley_common::inventory::TransportChoice;

use crate::plan::{HostSpec, dialled};

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub fn write_table<const N: usize>(
    out: &mut impl Write,
    titles: &[&str; N],
    rows: &[[String; N]],
) -> io::Result<()> {
    let mut widths = titles.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (column, cell) in cells.iter().enumerate() {
            if column + 1 == N {
                text.push_str(cell);
            } else {
                // Padded by hand: `format!`'s width stops at 65,535, and a cell may be longer.
                text.push_str(cell);
                let pad = widths[column].saturating_sub(cell.chars().count()) + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.trim_end().to_string()
    };
    writeln!(out, "{}", line(titles.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn cells_of_any_width_line_up() {
        let long = "a".repeat(70_000);
        let mut out = Vec::new();
        write_table(
            &mut out,
            &["HOST", "USER"],
            &[
                [long.clone(), "root".to_string()],
                ["web01".to_string(), "deploy".to_string()],
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], format!("{long}  root"));
        assert_eq!(
            lines[2],
            format!("web01{}deploy", " ".repeat(70_000 - 5 + 2))
        );
    }
}

/// `--list-hosts`: each host with its user, address, port, transport and jump hosts, as a table or, with
/// `json`, one object per line, which also lists the identity files tried, the host's own and
/// then those of `identities` it is offered (all when `explicit`, else only where it has none of
/// its own). `over_ssh`: the operation runs over SSH whatever the
/// host's transport (an agent operation).
pub fn write_host_list(
    out: &mut impl Write,
    hosts: &[HostSpec],
    identities: &[std::path::PathBuf],
    explicit: bool,
    json: bool,
    over_ssh: bool,
) -> io::Result<()> {
    let transport = |host: &HostSpec| match host.transport {
        _ if over_ssh => "ssh",
        TransportChoice::Auto => "auto",
        TransportChoice::Agent => "agent",
        TransportChoice::Ssh => "ssh",
    };
    let agent_port = |host: &HostSpec| (transport(host) != "ssh").then_some(host.agent_port);
    if json {
        for host in hosts {
            let record = serde_json::json!({
                "host": host.name,
                "user": host.user,
                "address": host.address,
                "port": host.port,
                "transport": transport(host),
                "agent_port": agent_port(host),
                "become": host.uses_sudo(),
                "identity_files": host.identity_files.iter()
                    .chain(crate::plan::offered_after(&host.identity_files, identities, explicit))
                    .collect::<Vec<_>>(),
                "via": host.jump.iter().map(|hop| serde_json::json!({
                    "host": hop.name,
                    "user": hop.user,
                    "address": hop.address,
                    "port": hop.port,
                })).collect::<Vec<_>>(),
            });
            writeln!(out, "{record}")?;
        }
        return Ok(());
    }
    let rows: Vec<[String; 8]> = hosts
        .iter()
        .map(|host| {
            // Each hop as it is dialled, as the target's own columns show it.
            let via: Vec<String> = host
                .jump
                .iter()
                .map(|hop| format!("{}@{}", hop.user, dialled(&hop.address, hop.port)))
                .collect();
            [
                host.name.clone(),
                host.user.clone(),
                host.address.clone(),
                host.port.to_string(),
                transport(host).to_string(),
                agent_port(host).map_or_else(|| "-".to_string(), |port| port.to_string()),
                if host.uses_sudo() { "yes" } else { "no" }.to_string(),
                if via.is_empty() {
                    "-".to_string()
                } else {
                    via.join(",")
                },
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "HOST",
            "USER",
            "ADDRESS",
            "PORT",
            "TRANSPORT",
            "AGENT_PORT",
            "BECOME",
            "VIA",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, transport: TransportChoice) -> HostSpec {
        HostSpec {
            name: name.to_string(),
            address: format!("10.0.0.{}", name.len()),
            port: 2222,
            user: "ops".to_string(),
            identity_files: Vec::new(),
            identities_only: false,
            host: name.to_string(),
            agent_port: 7731,
            transport,
            agent_prefix: None,
            become_root: false,
            jump: Vec::new(),
        }
    }

    #[test]
    fn a_root_login_does_not_become_root_through_sudo() {
        let mut root = spec("r1", TransportChoice::Ssh);
        root.user = "root".to_string();
        root.become_root = true;
        let mut out = Vec::new();
        write_host_list(&mut out, &[root], &[], false, true, false).unwrap();
        let listed: serde_json::Value =
            serde_json::from_str(String::from_utf8(out).unwrap().trim()).unwrap();
        assert_eq!(listed["become"], false);
    }

    #[test]
    fn hosts_are_listed_with_what_would_be_dialled() {
        let mut db1 = spec("db1", TransportChoice::Ssh);
        db1.jump.push(crate::plan::JumpHost {
            name: "bastion".to_string(),
            address: "10.0.0.9".to_string(),
            port: 22,
            user: "ops".to_string(),
            identity_files: Vec::new(),
            identities_only: false,
        });
        db1.become_root = true;
        db1.identity_files = vec![std::path::PathBuf::from("/home/ops/.ssh/db_key")];
        let hosts = [spec("web01", TransportChoice::Auto), db1];
        let mut out = Vec::new();
        write_host_list(&mut out, &hosts, &[], false, false, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HOST   USER  ADDRESS   PORT  TRANSPORT  AGENT_PORT  BECOME  VIA\n\
             web01  ops   10.0.0.5  2222  auto       7731        no      -\n\
             db1    ops   10.0.0.3  2222  ssh        -           yes     ops@10.0.0.9:22\n"
        );
        let mut out = Vec::new();
        let everyone = [std::path::PathBuf::from("/home/ops/.ssh/id_ed25519")];
        write_host_list(&mut out, &hosts, &everyone, true, true, true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"address\":\"10.0.0.5\",\"agent_port\":null,\"become\":false,\"host\":\"web01\",\"identity_files\":[\"/home/ops/.ssh/id_ed25519\"],\"port\":2222,\"transport\":\"ssh\",\"user\":\"ops\",\"via\":[]}\n\
             {\"address\":\"10.0.0.3\",\"agent_port\":null,\"become\":true,\"host\":\"db1\",\"identity_files\":[\"/home/ops/.ssh/db_key\",\"/home/ops/.ssh/id_ed25519\"],\"port\":2222,\"transport\":\"ssh\",\"user\":\"ops\",\"via\":[{\"address\":\"10.0.0.9\",\"host\":\"bastion\",\"port\":22,\"user\":\"ops\"}]}\n"
        );
        // The same files as ssh's defaults: offered only to the host that has none of its own.
        let mut out = Vec::new();
        write_host_list(&mut out, &hosts, &everyone, false, true, true).unwrap();
        let listed: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            listed[0]["identity_files"],
            serde_json::json!(["/home/ops/.ssh/id_ed25519"])
        );
        assert_eq!(
            listed[1]["identity_files"],
            serde_json::json!(["/home/ops/.ssh/db_key"])
        );
    }
}
