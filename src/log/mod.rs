//! Run output: TensorBoard events (`tensorboard`, `hparams`), the metrics JSONL, plots and the
//! progress bar.

pub mod compare;
pub mod hparams;
pub mod plots;
pub mod progress;
pub mod tensorboard;
pub mod writer;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The metrics file's name in a run folder.
pub const METRICS: &str = "metrics.jsonl";

/// metrics.jsonl: one JSON object per line ({"step", "epoch", "split", ...}). Each row goes to
/// the file in one write of a whole line, so a killed process leaves whole lines; a resume
/// cuts the file back to the length its checkpoint recorded, so no row is ever duplicated.
pub struct Metrics {
    out: File,
    path: PathBuf,
    len: u64,
}

impl Metrics {
    /// Opens `path` for appending after its first `keep` bytes (a resume), or a new file.
    pub fn open(path: &Path, keep: Option<u64>) -> Result<Metrics> {
        let io = |e| Error::io(path, e);
        let out = match keep {
            None => std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(path)
                .map_err(io)?,
            Some(keep) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .append(true)
                    .open(path)
                    .map_err(io)?;
                if f.metadata().map_err(io)?.len() > keep {
                    f.set_len(keep).map_err(io)?;
                }
                f
            }
        };
        let len = out.metadata().map_err(io)?.len();
        Ok(Metrics {
            out,
            path: path.to_path_buf(),
            len,
        })
    }

    pub fn row(&mut self, row: &serde_json::Value) -> Result<()> {
        let line = format!("{row}\n");
        self.out
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// The file's length in bytes (what a checkpoint records).
    pub fn bytes(&self) -> u64 {
        self.len
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}
