//! The run folder's files and how a trained model is reloaded from them: the resolved config,
//! the vocabulary and class names, parameters as safetensors under PyTorch names (best and
//! last), the optimizer state and the resume point.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::data::text::Vocab;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::classifier::{Classifier, Input};

pub const CONFIG: &str = "config.toml";
pub const VOCAB: &str = "vocab.json";
pub const CLASSES: &str = "classes.json";
pub const BEST: &str = "best.safetensors";
pub const LAST: &str = "last.safetensors";
pub const LAST_OPTIM: &str = "last.optim.safetensors";
pub const STATE: &str = "checkpoint.json";
pub const METRICS: &str = "metrics.jsonl";
pub const SUMMARY: &str = "summary.json";

/// Where training stands after the last completed epoch (checkpoint.json).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimizer steps taken.
    pub step: usize,
    pub best_epoch: Option<usize>,
    pub best_val_acc: f64,
    pub best_val_loss: f64,
    /// Epochs since the monitored metric last improved (early stopping).
    pub bad_epochs: usize,
}

impl State {
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE);
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Checkpoint {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        write_atomic(&path, json.as_bytes())
    }

    pub fn load(dir: &Path) -> Result<State> {
        let path = dir.join(STATE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path,
            msg: e.to_string(),
        })
    }
}

pub fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(|e| Error::Checkpoint {
        path: path.into(),
        msg: e.to_string(),
    })?;
    write_atomic(path, json.as_bytes())
}

/// A trained model with everything needed to use it.
pub struct LoadedRun {
    pub dir: PathBuf,
    pub config: Config,
    pub vocab: Vocab,
    pub classes: Vec<String>,
    pub model: Classifier,
}

/// Rebuilds the classifier from a run folder and loads `weights` (BEST or LAST).
pub fn load_run(dir: &Path, weights: &str, device: &Device) -> Result<LoadedRun> {
    let config = Config::load(&dir.join(CONFIG), &[])?;
    let vocab = Vocab::load(&dir.join(VOCAB))?;
    let classes_path = dir.join(CLASSES);
    let text = std::fs::read_to_string(&classes_path).map_err(|e| Error::io(&classes_path, e))?;
    let classes: Vec<String> = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: classes_path,
        msg: e.to_string(),
    })?;
    let model = Classifier::new(
        &config.model,
        Input::Tokens { vocab: vocab.len() },
        classes.len(),
        config.experiment.seed,
        device,
    )?;
    model.params.load(&dir.join(weights))?;
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        config,
        vocab,
        classes,
        model,
    })
}

pub fn load_optimizer_state(
    dir: &Path,
    device: &Device,
) -> Result<HashMap<String, candle_core::Tensor>> {
    let path = dir.join(LAST_OPTIM);
    if !path.exists() {
        return Ok(HashMap::new());
    }
    candle_core::safetensors::load(&path, device).map_err(|e| Error::Checkpoint {
        path,
        msg: e.to_string(),
    })
}
