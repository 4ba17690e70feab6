//! Byte sizes as operators write them: `1MiB`, `64KiB`, `512K`, `1M`, `100` (bytes).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad size '{input}': {reason} (examples: 1MiB, 64KiB, 4096)")]
pub struct SizeError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses a size; `K`, `M`, `G` and their `KiB`-style spellings are powers of 1024.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let error = |reason| SizeError {
        input: input.to_string(),
        reason,
    };
    let text = input.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return Err(error("expected a number"));
    }
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| error("the number is too large"))?;
    let unit: u64 = match text[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(error("unknown unit")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| error("the number is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<u64, &str>) {
        let actual = parse_size(input).map_err(|e| e.to_string());
        assert_eq!(actual, expected.map_err(str::to_string), "input {input:?}");
    }

    #[test]
    fn sizes() {
        check("100", Ok(100));
        check("1MiB", Ok(1 << 20));
        check("64KiB", Ok(64 << 10));
        check("512K", Ok(512 << 10));
        check("2g", Ok(2 << 30));
        check("0", Ok(0));
        check(
            "MiB",
            Err("bad size 'MiB': expected a number (examples: 1MiB, 64KiB, 4096)"),
        );
        check(
            "1TB",
            Err("bad size '1TB': unknown unit (examples: 1MiB, 64KiB, 4096)"),
        );
        check(
            "99999999999999999999",
            Err(
                "bad size '99999999999999999999': the number is too large (examples: 1MiB, 64KiB, 4096)",
            ),
        );
    }
}
