//! The files the controller writes on a host, as text: the agent's config and the systemd unit.
//!
//! Both are rendered the same way every time for the same host (the config with the operator's
//! own settings the host's copy has below its line), so their checksums tell whether the host's
//! copy is up to date (an install that finds them equal leaves them alone).

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

/// The line of the agent's config below which the operator's own settings are kept.
const KEPT_BELOW: &str =
    "# --- volley agent install keeps what follows this line: put your own settings here ---\n";
/// How every config an install wrote starts.
const WRITTEN_BY: &str = "# Written by `volley agent install`";

/// The agent's config: paths under the layout, and the controller identity it allows; then,
/// below [`KEPT_BELOW`], the operator's own settings from the host's config as it is
/// (`existing`), kept as they are (`allow_root = false`, `push_roots`, limits...).
pub fn agent_config(
    layout: &Layout,
    host: &HostSpec,
    identity: &str,
    existing: Option<&str>,
) -> String {
    format!(
        "{WRITTEN_BY} for {name}: the settings down to the line below are\n\
         # replaced at every install; yours go below it, and are kept. See deploy/agent.toml for\n\
         # every setting.\n\
         listen = {listen}\n\
         certificate = {certificate}\n\
         key = {key}\n\
         ca = {ca}\n\
         allowed_controllers = [{identity}]\n\
         {KEPT_BELOW}{kept}",
        name = host.host,
        listen = toml_string(&listen_address(host)),
        certificate = toml_string(&layout.certificate),
        key = toml_string(&layout.key),
        ca = toml_string(&layout.ca),
        identity = toml_string(identity),
        kept = existing.map_or("", kept_settings),
    )
}

/// The operator's settings in a config an install wrote: what follows [`KEPT_BELOW`], or, in
/// one written before there was such a line, what follows its last setting
/// (`allowed_controllers`), where an operator who edited it appended theirs. A config volley
/// did not write keeps nothing: the install replaces it.
fn kept_settings(existing: &str) -> &str {
    if let Some((_, kept)) = existing.split_once(KEPT_BELOW) {
        return kept;
    }
    if !existing.starts_with(WRITTEN_BY) {
        return "";
    }
    let mut offset = 0;
    for line in existing.split_inclusive('\n') {
        offset += line.len();
        if line.starts_with("allowed_controllers = ") {
            return &existing[offset..];
        }
    }
    ""
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
    fn the_operators_own_settings_are_kept_below_the_line() {
        let layout = Layout::new(Some(Path::new("/p")));
        let host = host("127.40.0.3");
        let fresh = agent_config(&layout, &host, "volley-controller", None);
        assert!(fresh.ends_with(KEPT_BELOW), "{fresh}");
        let own = "[session]\nallow_root = false\n# mine\n";
        let edited = format!("{fresh}{own}");
        // Another identity: the install's part changes, the operator's stays.
        let again = agent_config(&layout, &host, "ops", Some(&edited));
        assert!(
            again.contains("allowed_controllers = [\"ops\"]\n"),
            "{again}"
        );
        assert!(again.ends_with(&format!("{KEPT_BELOW}{own}")), "{again}");
        // The same install again writes the same text: the host's copy is up to date.
        assert_eq!(agent_config(&layout, &host, "ops", Some(&again)), again);

        // A config of an older install, with settings appended after its last line.
        let older = "# Written by `volley agent install` for h01; the next install replaces it.\n\
                     # See deploy/agent.toml for every setting.\n\
                     listen = \"127.40.0.3:7731\"\ncertificate = \"c\"\nkey = \"k\"\nca = \"a\"\n\
                     allowed_controllers = [\"volley-controller\"]\n[session]\nallow_root = false\n";
        let upgraded = agent_config(&layout, &host, "volley-controller", Some(older));
        assert!(
            upgraded.ends_with(&format!("{KEPT_BELOW}[session]\nallow_root = false\n")),
            "{upgraded}"
        );
        // One written by hand is replaced whole.
        let by_hand = "listen = \"0.0.0.0:1\"\n[session]\nallow_root = false\n";
        assert_eq!(
            agent_config(&layout, &host, "volley-controller", Some(by_hand)),
            fresh
        );
    }

    #[test]
    fn the_config_names_the_layout_and_the_controller() {
        let layout = Layout::new(Some(Path::new("/p")));
        let text = agent_config(&layout, &host("127.40.0.3"), "volley-controller", None);
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
