//! Writing to stdout: the two macros that survive a closed pipe, and borderless tables.

/// `println!` that returns a [`CliError`](crate::error::CliError) (from the enclosing
/// function, with `?`) instead of panicking when stdout is a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::error::CliError::from)?
    }};
}

/// `println!` that ignores a closed stdout: for reports of work that must go on regardless
/// (`shmq rm a b c | head -1` still removes all three).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// A table with no borders: columns two spaces apart, `right[i]` right-aligns column i.
pub fn table(header: &[&str], right: &[bool]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, 2));
        if right.get(i).copied().unwrap_or(false) {
            col.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    t
}
