//! Run output: TensorBoard events (`tensorboard`), the metrics JSONL and the progress bar.

pub mod progress;
pub mod tensorboard;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// metrics.jsonl: one JSON object per line ({"step", "epoch", "split", ...}).
pub struct Metrics {
    out: BufWriter<File>,
    path: std::path::PathBuf,
}

impl Metrics {
    pub fn create(path: &Path) -> Result<Metrics> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Metrics {
            out: BufWriter::new(f),
            path: path.to_path_buf(),
        })
    }

    pub fn row(&mut self, row: serde_json::Value) -> Result<()> {
        writeln!(self.out, "{row}").map_err(|e| Error::io(&self.path, e))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }
}
