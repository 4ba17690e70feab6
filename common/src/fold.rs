//! Folding host names back into the range form that [`crate::target::expand`] reads, so that a
//! summary of many hosts sharing an outcome prints `web[01-20]` instead of twenty names.
//!
//! The rule, meant to be predicted from the names alone:
//!
//! - Names fold together when they are the same text around their runs of digits: `web01.dc1`
//!   and `web20.dc1`, or `127.77.5.1:2222` and `127.77.5.250:2222`.
//! - Such names fold on one run of digits, the same run for all of them: the one that leaves the
//!   fewest ranges, and of those the last. So `web[01-20].dc1` folds on the host number rather
//!   than on the `1` every name shares, `127.77.5.[1-250]:2222` on the last octet rather than the
//!   port, and `10.0.0.[1-2],10.0.1.1` on the last octet. Like ClusterShell's `nodeset` but
//!   simpler, names are never folded on two runs at once (`r[1-2]-n[01-04]`): the other run's
//!   values each get their own range.
//! - Numbers keep their padding: `web1` and `web01` are different hosts and never share a range.
//! - Ranges are listed in the natural order of their first host (`web9` before `web10`).
//!
//! Digits inside brackets (the IPv6 address of `[fe80::1]:22`) and runs too long for a u64 are
//! text, since a range in either place would not read back.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;

/// How the numbers of a group are written. It is part of the group key because `web1` and
/// `web01` are different hosts and must never fold into one range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Form {
    /// A name without a foldable number, printed as it is.
    Plain,
    /// Numbers without leading zeros.
    Natural,
    /// Numbers zero-padded to this many digits.
    Padded(usize),
}

/// A name cut around the run of digits it folds on.
struct Numbered<'a> {
    prefix: &'a str,
    digits: &'a str,
    suffix: &'a str,
    value: u64,
}

/// A name with the runs of digits it may fold on.
struct Runs<'a> {
    name: &'a str,
    runs: Vec<Run>,
}

/// A run of digits: where it is in the name, in bytes, and its value.
struct Run {
    range: Range<usize>,
    value: u64,
}

/// Hosts that fold into one range, with the first of them, which orders the ranges.
struct Group<'a> {
    prefix: &'a str,
    suffix: &'a str,
    form: Form,
    values: Vec<u64>,
    first: String,
}

/// Folds host names into the range form that `expand` reads back: ["web03","web07","web08","web09"] -> "web[03,07-09]".
/// Names are deduplicated; the result lists the groups comma-separated at top level, in the
/// natural order of their first names. The module comment gives the rule.
pub fn fold<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: BTreeSet<&str> = names.into_iter().collect();
    let numbered = split(&names);
    // A natural number as wide as a padded one in the same place reads back the same with or
    // without padding, so `web07,web10` folds to `web[07,10]` rather than two groups.
    let padded_widths: BTreeSet<(&str, &str, usize)> = numbered
        .iter()
        .flatten()
        .filter(|n| is_padded(n.digits))
        .map(|n| (n.prefix, n.suffix, n.digits.len()))
        .collect();
    let mut values: BTreeMap<(&str, &str, Form), Vec<u64>> = BTreeMap::new();
    for entry in &numbered {
        match entry {
            Ok(n) => {
                let width = n.digits.len();
                let form = if is_padded(n.digits)
                    || padded_widths.contains(&(n.prefix, n.suffix, width))
                {
                    Form::Padded(width)
                } else {
                    Form::Natural
                };
                values
                    .entry((n.prefix, n.suffix, form))
                    .or_default()
                    .push(n.value);
            }
            Err(name) => {
                values.entry((name, "", Form::Plain)).or_default();
            }
        }
    }
    let mut groups: Vec<Group> = values
        .into_iter()
        .map(|((prefix, suffix, form), mut values)| {
            values.sort_unstable();
            let first = render(prefix, suffix, form, &values[..values.len().min(1)]);
            Group {
                prefix,
                suffix,
                form,
                values,
                first,
            }
        })
        .collect();
    groups.sort_by(|a, b| natural_order(&a.first, &b.first));
    let rendered: Vec<String> = groups
        .iter()
        .map(|g| render(g.prefix, g.suffix, g.form, &g.values))
        .collect();
    rendered.join(",")
}

fn is_padded(digits: &str) -> bool {
    digits.len() > 1 && digits.starts_with('0')
}

/// Cuts each name around the run of digits it folds on, or gives the name back when it has none.
fn split<'a>(names: &BTreeSet<&'a str>) -> Vec<Result<Numbered<'a>, &'a str>> {
    let all: Vec<Runs> = names
        .iter()
        .map(|&name| Runs {
            name,
            runs: digit_runs(name),
        })
        .collect();
    let mut alike: HashMap<Vec<&str>, Vec<&Runs>> = HashMap::new();
    for runs in &all {
        alike.entry(runs.text()).or_default().push(runs);
    }
    let axes: HashMap<&str, usize> = alike
        .values()
        .filter_map(|names| {
            let axis = axis(names)?;
            Some(names.iter().map(move |runs| (runs.name, axis)))
        })
        .flatten()
        .collect();
    all.iter()
        .map(|runs| match axes.get(runs.name) {
            Some(&axis) => Ok(runs.numbered(axis)),
            None => Err(runs.name),
        })
        .collect()
}

