//! What a queue's creator records about its messages (codec, item size, message type
//! name), the check a typed `open` makes against that record, and the one table of codec
//! names.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::segment::{codec_id, Segment, TypeName};

/// Header record of the creating handle: codec, item size and type name.
pub(super) struct Kind {
    pub(super) codec: u32,
    pub(super) item_size: u32,
    pub(super) type_name: &'static str,
}

pub(super) const RAW_KIND: Kind = Kind {
    codec: codec_id::RAW,
    item_size: 0,
    type_name: "",
};

pub(super) fn check_kind(seg: &Segment, want: &Kind, check_type: bool, strict: bool) -> Result<()> {
    let h = seg.header();
    let name = seg.location().display_name();
    let codec = h.id.codec.load(Ordering::Relaxed);
    if codec == codec_id::RAW {
        return Ok(());
    }
    let bad = |reason: String| Error::Incompatible {
        name: name.clone(),
        reason,
    };
    if codec != want.codec {
        return Err(bad(format!(
            "created for codec {} ({}), opened with codec {} ({})",
            codec,
            codec_name(codec),
            want.codec,
            codec_name(want.codec)
        )));
    }
    let item = h.id.item_size.load(Ordering::Relaxed);
    if item != want.item_size {
        return Err(bad(format!(
            "created for {item}-byte items, opened for {}-byte items",
            want.item_size
        )));
    }
    if check_type {
        let theirs = h.type_name();
        let ours = truncate_type_name(want.type_name);
        if !theirs.is_empty() && !crate::typename::same(&theirs, ours, strict) {
            let how = if strict {
                "Options::strict_type_check(true) compares module paths too"
            } else {
                "type names are compared without module paths; Options::check_type(false) skips this check"
            };
            return Err(bad(format!(
                "created for message type {theirs}, opened as {ours} ({how})"
            )));
        }
    }
    Ok(())
}

/// Bytes of a type name the header holds: the size of its type-name field.
const TYPE_NAME_MAX: usize = std::mem::size_of::<TypeName>();

/// `s` cut to what the header holds, on a character boundary.
pub(super) fn truncate_type_name(s: &str) -> &str {
    let mut end = s.len().min(TYPE_NAME_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Human name of a codec id recorded in a header: the one table, used by the
/// [`Error::Incompatible`] messages of a typed `open` and by the `shmq` tool
/// (`shmq::internal::codec_name`; its `--json` output shows these strings).
pub fn codec_name(id: u32) -> &'static str {
    match id {
        codec_id::RAW => "raw",
        codec_id::POSTCARD => "postcard",
        codec_id::POD => "pod",
        other => crate::primitives::kind_name(other).unwrap_or("unknown"),
    }
}
