//! Parsing command-line values: queue names, sizes, durations, permission bits.

use std::time::Duration;

/// A queue name as typed by the user. Also accepts the object's path as `ls /dev/shm`
/// shows it (`/dev/shm/shmq.NAME`).
pub fn parse_name(s: &str) -> Result<String, String> {
    // The path of the name "" is the directory and prefix every object's path starts with.
    let prefix = crate::object::path("");
    let name = prefix.to_str().and_then(|p| s.strip_prefix(p)).unwrap_or(s);
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
    }
}
