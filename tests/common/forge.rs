//! Hostile-segment tests: reach past the public API into a queue's bytes and header words
//! (what another, buggy or malicious, process mapping the segment could do).

use shmq::internal::{shm_path, Location, Segment};

/// A mapping of the segment of queue `name`, to store hostile values into its header.
pub fn segment(name: &str) -> Segment {
    Segment::open(Location::Name(name.to_string())).unwrap()
}

/// Write `bytes` at `offset` into the object of queue `name` in `/dev/shm`.
pub fn write_at(name: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .unwrap();
    f.write_all_at(bytes, offset).unwrap();
}
