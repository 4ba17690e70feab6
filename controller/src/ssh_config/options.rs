//! `-o KEY=VALUE` (or `-o 'KEY VALUE'`), as `ssh -o` takes it, for the directives Volley
//! honours. An option is a request made on purpose, so anything Volley would not apply, refused
//! or merely ignored in a file, is an error here.

use std::path::Path;
use std::sync::Arc;

use super::directives::{self, Treatment};
use super::parse::parse_setting;
use super::syntax::split_keyword;
use super::{Block, Line, Setting, SshConfig, SshConfigError};

impl SshConfig {
    /// The options as one block that applies to every host, in the order given (the first value
    /// of a keyword wins, as in a file).
    pub fn from_options(options: &[String], home: &Path) -> Result<SshConfig, SshConfigError> {
        let origin: Arc<Path> = Arc::from(Path::new("-o"));
        let mut lines = Vec::new();
        for (index, option) in options.iter().enumerate() {
            let error = |reason: String| SshConfigError::Option {
                option: option.clone(),
                reason,
            };
            let (keyword, rest) =
                split_keyword(option).ok_or_else(|| error("expected KEY=VALUE".to_string()))?;
            let treatment = directives::directive(keyword).map(|directive| directive.treatment);
            match treatment {
                None => return Err(error(format!("unknown ssh option {keyword}"))),
                Some(Treatment::Ignored { why }) => {
                    return Err(error(format!("{keyword} has no effect in volley: {why}")));
                }
                Some(Treatment::Refused { why, .. }) if !treatment_allows(keyword, rest) => {
                    return Err(error(format!("volley does not support {keyword}: {why}")));
                }
                Some(_) => {}
            }
            let setting = parse_setting(keyword, rest)
                .map_err(error)?
                .ok_or_else(|| error(format!("{keyword} has no effect in volley")))?;
            if matches!(setting, Setting::IgnoreUnknown(_)) {
                return Err(error(
                    "IgnoreUnknown is only valid in a config file".to_string(),
                ));
            }
            lines.push(Line {
                number: index + 1,
                setting,
            });
        }
        let blocks = if lines.is_empty() {
            Vec::new()
        } else {
            vec![Block {
                conditions: Vec::new(),
                origin,
                lines,
            }]
        };
        Ok(SshConfig {
            home: home.to_path_buf(),
            blocks,
        })
    }
}

/// Whether a refused directive's value leaves the default in place (`-o ProxyCommand=none`).
fn treatment_allows(keyword: &str, rest: &str) -> bool {
    directives::directive(keyword).is_some_and(|directive| directive.treatment.is_harmless(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(list: &[&str]) -> Result<SshConfig, SshConfigError> {
        let list: Vec<String> = list.iter().map(|option| option.to_string()).collect();
        SshConfig::from_options(&list, Path::new("/home/op"))
    }

    #[test]
    fn honoured_options_apply_to_every_host() {
        let config = options(&[
            "User=deploy",
            "Port 2200",
            "HostName=%h.internal",
            "IdentityFile=~/.ssh/fleet",
            "ProxyJump=bastion",
            "User=ignored",
        ])
        .unwrap();
        let found = config.lookup("web1", "op").unwrap();
        assert_eq!(found.user.as_deref(), Some("deploy"));
        assert_eq!(found.port, Some(2200));
        assert_eq!(found.hostname.as_deref(), Some("web1.internal"));
        assert_eq!(found.identity_files, [Path::new("/home/op/.ssh/fleet")]);
        assert_eq!(found.proxy_jump.unwrap()[0].host, "bastion");
        assert!(options(&["ProxyCommand=none"]).is_ok());
    }

    #[test]
    fn everything_else_is_refused_with_the_option() {
        for (option, expected) in [
            (
                "ProxyCommand=nc %h %p",
                "-o 'ProxyCommand=nc %h %p': volley does not support ProxyCommand: volley \
                 reaches hosts directly or through ProxyJump (-J) only",
            ),
            (
                "ServerAliveInterval=5",
                "-o 'ServerAliveInterval=5': ServerAliveInterval has no effect in volley: volley \
                 has its own behaviour or flag for this",
            ),
            ("Bogus=1", "-o 'Bogus=1': unknown ssh option Bogus"),
            (
                "Host=web1",
                "-o 'Host=web1': Host is only valid in a config file",
            ),
            (
                "Include=x",
                "-o 'Include=x': Include is only valid in a config file",
            ),
            (
                "IgnoreUnknown=x",
                "-o 'IgnoreUnknown=x': IgnoreUnknown is only valid in a config file",
            ),
            ("Port=x", "-o 'Port=x': bad Port 'x'"),
            ("", "-o '': expected KEY=VALUE"),
            (
                "ProxyJump=a:0",
                "-o 'ProxyJump=a:0': ProxyJump bad jump host 'a:0': bad port '0'",
            ),
        ] {
            let error = options(&[option]).unwrap_err().to_string();
            assert_eq!(error, expected, "{option}");
        }
    }
}
