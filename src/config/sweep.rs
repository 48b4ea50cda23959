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
    /// `trials` configurations asked one at a time from the tree-structured Parzen estimator
    /// over the results recorded so far (`sweep/tpe.rs`, `sweep/ask.rs`).
    Tpe,
}

/// `sweep.prune`: how trials that are doing badly stop early.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Prune {
    /// Asynchronous successive halving over epochs (`min_epochs`, `eta`), as method "halving".
    Halving,
}

/// `[sweep]`: how one file becomes many trials (see `sweep.rs`). Axes are checked there,
/// against the base config, before anything runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sweep {
    /// "grid" | "random" | "halving" | "tpe". Default "grid".
    pub method: SweepMethod,
    /// "halving": successive halving over epochs for a grid, random or TPE sweep (method
    /// "halving" is random with it). Absent: every trial trains its whole budget.
    pub prune: Option<Prune>,
    /// Every configuration runs once per seed (each sets experiment.seed); empty = the base
    /// config's experiment.seed only. Default [].
    pub seeds: Vec<u64>,
    /// What "best" means: "val_acc" (max) or "val_loss" (min). Default "val_acc".
    pub metric: Monitor,
    /// random / halving / tpe: configurations to sample (each runs once per seed).
    pub trials: Option<usize>,
    /// Seeds the random / halving / tpe sampler. Default 0.
    pub seed: u64,
    /// tpe: one joint Parzen estimator over all the axes instead of one per axis (Optuna's
    /// `multivariate = True`). Default false.
    pub multivariate: bool,
    /// Trials at once on this machine; absent = one per core, each trial on
    /// cores / jobs threads (measured best: see the README's jobs x threads table).
    pub jobs: Option<usize>,
    /// halving (method or prune): epochs of rung 0; rung k trains to min_epochs * eta^k (at
    /// most train.epochs). Default 1.
    pub min_epochs: usize,
    /// halving (method or prune): reduction factor; a trial goes on from a rung when its
    /// metric is in the top 1/eta of those recorded there. Default 3.
    pub eta: usize,
    /// A trial marked running by a process on another host whose heartbeat is older than
    /// this (seconds) is taken as dead and rerun. Default 600.
    pub stale_after_s: u64,
    /// Dotted config key -> a list of values, or a distribution (random / halving / tpe):
    /// `{ log_uniform = [lo, hi] }`, `{ uniform = [lo, hi] }`, `{ int_range = [lo, hi] }`
    /// (inclusive), `{ choice = [...] }`.
    pub axes: toml::Table,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep {
            method: SweepMethod::Grid,
            prune: None,
            seeds: Vec::new(),
            metric: Monitor::ValAcc,
            trials: None,
            seed: 0,
            multivariate: false,
            jobs: None,
            min_epochs: 1,
            eta: 3,
            stale_after_s: 600,
            axes: toml::Table::new(),
        }
    }
}

impl Sweep {
    /// Whether the method samples from distributions (`trials` configurations).
    pub fn samples(&self) -> bool {
        self.method != SweepMethod::Grid
    }

    /// Whether trials stop at halving rungs: method "halving", or `prune = "halving"`.
    pub fn prunes(&self) -> bool {
        self.method == SweepMethod::Halving || self.prune == Some(Prune::Halving)
    }

    /// The method's settings, and what halving needs of `[train]`.
    pub(super) fn check(&self, train: &Train) -> Checked {
        match (self.trials, self.samples()) {
            (None | Some(0), true) => {
                return bad(
                    "sweep.trials",
                    "random, halving and tpe sweeps need trials = N (configurations to sample), N >= 1",
                )
            }
            (Some(_), false) => {
                return bad(
                    "sweep.trials",
                    "applies to method = \"random\", \"halving\" or \"tpe\"; a grid runs every combination",
                )
            }
            _ => {}
        }
        if self.multivariate && self.method != SweepMethod::Tpe {
            return bad("sweep.multivariate", "applies to method = \"tpe\"");
        }
        if self.jobs == Some(0) {
            return bad("sweep.jobs", "must be at least 1");
        }
        if self.method == SweepMethod::Halving && self.prune.is_some() {
            return bad(
                "sweep.prune",
                "method = \"halving\" prunes already (it is random sampling with halving); use prune with grid, random or tpe",
            );
        }
        if self.prunes() {
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
