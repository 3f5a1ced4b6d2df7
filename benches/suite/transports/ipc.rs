//! ipc-channel's rows: `ipc-typed` (`IpcSender<T>`, serde) and `ipc-bytes`
//! (`IpcBytesSender`). The child makes both channels and sends them to the parent through
//! the parent's one-shot server, whose name is the rendezvous.

use super::{Ends, Pending};
use crate::cond::Cond;
use crate::payloads::{with_payload, Payload};

fn ipc_typed_ends<P: Payload>(
    tx: ipc_channel::ipc::IpcSender<P>,
    rx: ipc_channel::ipc::IpcReceiver<P>,
    size: usize,
) -> Ends {
    let msg = P::make(size);
    (
        Box::new(move |n| {
            for _ in 0..n {
                tx.send(msg.clone()).unwrap();
            }
        }),
        Box::new(move |n| {
            for _ in 0..n {
                let m = rx.recv().unwrap();
                debug_assert_eq!(m.size(), size);
                std::hint::black_box(m);
            }
        }),
    )
}

fn ipc_bytes_ends(
    tx: ipc_channel::ipc::IpcBytesSender,
    rx: ipc_channel::ipc::IpcBytesReceiver,
    size: usize,
) -> Ends {
    let msg = vec![0xa5u8; size];
    (
        Box::new(move |n| {
            for _ in 0..n {
                tx.send(&msg).unwrap();
            }
        }),
        Box::new(move |n| {
            for _ in 0..n {
                let m = rx.recv().unwrap();
                debug_assert_eq!(m.len(), size);
                std::hint::black_box(m);
            }
        }),
    )
}

/// Parent side: open a one-shot server; the child connects to it with the channels. (`cond`
/// only goes into the spec: ipc-channel has no ring size to set, nor a call style.)
pub fn parent(row: &str, size: usize, cond: Cond) -> Pending {
    match row {
        "ipc-typed" => with_payload!(size, P => {
            type Boot = (ipc_channel::ipc::IpcSender<P>, ipc_channel::ipc::IpcReceiver<P>);
            let (server, name) = ipc_channel::ipc::IpcOneShotServer::<Boot>::new().unwrap();
            Pending::new(row, size, cond, &name, Box::new(move || {
                let (_, (tx, rx)) = server.accept().unwrap();
                ipc_typed_ends(tx, rx, size)
            }))
        }),
        "ipc-bytes" => {
            type Boot = (
                ipc_channel::ipc::IpcBytesSender,
                ipc_channel::ipc::IpcBytesReceiver,
            );
            let (server, name) = ipc_channel::ipc::IpcOneShotServer::<Boot>::new().unwrap();
            Pending::new(
                row,
                size,
                cond,
                &name,
                Box::new(move || {
                    let (_, (tx, rx)) = server.accept().unwrap();
                    ipc_bytes_ends(tx, rx, size)
                }),
            )
        }
        other => panic!("unknown row {other}"),
    }
}

/// Child side: make the channels, send the parent its ends (send up, receive down). `key`
/// is the name of the parent's one-shot server.
pub fn child(row: &str, size: usize, key: &str) -> Ends {
    match row {
        "ipc-typed" => with_payload!(size, P => {
            let (dtx, drx) = ipc_channel::ipc::channel::<P>().unwrap();
            let (utx, urx) = ipc_channel::ipc::channel::<P>().unwrap();
            let boot = ipc_channel::ipc::IpcSender::connect(key.to_string()).unwrap();
            boot.send((dtx, urx)).unwrap();
            ipc_typed_ends(utx, drx, size)
        }),
        "ipc-bytes" => {
            let (dtx, drx) = ipc_channel::ipc::bytes_channel().unwrap();
            let (utx, urx) = ipc_channel::ipc::bytes_channel().unwrap();
            let boot = ipc_channel::ipc::IpcSender::connect(key.to_string()).unwrap();
            boot.send((dtx, urx)).unwrap();
            ipc_bytes_ends(utx, drx, size)
        }
        other => panic!("unknown row {other}"),
    }
}
