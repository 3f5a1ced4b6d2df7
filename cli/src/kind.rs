//! What a shmq object holds, from the codec id its creator recorded in the header: raw
//! byte messages, encoded values, or no queue at all (a lock, event, shared value, ... of
//! `shmq::primitives`, which live in segments of the same format and are listed with the
//! queues). The names come from the library (`shmq::internal::codec_name`).

use shmq::internal::{codec_id, codec_name};
use shmq::Stats;

pub enum Kind {
    /// A queue of raw byte messages (`RawQueue`).
    Raw,
    /// A queue of encoded values (`Queue<T>`, `PodQueue<T>`): "postcard values of type
    /// app::Job".
    Typed(String),
    /// Not a queue of a codec this CLI knows: a primitive (`"shmq Lock"`, `"shmq
    /// Value<u64>"`), or an object of a codec of another shmq version (`"unknown"`).
    Other(String),
}

impl Kind {
    pub fn of(s: &Stats) -> Kind {
        match s.codec {
            codec_id::RAW => Kind::Raw,
            codec_id::POSTCARD | codec_id::POD => {
                let mut what = format!("{} values", codec_name(s.codec));
                if !s.type_name.is_empty() {
                    what.push_str(&format!(" of type {}", s.type_name));
                }
                Kind::Typed(what)
            }
            // A primitive records its kind (and a value's type) as its type name.
            c if s.type_name.is_empty() => Kind::Other(codec_name(c).to_string()),
            _ => Kind::Other(s.type_name.clone()),
        }
    }

    /// A queue (raw or typed), not some other object.
    pub fn is_queue(&self) -> bool {
        !matches!(self, Kind::Other(_))
    }

    /// For a column or a JSON field: `queue`, or what the object is.
    pub fn label(&self) -> &str {
        match self {
            Kind::Raw | Kind::Typed(_) => "queue",
            Kind::Other(what) => what,
        }
    }

    /// What a queue that `put` must not fill with text holds ("postcard values of type
    /// app::Job"); `None` for a queue of raw byte messages.
    pub fn encoded(&self) -> Option<String> {
        match self {
            Kind::Raw => None,
            Kind::Typed(what) => Some(what.clone()),
            Kind::Other(what) => Some(format!("{what} values")),
        }
    }
}
