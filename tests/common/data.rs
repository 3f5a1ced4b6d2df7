//! Names and payloads: unique queue names, checksums, deterministic bytes.

use serde::{Deserialize, Serialize};

/// A queue name unique to this process and call (`it-<tag>-<pid>-<n>`).
pub fn uniq(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A 64-bit FNV-1a checksum.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A cheap deterministic 64-bit mixer (splitmix64: no fixed point at 0, so it also serves
/// as a random number generator, `x = mix64(x)`).
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `len` bytes determined by `key` (cheap to generate and to compare in debug builds).
pub fn pattern(key: u64, len: usize) -> Vec<u8> {
    let base = mix64(key);
    let mut v = Vec::with_capacity(len + 8);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(&(base ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
        i += 1;
    }
    v.truncate(len);
    v
}

/// Whether `bytes` is exactly `pattern(key, bytes.len())`.
pub fn is_pattern(key: u64, bytes: &[u8]) -> bool {
    let base = mix64(key);
    let mut chunks = bytes.chunks_exact(8);
    let mut i = 0u64;
    for c in &mut chunks {
        let w = base ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if u64::from_le_bytes(c.try_into().unwrap()) != w {
            return false;
        }
        i += 1;
    }
    let rest = chunks.remainder();
    let w = (base ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes();
    rest == &w[..rest.len()]
}

/// A value whose serialisation always fails with [`Unsendable::REASON`] (to check that a
/// serializer's own reason reaches the caller).
#[derive(Debug, Deserialize)]
pub struct Unsendable;

impl Unsendable {
    /// The reason its serialisation gives.
    pub const REASON: &'static str = "an Unsendable never leaves its process";
}

impl Serialize for Unsendable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(Self::REASON))
    }
}
