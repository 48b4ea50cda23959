//! `[sweep]`: how one file becomes many trials. The section's own settings are checked here;
//! the axes in `sweep`, each value against the base config, before anything runs.

use serde::{Deserialize, Serialize};

use super::{bad, Checked, Monitor, Train};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SweepMethod {
    /// Every combination of the axes' values.
    Grid,
    /// `trials` configurations sampled from the axes.
    Random,
    /// Random sampling plus asynchronous successive halving (ASHA) over epochs.
    Halving,
}

/// `[sweep]`: how one file becomes many trials (see `sweep.rs`). Axes are checked there,
/// against the base config, before anything runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sweep {
    /// "grid" | "random" | "halving". Default "grid".
    pub method: SweepMethod,
    /// Every configuration runs once per seed (each sets experiment.seed); empty = the base
    /// config's experiment.seed only. Default [].
    pub seeds: Vec<u64>,
    /// What "best" means: "val_acc" (max) or "val_loss" (min). Default "val_acc".
    pub metric: Monitor,
    /// random / halving: configurations to sample (each runs once per seed).
    pub trials: Option<usize>,
    /// Seeds the random / halving sampler. Default 0.
    pub seed: u64,
    /// Trials at once on this machine; absent = one per core, each trial on
    /// cores / jobs threads (measured best: see the README's jobs x threads table).
    pub jobs: Option<usize>,
    /// halving: epochs of rung 0; rung k trains to min_epochs * eta^k (at most
    /// train.epochs). Default 1.
    pub min_epochs: usize,
    /// halving: reduction factor; a trial goes on from a rung when its metric is in the top
    /// 1/eta of those recorded there. Default 3.
    pub eta: usize,
    /// A trial marked running by a process on another host whose heartbeat is older than
    /// this (seconds) is taken as dead and rerun. Default 600.
    pub stale_after_s: u64,
    /// Dotted config key -> a list of values, or a distribution (random / halving):
    /// `{ log_uniform = [lo, hi] }`, `{ uniform = [lo, hi] }`, `{ int_range = [lo, hi] }`
    /// (inclusive), `{ choice = [...] }`.
    pub axes: toml::Table,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep {
            method: SweepMethod::Grid,
            seeds: Vec::new(),
            metric: Monitor::ValAcc,
            trials: None,
            seed: 0,
            jobs: None,
            min_epochs: 1,
            eta: 3,
            stale_after_s: 600,
            axes: toml::Table::new(),
        }
    }
}

impl Sweep {
    /// The method's settings, and what halving needs of `[train]`.
    pub(super) fn check(&self, train: &Train) -> Checked {
        let multi = matches!(self.method, SweepMethod::Random | SweepMethod::Halving);
        match (self.trials, multi) {
            (None | Some(0), true) => {
                return bad(
                    "sweep.trials",
                    "random and halving sweeps need trials = N (configurations to sample), N >= 1",
                )
            }
            (Some(_), false) => {
                return bad(
                    "sweep.trials",
                    "applies to method = \"random\" or \"halving\"; a grid runs every combination",
                )
            }
            _ => {}
        }
        if self.jobs == Some(0) {
            return bad("sweep.jobs", "must be at least 1");
        }
        if self.method == SweepMethod::Halving {
            if self.eta < 2 {
                return bad("sweep.eta", "must be at least 2");
            }
            if self.min_epochs == 0 || self.min_epochs >= train.epochs {
                return bad(
                    "sweep.min_epochs",
                    format!(
                        "must be at least 1 and below train.epochs = {} (the full budget)",
                        train.epochs
                    ),
                );
            }
            if train.patience.is_some() {
                return bad(
                    "train.patience",
                    "early stopping and halving both end trials early; remove one (halving compares trials at equal epochs)",
                );
            }
        }
        let distinct: std::collections::BTreeSet<u64> = self.seeds.iter().copied().collect();
        if distinct.len() != self.seeds.len() {
            return bad("sweep.seeds", "lists a seed twice");
        }
        Ok(())
    }
}
