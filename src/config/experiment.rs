//! `[experiment]`: what the run is called, where it goes, its seed and where it computes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bad, Checked, MAX_NAME_BYTES};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Experiment {
    /// Run folders go to `<out_dir>/<name>/<run>/`. Default "run".
    pub name: String,
    /// Seeds parameter init, data generation, shuffling and dropout. Default 0.
    pub seed: u64,
    /// "cpu" | "cuda" | "cuda:N" | "auto". Default "cpu".
    pub device: String,
    /// Root of all run folders. Default "results".
    pub out_dir: PathBuf,
    /// CPU threads for candle's kernels; 0 = candle's default (RAYON_NUM_THREADS, else all
    /// cores). Small models often run faster on 1. Default 0.
    pub threads: usize,
}

impl Default for Experiment {
    fn default() -> Self {
        Experiment {
            name: "run".into(),
            seed: 0,
            device: "cpu".into(),
            out_dir: "results".into(),
            threads: 0,
        }
    }
}

impl Experiment {
    /// Name, output folder and device.
    /// (Negated comparisons on purpose: NaN fails them.)
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub(super) fn check(&self) -> Checked {
        let e = self;
        if e.name.is_empty()
            || e.name.contains(['/', '\\'])
            || e.name.starts_with('.')
            || e.name.chars().any(char::is_control)
        {
            return bad(
                "experiment.name",
                "must be a non-empty folder name without '/', a leading '.' or control characters",
            );
        }
        if e.name.len() > MAX_NAME_BYTES {
            return bad(
                "experiment.name",
                format!(
                    "is {} bytes long; a folder name may have at most {MAX_NAME_BYTES}",
                    e.name.len()
                ),
            );
        }
        if e.out_dir.as_os_str().is_empty() {
            return bad("experiment.out_dir", "must not be empty");
        }
        if let Err(msg) = crate::device::DeviceSpec::parse(&e.device) {
            return bad("experiment.device", msg);
        }
        Ok(())
    }
}
