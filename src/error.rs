//! The library's error type. Every variant a user can cause carries where it happened
//! (file, key, line) so the binary can print it as is and exit 2.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config key with a wrong name, type or value. `location` is `file:line:col` or
    /// `--set key=value`.
    #[error("{location}: {key}: {msg}")]
    Config {
        location: String,
        key: String,
        msg: String,
    },

    /// A malformed data row or data file.
    #[error("{}{}: {msg}", path.display(), at_line(*line))]
    Data {
        path: PathBuf,
        line: usize,
        msg: String,
    },

    /// A file that could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A run folder or checkpoint that does not hold what it should.
    #[error("{}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },

    /// The requested device is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),

    /// SIGINT / SIGTERM (the signal number) arrived before training began.
    #[error("interrupted by signal {0} before training began; nothing was written")]
    Interrupted(i32),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// True when the error is the user's input (config, data, paths): exit code 2.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Config { .. }
                | Error::Data { .. }
                | Error::Checkpoint { .. }
                | Error::Device(_)
                | Error::Io { .. }
        )
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn data(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            line,
            msg: msg.into(),
        }
    }
}

/// ":N" for a 1-based line, nothing for 0 (the whole file).
fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}
