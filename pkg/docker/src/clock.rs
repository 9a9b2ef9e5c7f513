//! Times as dockerd writes and reads them: Go's RFC3339Nano, its zero
//! time, `since`/`until` parameters, and the CLI's human durations.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Go's `time.Time{}` in RFC3339: what dockerd shows for "never".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Nanoseconds since the epoch in RFC3339 with trailing zeros of the
/// fraction dropped (Go's RFC3339Nano); 0 is Go's zero time.
pub fn rfc3339_nano(ns: i64) -> String {
    if ns <= 0 {
        return ZERO_TIME.to_string();
    }
    OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ZERO_TIME.to_string())
}

/// A `since`/`until` value: unix seconds with an optional fraction
/// (`1700000000.5`, what the CLI sends) or an RFC3339 time. `None` when
/// it is neither.
pub fn parse_timestamp_ns(value: &str) -> Option<i64> {
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Some(t.unix_timestamp_nanos() as i64);
    }
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// go-units' `HumanDuration`, as `docker ps` shows ages ("Up 2 seconds").
pub fn human_duration(ns: i64) -> String {
    let seconds = ns / 1_000_000_000;
    let minutes = seconds / 60;
    let hours = ((ns as f64) / 3.6e12 + 0.5) as i64;
    match () {
        _ if seconds < 1 => "Less than a second".to_string(),
        _ if seconds == 1 => "1 second".to_string(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

pub fn now_ns() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp_nanos() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_like_go() {
        assert_eq!(rfc3339_nano(0), ZERO_TIME);
        assert_eq!(
            rfc3339_nano(1_795_371_828_304_937_015),
            "2026-11-22T18:23:48.304937015Z"
        );
        assert_eq!(
            rfc3339_nano(1_795_371_828_000_000_000),
            "2026-11-22T18:23:48Z"
        );
        assert_eq!(
            rfc3339_nano(1_795_371_828_300_000_000),
            "2026-11-22T18:23:48.3Z"
        );
    }

    #[test]
    fn timestamps_parse_in_both_forms() {
        assert_eq!(parse_timestamp_ns("12.5"), Some(12_500_000_000));
        assert_eq!(parse_timestamp_ns("12"), Some(12_000_000_000));
        assert_eq!(
            parse_timestamp_ns("2026-11-22T18:23:48.3Z"),
            Some(1_795_371_828_300_000_000)
        );
        assert_eq!(parse_timestamp_ns("10m"), None);
    }

    #[test]
    fn durations_read_like_the_cli() {
        let s = 1_000_000_000;
        assert_eq!(human_duration(s / 2), "Less than a second");
        assert_eq!(human_duration(2 * s), "2 seconds");
        assert_eq!(human_duration(61 * s), "About a minute");
        assert_eq!(human_duration(3600 * s), "About an hour");
        assert_eq!(human_duration(5 * 3600 * s), "5 hours");
        assert_eq!(human_duration(3 * 24 * 3600 * s), "3 days");
    }
}
