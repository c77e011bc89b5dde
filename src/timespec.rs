//! Time arguments of the CLI (`--since`, `--until`): an RFC 3339 timestamp
//! (`2026-07-01T00:00:00Z`), a date (`2026-07-01`, midnight UTC), or a
//! duration back from now (`90s`, `30m`, `24h`, `7d`, `2w`). Parsed to Unix
//! seconds.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Parses a time argument relative to `now` (Unix seconds).
pub fn parse(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Some((num, secs)) = split_duration(s) {
        return num
            .checked_mul(secs)
            .and_then(|d| now.checked_sub(d))
            .ok_or_else(|| format!("{s:?} reaches too far back"));
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    if let Ok(t) = OffsetDateTime::parse(&format!("{s}T00:00:00Z"), &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    Err(format!(
        "{s:?} is not a time: use RFC 3339 (2026-07-01T00:00:00Z), a date (2026-07-01) or a duration back from now (30m, 24h, 7d, 2w)"
    ))
}

/// Parses an RFC 3339 timestamp to Unix seconds (None when it is not one).
pub fn rfc3339_to_unix(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Parses an RFC 3339 timestamp to Unix seconds with its fraction.
pub fn rfc3339_to_unix_f64(s: &str) -> Option<f64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
}

/// The current time in Unix seconds with its fraction.
pub fn now_f64() -> f64 {
    OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9
}

/// Formats Unix seconds as RFC 3339 (UTC).
pub fn unix_to_rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// `24h` → (24, seconds per hour).
fn split_duration(s: &str) -> Option<(i64, i64)> {
    let unit_at = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(unit_at);
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    num.parse().ok().map(|n| (n, secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_timestamps_and_dates() {
        let now = 1_800_000_000;
        assert_eq!(parse("24h", now), Ok(now - 86_400));
        assert_eq!(parse("7d", now), Ok(now - 7 * 86_400));
        assert_eq!(parse("90s", now), Ok(now - 90));
        assert_eq!(parse("2026-07-01T00:00:00Z", now), Ok(1_782_864_000));
        assert_eq!(parse("2026-07-01T02:00:00+02:00", now), Ok(1_782_864_000));
        assert_eq!(parse("2026-07-01", now), Ok(1_782_864_000));
        assert!(parse("yesterday", now).unwrap_err().contains("not a time"));
        assert!(parse("7y", now).is_err());
        assert!(parse(&format!("{}w", i64::MAX), now).is_err());
        assert_eq!(
            rfc3339_to_unix("2026-07-01T00:00:00.123456Z"),
            Some(1_782_864_000)
        );
        assert_eq!(unix_to_rfc3339(1_782_864_000), "2026-07-01T00:00:00Z");
    }
}
