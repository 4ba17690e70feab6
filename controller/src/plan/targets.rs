//! Targets: patterns, groups and hosts files expanded into the ordered target list, with
//! `--exclude` applied; and the files volley reads from its own stdin (`--hosts-file -`,
//! `--stdin -`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use volley_common::inventory::Inventory;
use volley_common::target::{Pattern, Target, glob_match, parse_list, split_list};

use super::{HostSpec, MAX_STDIN, PlanError, canonical_address, io_reason};
use crate::cli::RunArgs;

/// Expands patterns, groups and hosts files into the ordered, de-duplicated target list.
pub(super) struct Resolver<'a> {
    pub(super) inventory: &'a Inventory,
    pub(super) inventory_path: &'a Path,
}

impl<'a> Resolver<'a> {
    /// Returns the targets, and warnings for what the operator gave that had no effect.
    pub(super) fn resolve(&self, args: &RunArgs) -> Result<Resolved, PlanError> {
        // What the operator gave, to name it when it resolves to nothing.
        let mut given: Vec<String> = Vec::new();
        // Each list of patterns, with where it came from for its errors: for a bad pattern, and
        // for a group it names that is unknown or loops (a `-g` one names itself).
        let mut lists: Vec<(String, String, String)> = Vec::new();
        for list in &args.targets.targets {
            given.push(format!("-w '{list}'"));
            lists.push((String::new(), String::new(), list.clone()));
        }
        for group in &args.targets.groups {
            // `-g @web` is `-g web`, as the group is written in a pattern.
            let name = group.trim();
            let name = name.strip_prefix('@').unwrap_or(name);
            if name.is_empty() {
                return Err(PlanError::Input(format!(
                    "-g '{group}': an empty group name"
                )));
            }
            given.push(format!("-g '{name}'"));
            lists.push((format!("-g '{name}': "), String::new(), format!("@{name}")));
        }
        for file in &args.targets.hosts_file {
            let read = if is_stdin(file) {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(file)
            };
            let text = read.map_err(|e| {
                PlanError::Input(format!("hosts file {}: {}", file.display(), io_reason(&e)))
            })?;
            given.push(format!("hosts file {}", file.display()));
            for (number, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if !line.is_empty() {
                    let from = format!("hosts file {} line {}: ", file.display(), number + 1);
                    lists.push((from.clone(), from, line.to_string()));
                }
            }
        }
        if given.is_empty() {
            return Err(PlanError::Input(
                "no targets: give -w PATTERNS, -g GROUP or --hosts-file FILE".to_string(),
            ));
        }

        let mut targets = Vec::new();
        for (from, reached_from, list) in &lists {
            let named = |error: PlanError| match error {
                PlanError::Input(message) => PlanError::Input(format!("{reached_from}{message}")),
                error => error,
            };
            let patterns = parse_list(list).map_err(|e| PlanError::Input(format!("{from}{e}")))?;
            for pattern in patterns {
                self.push(pattern, &mut Vec::new(), &mut targets)
                    .map_err(named)?;
            }
        }
        if targets.is_empty() {
            let verb = if given.len() == 1 { "names" } else { "name" };
            return Err(PlanError::Input(format!(
                "no targets: {} {verb} no host",
                given.join(", ")
            )));
        }

        let mut exclusions = Exclusions::new(self, &args.targets.exclude)?;
        // Distinct hosts: one named twice is counted once, as it runs once.
        exclusions.before = targets
            .iter()
            .map(ToString::to_string)
            .collect::<HashSet<_>>()
            .len();
        let (named_out, targets) = targets
            .into_iter()
            .partition(|target| exclusions.by_name(target));
        Ok(Resolved {
            targets,
            named_out,
            exclusions,
        })
    }

    fn push(
        &self,
        pattern: Pattern,
        trail: &mut Vec<String>,
        out: &mut Vec<Target>,
    ) -> Result<(), PlanError> {
        match pattern {
            Pattern::Hosts(hosts) => {
                out.extend(hosts);
                // Checked as they come: a group named many times over cannot fill memory first.
                if out.len() > MAX_TARGETS {
                    return Err(PlanError::Input(format!(
                        "the targets name more than {MAX_TARGETS} hosts"
                    )));
                }
            }
            Pattern::Group(name) => {
                let (key, members) = self.group(&name)?;
                if trail.contains(&name) {
                    trail.push(name);
                    return Err(PlanError::Input(format!(
                        "inventory {}: groups include each other: {}",
                        self.inventory_path.display(),
                        trail.join(" -> ")
                    )));
                }
                trail.push(name);
                for list in members {
                    for pattern in self.group_entry(key, list)? {
                        self.push(pattern, trail, out)?;
                    }
                }
                trail.pop();
            }
        }
        Ok(())
    }

