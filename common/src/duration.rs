//! Durations as operators write them: `30s`, `250ms`, `1m30s`, `2h`, or bare seconds (`10`).

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad duration '{input}': {reason} (examples: 30s, 250ms, 1m30s)")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses `30s`, `250ms`, `1m30s`, `1.5s`, `2h`, `1d`; a bare number is seconds.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(error("it is empty"));
    }
    // A bare number is seconds, written plainly: Rust would also read `1e3`, `inf` and `NaN`.
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain = digits.chars().all(|c| c.is_ascii_digit() || c == '.');
    if plain && let Ok(seconds) = text.parse::<f64>() {
        let duration =
            seconds_to_duration(seconds).ok_or_else(|| error("it is negative or too large"))?;
        return at_least_a_millisecond(duration).map_err(error);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    // Each unit once, from the largest down (`1h30m`): `5m5m` is a typo, not 10 minutes.
    let mut last_unit = f64::INFINITY;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(error("expected a number"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| error("bad number"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "" => return Err(error("a unit must follow each number after the first")),
            _ => return Err(error("unknown unit")),
        };
        if unit >= last_unit {
            return Err(error("units go from the largest down, each once"));
        }
        last_unit = unit;
        rest = &rest[unit_len..];
        total += seconds_to_duration(number * unit).ok_or_else(|| error("it is too large"))?;
    }
    at_least_a_millisecond(total).map_err(error)
}

/// Durations are kept to the millisecond, where 0 means none (no timeout): a duration that is
/// not 0 but less than 1ms would become none.
fn at_least_a_millisecond(duration: Duration) -> Result<Duration, &'static str> {
    if duration > Duration::ZERO && duration < Duration::from_millis(1) {
        return Err("it is not 0 but less than 1ms, the smallest duration kept");
    }
    Ok(duration)
}

/// Writes a duration as `parse_duration` reads it, to the millisecond below a second and to the
/// second above: `250ms`, `1.5s`, `1m30s`, `2h`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let seconds = (millis + 500) / 1000;
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 {
        text.push_str(&format!("{seconds}s"));
    }
    let tenths = (millis + 50) / 100;
    if millis < 10_000 && !tenths.is_multiple_of(10) {
        // Tenths matter in a short duration: `1.5s`, not `2s`.
        text = format!("{}.{}s", tenths / 10, tenths % 10);
    }
    text
}

fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<Duration, &str>) {
        let actual = parse_duration(input).map_err(|e| e.to_string());
        assert_eq!(actual, expected.map_err(str::to_string), "input {input:?}");
    }

    #[test]
    fn durations_are_written_as_they_are_read() {
        for (millis, text) in [
            (250, "250ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (1001, "1s"),
            (9_960, "10s"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (3_600_400, "1h"),
            (7_261_000, "2h1m1s"),
        ] {
            let duration = Duration::from_millis(millis);
            assert_eq!(format_duration(duration), text);
            let read = parse_duration(text).unwrap();
            assert!(read.abs_diff(duration) < Duration::from_secs(1), "{text}");
        }
    }

    #[test]
    fn durations() {
        check("30s", Ok(Duration::from_secs(30)));
        check("10", Ok(Duration::from_secs(10)));
        check("1.5", Ok(Duration::from_millis(1500)));
        check("250ms", Ok(Duration::from_millis(250)));
        check("1m30s", Ok(Duration::from_secs(90)));
        check("2h", Ok(Duration::from_secs(7200)));
        check("1d2h", Ok(Duration::from_secs(93_600)));
        check(
            "5m5m",
            Err(
                "bad duration '5m5m': units go from the largest down, each once (examples: 30s, 250ms, 1m30s)",
            ),
        );
        check(
            "30s1m",
            Err(
                "bad duration '30s1m': units go from the largest down, each once (examples: 30s, 250ms, 1m30s)",
            ),
        );
        check("0.5s", Ok(Duration::from_millis(500)));
        check(
            "",
            Err("bad duration '': it is empty (examples: 30s, 250ms, 1m30s)"),
        );
        check(
            "10x",
            Err("bad duration '10x': unknown unit (examples: 30s, 250ms, 1m30s)"),
        );
        check(
            "-1",
            Err("bad duration '-1': it is negative or too large (examples: 30s, 250ms, 1m30s)"),
        );
        check(
            "s",
            Err("bad duration 's': expected a number (examples: 30s, 250ms, 1m30s)"),
        );
        // Only plain numbers: Rust's float syntax is not a duration's.
        check(
            "1e3",
            Err("bad duration '1e3': unknown unit (examples: 30s, 250ms, 1m30s)"),
        );
        check(
            "inf",
            Err("bad duration 'inf': expected a number (examples: 30s, 250ms, 1m30s)"),
        );
        // Below a millisecond would be kept as 0, which means none.
        for tiny in ["0.0001", "0.5ms"] {
            check(
                tiny,
                Err(&format!(
                    "bad duration '{tiny}': it is not 0 but less than 1ms, the smallest duration kept (examples: 30s, 250ms, 1m30s)"
                )),
            );
        }
        check("0", Ok(Duration::ZERO));
        check("1ms", Ok(Duration::from_millis(1)));
        check(
            "1m30",
            Err(
                "bad duration '1m30': a unit must follow each number after the first (examples: 30s, 250ms, 1m30s)",
            ),
        );
    }
}
