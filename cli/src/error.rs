//! The CLI's error type: a message for stderr, an optional hint, exit status 1.

use std::fmt;

/// An error to print on stderr (`shmq: error: ...`, then an optional `hint:` line), exit 1.
#[derive(Debug)]
pub struct CliError {
    pub msg: String,
    pub hint: Option<String>,
    /// Writing to stdout failed because its reader closed it: exit quietly.
    pub broken_pipe: bool,
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    pub fn new(msg: impl Into<String>) -> CliError {
        CliError {
            msg: msg.into(),
            hint: None,
            broken_pipe: false,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// Print it on stderr: `shmq: error: MSG`, then `  hint: HINT` if there is one.
    pub fn report(&self) {
        eprintln!("shmq: error: {}", self.msg);
        if let Some(h) = &self.hint {
            eprintln!("  hint: {h}");
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl From<shmq::Error> for CliError {
    fn from(e: shmq::Error) -> CliError {
        let hint = match &e {
            shmq::Error::NotFound(_) => {
                Some("run `shmq ls` to see the queues on this machine".to_string())
            }
            shmq::Error::Incompatible { .. } => Some(
                "it was made by another shmq layout version or is not a shmq segment; \
                 inspect it with `shmq stat` or remove it with `shmq rm`"
                    .to_string(),
            ),
            shmq::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => Some(
                "the segment belongs to another user (by default only its owner may open it): \
                 run as its owner or as root"
                    .to_string(),
            ),
            _ => None,
        };
        CliError {
            msg: e.to_string(),
            hint,
            broken_pipe: false,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        let mut c = CliError::new(format!("I/O error: {e}"));
        c.broken_pipe = e.kind() == std::io::ErrorKind::BrokenPipe;
        c
    }
}
