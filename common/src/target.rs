//! Target patterns as operators write them: `deploy@web[01-20]:2222,db1,@web`.
//!
//! This module owns the syntax only: it splits a list at top-level commas, expands numeric ranges
//! and parses each resulting word into a [`Target`]. Group references (`@web`) are recognised here
//! but resolved by the inventory, and duplicates are removed after resolution, so neither happens
//! here.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// The most words one element may expand to. A slip such as `[1-1000000000]` must fail at once
/// with a clear message instead of exhausting memory before the run starts.
const MAX_WORDS: usize = 1_000_000;

/// One host to reach, as the operator wrote it after range expansion.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub user: Option<String>,
    /// A host name or an IPv6 address, the latter without brackets.
    pub host: String,
    pub port: Option<u16>,
}

/// One element of a comma-separated target list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// `@web`: a group reference, resolved by the inventory.
    Group(String),
    /// The targets an element expands to, in expansion order and with duplicates kept.
    Hosts(Vec<Target>),
}

/// A malformed pattern, pointing at the character where it goes wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad target pattern '{pattern}': {reason} at column {column}")]
pub struct PatternError {
    pub pattern: String,
    /// 1-based character column in `pattern`.
    pub column: usize,
    pub reason: String,
}

/// What went wrong and where, before the pattern it belongs to is known.
struct Flaw {
    column: usize,
    reason: String,
}

impl Flaw {
    fn at(column: usize, reason: impl Into<String>) -> Flaw {
        Flaw {
            column,
            reason: reason.into(),
        }
    }

    fn within(self, pattern: &str) -> PatternError {
        PatternError {
            pattern: pattern.to_string(),
            column: self.column,
            reason: self.reason,
        }
    }
}

impl Target {
    /// Parses one expanded word: `[user@]host[:port]`, where host may be `[ipv6]`.
    pub fn parse(word: &str) -> Result<Target, PatternError> {
        let chars: Vec<char> = word.chars().collect();
        if let Some(i) = chars.iter().position(|c| c.is_whitespace()) {
            return Err(Flaw::at(i + 1, "whitespace inside a target").within(word));
        }
        let (user, start) = match chars.iter().position(|&c| c == '@') {
            None => (None, 0),
            Some(0) => return Err(Flaw::at(1, "empty user before '@'").within(word)),
            Some(at) => (Some(chars[..at].iter().collect()), at + 1),
        };
        if let Some(i) = chars[start..].iter().position(|&c| c == '@') {
            let flaw = Flaw::at(start + i + 1, "second '@' (a user cannot contain '@')");
            return Err(flaw.within(word));
        }
        let (host, port) = parse_address(&chars[start..], start).map_err(|f| f.within(word))?;
        Ok(Target { user, host, port })
    }
}

/// Parses `host[:port]`; `base` is the index of `chars[0]` in the word, for columns.
fn parse_address(chars: &[char], base: usize) -> Result<(String, Option<u16>), Flaw> {
    if chars.first() == Some(&'[') {
        let Some(close) = chars.iter().position(|&c| c == ']') else {
            return Err(Flaw::at(base + 1, "unclosed '['"));
        };
        let host = parse_ipv6(&chars[1..close], base + 1)?;
        let port = match chars.get(close + 1) {
            None => None,
            Some(':') => Some(parse_port(&chars[close + 2..], base + close + 2)?),
            Some(c) => {
                return Err(Flaw::at(
                    base + close + 2,
                    format!("unexpected '{c}' after ']'"),
                ));
            }
        };
        return Ok((host, port));
    }
    // Like ssh, read a bare word with two or more colons as an IPv6 address without a port.
    // Display relies on this: it prints such a host unbracketed when no port is shown.
    if chars.iter().filter(|&&c| c == ':').count() >= 2 {
        return Ok((parse_ipv6(chars, base)?, None));
    }
    let colon = chars.iter().position(|&c| c == ':');
    let host = parse_host_name(&chars[..colon.unwrap_or(chars.len())], base)?;
    let port = match colon {
        Some(i) => Some(parse_port(&chars[i + 1..], base + i + 1)?),
        None => None,
    };
    Ok((host, port))
}

