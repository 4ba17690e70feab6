//! The one table of what Volley does with each OpenSSH client directive (`ssh_config(5)`, up to
//! OpenSSH 10): honoured, refused or ignored. README.md's "ssh config" table says the same, and a
//! test keeps the two in step.
//!
//! The rule: a directive that would make Volley reach another machine, trust another host key or
//! present other credentials than `ssh` would, if Volley skipped it, is *refused* when it applies
//! to a targeted host (an error naming the file, the line and the directive, before any
//! connection). A directive about interactive sessions, forwarding, multiplexing, logging or
//! timing, where Volley has its own behaviour or flag, is *ignored*. A keyword Volley does not
//! know is refused as OpenSSH refuses it, unless `IgnoreUnknown` lists it.

use volley_common::target::wildcard_match;

/// What Volley does with one directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Treatment {
    /// Read and applied.
    Honoured,
    /// Would change where or how Volley connects, and Volley does not implement it: an error when
    /// it applies to a targeted host, unless its value is one of `harmless` (patterns, compared
    /// case-insensitively), which leave OpenSSH's default behaviour in place.
    Refused {
        why: &'static str,
        harmless: &'static [&'static str],
    },
    /// Has no bearing on where Volley connects, which key it trusts or which credentials it
    /// presents.
    Ignored { why: &'static str },
}

/// One directive, spelled as in `ssh_config(5)`.
#[derive(Clone, Copy, Debug)]
pub struct Directive {
    pub keyword: &'static str,
    pub treatment: Treatment,
}

const fn honoured(keyword: &'static str) -> Directive {
    Directive {
        keyword,
        treatment: Treatment::Honoured,
    }
}

const fn refused(
    keyword: &'static str,
    why: &'static str,
    harmless: &'static [&'static str],
) -> Directive {
    Directive {
        keyword,
        treatment: Treatment::Refused { why, harmless },
    }
}

const fn ignored(keyword: &'static str, why: &'static str) -> Directive {
    Directive {
        keyword,
        treatment: Treatment::Ignored { why },
    }
}

const PROXY: &str = "volley reaches hosts directly or through ProxyJump (-J) only";
const KNOWN_HOSTS: &str =
    "volley checks one known_hosts file, by the address dialled (--known-hosts)";
const ALGORITHMS: &str = "volley negotiates its own algorithms; only additions (+...) are accepted";
const CREDENTIALS: &str =
    "volley authenticates with plain keys: IdentityFile, -i and the agent at SSH_AUTH_SOCK";
const SOURCE: &str = "volley dials from the system's default source address";
const CANONICAL: &str = "volley does not canonicalize host names";
const SESSION: &str = "a session feature volley does not use";
const OWN_FLAG: &str = "volley has its own behaviour or flag for this";
const AUTH_METHOD: &str = "volley authenticates with public keys only";
const HOST_KEYS: &str = "volley always checks host keys strictly (see --accept-new-host-keys)";
const CANONICAL_ONLY: &str = "used only with CanonicalizeHostname, which volley refuses";
const DEPRECATED: &str = "deprecated in OpenSSH";

