//! UTC timestamps for run ids (`20261127T065812Z`) and journal records
//! (`2026-11-27T06:58:12.345Z`), without a date crate: the civil date is a few lines of
//! arithmetic (Howard Hinnant's `civil_from_days`).

use std::time::{SystemTime, UNIX_EPOCH};

/// One instant, in the two forms the journal uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// `20261127T065812Z`: sorts as it reads, safe in a file name.
    pub compact: String,
    /// RFC 3339 with milliseconds: `2026-11-27T06:58:12.345Z`.
    pub rfc3339: String,
}

pub fn now() -> Stamp {
    stamp(SystemTime::now())
}

/// A clock before 1970 reads as 1970: the journal needs an order, not archaeology.
pub fn stamp(time: SystemTime) -> Stamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let of_day = seconds % 86_400;
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    Stamp {
        compact: format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z"),
        rfc3339: format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
            since.subsec_millis()
        ),
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shifted so that eras of 400 years start on 0000-03-01, which puts the leap day last.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stamps() {
        let check = |seconds: u64, millis: u64, compact: &str, rfc3339: &str| {
            let time = UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis);
            assert_eq!(
                stamp(time),
                Stamp {
                    compact: compact.to_string(),
                    rfc3339: rfc3339.to_string()
                },
                "{seconds}"
            );
        };
        check(0, 0, "19700101T000000Z", "1970-01-01T00:00:00.000Z");
        check(
            951_782_400,
            7,
            "20000229T000000Z",
            "2000-02-29T00:00:00.007Z",
        );
        check(
            1_709_251_199,
            999,
            "20240229T235959Z",
            "2024-02-29T23:59:59.999Z",
        );
        check(
            1_795_762_692,
            345,
            "20261127T065812Z",
            "2026-11-27T06:58:12.345Z",
        );
        check(
            4_102_444_800,
            0,
            "21000101T000000Z",
            "2100-01-01T00:00:00.000Z",
        );
    }
}
