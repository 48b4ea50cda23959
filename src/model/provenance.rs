//! Where a run's pretrained encoder weights came from (`model.encoder_weights`: a file, or a
//! Hub repo through its cache) and a hash of their bytes, so a resumed, evaluated or
//! predicting run can tell the file changed.

use std::path::Path;

use crate::config::Model;
use crate::error::{Error, Result};

/// Where a run's encoder weights came from: what the config says, the file it resolved to,
/// and a hash of the file's bytes (saved in the run folder as `encoder.json`, checked when the
/// run is resumed, evaluated or asked to predict).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    pub encoder: String,
    pub weights: String,
    pub file: std::path::PathBuf,
    /// FNV-1a (64 bit) of the file, hex.
    pub fnv1a: String,
}

impl Provenance {
    /// Resolves `model.encoder_weights` (for `encoder`, e.g. "resnet18") (a path, or `hub:<repo>` through the hub cache) and
    /// reads the file: its bytes and where they came from.
    pub fn read(cfg: &Model, encoder: &str) -> Result<(Vec<u8>, Provenance)> {
        let given = cfg.encoder_weights.clone().unwrap_or_default();
        let file = match given.strip_prefix("hub:") {
            Some(repo) => {
                crate::hub::fetch_model(repo, &cfg.encoder_revision, Path::new(&cfg.encoder_file))?
            }
            None => std::path::PathBuf::from(&given),
        };
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let mut fnv = crate::fsutil::Fnv1a::new();
        fnv.eat(&bytes);
        let p = Provenance {
            encoder: encoder.into(),
            weights: given,
            file,
            fnv1a: format!("{:016x}", fnv.0),
        };
        Ok((bytes, p))
    }
}
