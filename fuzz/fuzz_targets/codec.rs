//! `codec`: arbitrary frames decoded as typed messages. The first byte picks the message
//! type and the path, the rest is the frame payload. Decoding must return `Ok` or
//! `Err(Codec)`, never panic or allocate without bound; whatever decodes must re-encode to
//! a frame that decodes to the same value (postcard is canonical for these types up to
//! varint normalisation, so we compare values, not bytes).
//!
//! Frames also go through a real ring (`Ring::in_memory`): put as raw bytes, got back,
//! decoded — the path a `Queue<T>` consumer takes for a message some other (possibly
//! hostile or buggy) producer wrote.
#![no_main]

use std::collections::BTreeMap;
use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use shmq::internal::{Block, Ring};
use shmq::{Codec, Error, Postcard};

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Event {
    Start { id: u64, name: String },
    Data(#[serde(with = "serde_bytes_compat")] Vec<u8>),
    Stop(Option<i32>),
    Nested(Vec<(u8, String)>, BTreeMap<u16, bool>),
}

// Minimal stand-in for serde_bytes (not a dependency here): encode as a byte sequence.
mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let v: &[u8] = Deserialize::deserialize(d)?;
        Ok(v.to_vec())
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Job {
    id: u64,
    url: String,
    tags: Vec<String>,
    weight: f32,
    parent: Option<Box<Job>>,
}

fn roundtrip<T: Serialize + DeserializeOwned + Debug + PartialEq>(bytes: &[u8]) {
    match <Postcard as Codec<T>>::decode(bytes) {
        Ok(v) => {
            let len = <Postcard as Codec<T>>::encoded_len(&v).expect("decoded value encodes");
            let again = postcard::to_allocvec(&v).expect("encode");
            assert_eq!(len, again.len());
            let v2 = <Postcard as Codec<T>>::decode(&again).expect("re-decode");
            // f32 NaN != NaN: compare the encodings instead.
            assert_eq!(postcard::to_allocvec(&v2).unwrap(), again);
        }
        Err(Error::Codec(_)) => {}
        Err(e) => panic!("decode gave a non-codec error: {e:?}"),
    }
}

fn pod<T: bytemuck_like::PodLike>(bytes: &[u8]) {
    T::check(bytes);
}

mod bytemuck_like {
    use shmq::{Codec, Error, Pod};
    pub trait PodLike {
        fn check(bytes: &[u8]);
    }
    macro_rules! pod_like {
        ($($t:ty),*) => {$(
            impl PodLike for $t {
                fn check(bytes: &[u8]) {
                    match <Pod as Codec<$t>>::decode(bytes) {
                        Ok(_) => assert_eq!(bytes.len(), std::mem::size_of::<$t>()),
                        Err(Error::Codec(_)) => assert_ne!(bytes.len(), std::mem::size_of::<$t>()),
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
        )*};
    }
    pod_like!(u8, u64, [u32; 3], [u64; 8], [u8; 512]);
}

fn through_ring(sel: u8, payload: &[u8]) {
    let Ok(r) = Ring::in_memory(8192) else { return };
    let put = r.put_batch(
        1,
        Block::No,
        |_| Ok(payload.len()),
        |_, slot| slot.write(payload),
    );
    match put {
        Ok(1) => {}
        Err(Error::TooLarge { .. }) => return,
        other => panic!("{other:?}"),
    }
    let mut got = Vec::new();
    r.get_batch(1, Block::No, |rec| rec.extend_vec(&mut got))
        .expect("get what was put");
    assert_eq!(got, payload);
    decode_as(sel, &got);
}

fn decode_as(sel: u8, b: &[u8]) {
    match sel % 12 {
        0 => roundtrip::<u64>(b),
        1 => roundtrip::<String>(b),
        2 => roundtrip::<Vec<u8>>(b),
        3 => roundtrip::<(String, u32)>(b),
        4 => roundtrip::<Event>(b),
        5 => roundtrip::<Job>(b),
        6 => roundtrip::<Vec<Event>>(b),
        7 => roundtrip::<BTreeMap<String, Vec<i64>>>(b),
        8 => roundtrip::<Option<(char, bool, i128)>>(b),
        9 => pod::<u64>(b),
        10 => pod::<[u32; 3]>(b),
        _ => {
            pod::<u8>(b);
            pod::<[u64; 8]>(b);
            pod::<[u8; 512]>(b);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    if sel & 0x80 != 0 {
        through_ring(sel, payload);
    } else {
        decode_as(sel, payload);
    }
});
