//! Numbers, sizes, rates and times as people read them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `512 B`, `4.0 KiB`, `1.5 MiB` (binary units).
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// A rate of bytes per second: `12.5 MiB/s`.
pub fn byte_rate(x: f64) -> String {
    format!("{}/s", bytes(x as u64))
}

/// A count with a metric suffix: `950`, `12.3k`, `4.56M`.
pub fn count(x: f64) -> String {
    if x < 1000.0 {
        format!("{x:.0}")
    } else if x < 1e6 {
        trim_float(x / 1e3, "k").replace(' ', "")
    } else if x < 1e9 {
        trim_float(x / 1e6, "M").replace(' ', "")
    } else {
        trim_float(x / 1e9, "G").replace(' ', "")
    }
}

fn trim_float(x: f64, unit: &str) -> String {
    let s = if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s} {unit}")
}

/// An integer with thousands separators: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `part` as a share of `whole`: `0%`, `<1%`, `42%`.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0%".into();
    }
    let p = part as f64 * 100.0 / whole as f64;
    if p > 0.0 && p < 1.0 {
        "<1%".into()
    } else {
        format!("{p:.0}%")
    }
}

pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A latency: `850 ns`, `12.3 µs`, `4.1 ms`.
pub fn latency(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        trim_float(ns / 1e3, "µs")
    } else if ns < 1e9 {
        trim_float(ns / 1e6, "ms")
    } else {
        trim_float(ns / 1e9, "s")
    }
}

/// `1h 2m 5s`, `3m 12s`, `45s`.
pub fn age(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Whole seconds from `unix_secs` (seconds since the Unix epoch) to now; 0 for a time
/// still to come.
pub fn secs_since(unix_secs: u64) -> u64 {
    (UNIX_EPOCH + Duration::from_secs(unix_secs))
        .elapsed()
        .map_or(0, |d| d.as_secs())
}

/// `2026-11-28T15:40:00Z` for seconds since the Unix epoch.
pub fn utc(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// `HH:MM:SS` (UTC) of now.
pub fn clock() -> String {
    let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    t.get(11..19).unwrap_or(&t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1 << 20), "1.0 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(count(12_345.0), "12.3k");
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_873_200), "2026-11-28T13:40:00Z");
        assert_eq!(age(192), "3m 12s");
        assert_eq!(percent(1, 1000), "<1%");
        assert_eq!(percent(0, 0), "0%");
        assert_eq!(secs_since(u64::MAX / 2), 0);
        assert!(secs_since(0) > 1_700_000_000);
    }
}