fn parse_host_name(chars: &[char], base: usize) -> Result<String, Flaw> {
    if chars.is_empty() {
        return Err(Flaw::at(base + 1, "empty host"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if let Some(i) = chars.iter().position(|&c| !allowed(c)) {
        let reason = format!("invalid character '{}' in host name", chars[i]);
        return Err(Flaw::at(base + i + 1, reason));
    }
    // No resolver takes these, and `-web` reads as an option to every tool after volley.
    if matches!(chars[0], '-' | '.') {
        let reason = format!("a host name cannot start with '{}'", chars[0]);
        return Err(Flaw::at(base + 1, reason));
    }
    if let Some(i) = chars.windows(2).position(|pair| pair == ['.', '.']) {
        return Err(Flaw::at(base + i + 2, "empty label ('..') in host name"));
    }
    // A DNS name has at most 253 characters; no resolver looks up a longer one.
    if chars.len() > MAX_HOST_NAME {
        let reason = format!("host name longer than {MAX_HOST_NAME} characters");
        return Err(Flaw::at(base + MAX_HOST_NAME + 1, reason));
    }
    let name: String = chars.iter().collect();
    // Labels all of digits are an IPv4 address to the resolver, which reads `010` as octal 8
    // and `10.1` as 10.0.0.1: not the machine written, and not the one -x or duplicates would
    // compare. Only an address as Rust (and the operator) reads it is taken.
    let numeric = name
        .split('.')
        .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_digit()));
    if numeric && name.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(Flaw::at(
            base + 1,
            format!(
                "'{name}' is not an IPv4 address as written (four numbers 0-255, without leading \
                 zeros, which resolvers read as octal)"
            ),
        ));
    }
    Ok(name)
}

/// The longest host name a resolver takes.
const MAX_HOST_NAME: usize = 253;

