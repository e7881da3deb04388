//! Instants as Litestream shows them: RFC 3339 in UTC, from milliseconds since the epoch.
//! (No calendar crate: the civil-date arithmetic is a few lines.)

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-21T09:30:00.123Z` (fraction omitted when zero, as Go's RFC3339Nano does).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let frac = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let mut s = format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}");
    if frac != 0 {
        let f = format!("{frac:03}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_253_400_120), "2026-11-21T09:30:00.12Z");
        let ns = 1_795_253_412_393_457_000;
        assert_eq!(rfc3339_ns(ns), "2026-11-21T09:30:12.393457Z");
        assert_eq!(parse_rfc3339_ns("2026-11-21T09:30:12.393457Z"), Some(ns));
        assert_eq!(
            rfc3339_ns(1_795_253_400_000 * NS_PER_MS),
            "2026-11-21T09:30:00Z"
        );
        assert_eq!(
            parse_rfc3339_ns("2026-11-21T11:30:12.5+02:00"),
            Some(1_795_253_412_500 * NS_PER_MS)
        );
        assert_eq!(days_from_civil(2026, 11, 21), 20_778);
        assert_eq!(civil_from_days(20_778), (2026, 11, 21));
        for d in [-800_000i64, -1, 0, 59, 60, 11_016, 20_778, 2_000_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}

/// What a user asked to look at: the newest state, or the state at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instant {
    Latest,
    /// Nanoseconds since the epoch (as precise as it was given: a state is shown at an
    /// instant when its file's millisecond timestamp is strictly before it).
    At(i64),
}

/// Nanoseconds in a millisecond.
pub const NS_PER_MS: i64 = 1_000_000;
const NS_PER_S: i64 = 1_000_000_000;

/// `2026-11-21T09:30:00.123456789Z`: RFC 3339 with as many fraction digits as needed (Go's
/// RFC3339Nano), from nanoseconds since the epoch.
pub fn rfc3339_ns(ns: i64) -> String {
    let ms = ns.div_euclid(NS_PER_MS);
    let sub = ns.rem_euclid(NS_PER_MS);
    let base = rfc3339(ms - ms.rem_euclid(1000));
    let frac = (ms.rem_euclid(1000)) * NS_PER_MS + sub;
    if frac == 0 {
        return base;
    }
    let digits = format!("{frac:09}");
    format!(
        "{}.{}Z",
        &base[..base.len() - 1],
        digits.trim_end_matches('0')
    )
}

/// Parses the instants the Go extension accepts, and a few more:
/// `LATEST`; RFC 3339 with or without fraction and offset (`2026-11-21T09:30:00Z`,
/// `2026-11-21 09:30:00.5+02:00`, no offset = UTC); a date (`2026-11-21`, midnight UTC);
/// `now`, `yesterday`, `N unit(s) ago` (seconds, minutes, hours, days, weeks); and a negative
/// Go duration relative to now (`-1h`, `-90s`, `-1h30m`).
pub fn parse_instant(s: &str, now_ms: i64) -> Option<Instant> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let at_ms = |ms: i64| Some(Instant::At(ms * NS_PER_MS));
    match lower.as_str() {
        "latest" => return Some(Instant::Latest),
        "now" => return at_ms(now_ms),
        "yesterday" => return at_ms(now_ms - 86_400_000),
        _ => {}
    }
    if let Some(d) = lower
        .strip_prefix('-')
        .and_then(crate::units::parse_duration)
    {
        return Some(Instant::At(now_ms * NS_PER_MS - d.as_nanos() as i64));
    }
    if let Some(ago) = lower.strip_suffix(" ago") {
        let mut parts = ago.split_whitespace();
        let n: f64 = parts.next()?.parse().ok()?;
        let unit = parts.next()?;
        if parts.next().is_some() || !n.is_finite() || n < 0.0 {
            return None;
        }
        let ms = match unit.trim_end_matches('s') {
            "second" | "sec" | "" => 1_000.0,
            "minute" | "min" => 60_000.0,
            "hour" | "hr" | "h" => 3_600_000.0,
            "day" | "d" => 86_400_000.0,
            "week" | "w" => 604_800_000.0,
            _ => return None,
        };
        return at_ms(now_ms - (n * ms) as i64);
    }
    parse_rfc3339_ns(t).map(Instant::At)
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.fraction]]][Z|±HH:MM]` → ns since the epoch (UTC if no
/// offset; fraction digits past nine dropped).
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ns = days_from_civil(y, mo as u32, d as u32) * 86_400 * NS_PER_S;
    let mut i = 10;
    if i < b.len() && (b[i] == b'T' || b[i] == b't' || b[i] == b' ') {
        let (h, mi) = (num(i + 1, 2)?, num(i + 4, 2)?);
        if b.get(i + 3) != Some(&b':') || h > 23 || mi > 59 {
            return None;
        }
        ns += (h * 3600 + mi * 60) * NS_PER_S;
        i += 6;
        if b.get(i) == Some(&b':') {
            let sec = num(i + 1, 2)?;
            if sec > 60 {
                return None;
            }
            ns += sec * NS_PER_S;
            i += 3;
            if b.get(i) == Some(&b'.') {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                let frac = &s[i + 1..i + 1 + digits];
                let padded: String = frac.chars().chain("000000000".chars()).take(9).collect();
                ns += padded.parse::<i64>().ok()?;
                i += 1 + digits;
            }
        }
    }
    match &s[i..] {
        "" | "Z" | "z" => Some(ns),
        zone if zone.len() == 6
            && (zone.starts_with('+') || zone.starts_with('-'))
            && &zone[3..4] == ":" =>
        {
            let (zh, zm) = (num(i + 1, 2)?, num(i + 4, 2)?);
            let offset = (zh * 60 + zm) * 60 * NS_PER_S;
            Some(if zone.starts_with('+') {
                ns - offset
            } else {
                ns + offset
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod instant_tests {
    use super::*;

    const NOW: i64 = 1_795_253_400_000; // 2026-11-21T09:30:00Z

    /// An instant given in milliseconds.
    fn at(ms: i64) -> Instant {
        Instant::At(ms * NS_PER_MS)
    }

    #[test]
    fn absolute() {
        assert_eq!(parse_instant("2026-11-21T09:30:00Z", NOW), Some(at(NOW)));
        assert_eq!(
            parse_instant("2026-11-21T09:30:00.25Z", NOW),
            Some(at(NOW + 250))
        );
        assert_eq!(
            parse_instant("2026-11-21T11:30:00+02:00", NOW),
            Some(at(NOW))
        );
        assert_eq!(parse_instant("2026-11-21 09:30:00", NOW), Some(at(NOW)));
        assert_eq!(
            parse_instant("2026-11-21T09:30:00.123456789Z", NOW),
            Some(Instant::At(NOW * NS_PER_MS + 123_456_789))
        );
        assert_eq!(
            parse_rfc3339_ns(&rfc3339(NOW + 7)),
            Some((NOW + 7) * NS_PER_MS)
        );
        assert_eq!(parse_instant("2026-11-21", NOW), Some(at(NOW - 34_200_000)));
    }

    #[test]
    fn relative() {
        assert_eq!(parse_instant("LATEST", NOW), Some(Instant::Latest));
        assert_eq!(parse_instant("latest", NOW), Some(Instant::Latest));
        assert_eq!(parse_instant("5 minutes ago", NOW), Some(at(NOW - 300_000)));
        assert_eq!(parse_instant("1 hour ago", NOW), Some(at(NOW - 3_600_000)));
        assert_eq!(parse_instant("2 hours ago", NOW), Some(at(NOW - 7_200_000)));
        assert_eq!(parse_instant("30 seconds ago", NOW), Some(at(NOW - 30_000)));
        assert_eq!(parse_instant("yesterday", NOW), Some(at(NOW - 86_400_000)));
        assert_eq!(parse_instant("-1h", NOW), Some(at(NOW - 3_600_000)));
        assert_eq!(parse_instant("-1m30s", NOW), Some(at(NOW - 90_000)));
        assert_eq!(parse_instant("now", NOW), Some(at(NOW)));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "soon",
            "2026-13-01",
            "2026-11-21T25:00:00Z",
            "5 fortnights ago",
            "-abc",
            "2026-11-21T09:30:00+0200",
        ] {
            assert_eq!(parse_instant(bad, NOW), None, "{bad}");
        }
    }
}
