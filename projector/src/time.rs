//! Times as people read and type them: the stores keep epoch milliseconds (and `xclog ...
//! --json` prints them as they are); human output shows ISO-8601 UTC with milliseconds, and
//! the time flags take either form.

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// `ms` since the Unix epoch as ISO-8601 UTC with milliseconds: `2026-01-01T00:00:00.002Z`.
/// Outside years 0..=9999 (no runtime writes such a time) the number is printed as it is.
pub fn iso(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return format!("{ms} ms since 1970");
    }
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Parses a time flag: epoch milliseconds (`1767225600000`) or ISO-8601 UTC
/// (`2026-01-01T00:00:00Z`, `2026-01-01T00:00:00.250Z`, `2026-01-01`).
pub fn parse(value: &str) -> Result<i64, String> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    parse_iso(value).ok_or_else(|| {
        format!(
            "{value:?} is not a time: give epoch milliseconds (1767225600000) or ISO-8601 UTC \
             (2026-01-01T00:00:00Z, 2026-01-01T00:00:00.250Z or 2026-01-01)"
        )
    })
}

fn parse_iso(value: &str) -> Option<i64> {
    let (date, time) = match value.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t.strip_suffix(['Z', 'z'])?)),
        None => (value, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = number(parts.next()?, 4)?;
    let month: i64 = number(parts.next()?, 2)?;
    let day: i64 = number(parts.next()?, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * DAY_MS;
    if let Some(time) = time {
        let (hms, fraction) = match time.split_once('.') {
            Some((hms, f)) => (hms, Some(f)),
            None => (time, None),
        };
        let mut parts = hms.splitn(3, ':');
        let h: i64 = number(parts.next()?, 2)?;
        let m: i64 = number(parts.next()?, 2)?;
        let s: i64 = number(parts.next()?, 2)?;
        if h > 23 || m > 59 || s > 59 {
            return None;
        }
        ms += ((h * 60 + m) * 60 + s) * 1000;
        if let Some(f) = fraction {
            // Milliseconds: 1 to 3 digits (`.5` is 500 ms).
            if f.is_empty() || f.len() > 3 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            ms += f.parse::<i64>().ok()? * 10_i64.pow(3 - f.len() as u32);
        }
    }
    Some(ms)
}

/// Exactly `digits` ASCII digits.
fn number(s: &str, digits: usize) -> Option<i64> {
    (s.len() == digits && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian `(year, month, day)` of a count of days since 1970-01-01 (the
/// inverse of `days_from_civil`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants_print_as_iso_utc_with_milliseconds() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_767_225_600_002), "2026-01-01T00:00:00.002Z");
        assert_eq!(iso(951_782_400_000 - 1), "2000-02-28T23:59:59.999Z");
        assert_eq!(iso(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(iso(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn time_flags_take_epoch_milliseconds_or_iso_and_refuse_anything_else_naming_both_forms() {
        assert_eq!(parse("1767225600000"), Ok(1_767_225_600_000));
        assert_eq!(parse("2026-01-01T00:00:00Z"), Ok(1_767_225_600_000));
        assert_eq!(parse("2026-01-01T00:00:00.25Z"), Ok(1_767_225_600_250));
        assert_eq!(parse("2026-01-01"), Ok(1_767_225_600_000));
        for bad in [
            "yesterday",
            "2026-02-30",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.1234Z",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(
                error.contains(bad) && error.contains("epoch milliseconds"),
                "{error}"
            );
        }
    }

    proptest! {
        #[test]
        fn every_printed_time_parses_back_to_the_same_millisecond(
            ms in -62_167_219_200_000_i64..253_402_300_800_000
        ) {
            prop_assert_eq!(parse(&iso(ms)), Ok(ms));
        }
    }
}
