//! The inventory TOML that a fleet writes for volley: one `[hosts.NAME]` table per host and a
//! group `all` naming every host.

use std::fmt::Write as _;
use std::path::Path;

use crate::fleet::{Host, HostKind};

/// The inventory for `hosts`. The wrong-client-key host names `wrong_identity` as its identity.
pub fn inventory_toml(hosts: &[Host], wrong_identity: &Path) -> String {
    let mut text = String::from("# Written by the volley-tests fleet.\n\n[groups.all]\nhosts = [");
    let names: Vec<String> = hosts.iter().map(|host| toml_string(&host.name)).collect();
    text.push_str(&names.join(", "));
    text.push_str("]\n");
    for host in hosts {
        let _ = write!(
            text,
            "\n[hosts.{}]\naddress = {}\nport = {}\n",
            host.name,
            toml_string(&host.socket.ip().to_string()),
            host.socket.port()
        );
        if host.kind == HostKind::WrongClientKey {
            let path = wrong_identity.to_string_lossy();
            let _ = writeln!(text, "identity_file = {}", toml_string(&path));
        }
    }
    text
}

/// `inventory` with `settings` (TOML lines such as `become = true\n`) added to the table of
/// `host`; panics if the inventory has no such table.
pub fn with_host_settings(inventory: &str, host: &str, settings: &str) -> String {
    let header = format!("[hosts.{host}]\n");
    assert!(
        inventory.contains(&header),
        "the inventory has no [hosts.{host}]:\n{inventory}"
    );
    inventory.replace(&header, &format!("{header}{settings}"))
}

/// A TOML basic string. Paths come from tempfile, but quoting properly costs nothing.
pub fn toml_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04X}", c as u32);
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, socket: &str, kind: HostKind) -> Host {
        Host {
            name: name.to_string(),
            socket: socket.parse().unwrap(),
            kind,
            host_key: None,
        }
    }

    #[test]
    fn inventory_names_every_host_and_the_wrong_identity() {
        let hosts = [
            host("h01", "127.40.1.1:40001", HostKind::Normal),
            host("h02", "127.40.1.2:40002", HostKind::WrongClientKey),
        ];
        let text = inventory_toml(&hosts, Path::new("/keys/wrong"));
        assert_eq!(
            text,
            "# Written by the volley-tests fleet.\n\n\
             [groups.all]\nhosts = [\"h01\", \"h02\"]\n\n\
             [hosts.h01]\naddress = \"127.40.1.1\"\nport = 40001\n\n\
             [hosts.h02]\naddress = \"127.40.1.2\"\nport = 40002\nidentity_file = \"/keys/wrong\"\n"
        );
    }

    #[test]
    fn settings_go_into_the_hosts_own_table() {
        let text = "[hosts.h01]\nport = 1\n\n[hosts.h010]\nport = 2\n";
        assert_eq!(
            with_host_settings(text, "h01", "become = true\n"),
            "[hosts.h01]\nbecome = true\nport = 1\n\n[hosts.h010]\nport = 2\n"
        );
    }

    #[test]
    fn strings_are_quoted() {
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(toml_string("tab\there"), "\"tab\\u0009here\"");
    }
}
