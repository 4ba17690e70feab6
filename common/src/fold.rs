//! Folding host names back into the range form that [`crate::target::expand`] reads, so that a
//! summary of many hosts sharing an outcome prints `web[01-20]` instead of twenty names.

use std::collections::{BTreeMap, BTreeSet};

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

/// A name cut around its last run of digits.
struct Numbered<'a> {
    prefix: &'a str,
    digits: &'a str,
    suffix: &'a str,
    value: u64,
}

/// Folds host names into the range form that `expand` reads back: ["web03","web07","web08","web09"] -> "web[03,07-09]".
/// Names are deduplicated; the result lists groups sorted by prefix (then suffix), comma-separated at top level.
pub fn fold<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: BTreeSet<&str> = names.into_iter().collect();
    let numbered: Vec<Result<Numbered, &str>> =
        names.iter().map(|&name| split(name).ok_or(name)).collect();
    // A natural number as wide as a padded one in the same place reads back the same with or
    // without padding, so `web07,web10` folds to `web[07,10]` rather than two groups.
    let padded_widths: BTreeSet<(&str, &str, usize)> = numbered
        .iter()
        .flatten()
        .filter(|n| is_padded(n.digits))
        .map(|n| (n.prefix, n.suffix, n.digits.len()))
        .collect();
    let mut groups: BTreeMap<(&str, &str, Form), Vec<u64>> = BTreeMap::new();
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
                groups
                    .entry((n.prefix, n.suffix, form))
                    .or_default()
                    .push(n.value);
            }
            Err(name) => {
                groups.entry((name, "", Form::Plain)).or_default();
            }
        }
    }
    let rendered: Vec<String> = groups
        .into_iter()
        .map(|((prefix, suffix, form), mut values)| {
            values.sort_unstable();
            render(prefix, suffix, form, &values)
        })
        .collect();
    rendered.join(",")
}

fn is_padded(digits: &str) -> bool {
    digits.len() > 1 && digits.starts_with('0')
}

/// Cuts a name around its last run of digits, or gives `None` when it has no number that fits
/// in a u64.
fn split(name: &str) -> Option<Numbered<'_>> {
    // Digits are ASCII, and ASCII bytes never occur inside a multi-byte UTF-8 character, so byte
    // positions found this way are character boundaries.
    let bytes = name.as_bytes();
    let end = bytes.iter().rposition(u8::is_ascii_digit)? + 1;
    let start = bytes[..end]
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let digits = &name[start..end];
    Some(Numbered {
        prefix: &name[..start],
        digits,
        suffix: &name[end..],
        value: digits.parse().ok()?,
    })
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
        let cases: [(&[&str], &str); 19] = [
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
            (&["web09", "web10", "web100"], "web100,web[09-10]"),
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
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
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
        let prefixes = ["web", "db", "r1-n", "", "node-", "x.y"];
        let suffixes = ["", ".example.com", "-a", "b"];
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