/// The run that names alike fold on: the one that leaves the fewest ranges, the last of those on
/// a tie. `None` when they have no run of digits.
fn axis(names: &[&Runs]) -> Option<usize> {
    let count = names.first()?.runs.len();
    (0..count).rev().min_by_key(|&run| {
        let around: HashSet<(&str, &str)> = names.iter().map(|n| n.around(run)).collect();
        around.len()
    })
}

/// The runs of digits a name may fold on: those outside brackets whose value fits in a u64.
fn digit_runs(name: &str) -> Vec<Run> {
    // Digits are ASCII, and ASCII bytes never occur inside a multi-byte UTF-8 character, so byte
    // positions found this way are character boundaries.
    let bytes = name.as_bytes();
    let mut runs = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if let (0, Ok(value)) = (depth, name[start..i].parse()) {
                runs.push(Run {
                    range: start..i,
                    value,
                });
            }
            continue;
        }
        match bytes[i] {
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    runs
}

impl<'a> Runs<'a> {
    /// The text around the runs. Names with the same text are alike and fold together.
    fn text(&self) -> Vec<&'a str> {
        let mut text = Vec::with_capacity(self.runs.len() + 1);
        let mut start = 0;
        for run in &self.runs {
            text.push(&self.name[start..run.range.start]);
            start = run.range.end;
        }
        text.push(&self.name[start..]);
        text
    }

    /// The text before and after one run.
    fn around(&self, run: usize) -> (&'a str, &'a str) {
        let range = &self.runs[run].range;
        (&self.name[..range.start], &self.name[range.end..])
    }

    /// The name cut around one run.
    fn numbered(&self, run: usize) -> Numbered<'a> {
        let Run { range, value } = &self.runs[run];
        Numbered {
            prefix: &self.name[..range.start],
            digits: &self.name[range.clone()],
            suffix: &self.name[range.end..],
            value: *value,
        }
    }
}