/// Every directive, in the order of `ssh_config(5)` within each treatment.
pub const DIRECTIVES: &[Directive] = &[
    honoured("Host"),
    honoured("Match"),
    honoured("Include"),
    honoured("HostName"),
    honoured("User"),
    honoured("Port"),
    honoured("IdentityFile"),
    honoured("IdentitiesOnly"),
    honoured("ProxyJump"),
    honoured("IgnoreUnknown"),
    refused("ProxyCommand", PROXY, &["none"]),
    refused("ProxyUseFdpass", PROXY, &["no"]),
    refused("RefuseConnection", PROXY, &["no"]),
    refused("HostKeyAlias", KNOWN_HOSTS, &[]),
    refused("UserKnownHostsFile", KNOWN_HOSTS, &[]),
    refused("GlobalKnownHostsFile", KNOWN_HOSTS, &[]),
    refused("KnownHostsCommand", KNOWN_HOSTS, &["none"]),
    refused(
        "RevokedHostKeys",
        "volley reads revocations from @revoked lines in known_hosts",
        &[],
    ),
    refused("HostKeyAlgorithms", ALGORITHMS, &["+*"]),
    refused("KexAlgorithms", ALGORITHMS, &["+*"]),
    refused("Ciphers", ALGORITHMS, &["+*"]),
    refused("MACs", ALGORITHMS, &["+*"]),
    refused("PubkeyAcceptedAlgorithms", ALGORITHMS, &["+*"]),
    refused("PubkeyAcceptedKeyTypes", ALGORITHMS, &["+*"]),
    refused("CASignatureAlgorithms", ALGORITHMS, &["+*"]),
    refused("RequiredRSASize", ALGORITHMS, &[]),
    refused("CertificateFile", CREDENTIALS, &["none"]),
    refused(
        "IdentityAgent",
        CREDENTIALS,
        &["SSH_AUTH_SOCK", "$SSH_AUTH_SOCK"],
    ),
    refused("PKCS11Provider", CREDENTIALS, &["none"]),
    refused("SecurityKeyProvider", CREDENTIALS, &["internal"]),
    refused("BindAddress", SOURCE, &[]),
    refused("BindInterface", SOURCE, &[]),
    refused(
        "AddressFamily",
        "volley dials whatever address a name resolves to first",
        &["any"],
    ),
    refused("CanonicalizeHostname", CANONICAL, &["no"]),
    ignored("AddKeysToAgent", SESSION),
    ignored("ClearAllForwardings", SESSION),
    ignored("DynamicForward", SESSION),
    ignored("EnableEscapeCommandline", SESSION),
    ignored("EscapeChar", SESSION),
    ignored("ExitOnForwardFailure", SESSION),
    ignored("ForkAfterAuthentication", SESSION),
    ignored("ForwardAgent", SESSION),
    ignored("ForwardX11", SESSION),
    ignored("ForwardX11Timeout", SESSION),
    ignored("ForwardX11Trusted", SESSION),
    ignored("GatewayPorts", SESSION),
    ignored("IPQoS", SESSION),
    ignored("LocalCommand", SESSION),
    ignored("LocalForward", SESSION),
    ignored("ObscureKeystrokeTiming", SESSION),
    ignored("PermitLocalCommand", SESSION),
    ignored("PermitRemoteOpen", SESSION),
    ignored("RekeyLimit", SESSION),
    ignored("RemoteCommand", SESSION),
    ignored("RemoteForward", SESSION),
    ignored("RequestTTY", SESSION),
    ignored("SendEnv", SESSION),
    ignored("SessionType", SESSION),
    ignored("SetEnv", SESSION),
    ignored("StdinNull", SESSION),
    ignored("StreamLocalBindMask", SESSION),
    ignored("StreamLocalBindUnlink", SESSION),
    ignored("Tag", SESSION),
    ignored("Tunnel", SESSION),
    ignored("TunnelDevice", SESSION),
    ignored("UseKeychain", SESSION),
    ignored("XAuthLocation", SESSION),
    ignored("BatchMode", OWN_FLAG),
    ignored("ChannelTimeout", OWN_FLAG),
    ignored("Compression", OWN_FLAG),
    ignored("ConnectionAttempts", OWN_FLAG),
    ignored("ConnectTimeout", OWN_FLAG),
    ignored("ControlMaster", OWN_FLAG),
    ignored("ControlPath", OWN_FLAG),
    ignored("ControlPersist", OWN_FLAG),
    ignored("FingerprintHash", OWN_FLAG),
    ignored("LogLevel", OWN_FLAG),
    ignored("LogVerbose", OWN_FLAG),
    ignored("ServerAliveCountMax", OWN_FLAG),
    ignored("ServerAliveInterval", OWN_FLAG),
    ignored("SyslogFacility", OWN_FLAG),
    ignored("TCPKeepAlive", OWN_FLAG),
    ignored("VisualHostKey", OWN_FLAG),
    ignored("WarnWeakCrypto", OWN_FLAG),
    ignored("CheckHostIP", HOST_KEYS),
    ignored("HashKnownHosts", HOST_KEYS),
    ignored("NoHostAuthenticationForLocalhost", HOST_KEYS),
    ignored("StrictHostKeyChecking", HOST_KEYS),
    ignored("UpdateHostKeys", HOST_KEYS),
    ignored("VerifyHostKeyDNS", HOST_KEYS),
    ignored("ChallengeResponseAuthentication", AUTH_METHOD),
    ignored("EnableSSHKeysign", AUTH_METHOD),
    ignored("GSSAPIAuthentication", AUTH_METHOD),
    ignored("GSSAPIClientIdentity", AUTH_METHOD),
    ignored("GSSAPIDelegateCredentials", AUTH_METHOD),
    ignored("GSSAPIKexAlgorithms", AUTH_METHOD),
    ignored("GSSAPIKeyExchange", AUTH_METHOD),
    ignored("GSSAPIRenewalForcesRekey", AUTH_METHOD),
    ignored("GSSAPIServerIdentity", AUTH_METHOD),
    ignored("GSSAPITrustDns", AUTH_METHOD),
    ignored("HostbasedAcceptedAlgorithms", AUTH_METHOD),
    ignored("HostbasedAuthentication", AUTH_METHOD),
    ignored("KbdInteractiveAuthentication", AUTH_METHOD),
    ignored("KbdInteractiveDevices", AUTH_METHOD),
    ignored("NumberOfPasswordPrompts", AUTH_METHOD),
    ignored("PasswordAuthentication", AUTH_METHOD),
    ignored("PreferredAuthentications", AUTH_METHOD),
    ignored("PubkeyAuthentication", AUTH_METHOD),
    ignored("CanonicalDomains", CANONICAL_ONLY),
    ignored("CanonicalizeFallbackLocal", CANONICAL_ONLY),
    ignored("CanonicalizeMaxDots", CANONICAL_ONLY),
    ignored("CanonicalizePermittedCNAMEs", CANONICAL_ONLY),
    ignored("Cipher", DEPRECATED),
    ignored("CompressionLevel", DEPRECATED),
    ignored("Protocol", DEPRECATED),
    ignored("RhostsRSAAuthentication", DEPRECATED),
    ignored("RSAAuthentication", DEPRECATED),
    ignored("UsePrivilegedPort", DEPRECATED),
    ignored("UseRoaming", DEPRECATED),
];

