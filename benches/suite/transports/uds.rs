//! The `uds` row: a Unix stream socket with a 4-byte length prefix per message (the
//! baseline every IPC crate is measured against). The socket's path is the rendezvous.

use std::io::{BufReader, IoSlice, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use super::{Ends, Pending};
use crate::cond::Cond;

/// Write all of `parts` with as few `writev` calls as possible.
fn write_all_vectored(s: &mut UnixStream, parts: [&[u8]; 2]) {
    let total = parts[0].len() + parts[1].len();
    let mut done = s
        .write_vectored(&[IoSlice::new(parts[0]), IoSlice::new(parts[1])])
        .unwrap();
    while done < total {
        if done < parts[0].len() {
            done += s.write(&parts[0][done..]).unwrap();
        } else {
            let off = done - parts[0].len();
            s.write_all(&parts[1][off..]).unwrap();
            done = total;
        }
    }
}

fn uds_ends(s: UnixStream, size: usize) -> Ends {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::with_capacity(256 << 10, s);
    let msg = vec![0xa5u8; size];
    let hdr = (size as u32).to_le_bytes();
    let mut buf = vec![0u8; size];
    (
        Box::new(move |n| {
            for _ in 0..n {
                write_all_vectored(&mut w, [&hdr, &msg]);
            }
        }),
        Box::new(move |n| {
            for _ in 0..n {
                let mut h = [0u8; 4];
                r.read_exact(&mut h).unwrap();
                let len = u32::from_le_bytes(h) as usize;
                buf.resize(len, 0);
                r.read_exact(&mut buf).unwrap();
            }
        }),
    )
}

/// Parent side: listen on a socket under the temporary directory. (`cond` only goes into
/// the spec: the socket's buffer is the kernel's, and there is one call style.)
pub fn parent(row: &str, size: usize, cond: Cond, key: &str) -> Pending {
    let path = std::env::temp_dir().join(format!("{key}.sock"));
    let listener = UnixListener::bind(&path).unwrap();
    let at = path.display().to_string();
    Pending::new(
        row,
        size,
        cond,
        &at,
        Box::new(move || {
            let (s, _) = listener.accept().unwrap();
            let _ = std::fs::remove_file(&path);
            uds_ends(s, size)
        }),
    )
}

/// Child side: connect to the parent's socket at `path` (send up, receive down).
pub fn child(size: usize, path: &str) -> Ends {
    uds_ends(UnixStream::connect(path).unwrap(), size)
}
