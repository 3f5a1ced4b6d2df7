//! Argument parsing, number/time formatting and the CLI's error type.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `println!` that returns a [`CliError`] (from the enclosing function, with `?`) instead of
/// panicking when stdout is a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::util::CliError::from)?
    }};
}

/// `println!` that ignores a closed stdout: for reports of work that must go on regardless
/// (`shmq rm a b c | head -1` still removes all three).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// An error to print on stderr (`shmq: error: ...`, then an optional `hint:` line), exit 1.
#[derive(Debug)]
pub struct CliError {
    pub msg: String,
    pub hint: Option<String>,
    /// Writing to stdout failed because its reader closed it: exit quietly.
    pub broken_pipe: bool,
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    pub fn new(msg: impl Into<String>) -> CliError {
        CliError {
            msg: msg.into(),
            hint: None,
            broken_pipe: false,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl From<shmq::Error> for CliError {
    fn from(e: shmq::Error) -> CliError {
        let hint = match &e {
            shmq::Error::NotFound(_) => {
                Some("run `shmq ls` to see the queues on this machine".to_string())
            }
            shmq::Error::Incompatible { .. } => Some(
                "it was made by another shmq layout version or is not a shmq segment; \
                 inspect it with `shmq stat` or remove it with `shmq rm`"
                    .to_string(),
            ),
            shmq::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => Some(
                "the segment belongs to another user (mode 0600 by default): \
                 run as its owner or as root"
                    .to_string(),
            ),
            _ => None,
        };
        CliError {
            msg: e.to_string(),
            hint,
            broken_pipe: false,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        let mut c = CliError::new(format!("I/O error: {e}"));
        c.broken_pipe = e.kind() == std::io::ErrorKind::BrokenPipe;
        c
    }
}

/// A queue name as typed by the user. Also accepts the object's path as `ls /dev/shm`
/// shows it (`/dev/shm/shmq.NAME`).
pub fn parse_name(s: &str) -> Result<String, String> {
    let name = s
        .strip_prefix("/dev/shm/")
        .and_then(|f| f.strip_prefix(shmq::segment::PREFIX))
        .unwrap_or(s);
    shmq::segment::validate_name(name).map_err(|e| e.to_string())?;
    Ok(name.to_string())
}

/// `4096`, `64K`, `1M`, `1MiB`, `2G` (binary multiples; `B` and `iB` suffixes optional).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let num: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 64K, 1M, 1GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// `500ms`, `2s`, `1.5s`, `1m`, `250us`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    let bad = || format!("{s:?} is not a duration (examples: 500ms, 2s, 1.5s, 1m)");
    let x: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => x,
        "ms" => x / 1e3,
        "us" | "µs" => x / 1e6,
        "ns" => x / 1e9,
        "m" | "min" => x * 60.0,
        "h" => x * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Permission bits in octal (`600`, `0660`, `0o644`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0o");
    let m =
        u32::from_str_radix(t, 8).map_err(|_| format!("{s:?} is not an octal mode like 600"))?;
    if m > 0o777 {
        return Err(format!("mode {s} has bits outside 0777"));
    }
    Ok(m)
}

/// `512 B`, `4 KiB`, `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    trim_float(x, UNITS[u])
}

/// A rate of bytes per second: `12.5 MiB/s`.
pub fn byte_rate(x: f64) -> String {
    if x < 1024.0 {
        return format!("{x:.0} B/s");
    }
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

/// `1h02m`, `3m12s`, `45s`.
pub fn age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-11-28 15:40:00 UTC` for seconds since the Unix epoch.
pub fn utc(secs: u64) -> String {
    let (y, mo, d) = civil_from_days((secs / 86400) as i64);
    let t = secs % 86400;
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} UTC",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// `HH:MM:SS` (UTC) of now.
pub fn clock() -> String {
    let t = now_unix() % 86400;
    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Lowercase hex of `bytes` into `out` (replacing its contents).
pub fn to_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// Bytes from hex text; ASCII whitespace is ignored.
pub fn from_hex(text: &[u8]) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    let val = |d: u8| -> Result<u8, String> {
        (d as char)
            .to_digit(16)
            .map(|v| v as u8)
            .ok_or_else(|| format!("{:?} is not a hex digit", d as char))
    };
    digits
        .chunks(2)
        .map(|p| Ok(val(p[0])? << 4 | val(p[1])?))
        .collect()
}

/// Name of a codec id recorded in the header.
pub fn codec_name(id: u32) -> &'static str {
    match id {
        shmq::segment::codec_id::RAW => "raw",
        shmq::segment::codec_id::POSTCARD => "postcard",
        shmq::segment::codec_id::POD => "pod",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("1X").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_name("/dev/shm/shmq.jobs"), Ok("jobs".into()));
        assert_eq!(parse_name("shmq.jobs"), Ok("shmq.jobs".into()));
        assert_eq!(parse_name("jobs"), Ok("jobs".into()));
        assert!(parse_name("a/b").is_err());
        let mut h = Vec::new();
        to_hex(&[0x00, 0x1f, 0xab, 0xff], &mut h);
        assert_eq!(h, b"001fabff");
        assert_eq!(from_hex(b"00 1f AB ff"), Ok(vec![0x00, 0x1f, 0xab, 0xff]));
        assert!(from_hex(b"abc").is_err());
        assert!(from_hex(b"zz").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1 << 20), "1 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(count(12_345.0), "12.3k");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_873_200), "2026-11-28 13:40:00 UTC");
        assert_eq!(age(192), "3m12s");
    }
}