/// Orders names as people read them: runs of digits by their value (`web9` before `web10`), an
/// unpadded number before the same number padded (`web1` before `web01`), other text byte by
/// byte.
fn natural_order(a: &str, b: &str) -> Ordering {
    let (mut left, mut right) = (chunks(a), chunks(b));
    loop {
        let order = match (left.next(), right.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if is_number(x) && is_number(y) => number_order(x, y),
            (Some(x), Some(y)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// Cuts text into alternating runs of digits and of other characters.
fn chunks(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let digits = rest.as_bytes().first()?.is_ascii_digit();
        let end = rest
            .bytes()
            .position(|b| b.is_ascii_digit() != digits)
            .unwrap_or(rest.len());
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

fn is_number(chunk: &str) -> bool {
    chunk.bytes().all(|b| b.is_ascii_digit())
}

/// Compares runs of digits of any length by value, then the shorter (less padded) first.
fn number_order(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    x.len()
        .cmp(&y.len())
        .then_with(|| x.cmp(y))
        .then_with(|| a.len().cmp(&b.len()))
}

fn render(prefix: &str, suffix: &str, form: Form, values: &[u64]) -> String {
    let width = match form {
        Form::Plain => return prefix.to_string(),
        Form::Natural => 0,
        Form::Padded(width) => width,
    };
    let number = |n: u64| format!("{n:0width$}");
    if let [only] = values {
        return format!("{prefix}{}{suffix}", number(*only));
    }
    let mut items = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j].checked_add(1) == Some(values[j + 1]) {
            j += 1;
        }
        items.push(if i == j {
            number(values[i])
        } else {
            format!("{}-{}", number(values[i]), number(values[j]))
        });
        i = j + 1;
    }
    format!("{prefix}[{}]{suffix}", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{expand, split_list};

    fn check(input: &[&str], expected: &str) {
        assert_eq!(fold(input.iter().copied()), expected, "input: {input:?}");
        assert_round_trip(input);
    }

    /// Expanding every top-level element of the folded form gives back each distinct name once.
    fn assert_round_trip(input: &[&str]) {
        let folded = fold(input.iter().copied());
        let mut expanded: Vec<String> = Vec::new();
        if !folded.is_empty() {
            for element in split_list(&folded) {
                let words = expand(element).unwrap_or_else(|e| panic!("{folded}: {e}"));
                expanded.extend(words);
            }
        }
        expanded.sort();
        let mut distinct: Vec<String> = input.iter().map(|name| name.to_string()).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(expanded, distinct, "folded: {folded}");
    }

    #[test]
    fn folds() {
        let cases: [(&[&str], &str); 20] = [
            (&[], ""),
            (&["db1"], "db1"),
            (&["web03", "web07", "web08", "web09"], "web[03,07-09]"),
            (&["web09", "web08", "web07", "web03"], "web[03,07-09]"),
            (
                &["web01.example.com", "web02.example.com"],
                "web[01-02].example.com",
            ),
            (&["web07", "web10"], "web[07,10]"),
            (&["web1", "web01"], "web1,web01"),
            (&["web1", "web007", "web01"], "web1,web01,web007"),
            (&["web7", "web8"], "web[7-8]"),
            (&["web8", "web9", "web10", "web11"], "web[8-11]"),
            (&["web09", "web10", "web100"], "web[09-10],web100"),
            (&["a0", "a00", "a1"], "a[0-1],a00"),
            (&["db", "web2", "web1", "db"], "db,web[1-2]"),
            (&["a1", "a1", "a1"], "a1"),
            (&["r1-n01", "r1-n02", "r2-n01"], "r1-n[01-02],r2-n01"),
            (
                &["node-9.a", "node-10.a", "node-11.b"],
                "node-[9-10].a,node-11.b",
            ),
            (&["x99999999999999999999", "x1"], "x1,x99999999999999999999"),
            (
                &["10.0.0.1", "10.0.0.2", "10.0.1.1"],
                "10.0.0.[1-2],10.0.1.1",
            ),
            (&["7", "8", "007"], "[7-8],007"),
            (&["b10x", "b9y", "a2"], "a2,b9y,b10x"),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    /// Names with several runs of digits fold on the one that varies, not on the last.
    #[test]
    fn folds_on_the_run_that_varies() {
        let ports: Vec<String> = (1..=250).map(|n| format!("127.77.5.{n}:2222")).collect();
        let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
        check(&ports, "127.77.5.[1-250]:2222");
        let fqdns: Vec<String> = (1..=20)
            .map(|n| format!("web{n:02}.dc1.example.com"))
            .collect();
        let fqdns: Vec<&str> = fqdns.iter().map(String::as_str).collect();
        check(&fqdns, "web[01-20].dc1.example.com");
        let cases: [(&[&str], &str); 8] = [
            (
                &["root@10.0.0.2:22", "root@10.0.0.1:22", "root@10.0.0.3:22"],
                "root@10.0.0.[1-3]:22",
            ),
            (&["us-east-1a7", "us-east-1a8"], "us-east-1a[7-8]"),
            (
                &["web1.dc1", "web2.dc1", "web3.dc1", "web1.dc2"],
                "web[1-3].dc1,web1.dc2",
            ),
            // Two runs varying: the one that leaves fewer ranges.
            (
                &["r1-n01", "r1-n02", "r1-n03", "r2-n01", "r2-n02", "r2-n03"],
                "r1-n[01-03],r2-n[01-03]",
            ),
            (
                &["r1-n01", "r2-n01", "r3-n01", "r1-n02", "r2-n02", "r3-n02"],
                "r[1-3]-n01,r[1-3]-n02",
            ),
            // Padding still keeps hosts apart when another run is shared.
            (&["web1:22", "web01:22", "web2:22"], "web[1-2]:22,web01:22"),
            // A range inside an IPv6 address's brackets would not read back.
            (
                &["[fe80::1]:22", "[fe80::2]:22"],
                "[fe80::1]:22,[fe80::2]:22",
            ),
            (&["fe80::1", "fe80::2"], "fe80::[1-2]"),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    /// Groups that stay apart are listed in natural order, and ten thousand hosts fold at once.
    #[test]
    fn folds_many_hosts_into_ranges_in_natural_order() {
        let names: Vec<String> = (0..40)
            .rev()
            .flat_map(|subnet| (1..=250).map(move |n| format!("10.0.{subnet}.{n}:2222")))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let expected: Vec<String> = (0..40)
            .map(|subnet| format!("10.0.{subnet}.[1-250]:2222"))
            .collect();
        check(&names, &expected.join(","));
    }

    #[test]
    fn round_trips_generated_names() {
        // A fixed linear congruential generator keeps the test deterministic without a rand
        // dependency.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |bound: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % bound
        };
        let prefixes = [
            "web",
            "db",
            "r1-n",
            "",
            "node-",
            "x.y",
            "10.0.3.",
            "root@r2-n",
        ];
        let suffixes = ["", ".example.com", "-a", "b", ":2222", ".dc1", "x4"];
        let mut names = Vec::new();
        for _ in 0..400 {
            let prefix = prefixes[next(prefixes.len() as u64) as usize];
            let suffix = suffixes[next(suffixes.len() as u64) as usize];
            let number = next(130);
            let name = match next(5) {
                0 => format!("{prefix}{number}{suffix}"),
                1 => format!("{prefix}{number:02}{suffix}"),
                2 => format!("{prefix}{number:03}{suffix}"),
                3 => format!("{prefix}{suffix}"),
                _ => format!("{prefix}{number}{suffix}"),
            };
            if !name.is_empty() {
                names.push(name);
            }
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_round_trip(&names);
        for chunk in names.chunks(37) {
            assert_round_trip(chunk);
        }
    }
}
