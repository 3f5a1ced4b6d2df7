//! Messages as hex text: what `get --hex` prints and `put --hex` reads.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut h = Vec::new();
        to_hex(&[0x00, 0x1f, 0xab, 0xff], &mut h);
        assert_eq!(h, b"001fabff");
        assert_eq!(from_hex(b"00 1f AB ff"), Ok(vec![0x00, 0x1f, 0xab, 0xff]));
        assert!(from_hex(b"abc").is_err());
        assert!(from_hex(b"zz").is_err());
    }
}