    /// One entry of group `key`'s hosts, parsed; an error names the group.
    fn group_entry(&self, key: &str, list: &str) -> Result<Vec<Pattern>, PlanError> {
        parse_list(list).map_err(|e| {
            PlanError::Input(format!(
                "inventory {}: groups.{key}.hosts: {e}",
                self.inventory_path.display()
            ))
        })
    }

    fn group(&self, name: &str) -> Result<(&'a str, &'a [String]), PlanError> {
        match self.inventory.groups.get_key_value(name) {
            Some((key, group)) => Ok((key, &group.hosts)),
            None => {
                let known: Vec<&str> = self.inventory.groups.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                Err(PlanError::Input(format!(
                    "unknown group '{name}' (groups in {}: {known})",
                    self.inventory_path.display()
                )))
            }
        }
    }
}

/// The most hosts one run's targets may name, all patterns together (one pattern is capped
/// likewise where it is expanded).
const MAX_TARGETS: usize = 1_000_000;

/// The most hosts all groups together may name, a host counted once per group that names it.
const MAX_MEMBERSHIPS: usize = 4 * MAX_TARGETS;

/// How deep groups may include groups: far more than any real inventory, and little enough
/// that walking them cannot run out of stack.
const MAX_NESTING: usize = 64;

/// What the inventory's groups say of one host.
#[derive(Debug, Default)]
pub(super) struct Membership<'i> {
    /// The groups it belongs to, nearest first: the groups that list it themselves, then those
    /// that take it in through another group (one level, then two, ...); groups at the same
    /// distance in name order.
    pub(super) groups: Vec<&'i str>,
    /// How near each of `groups` is: 0 for a group that lists the host itself.
    pub(super) distances: Vec<usize>,
    /// The user and port a group entry gives it (`root@web09:2200`), from the nearest entry
    /// that gives them: they apply as if the host were named so.
    pub(super) user: Option<String>,
    pub(super) port: Option<u16>,
    /// Entries as near as the one that gave the user or port, giving another.
    pub(super) disagreements: Vec<Disagreement<'i>>,
}

/// Two groups equally near a host that give it different values of one setting: the first,
/// in name order, applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Disagreement<'i> {
    pub(super) setting: &'static str,
    /// The group whose value applies, and the value.
    pub(super) applies: (&'i str, String),
    /// The other groups as near, and the other values they give, in name order.
    pub(super) others: Vec<(&'i str, String)>,
}

/// Walking one group's members: the group, the groups on the way down, how near each group
/// taken in was walked, and the entries recorded for every group so far.
struct Walk<'i, 'e> {
    owner: &'i str,
    trail: Vec<&'i str>,
    walked: HashMap<&'i str, usize>,
    entries: &'e mut usize,
}

/// One group entry that names a host.
struct Entry<'i> {
    distance: usize,
    group: &'i str,
    user: Option<String>,
    port: Option<u16>,
}

