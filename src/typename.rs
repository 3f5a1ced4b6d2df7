//! Comparing the message type recorded in a segment's header with the opener's.
//!
//! A typed queue records `std::any::type_name::<T>()` (at most [`MAX`] bytes) when it is
//! created. By default an opener compares the names **without their module paths**:
//! `producer::LogLine` and `consumer::LogLine` (the same struct defined in two binaries)
//! match, and so do `alloc::vec::Vec<a::Event>` and `Vec<b::Event>`; `LogLine` and
//! `Event` do not. Only the shape of the name matters, so two *different* structs that
//! share a name pass this check and then fail to decode with `Error::Codec`. The strict
//! mode ([`Options::strict_type_check`](crate::Options::strict_type_check)) compares the
//! full names, module paths included.

/// Bytes of the type name that the header keeps.
pub(crate) const MAX: usize = 64;

/// `name` without module paths: `alloc::vec::Vec<(alloc::string::String, my::Job)>` becomes
/// `Vec<(String, Job)>`.
pub(crate) fn short(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    // Where the path segment being written started in `out`.
    let mut seg = 0;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            // What was written since `seg` was a module (or type) path prefix: drop it.
            out.truncate(seg);
        } else if is_ident(c) {
            out.push(c);
        } else {
            out.push(c);
            seg = out.len();
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '{' || c == '}'
}

/// Whether a queue created for message type `theirs` (as recorded in its header) may be
/// opened as `ours` (both cut to [`MAX`] bytes as the header keeps them).
pub(crate) fn same(theirs: &str, ours: &str, strict: bool) -> bool {
    if strict || theirs == ours {
        return theirs == ours;
    }
    let (a, b) = (short(theirs), short(ours));
    if a == b {
        return true;
    }
    // A name cut at MAX bytes may end inside an identifier or a module path: compare
    // what both names surely have, the shorter one's complete part as a prefix.
    let cut = |raw: &str, s: &str| -> String {
        if raw.len() >= MAX {
            s.trim_end_matches(is_ident).to_string()
        } else {
            s.to_string()
        }
    };
    let (a, b) = (cut(theirs, &a), cut(ours, &b));
    if theirs.len() < MAX && ours.len() < MAX {
        return a == b;
    }
    (theirs.len() >= MAX && b.starts_with(&a)) || (ours.len() >= MAX && a.starts_with(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(s: &str) -> &str {
        let mut end = s.len().min(MAX);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        &s[..end]
    }

    #[test]
    fn short_names() {
        assert_eq!(short("u64"), "u64");
        assert_eq!(short("producer::LogLine"), "LogLine");
        assert_eq!(
            short("alloc::vec::Vec<(alloc::string::String, my::Job)>"),
            "Vec<(String, Job)>"
        );
        assert_eq!(short("[a::b::C; 4]"), "[C; 4]");
        assert_eq!(short("&str"), "&str");
        assert_eq!(
            short("core::option::Option<std::collections::hash::map::HashMap<u8, x::Y>>"),
            "Option<HashMap<u8, Y>>"
        );
        assert_eq!(short("main::{{closure}}"), "{{closure}}");
    }

    #[test]
    fn same_struct_in_two_binaries() {
        assert!(same("producer::LogLine", "consumer::LogLine", false));
        assert!(same(
            "alloc::vec::Vec<producer::LogLine>",
            "alloc::vec::Vec<shipper::model::LogLine>",
            false
        ));
        assert!(!same("producer::LogLine", "consumer::LogLine", true));
        assert!(same("producer::LogLine", "producer::LogLine", true));
        assert!(!same("a::LogLine", "a::Event", false));
        assert!(!same(
            "(u32, alloc::string::String)",
            "(u64, alloc::string::String)",
            false
        ));
        assert!(!same("alloc::vec::Vec<u8>", "u8", false));
    }

    #[test]
    fn names_cut_by_the_header() {
        let long_a = "alloc::vec::Vec<my_fairly_long_crate_name::some::module::path::LogLine>";
        let long_b = "alloc::vec::Vec<other_crate::model::LogLine>";
        assert!(long_a.len() > MAX && long_b.len() < MAX);
        assert!(same(cut(long_a), cut(long_b), false));
        assert!(same(cut(long_b), cut(long_a), false));
        // What survives of the cut name still has to match.
        assert!(!same(
            cut(long_a),
            "core::option::Option<x::LogLine>",
            false
        ));
        let long_c = "core::option::Option<my_fairly_long_crate_name::some::module::LogLine>";
        assert!(!same(cut(long_a), cut(long_c), false));
    }
}
