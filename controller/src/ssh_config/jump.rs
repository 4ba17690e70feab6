//! `ProxyJump` values, as `ssh_config(5)` and `ssh -J` take them: `none`, or comma-separated
//! hops, each `[user@]host[:port]` or `ssh://[user@]host[:port]`, an IPv6 host in brackets.

/// One jump host as written; the ssh config supplies what it leaves out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JumpHop {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// The hops of a `ProxyJump` value, in the order they are visited; empty for `none`.
pub fn parse_jumps(value: &str) -> Result<Vec<JumpHop>, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    value.split(',').map(parse_hop).collect()
}

fn parse_hop(text: &str) -> Result<JumpHop, String> {
    let bad = |why: &str| format!("bad jump host '{text}': {why}");
    let rest = match text.strip_prefix("ssh://") {
        Some(rest) if rest.contains('/') => return Err(bad("an ssh:// URI takes no path")),
        Some(rest) => rest,
        None => text,
    };
    // The user ends at the last '@', as OpenSSH reads it.
    let (user, rest) = match rest.rsplit_once('@') {
        Some(("", _)) => return Err(bad("empty user")),
        Some((user, rest)) => (Some(user.to_string()), rest),
        None => (None, rest),
    };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("unclosed '['"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(bad("expected ':PORT' after ']'")),
            },
        }
    } else {
        match rest.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(bad("an IPv6 address needs brackets: [ADDRESS]:PORT"));
            }
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("no host"));
    }
    let port = match port {
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => return Err(bad(&format!("bad port '{port}'"))),
        },
        None => None,
    };
    Ok(JumpHop {
        user,
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(user: Option<&str>, host: &str, port: Option<u16>) -> JumpHop {
        JumpHop {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn forms() {
        for (value, expected) in [
            ("none", vec![]),
            ("NONE", vec![]),
            ("bastion", vec![hop(None, "bastion", None)]),
            (
                "op@bastion:2222",
                vec![hop(Some("op"), "bastion", Some(2222))],
            ),
            (
                "a,b@c:22",
                vec![hop(None, "a", None), hop(Some("b"), "c", Some(22))],
            ),
            (
                "ssh://op@bastion:2200",
                vec![hop(Some("op"), "bastion", Some(2200))],
            ),
            ("ssh://bastion", vec![hop(None, "bastion", None)]),
            ("[::1]:2222", vec![hop(None, "::1", Some(2222))]),
            ("op@[fe80::1]", vec![hop(Some("op"), "fe80::1", None)]),
            ("a@b@c", vec![hop(Some("a@b"), "c", None)]),
        ] {
            assert_eq!(parse_jumps(value).unwrap(), expected, "{value}");
        }
    }

    #[test]
    fn errors() {
        for (value, expected) in [
            ("a,,b", "bad jump host '': no host"),
            ("@b", "bad jump host '@b': empty user"),
            ("b:0", "bad jump host 'b:0': bad port '0'"),
            ("b:x", "bad jump host 'b:x': bad port 'x'"),
            (
                "::1",
                "bad jump host '::1': an IPv6 address needs brackets: [ADDRESS]:PORT",
            ),
            ("[::1", "bad jump host '[::1': unclosed '['"),
            (
                "[::1]22",
                "bad jump host '[::1]22': expected ':PORT' after ']'",
            ),
            (
                "ssh://b/x",
                "bad jump host 'ssh://b/x': an ssh:// URI takes no path",
            ),
        ] {
            assert_eq!(parse_jumps(value).unwrap_err(), expected, "{value}");
        }
    }
}
