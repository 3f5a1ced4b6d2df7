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
        .and_then(|f| f.strip_prefix(shmq::internal::PREFIX))
        .unwrap_or(s);
    shmq::internal::validate_name(name).map_err(|e| e.to_string())?;
    Ok(name.to_string())
}

/// `4096`, `64K`, `1M`, `1MiB`, `1.5G` (K, M, G, T are binary multiples: 64K = 65536).
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|e| format!("{s:?} is not a size ({e}; examples: 4096, 64K, 1M, 1GiB)"))
}

/// `500ms`, `2s`, `1m 30s`, `250us` (humantime's format); a bare number is seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 2s, 1m)"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{s:?} is not a duration ({e}; examples: 500ms, 2s, 1m)"))
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

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

/// Lowercase hex of `bytes` into `out` (replacing its contents).
pub fn to_hex(bytes: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(bytes.len() * 2, 0);
    hex::encode_to_slice(bytes, out).expect("the buffer is twice the input");
}

/// Bytes from hex text; ASCII whitespace is ignored.
pub fn from_hex(text: &[u8]) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    hex::decode(digits).map_err(|e| e.to_string())
}

/// This process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The user who owns a named queue's object, if it exists.
pub fn owner(name: &str) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(shmq::internal::shm_path(name))
        .ok()
        .map(|m| m.uid())
}

/// A user's login name, or the uid as text when it has none.
pub fn user_name(uid: u32) -> String {
    let mut pw: libc::passwd = unsafe_zeroed();
    let mut buf = vec![0 as libc::c_char; 1024];
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `pw` and `res` are locals, `buf` is a
    // live buffer of the given length that getpwuid_r writes the strings into.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
    if rc != 0 || res.is_null() || pw.pw_name.is_null() {
        return uid.to_string();
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`, alive here.
    unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned()
}

fn unsafe_zeroed() -> libc::passwd {
    // SAFETY: passwd is a plain C struct of integers and pointers; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// A table with no borders: columns two spaces apart, `right[i]` right-aligns column i.
pub fn table(header: &[&str], right: &[bool]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, 2));
        if right.get(i).copied().unwrap_or(false) {
            col.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    t
}

/// Name of a codec id recorded in the header.
pub fn codec_name(id: u32) -> &'static str {
    match id {
        shmq::internal::codec_id::RAW => "raw",
        shmq::internal::codec_id::POSTCARD => "postcard",
        shmq::internal::codec_id::POD => "pod",
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
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
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
        assert_eq!(bytes(1 << 20), "1.0 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(count(12_345.0), "12.3k");
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_873_200), "2026-11-28T13:40:00Z");
        assert_eq!(age(192), "3m 12s");
    }
}
