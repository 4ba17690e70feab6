//! The files the controller writes on a host, as text: the agent's config and the systemd unit.
//!
//! Both are rendered the same way every time for the same host, so their checksums tell whether
//! the host's copy is up to date (an install that finds them equal leaves them alone).

use std::net::{IpAddr, SocketAddr};

use crate::plan::HostSpec;

use super::layout::Layout;

/// The unit of `deploy/`, as shipped; only its `ExecStart` line changes, to name the prefixed
/// binary and config.
const UNIT: &str = include_str!("../../../deploy/volley-agent.service");
const EXEC_START: &str = "ExecStart=/usr/local/bin/volley-agent --config /etc/volley/agent.toml";

/// Where the agent listens: the host's inventory address when it is an IP address (the one the
/// controller dials), every address otherwise; on the host's `agent_port`.
pub fn listen_address(host: &HostSpec) -> String {
    let ip = host
        .address
        .parse::<IpAddr>()
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    SocketAddr::new(ip, host.agent_port).to_string()
}

/// The agent's config: paths under the layout, and the controller identity it allows.
pub fn agent_config(layout: &Layout, host: &HostSpec, identity: &str) -> String {
    format!(
        "# Written by `volley agent install` for {name}; the next install replaces it.\n\
         # See deploy/agent.toml for every setting.\n\
         listen = {listen}\n\
         certificate = {certificate}\n\
         key = {key}\n\
         ca = {ca}\n\
         allowed_controllers = [{identity}]\n",
        name = host.host,
        listen = toml_string(&listen_address(host)),
        certificate = toml_string(&layout.certificate),
        key = toml_string(&layout.key),
        ca = toml_string(&layout.ca),
        identity = toml_string(identity),
    )
}

/// The unit for this layout.
pub fn unit(layout: &Layout) -> String {
    UNIT.replace(
        EXEC_START,
        &format!("ExecStart={} --config {}", layout.binary, layout.config),
    )
}

fn toml_string(value: &str) -> String {
    let mut quoted = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use volley_common::inventory::TransportChoice;

    use super::*;

    fn host(address: &str) -> HostSpec {
        HostSpec {
            name: "h01".to_string(),
            address: address.to_string(),
            port: 22,
            user: "root".to_string(),
            identity_files: Vec::new(),
            identities_only: false,
            host: "h01".to_string(),
            agent_port: 7731,
            transport: TransportChoice::Auto,
            agent_prefix: None,
            become_root: false,
            jump: Vec::new(),
        }
    }

    #[test]
    fn the_agent_listens_on_the_address_the_controller_dials() {
        assert_eq!(listen_address(&host("127.40.0.3")), "127.40.0.3:7731");
        assert_eq!(listen_address(&host("::1")), "[::1]:7731");
        assert_eq!(listen_address(&host("web01.example.com")), "0.0.0.0:7731");
    }

    #[test]
    fn the_config_names_the_layout_and_the_controller() {
        let layout = Layout::new(Some(Path::new("/p")));
        let text = agent_config(&layout, &host("127.40.0.3"), "volley-controller");
        assert!(text.contains("listen = \"127.40.0.3:7731\"\n"), "{text}");
        assert!(
            text.contains("key = \"/p/etc/volley/agent.key\"\n"),
            "{text}"
        );
        assert!(text.contains("allowed_controllers = [\"volley-controller\"]\n"));
        assert_eq!(toml_string("a\"b\\"), "\"a\\\"b\\\\\"");
    }

    #[test]
    fn the_unit_runs_the_prefixed_binary_and_is_otherwise_the_shipped_one() {
        assert!(
            UNIT.contains(EXEC_START),
            "deploy/volley-agent.service changed its ExecStart"
        );
        let layout = Layout::new(Some(Path::new("/p")));
        let text = unit(&layout);
        assert!(text.contains(
            "\nExecStart=/p/usr/local/bin/volley-agent --config /p/etc/volley/agent.toml\n"
        ));
        assert!(text.contains("\nType=notify\n"));
        assert_eq!(unit(&Layout::new(None)), UNIT);
    }
}
