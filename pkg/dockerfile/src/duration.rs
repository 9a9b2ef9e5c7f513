//! Go's `time.ParseDuration` for HEALTHCHECK's options.

use std::time::Duration;

/// Parses `300ms`, `1.5h`, `2h45m`, `0`: decimal numbers each with a unit
/// of ns, us (µs), ms, s, m or h. Negative durations are refused.
pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err("not a positive duration".into());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or("missing unit in duration")?;
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid number {:?}", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err("missing unit in duration".into()),
            u => return Err(format!("unknown unit {u:?} in duration")),
        };
        rest = &rest[unit_len..];
        total += number * nanos_per_unit;
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("0", Some(Duration::ZERO)),
            ("30s", Some(Duration::from_secs(30))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("1.5h", Some(Duration::from_secs(5400))),
            ("500ms", Some(Duration::from_millis(500))),
            ("10us", Some(Duration::from_micros(10))),
            ("7ns", Some(Duration::from_nanos(7))),
            ("", None),
            ("5", None),
            ("-1s", None),
            ("3d", None),
            ("s", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_go_duration(s).ok(), want, "{s:?}");
        }
    }
}
