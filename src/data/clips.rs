//! Where a split's clips live: in memory (generated, or read from tensor files), or in a uint8
//! cache file on disk that the `frames` source decodes image folders into once and batches
//! read clip by clip, so a folder of clips is never held in memory whole and a second epoch or
//! run decodes nothing.

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Each clip: frames x (channels x height x width) bytes, frame-major, each frame CHW.
#[derive(Debug, Clone, PartialEq)]
pub enum Clips {
    Memory(Vec<Vec<u8>>),
    Disk(Cached),
}

/// Clips stored back to back in one file, read on demand.
#[derive(Debug, Clone)]
pub struct Cached {
    path: PathBuf,
    file: Arc<File>,
    /// Each clip's byte offset and length.
    spans: Vec<(u64, usize)>,
}

impl PartialEq for Cached {
    fn eq(&self, other: &Cached) -> bool {
        self.path == other.path && self.spans == other.spans
    }
}

impl Cached {
    /// Opens a complete cache file holding clips of `lengths` bytes, in order; its size must be
    /// their sum.
    pub fn open(path: &Path, lengths: &[usize]) -> Result<Cached> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut spans = Vec::with_capacity(lengths.len());
        let mut at = 0u64;
        for &n in lengths {
            spans.push((at, n));
            at += n as u64;
        }
        if size != at {
            return Err(Error::data(
                path,
                0,
                format!("holds {size} bytes, the clips need {at}: not this data's cache"),
            ));
        }
        Ok(Cached {
            path: path.to_path_buf(),
            file: Arc::new(file),
            spans,
        })
    }
}

impl Default for Clips {
    fn default() -> Self {
        Clips::Memory(Vec::new())
    }
}

impl Clips {
    pub fn len(&self) -> usize {
        match self {
            Clips::Memory(v) => v.len(),
            Clips::Disk(c) => c.spans.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Clip `i`'s size in bytes.
    pub fn bytes(&self, i: usize) -> usize {
        match self {
            Clips::Memory(v) => v[i].len(),
            Clips::Disk(c) => c.spans[i].1,
        }
    }

    /// Clip `i`'s bytes (read from the cache file for a cached split).
    pub fn get(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        match self {
            Clips::Memory(v) => Ok(Cow::Borrowed(&v[i])),
            Clips::Disk(c) => {
                let (at, n) = c.spans[i];
                let mut buf = vec![0u8; n];
                c.file
                    .read_exact_at(&mut buf, at)
                    .map_err(|e| Error::io(&c.path, e))?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    /// A hash naming these clips' content: a cache file's name (itself a hash of the frames
    /// it was decoded from) and the clips' places in it, or the bytes of clips in memory.
    pub fn identity(&self) -> u64 {
        let mut fnv = crate::fsutil::Fnv1a::new();
        match self {
            Clips::Memory(v) => {
                for c in v {
                    fnv.eat(&(c.len() as u64).to_le_bytes());
                    fnv.eat(c);
                }
            }
            Clips::Disk(c) => {
                fnv.eat(c.path.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
                for (at, n) in &c.spans {
                    fnv.eat(&at.to_le_bytes());
                    fnv.eat(&(*n as u64).to_le_bytes());
                }
            }
        }
        fnv.0
    }

    /// The clips at `idx`, in that order (a cached split stays on disk).
    pub fn subset(&self, idx: &[usize]) -> Clips {
        match self {
            Clips::Memory(v) => Clips::Memory(idx.iter().map(|&i| v[i].clone()).collect()),
            Clips::Disk(c) => Clips::Disk(Cached {
                path: c.path.clone(),
                file: c.file.clone(),
                spans: idx.iter().map(|&i| c.spans[i]).collect(),
            }),
        }
    }
}

impl From<Vec<Vec<u8>>> for Clips {
    fn from(v: Vec<Vec<u8>>) -> Clips {
        Clips::Memory(v)
    }
}