impl Resolver<'_> {
    /// What the groups say of each host they name, for hosts however they are targeted. A
    /// malformed entry in any group, an unknown group it names or groups that include each
    /// other are an error, as they would be where that group is targeted: a host named on its
    /// own would otherwise silently lose that group's settings.
    pub(super) fn memberships(&self) -> Result<HashMap<String, Membership<'_>>, PlanError> {
        let mut found: HashMap<String, Vec<Entry<'_>>> = HashMap::new();
        let mut entries = 0;
        for (owner, group) in &self.inventory.groups {
            let mut walk = Walk {
                owner,
                trail: vec![owner.as_str()],
                walked: HashMap::new(),
                entries: &mut entries,
            };
            self.members_of(&mut walk, owner, &group.hosts, 0, &mut found)?;
        }
        Ok(found
            .into_iter()
            .map(|(host, mut entries)| {
                // Stable: groups came in name order, and each group's entries in its order.
                entries.sort_by_key(|entry| entry.distance);
                let mut membership = Membership::default();
                // The nearest entry giving each of user and port, as text, for disagreements.
                let mut firsts: [Option<(usize, &str, String)>; 2] = [None, None];
                for entry in entries {
                    if !membership.groups.contains(&entry.group) {
                        membership.groups.push(entry.group);
                        membership.distances.push(entry.distance);
                    }
                    let given = [
                        ("user", entry.user.clone()),
                        ("port", entry.port.map(|port| port.to_string())),
                    ];
                    for (first, (setting, value)) in firsts.iter_mut().zip(given) {
                        let Some(value) = value else { continue };
                        match first {
                            None => *first = Some((entry.distance, entry.group, value)),
                            Some((nearest, applies, applied))
                                if *nearest == entry.distance && *applied != value =>
                            {
                                let other = (entry.group, value);
                                let found = membership.disagreements.iter_mut();
                                match found.into_iter().find(|d| d.setting == setting) {
                                    Some(known) if known.others.contains(&other) => {}
                                    Some(known) => known.others.push(other),
                                    None => membership.disagreements.push(Disagreement {
                                        setting,
                                        applies: (applies, applied.clone()),
                                        others: vec![other],
                                    }),
                                }
                            }
                            Some(_) => {}
                        }
                    }
                    membership.user = membership.user.or(entry.user);
                    membership.port = membership.port.or(entry.port);
                }
                (host, membership)
            })
            .collect())
    }

    /// Records an entry of `walk.owner` for every host that `patterns` (of group `key`) name,
    /// `distance` groups deep.
    fn members_of<'i>(
        &'i self,
        walk: &mut Walk<'i, '_>,
        key: &str,
        patterns: &'i [String],
        distance: usize,
        found: &mut HashMap<String, Vec<Entry<'i>>>,
    ) -> Result<(), PlanError> {
        let owner = walk.owner;
        for list in patterns {
            for pattern in self.group_entry(key, list)? {
                match pattern {
                    Pattern::Hosts(hosts) => {
                        *walk.entries += hosts.len();
                        if *walk.entries > MAX_MEMBERSHIPS {
                            return Err(PlanError::Input(format!(
                                "inventory {}: the groups name more than {MAX_MEMBERSHIPS} hosts in all",
                                self.inventory_path.display()
                            )));
                        }
                        for target in hosts {
                            found.entry(target.host).or_default().push(Entry {
                                distance,
                                group: owner,
                                user: target.user,
                                port: target.port,
                            });
                        }
                    }
                    Pattern::Group(name) => {
                        let Some((name, group)) = self.inventory.groups.get_key_value(&name) else {
                            return Err(PlanError::Input(format!(
                                "inventory {}: groups.{key}.hosts: unknown group '{name}'",
                                self.inventory_path.display()
                            )));
                        };
                        if walk.trail.contains(&name.as_str()) {
                            walk.trail.push(name);
                            return Err(PlanError::Input(format!(
                                "inventory {}: groups include each other: {}",
                                self.inventory_path.display(),
                                walk.trail.join(" -> ")
                            )));
                        }
                        if walk.trail.len() >= MAX_NESTING {
                            return Err(PlanError::Input(format!(
                                "inventory {}: groups nest more than {MAX_NESTING} deep, from group {}",
                                self.inventory_path.display(),
                                walk.trail[0]
                            )));
                        }
                        // A group taken in again, no nearer than before, adds nothing.
                        let nearest = walk.walked.entry(name.as_str()).or_insert(usize::MAX);
                        if *nearest <= distance + 1 {
                            continue;
                        }
                        *nearest = distance + 1;
                        walk.trail.push(name);
                        self.members_of(walk, name, &group.hosts, distance + 1, found)?;
                        walk.trail.pop();
                    }
                }
            }
        }
        Ok(())
    }
}

/// The resolved targets, in order, and what `-x` may still leave out of them.
pub(super) struct Resolved {
    pub(super) targets: Vec<Target>,
    /// The targets `-x` left out by name or glob: the machines they name are spared under any
    /// other name too.
    pub(super) named_out: Vec<Target>,
    pub(super) exclusions: Exclusions,
}

/// What `-x` leaves out, element by element: exact names (ranges and groups expanded), logins
/// (a name with a user or port) or a glob.
pub(super) struct Exclusions {
    list: Vec<Exclusion>,
    /// Whether each element left out a target.
    used: Vec<bool>,
    /// The `-x` lists as given.
    given: Vec<String>,
    /// Distinct targets before any was left out.
    before: usize,
}

struct Exclusion {
    /// The element as given, to name it in a warning.
    element: String,
    /// Host names as [`canonical_address`] writes them (a name has no case, nor a final dot):
    /// every target of that host, whatever its user and port, and a host dialled at one of
    /// them as its address, whatever its name.
    names: HashSet<String>,
    /// Hosts given with a user or port (`bob@h1`, `h1:2222`): only where the host is dialled
    /// so, however it was named.
    logins: Vec<Target>,
    glob: Option<String>,
}

impl Exclusions {
    /// Whether an exclusion leaves out `target` by its name or a glob, marking those that do.
    fn by_name(&mut self, target: &Target) -> bool {
        let mut excluded = false;
        for (exclusion, used) in self.list.iter().zip(&mut self.used) {
            let named = exclusion.names.contains(&canonical_address(&target.host))
                || exclusion
                    .glob
                    .as_deref()
                    .is_some_and(|glob| glob_match(glob, &target.host));
            if named {
                (*used, excluded) = (true, true);
            }
        }
        excluded
    }

