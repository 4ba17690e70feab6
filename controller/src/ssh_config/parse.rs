//! Lines into blocks: `Host` and `Match` start a block, `Include` reads other files into the
//! current one, and every other line becomes a [`Setting`] by the table in [`directives`]. Every
//! line is checked, also in blocks that match no host, so a typo is caught on the first run.

use std::path::Path;
use std::sync::Arc;

use super::directives::{self, Treatment};
use super::syntax::{arguments, check_tokens, single_value, split_keyword};
use super::{Block, Condition, Line, MatchLine, Setting, SshConfig, SshConfigError, include, jump};

/// OpenSSH's limit on nested `Include`s, which also stops include loops.
const MAX_INCLUDE_DEPTH: usize = 16;

impl SshConfig {
    /// Parses `text`; `origin` is the file it came from, for error messages.
    pub fn parse(text: &str, origin: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
        let mut config = SshConfig {
            home: home.to_path_buf(),
            blocks: Vec::new(),
        };
        config.parse_file(text, origin, &[], 0)?;
        config.blocks.retain(|block| !block.lines.is_empty());
        Ok(config)
    }

    fn parse_file(
        &mut self,
        text: &str,
        origin: &Path,
        outer: &[Condition],
        depth: usize,
    ) -> Result<(), SshConfigError> {
        let origin: Arc<Path> = Arc::from(origin);
        self.start_block(outer.to_vec(), &origin);
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let invalid = |reason: String| SshConfigError::Invalid {
                path: origin.to_path_buf(),
                line: number,
                reason,
            };
            let Some((keyword, rest)) = split_keyword(line) else {
                continue;
            };
            match keyword.to_ascii_lowercase().as_str() {
                "host" => {
                    let patterns = arguments(rest).map_err(invalid)?;
                    if patterns.is_empty() {
                        return Err(invalid("Host needs at least one pattern".to_string()));
                    }
                    let mut conditions = outer.to_vec();
                    conditions.push(Condition::Host(patterns));
                    self.start_block(conditions, &origin);
                }
                "match" => {
                    let criteria = arguments(rest).map_err(invalid)?;
                    let criteria = MatchLine::parse(&criteria).map_err(invalid)?;
                    let mut conditions = outer.to_vec();
                    conditions.push(Condition::Match {
                        origin: origin.clone(),
                        line: number,
                        criteria,
                    });
                    self.start_block(conditions, &origin);
                }
                "include" => {
                    let files = arguments(rest).map_err(invalid)?;
                    if files.is_empty() {
                        return Err(invalid("Include needs a file".to_string()));
                    }
                    self.include(&files, &origin, number, depth)?;
                }
                _ => {
                    if let Some(setting) = parse_setting(keyword, rest).map_err(invalid)?
                        && let Some(block) = self.blocks.last_mut()
                    {
                        block.lines.push(Line { number, setting });
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads each included file into the current block's context, then carries on in it.
    fn include(
        &mut self,
        files: &[String],
        origin: &Arc<Path>,
        line: usize,
        depth: usize,
    ) -> Result<(), SshConfigError> {
        let invalid = |reason: String| SshConfigError::Invalid {
            path: origin.to_path_buf(),
            line,
            reason,
        };
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(invalid(format!(
                "Include nested more than {MAX_INCLUDE_DEPTH} deep"
            )));
        }
        let enclosing = self
            .blocks
            .last()
            .map(|block| block.conditions.clone())
            .unwrap_or_default();
        for file in files {
            for path in include::expand(file, &self.home).map_err(invalid)? {
                let Some(text) = super::read(&path)? else {
                    continue;
                };
                self.parse_file(&text, &path, &enclosing, depth + 1)?;
                // Lines after the Include belong to the block it appeared in.
                self.start_block(enclosing.clone(), origin);
            }
        }
        Ok(())
    }

    fn start_block(&mut self, conditions: Vec<Condition>, origin: &Arc<Path>) {
        self.blocks.push(Block {
            conditions,
            origin: origin.clone(),
            lines: Vec::new(),
        });
    }
}

/// The setting a line holds, or `None` for a directive Volley ignores. Errors are the reason
/// alone; the caller says where.
pub(super) fn parse_setting(keyword: &str, rest: &str) -> Result<Option<Setting>, String> {
    let setting = match keyword.to_ascii_lowercase().as_str() {
        "hostname" => {
            let value = single_value("HostName", rest)?;
            check_tokens("HostName", &value, "h")?;
            Setting::HostName(value)
        }
        "user" => Setting::User(single_value("User", rest)?),
        "port" => {
            let value = single_value("Port", rest)?;
            match value.parse::<u16>() {
                Ok(port) if port > 0 => Setting::Port(port),
                _ => return Err(format!("bad Port '{value}'")),
            }
        }
        "identityfile" => {
            let value = single_value("IdentityFile", rest)?;
            if value.starts_with('~') && value != "~" && !value.starts_with("~/") {
                return Err(format!(
                    "IdentityFile '{value}': ~user paths are not supported"
                ));
            }
            check_tokens("IdentityFile", &value, "dhnpru")?;
            Setting::IdentityFile(value)
        }
        "identitiesonly" => {
            let value = single_value("IdentitiesOnly", rest)?;
            match value.to_ascii_lowercase().as_str() {
                "yes" | "true" => Setting::IdentitiesOnly(true),
                "no" | "false" => Setting::IdentitiesOnly(false),
                _ => return Err(format!("bad IdentitiesOnly '{value}': yes or no")),
            }
        }
        "proxyjump" => {
            let value = single_value("ProxyJump", rest)?;
            check_tokens("ProxyJump", &value, "hnpr")?;
            // Without tokens the value is final: check it now, wherever it applies.
            if !value.contains('%') {
                jump::parse_jumps(&value).map_err(|reason| format!("ProxyJump {reason}"))?;
            }
            Setting::ProxyJump(value)
        }
        "ignoreunknown" => Setting::IgnoreUnknown(single_value("IgnoreUnknown", rest)?),
        "proxycommand" => Setting::ProxyCommand(rest.trim().to_string()),
        _ => match directives::directive(keyword) {
            Some(directive) => match directive.treatment {
                Treatment::Refused { .. } => {
                    Setting::Refused(directive, arguments(rest)?.join(" "))
                }
                Treatment::Ignored { .. } => return Ok(None),
                // Host, Match and Include, which only a file can hold.
                Treatment::Honoured => {
                    return Err(format!(
                        "{} is only valid in a config file",
                        directive.keyword
                    ));
                }
            },
            None => Setting::Unknown(keyword.to_string()),
        },
    };
    Ok(Some(setting))
}
