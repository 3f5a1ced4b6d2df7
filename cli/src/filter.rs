//! Which objects a listing (`ls`, `rm --stale`) covers: the caller's own unless `--all`,
//! and those whose name matches the pattern.

use crate::error::{CliError, CliResult};

pub struct Filter {
    uid: Option<u32>,
    pattern: Option<glob::Pattern>,
}

impl Filter {
    pub fn new(all: bool, pattern: Option<&str>) -> CliResult<Filter> {
        let pattern = pattern
            .map(|p| {
                // Without wildcards, a pattern matches names that contain it.
                let p = if p.contains(['*', '?', '[']) {
                    p.to_string()
                } else {
                    format!("*{}*", glob::Pattern::escape(p))
                };
                glob::Pattern::new(&p)
            })
            .transpose()
            .map_err(|e| CliError::new(format!("bad name pattern: {e}")))?;
        Ok(Filter {
            uid: (!all).then(crate::users::euid),
            pattern,
        })
    }

    pub fn wants(&self, name: &str) -> bool {
        self.pattern.as_ref().is_none_or(|p| p.matches(name))
            && self
                .uid
                .is_none_or(|uid| crate::object::owner(name).is_none_or(|o| o == uid))
    }
}