    /// Whether an exclusion leaves out `host` as it will be dialled, its address, user and port
    /// settled by the target, its groups, the inventory and ssh config: `-x root@web2:2200`
    /// leaves out `web2` where a group entry makes it that login, and `-x 10.0.0.5` (or
    /// `-x 10.0.0.5:2222`) the host whose address that is, whatever its name. `address` is the
    /// host's, as [`canonical_address`] writes it.
    pub(super) fn by_login(&mut self, host: &HostSpec, address: &str) -> bool {
        let mut excluded = false;
        let name = canonical_address(&host.host);
        for (exclusion, used) in self.list.iter().zip(&mut self.used) {
            let dialled = exclusion.logins.iter().any(|login| {
                let login_host = canonical_address(&login.host);
                (login_host == name || login_host == address)
                    && login.user.as_ref().is_none_or(|user| *user == host.user)
                    && login.port.is_none_or(|port| port == host.port)
            });
            if dialled || exclusion.names.contains(address) {
                (*used, excluded) = (true, true);
            }
        }
        excluded
    }

    /// Once every host is settled, `left` of them running: an error if none is, else a
    /// warning for each exclusion that left out nothing (a misspelt exclusion would run the
    /// command on the host it meant to spare).
    pub(super) fn finish(self, left: usize) -> Result<Vec<String>, PlanError> {
        let before = self.before;
        if left == 0 {
            let excluded: Vec<String> = self
                .given
                .iter()
                .map(|list| format!("-x '{list}'"))
                .collect();
            return Err(PlanError::Input(format!(
                "no targets left: {} leaves out all {before} of them",
                excluded.join(" ")
            )));
        }
        Ok(self
            .list
            .iter()
            .zip(self.used)
            .filter(|(_, used)| !used)
            .map(|(exclusion, _)| {
                format!(
                    "-x '{}' leaves out none of the {before} targets",
                    exclusion.element
                )
            })
            .collect())
    }
}

impl Exclusions {
    fn new(resolver: &Resolver<'_>, lists: &[String]) -> Result<Exclusions, PlanError> {
        let mut exclusions = Vec::new();
        for list in lists {
            if split_list(list)
                .iter()
                .all(|element| element.trim().is_empty())
            {
                return Err(PlanError::Input(format!(
                    "-x '{list}': an empty pattern leaves out no host"
                )));
            }
            for element in split_list(list).into_iter().map(str::trim) {
                if element.is_empty() {
                    continue;
                }
                // A glob is taken whole; the rest goes through the same expansion as targets.
                let mut exclusion = Exclusion {
                    element: element.to_string(),
                    names: HashSet::new(),
                    logins: Vec::new(),
                    glob: None,
                };
                if element.contains(['*', '?']) && !element.contains('[') {
                    exclusion.glob = Some(element.to_string());
                } else {
                    for pattern in parse_list(element)
                        .map_err(|e| PlanError::Input(format!("-x '{list}': {e}")))?
                    {
                        match pattern {
                            // A user or port narrows it to the host dialled so.
                            Pattern::Hosts(targets) => {
                                for target in targets {
                                    if target.user.is_some() || target.port.is_some() {
                                        exclusion.logins.push(target);
                                    } else {
                                        exclusion.names.insert(canonical_address(&target.host));
                                    }
                                }
                            }
                            // A group leaves out its hosts, however they are named.
                            group => {
                                let mut targets = Vec::new();
                                resolver.push(group, &mut Vec::new(), &mut targets)?;
                                let names = targets.into_iter().map(|target| target.host);
                                exclusion
                                    .names
                                    .extend(names.map(|name| canonical_address(&name)));
                            }
                        }
                    }
                }
                exclusions.push(exclusion);
            }
        }
        Ok(Exclusions {
            used: vec![false; exclusions.len()],
            list: exclusions,
            given: lists.to_vec(),
            before: 0,
        })
    }
}

/// Whether a file argument means volley's own stdin.
pub(super) fn is_stdin(path: &Path) -> bool {
    path == Path::new("-")
}

/// The bytes of `--stdin`: the file, or volley's stdin for `-`, up to [`MAX_STDIN`].
pub(super) fn read_stdin(source: &Path) -> Result<bytes::Bytes, PlanError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = if is_stdin(source) {
        std::io::stdin().take(MAX_STDIN + 1).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(source)
            .and_then(|file| file.take(MAX_STDIN + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| PlanError::Input(format!("--stdin {}: {}", source.display(), io_reason(&e))))?;
    if bytes.len() as u64 > MAX_STDIN {
        return Err(PlanError::Input(format!(
            "--stdin {}: more than {} MiB; send files with a command that fetches them instead",
            source.display(),
            MAX_STDIN >> 20
        )));
    }
    Ok(bytes.into())
}
