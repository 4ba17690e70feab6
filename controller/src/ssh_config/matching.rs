//! `Match` lines. Volley evaluates the criteria it can know exactly before connecting: `all`,
//! `host` (the HostName obtained so far, else the host), `originalhost` (the host as written) and
//! `localuser`, each negatable with `!`. The others (`exec`, `user`, `canonical`, `final`,
//! `localnetwork`, `tagged`, ...) it cannot: a block that depends on one of them and could apply
//! to a host is refused rather than guessed at.

use volley_common::target::wildcard_match;

/// The criteria of one `Match` line; all must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchLine {
    criteria: Vec<Criterion>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Criterion {
    negated: bool,
    test: Test,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Test {
    All,
    Host(String),
    OriginalHost(String),
    LocalUser(String),
    /// A criterion OpenSSH knows and Volley cannot evaluate, by name.
    Unsupported(&'static str),
}

/// Whether a `Match` block applies to a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Applies,
    DoesNotApply,
    /// It applies if this criterion (as written, `!` included) holds, which Volley cannot tell.
    Unknown(String),
}

/// OpenSSH's criteria that take no argument, and those that take one.
const BARE: &[&str] = &["all", "canonical", "final"];
const WITH_ARGUMENT: &[&str] = &[
    "exec",
    "localnetwork",
    "host",
    "originalhost",
    "tagged",
    "user",
    "localuser",
    "version",
    "sessiontype",
    "command",
];

/// What the block is matched against.
pub struct Subject<'a> {
    /// HostName as obtained so far (tokens expanded), or the host.
    pub host: &'a str,
    /// The host as written.
    pub original: &'a str,
    pub local_user: &'a str,
}

impl MatchLine {
    /// Parses the arguments of a `Match` line.
    pub fn parse(arguments: &[String]) -> Result<MatchLine, String> {
        if arguments.is_empty() {
            return Err("Match needs criteria".to_string());
        }
        let mut criteria = Vec::new();
        let mut rest = arguments.iter();
        while let Some(word) = rest.next() {
            let (negated, name) = match word.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, word.as_str()),
            };
            let name = name.to_ascii_lowercase();
            let test = if let Some(&bare) = BARE.iter().find(|bare| **bare == name) {
                if bare == "all" {
                    Test::All
                } else {
                    Test::Unsupported(bare)
                }
            } else if let Some(&with) = WITH_ARGUMENT.iter().find(|with| **with == name) {
                let argument = rest
                    .next()
                    .ok_or_else(|| format!("Match {with} needs an argument"))?
                    .clone();
                match with {
                    "host" => Test::Host(argument),
                    "originalhost" => Test::OriginalHost(argument),
                    "localuser" => Test::LocalUser(argument),
                    _ => Test::Unsupported(with),
                }
            } else {
                return Err(format!("Match: unknown criterion '{word}'"));
            };
            criteria.push(Criterion { negated, test });
        }
        Ok(MatchLine { criteria })
    }

    pub fn evaluate(&self, subject: &Subject<'_>) -> Verdict {
        let mut unknown = None;
        for criterion in &self.criteria {
            let holds = match &criterion.test {
                Test::All => true,
                Test::Host(list) => host_list_matches(subject.host, list),
                Test::OriginalHost(list) => host_list_matches(subject.original, list),
                Test::LocalUser(list) => list_matches(subject.local_user, list),
                Test::Unsupported(name) => {
                    let bang = if criterion.negated { "!" } else { "" };
                    unknown.get_or_insert_with(|| format!("{bang}{name}"));
                    continue;
                }
            };
            if holds == criterion.negated {
                return Verdict::DoesNotApply;
            }
        }
        match unknown {
            Some(criterion) => Verdict::Unknown(criterion),
            None => Verdict::Applies,
        }
    }
}

/// OpenSSH's `match_hostname`: the host and the patterns compared in lower case.
fn host_list_matches(host: &str, list: &str) -> bool {
    list_matches(&host.to_ascii_lowercase(), &list.to_ascii_lowercase())
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns; a matching `!pattern` fails the
/// whole list, otherwise one matching pattern is enough.
pub fn list_matches(text: &str, list: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(pattern) => (true, pattern),
            None => (false, pattern),
        };
        if wildcard_match(pattern.as_bytes(), text.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(line: &str, host: &str, expected: Verdict) {
        let arguments: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let subject = Subject {
            host,
            original: "web1",
            local_user: "op",
        };
        assert_eq!(
            MatchLine::parse(&arguments).unwrap().evaluate(&subject),
            expected,
            "Match {line} for {host}"
        );
    }

    #[test]
    fn criteria() {
        use Verdict::*;
        check("all", "web1", Applies);
        check("host web*", "web1", Applies);
        check("host WEB*", "web1", Applies);
        check("host db*,web1", "web1", Applies);
        check("host *,!web1", "web1", DoesNotApply);
        check("!host web1", "web1", DoesNotApply);
        check("host web1.internal", "web1.internal", Applies);
        check("originalhost web1", "web1.internal", Applies);
        check("originalhost db1", "web1", DoesNotApply);
        check("localuser op", "web1", Applies);
        check("localuser root", "web1", DoesNotApply);
        check("host web1 localuser op", "web1", Applies);
        // What Volley cannot evaluate is unknown, unless something it can evaluate rules the
        // block out.
        check("exec true", "web1", Unknown("exec".to_string()));
        check("host web1 !user root", "web1", Unknown("!user".to_string()));
        check("host db1 exec true", "web1", DoesNotApply);
        check("exec true host db1", "web1", DoesNotApply);
        check("canonical all", "web1", Unknown("canonical".to_string()));
        check("final", "web1", Unknown("final".to_string()));
    }

    #[test]
    fn malformed_lines_are_errors() {
        for (line, expected) in [
            ("", "Match needs criteria"),
            ("host", "Match host needs an argument"),
            ("exec", "Match exec needs an argument"),
            ("hots web1", "Match: unknown criterion 'hots'"),
        ] {
            let arguments: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            assert_eq!(MatchLine::parse(&arguments).unwrap_err(), expected);
        }
    }
}
