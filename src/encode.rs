//! Postcard encoding that keeps a `Serialize` impl's own error message.
//!
//! postcard reports every `S::Error::custom("why")` as the bare "Serde Serialization
//! Error": its error type has no room for the message. When an encoding fails that way, the
//! value is serialised once more into [`Probe`], a serializer that writes nothing and whose
//! error keeps the message, to recover the reason. This costs nothing on success; on failure
//! the value's `serialize` runs twice (a `Serialize` impl is expected to fail the same way
//! both times; if the second run succeeds, postcard's message is kept).

use std::fmt;

use serde::ser::{self, Serialize};

/// The message of an error raised by a `Serialize` impl, if serialising `value` into
/// [`Probe`] fails.
pub(crate) fn custom_message<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    value.serialize(Probe).err().map(|e| e.0)
}

/// Describe a postcard encoding failure of `value`, keeping a `Serialize` impl's own
/// message when postcard dropped it.
pub(crate) fn describe<T: Serialize + ?Sized>(value: &T, e: &postcard::Error) -> String {
    match e {
        postcard::Error::SerdeSerCustom => match custom_message(value) {
            Some(m) => m,
            None => e.to_string(),
        },
        _ => e.to_string(),
    }
}

/// `postcard::to_allocvec` with the reason of a failure kept ([`describe`]); `what` says
/// what was being encoded ("the child's arguments").
#[cfg(test)]
pub(crate) fn to_vec<T: Serialize + ?Sized>(value: &T, what: &str) -> crate::Result<Vec<u8>> {
    postcard::to_allocvec(value)
        .map_err(|e| crate::Error::Codec(format!("encoding {what}: {}", describe(value, &e))))
}

/// The error of [`Probe`]: just the message.
#[derive(Debug)]
pub(crate) struct Message(pub(crate) String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl ser::Error for Message {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Message(msg.to_string())
    }
}

/// A serializer that accepts everything, writes nothing, and passes a `Serialize` impl's
/// error through with its message.
#[derive(Clone, Copy)]
pub(crate) struct Probe;

type R = Result<(), Message>;

impl ser::Serializer for Probe {
    type Ok = ();
    type Error = Message;
    type SerializeSeq = Probe;
    type SerializeTuple = Probe;
    type SerializeTupleStruct = Probe;
    type SerializeTupleVariant = Probe;
    type SerializeMap = Probe;
    type SerializeStruct = Probe;
    type SerializeStructVariant = Probe;

    fn serialize_bool(self, _: bool) -> R {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> R {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> R {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> R {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> R {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> R {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> R {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> R {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> R {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> R {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> R {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> R {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> R {
        Ok(())
    }
    fn serialize_char(self, _: char) -> R {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> R {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> R {
        Ok(())
    }
    fn serialize_none(self) -> R {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> R {
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Probe, Message> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Probe, Message> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Probe, Message> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Probe, Message> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Probe, Message> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Probe, Message> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Probe, Message> {
        Ok(self)
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, _: &T) -> R {
        Ok(())
    }
}

impl ser::SerializeSeq for Probe {
    type Ok = ();
    type Error = Message;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(Probe)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTuple for Probe {
    type Ok = ();
    type Error = Message;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(Probe)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Probe {
    type Ok = ();
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(Probe)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Probe {
    type Ok = ();
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(Probe)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeMap for Probe {
    type Ok = ();
    type Error = Message;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(Probe)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(Probe)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStruct for Probe {
    type Ok = ();
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> R {
        v.serialize(Probe)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Probe {
    type Ok = ();
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> R {
        v.serialize(Probe)
    }
    fn end(self) -> R {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(ser::Error::custom(
                "sockets cannot cross a process boundary",
            ))
        }
    }

    #[test]
    fn a_custom_message_survives_postcard() {
        let v = (1u8, vec![Some(Refuses)]);
        let e = postcard::to_allocvec(&v).unwrap_err();
        assert_eq!(e, postcard::Error::SerdeSerCustom);
        assert_eq!(describe(&v, &e), "sockets cannot cross a process boundary");
        match to_vec(&v, "the arguments") {
            Err(crate::Error::Codec(m)) => assert_eq!(
                m,
                "encoding the arguments: sockets cannot cross a process boundary"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(custom_message(&(1u8, "fine")), None);
    }
}