fn parse_ipv6(chars: &[char], base: usize) -> Result<String, Flaw> {
    if chars.is_empty() {
        return Err(Flaw::at(base + 1, "empty host"));
    }
    let percent = chars.iter().position(|&c| c == '%');
    let address = &chars[..percent.unwrap_or(chars.len())];
    let allowed = |c: char| c.is_ascii_hexdigit() || c == ':' || c == '.';
    if let Some(i) = address.iter().position(|&c| !allowed(c)) {
        let reason = format!("invalid character '{}' in IPv6 address", address[i]);
        return Err(Flaw::at(base + i + 1, reason));
    }
    if let Some(p) = percent {
        let zone = &chars[p + 1..];
        if zone.is_empty() {
            return Err(Flaw::at(base + p + 2, "empty zone after '%'"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if let Some(i) = zone.iter().position(|&c| !allowed(c)) {
            let reason = format!("invalid character '{}' in zone", zone[i]);
            return Err(Flaw::at(base + p + i + 2, reason));
        }
    }
    let text: String = address.iter().collect();
    if text.parse::<Ipv6Addr>().is_err() {
        return Err(Flaw::at(
            base + 1,
            format!("'{text}' is not an IPv6 address"),
        ));
    }
    Ok(chars.iter().collect())
}

fn parse_port(chars: &[char], base: usize) -> Result<u16, Flaw> {
    let text: String = chars.iter().collect();
    if text.is_empty() {
        return Err(Flaw::at(base + 1, "empty port after ':'"));
    }
    if !chars.iter().all(char::is_ascii_digit) {
        return Err(Flaw::at(base + 1, format!("port '{text}' is not a number")));
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(Flaw::at(
            base + 1,
            format!("port {text} out of range 1-65535"),
        )),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match self.port {
            Some(port) if self.host.contains(':') => write!(f, "[{}]:{port}", self.host),
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl FromStr for Target {
    type Err = PatternError;

    fn from_str(word: &str) -> Result<Target, PatternError> {
        Target::parse(word)
    }
}

/// Splits a list at top-level commas (commas inside [] belong to ranges), trims whitespace, skips
/// empty elements, and parses each element: "@name" is a group; everything else is expanded
/// (cartesian product of all ranges, left to right) and each word parsed as a Target.
///
/// Errors name the element, trimmed, with a column inside it.
pub fn parse_list(list: &str) -> Result<Vec<Pattern>, PatternError> {
    split_list(list)
        .into_iter()
        .map(str::trim)
        .filter(|element| !element.is_empty())
        .map(parse_element)
        .collect()
}

/// Splits at commas outside brackets, without trimming.
pub fn split_list(list: &str) -> Vec<&str> {
    let mut elements = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                elements.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    elements.push(&list[start..]);
    elements
}

fn parse_element(element: &str) -> Result<Pattern, PatternError> {
    if let Some(name) = element.strip_prefix('@') {
        return parse_group(name).map_err(|f| f.within(element));
    }
    let segments = template(element)?;
    let hosts = words(&segments)
        .iter()
        .enumerate()
        .map(|(index, word)| {
            Target::parse(word).map_err(|error| {
                // The word is not what the operator typed, so point into the element instead.
                let columns = columns_of_word(&segments, index);
                let column = error.column.checked_sub(1).and_then(|i| columns.get(i));
                let end = element.chars().count() + 1;
                Flaw::at(column.copied().unwrap_or(end), error.reason).within(element)
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Pattern::Hosts(hosts))
}

/// Checks a group name; columns count the leading '@'.
fn parse_group(name: &str) -> Result<Pattern, Flaw> {
    if name.is_empty() {
        return Err(Flaw::at(2, "empty group name after '@'"));
    }
    for (i, c) in name.chars().enumerate() {
        if c == '[' {
            return Err(Flaw::at(i + 2, "a group reference cannot contain a range"));
        }
        if !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(Flaw::at(
                i + 2,
                format!("invalid character '{c}' in group name"),
            ));
        }
    }
    Ok(Pattern::Group(name.to_string()))
}

/// Expands the ranges of one element into words, without parsing them as targets.
pub fn expand(element: &str) -> Result<Vec<String>, PatternError> {
    Ok(words(&template(element)?))
}

/// An element cut into literal text and ranges, each remembering its column for error messages.
enum Segment {
    Literal { column: usize, text: String },
    Range { column: usize, values: Vec<String> },
}

/// One `N` or `A-B` item of a range; `width` is 0 when the numbers are not zero-padded.
struct Item {
    low: u64,
    high: u64,
    width: usize,
}

fn template(element: &str) -> Result<Vec<Segment>, PatternError> {
    let chars: Vec<char> = element.chars().collect();
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut literal_column = 1;
    let mut total: u128 = 1;
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ']' {
            return Err(Flaw::at(i + 1, "stray ']'").within(element));
        }
        if chars[i] != '[' {
            if literal.is_empty() {
                literal_column = i + 1;
            }
            literal.push(chars[i]);
            i += 1;
            continue;
        }
        let close = find_close(&chars, i).map_err(|f| f.within(element))?;
        let inner = &chars[i + 1..close];
        // Ranges hold only digits, ',' and '-', so brackets holding ':' are an IPv6 address such
        // as `[::1]`, kept whole for Target::parse.
        if inner.contains(&':') {
            if literal.is_empty() {
                literal_column = i + 1;
            }
            literal.extend(&chars[i..=close]);
            i = close + 1;
            continue;
        }
        let items = parse_range(inner, i).map_err(|f| f.within(element))?;
        let count: u128 = items
            .iter()
            .map(|item| u128::from(item.high - item.low) + 1)
            .sum();
        total = total.saturating_mul(count);
        if total > MAX_WORDS as u128 {
            let reason = format!("expands to more than {MAX_WORDS} targets");
            return Err(Flaw::at(i + 1, reason).within(element));
        }
        if !literal.is_empty() {
            let text = std::mem::take(&mut literal);
            segments.push(Segment::Literal {
                column: literal_column,
                text,
            });
        }
        let values = items
            .iter()
            .flat_map(|item| (item.low..=item.high).map(|n| format!("{n:0w$}", w = item.width)))
            .collect();
        segments.push(Segment::Range {
            column: i + 1,
            values,
        });
        i = close + 1;
    }
    if !literal.is_empty() {
        segments.push(Segment::Literal {
            column: literal_column,
            text: literal,
        });
    }
    Ok(segments)
}

/// Finds the ']' closing the '[' at index `open`.
fn find_close(chars: &[char], open: usize) -> Result<usize, Flaw> {
    for (j, &c) in chars.iter().enumerate().skip(open + 1) {
        match c {
            ']' => return Ok(j),
            '[' => return Err(Flaw::at(j + 1, "nested '['")),
            _ => {}
        }
    }
    Err(Flaw::at(open + 1, "unclosed '['"))
}

/// Parses the inside of `[...]`; `open` is the index of the '['.
fn parse_range(inner: &[char], open: usize) -> Result<Vec<Item>, Flaw> {
    if inner.is_empty() {
        return Err(Flaw::at(open + 1, "empty range '[]'"));
    }
    let mut items = Vec::new();
    let mut start = open + 1;
    for piece in inner.split(|&c| c == ',') {
        items.push(parse_item(piece, start)?);
        start += piece.len() + 1;
    }
    Ok(items)
}

/// Parses `N` or `A-B`; `base` is the index of `chars[0]` in the element.
fn parse_item(chars: &[char], base: usize) -> Result<Item, Flaw> {
    if chars.is_empty() {
        return Err(Flaw::at(base + 1, "empty item in range"));
    }
    let dash = chars.iter().position(|&c| c == '-');
    let (low, high) = match dash {
        None => (chars, None),
        Some(d) => (&chars[..d], Some((&chars[d + 1..], base + d + 1))),
    };
    let (low_text, low_value, low_width) = parse_bound(low, base, "before '-'")?;
    let Some((high, high_base)) = high else {
        return Ok(Item {
            low: low_value,
            high: low_value,
            width: low_width,
        });
    };
    let (high_text, high_value, high_width) = parse_bound(high, high_base, "after '-'")?;
    if low_value > high_value {
        return Err(Flaw::at(
            base + 1,
            format!("reversed range {low_text}-{high_text}"),
        ));
    }
    if low_width > 0 && high_width > 0 && low_width != high_width {
        let reason = format!("bounds {low_text} and {high_text} are padded to different widths");
        return Err(Flaw::at(base + 1, reason));
    }
    Ok(Item {
        low: low_value,
        high: high_value,
        width: low_width.max(high_width),
    })
}

/// Parses one bound into its text, value and padded width (0 when not zero-padded).
fn parse_bound(chars: &[char], base: usize, place: &str) -> Result<(String, u64, usize), Flaw> {
    if chars.is_empty() {
        return Err(Flaw::at(base + 1, format!("missing number {place}")));
    }
    if let Some(i) = chars.iter().position(|c| !c.is_ascii_digit()) {
        return Err(Flaw::at(
            base + i + 1,
            format!("non-digit '{}' in range", chars[i]),
        ));
    }
    let text: String = chars.iter().collect();
    let Ok(value) = text.parse::<u64>() else {
        return Err(Flaw::at(base + 1, format!("number {text} is too large")));
    };
    // `01` fixes a width of two; `0` alone is just zero.
    let width = if text.len() > 1 && text.starts_with('0') {
        text.len()
    } else {
        0
    };
    Ok((text, value, width))
}

/// Renders every word of a template, leftmost range varying slowest.
fn words(segments: &[Segment]) -> Vec<String> {
    let sizes: Vec<usize> = segments
        .iter()
        .filter_map(|segment| match segment {
            Segment::Range { values, .. } => Some(values.len()),
            Segment::Literal { .. } => None,
        })
        .collect();
    let mut choices = vec![0; sizes.len()];
    let mut words = Vec::with_capacity(sizes.iter().product());
    loop {
        let mut word = String::new();
        let mut range = 0;
        for segment in segments {
            match segment {
                Segment::Literal { text, .. } => word.push_str(text),
                Segment::Range { values, .. } => {
                    word.push_str(&values[choices[range]]);
                    range += 1;
                }
            }
        }
        words.push(word);
        let mut r = sizes.len();
        loop {
            if r == 0 {
                return words;
            }
            r -= 1;
            choices[r] += 1;
            if choices[r] < sizes[r] {
                break;
            }
            choices[r] = 0;
        }
    }
}

/// The element column of each character of word number `index`; a digit from a range points at
/// its '['.
fn columns_of_word(segments: &[Segment], mut index: usize) -> Vec<usize> {
    let mut choices = Vec::new();
    for segment in segments.iter().rev() {
        if let Segment::Range { values, .. } = segment {
            choices.push(index % values.len());
            index /= values.len();
        }
    }
    let mut columns = Vec::new();
    for segment in segments {
        match segment {
            Segment::Literal { column, text } => {
                columns.extend((0..text.chars().count()).map(|i| column + i));
            }
            Segment::Range { column, values } => {
                let choice = choices.pop().unwrap_or(0);
                columns.extend(values[choice].chars().map(|_| *column));
            }
        }
    }
    columns
}

/// Shell-style glob (`*`, `?`) match of a host name, used by --exclude.
///
/// Letters match regardless of ASCII case, because DNS names are case-insensitive and an operator
/// excluding `WEB*` means web01 too.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    wildcard_match(
        pattern.to_ascii_lowercase().as_bytes(),
        name.to_ascii_lowercase().as_bytes(),
    )
}

/// OpenSSH's `match_pattern`, case-sensitive: `*` matches any run of bytes, `?` exactly one.
/// ssh config `Host` lines, known_hosts patterns and `--exclude` globs all match this way.
pub fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last '*' was seen and how much of the text it has swallowed; on a mismatch the
    // star swallows one more byte and matching resumes after it.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    star = Some((star_p, star_t + 1));
                    p = star_p + 1;
                    t = star_t + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests;
