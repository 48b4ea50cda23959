//! summary.json: how a run ended (status, best epoch, validation and test scores, time,
//! versions), one serde type written by the run and read back, never by string keys, by
//! resumes, sweeps, `eval` and `summarize`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::checkpoint;
use crate::error::Result;
use crate::eval::Scores;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Completed,
    Diverged,
    /// Stopped by SIGINT / SIGTERM after checkpointing; `--resume` continues it.
    Interrupted,
    Failed,
}

/// `summary.json`: how a run ended, written by the run and read back (as this type, never by
/// string keys) by resumes and sweeps. Fields added after the first release default when an
/// older file lacks them; a non-finite number (no validation yet) is written as null and read
/// back as NaN.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Summary {
    pub status: Status,
    #[serde(default)]
    pub experiment: String,
    #[serde(default)]
    pub run_dir: PathBuf,
    #[serde(default)]
    pub seed: u64,
    pub epochs_done: usize,
    #[serde(default)]
    pub steps: usize,
    pub best_epoch: Option<usize>,
    #[serde(deserialize_with = "number_or_null")]
    pub best_val_acc: f64,
    #[serde(deserialize_with = "number_or_null")]
    pub best_val_loss: f64,
    /// Test metrics of the best-epoch weights, when a labeled test split exists.
    pub test_acc: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_macro_f1: Option<f64>,
    /// The mean of per-class recall on test, and top-5 accuracy (6 classes or more).
    #[serde(default)]
    pub test_mean_class_acc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_top5: Option<f64>,
    /// Per-class precision / recall / F1 / support and the confusion matrix on test.
    pub test_scores: Option<Scores>,
    /// The same on validation, best epoch's weights.
    pub val_scores: Option<Scores>,
    /// Class names by id, and training examples per class.
    #[serde(default)]
    pub classes: Vec<String>,
    #[serde(default)]
    pub train_class_counts: Vec<usize>,
    #[serde(default)]
    pub stopped_early: bool,
    /// Inputs left out because they could not be read (`data.skip_bad`), as `path: why`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_inputs: Vec<String>,
    /// Why the run did not complete (diverged, interrupted or failed).
    pub reason: Option<String>,
    /// Training time over the whole run, across resumes (up to its last checkpoint or end).
    #[serde(default, deserialize_with = "number_or_null")]
    pub elapsed_s: f64,
    #[serde(default, deserialize_with = "number_or_null")]
    pub train_samples_per_s: f64,
    #[serde(default)]
    pub parameters: usize,
    #[serde(default)]
    pub versions: serde_json::Value,
}

impl Summary {
    /// A run folder's summary.json.
    pub fn read(dir: &Path) -> Result<Summary> {
        checkpoint::load_json(&dir.join(checkpoint::SUMMARY))
    }
}

/// JSON has no infinity or NaN: serde_json writes them as null, read back as NaN.
fn number_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Crate versions (from the Cargo.lock this binary was built with) and the git commit it was
/// built from (by build.rs; none when built outside a git checkout).
pub fn versions() -> serde_json::Value {
    let lock = include_str!("../Cargo.lock");
    let version_of = |name: &str| -> Option<String> {
        let key = format!("name = \"{name}\"\nversion = \"");
        let at = lock.find(&key)? + key.len();
        Some(lock[at..].split('"').next()?.to_string())
    };
    let commit = Some(env!("RNNLAB_GIT_COMMIT")).filter(|c| !c.is_empty());
    json!({
        "rnnlab": env!("CARGO_PKG_VERSION"),
        "candle-core": version_of("candle-core"),
        "candle-nn": version_of("candle-nn"),
        "git_commit": commit,
    })
}