/// The directive `keyword` names, in any case; `None` for a keyword Volley does not know.
pub fn directive(keyword: &str) -> Option<&'static Directive> {
    DIRECTIVES
        .iter()
        .find(|directive| directive.keyword.eq_ignore_ascii_case(keyword))
}

impl Treatment {
    /// Whether `value` leaves OpenSSH's default behaviour in place, so a refused directive with
    /// it can be accepted.
    pub fn is_harmless(&self, value: &str) -> bool {
        match self {
            Treatment::Refused { harmless, .. } => {
                let value = value.trim().to_ascii_lowercase();
                harmless.iter().any(|pattern| {
                    wildcard_match(pattern.to_ascii_lowercase().as_bytes(), value.as_bytes())
                })
            }
            Treatment::Honoured | Treatment::Ignored { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_keyword_is_listed_once() {
        for (index, directive) in DIRECTIVES.iter().enumerate() {
            let first = DIRECTIVES
                .iter()
                .position(|other| other.keyword.eq_ignore_ascii_case(directive.keyword));
            assert_eq!(first, Some(index), "{} is listed twice", directive.keyword);
        }
    }

    #[test]
    fn lookups_ignore_case_and_harmless_values_pass() {
        assert_eq!(directive("proxycommand").unwrap().keyword, "ProxyCommand");
        assert!(directive("NoSuchThing").is_none());
        let ciphers = directive("ciphers").unwrap().treatment;
        assert!(ciphers.is_harmless("+aes128-cbc"));
        assert!(!ciphers.is_harmless("aes256-gcm@openssh.com"));
        assert!(!ciphers.is_harmless("-chacha20-poly1305@openssh.com"));
        let proxy = directive("ProxyCommand").unwrap().treatment;
        assert!(proxy.is_harmless("None"));
        assert!(!proxy.is_harmless("nc %h %p"));
    }

    /// README.md's table names every directive under the same treatment as this table: each
    /// row starts with the treatment and lists the directives as `Keyword` in its second column.
    #[test]
    fn the_readme_table_agrees() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<(&str, &str)> = readme
            .lines()
            .filter(|line| {
                ["| honoured |", "| refused |", "| ignored |"]
                    .iter()
                    .any(|start| line.starts_with(start))
            })
            .filter_map(|line| {
                let mut columns = line.split('|').skip(1);
                Some((columns.next()?.trim(), columns.next()?))
            })
            .collect();
        assert!(!rows.is_empty(), "README.md has no ssh config table");
        for directive in DIRECTIVES {
            let quoted = format!("`{}`", directive.keyword);
            let listed: Vec<&str> = rows
                .iter()
                .filter(|(_, directives)| directives.contains(&quoted))
                .map(|(treatment, _)| *treatment)
                .collect();
            let expected = match directive.treatment {
                Treatment::Honoured => "honoured",
                Treatment::Refused { .. } => "refused",
                Treatment::Ignored { .. } => "ignored",
            };
            assert_eq!(listed, [expected], "README.md's treatment of {quoted}");
        }
        // And it names nothing else: every `Keyword` in a row is a directive.
        for (_, directives) in &rows {
            for word in directives.split('`').skip(1).step_by(2) {
                let keyword_like = word.starts_with(|c: char| c.is_ascii_uppercase())
                    && word.chars().all(|c| c.is_ascii_alphanumeric());
                if keyword_like {
                    assert!(
                        directive(word).is_some(),
                        "README.md lists `{word}`, unknown here"
                    );
                }
            }
        }
    }
}
