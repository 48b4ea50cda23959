//! `[train]`: epochs and steps, the optimizer and its schedule, clipping, truncated BPTT,
//! early stopping, class weights and checkpoints.

use serde::{Deserialize, Serialize};

use super::{bad, Checked, Model};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
    Rmsprop,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `step_every` epochs.
    Step,
    /// Cosine from `lr` down to `min_lr` over the whole run.
    Cosine,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    ValAcc,
    ValLoss,
}

impl Monitor {
    /// Its name in metrics.jsonl's epoch rows: "val_acc" or "val_loss".
    pub fn key(self) -> &'static str {
        match self {
            Monitor::ValAcc => "val_acc",
            Monitor::ValLoss => "val_loss",
        }
    }

    /// The other validation metric (the tie-breaker).
    pub fn other(self) -> Monitor {
        match self {
            Monitor::ValAcc => Monitor::ValLoss,
            Monitor::ValLoss => Monitor::ValAcc,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Train {
    /// Passes over the training split. Default 5.
    pub epochs: usize,
    /// Per-class loss weights (PyTorch's `CrossEntropyLoss(weight=...)`): "none",
    /// "balanced" (n_samples / (n_classes * count_c), from the training split), or a list
    /// with one weight per class. Default "none".
    pub class_weights: ClassWeights,
    /// Sequences per step. Default 64.
    pub batch_size: usize,
    /// "sgd" | "adam" | "adamw" | "rmsprop". Default "adam".
    pub optimizer: OptimizerKind,
    /// Peak learning rate, > 0. Default 1e-3.
    pub lr: f64,
    /// L2 penalty (sgd, adam, rmsprop) or decoupled decay (adamw). Default 0.
    pub weight_decay: f64,
    /// sgd / rmsprop momentum in [0, 1). Default 0.
    pub momentum: f64,
    /// sgd: Nesterov momentum (needs momentum > 0). Default false.
    pub nesterov: bool,
    /// adam / adamw: [beta1, beta2]. Default [0.9, 0.999].
    pub betas: [f64; 2],
    /// adam / adamw / rmsprop: denominator epsilon. Default 1e-8.
    pub eps: f64,
    /// rmsprop: smoothing constant. Default 0.99.
    pub alpha: f64,
    /// Clip the global L2 norm of all gradients to this (PyTorch clip_grad_norm_); absent = off.
    pub clip_norm: Option<f64>,
    /// Clamp every gradient element to [-v, v]; absent = off.
    pub clip_value: Option<f64>,
    /// Truncated BPTT window in steps: gradients flow through the last `tbptt` steps of each
    /// sequence only. 0 = full BPTT. Default 0.
    pub tbptt: usize,
    /// "constant" | "step" | "cosine". Default "constant".
    pub schedule: Schedule,
    /// Linear warmup from lr/warmup_steps to lr over this many steps. Default 0.
    pub warmup_steps: usize,
    /// step schedule: epochs between decays. Default 1.
    pub step_every: usize,
    /// step schedule: decay factor. Default 0.5.
    pub gamma: f64,
    /// cosine schedule: final learning rate. Default 0.
    pub min_lr: f64,
    /// Early stopping: epochs without improvement of `monitor` before stopping; absent = off.
    pub patience: Option<usize>,
    /// "val_acc" | "val_loss": the validation metric that picks the best epoch. Default "val_acc".
    pub monitor: Monitor,
    /// Stop when the training step count reaches this; absent = run all epochs.
    pub max_steps: Option<usize>,
    /// Also checkpoint every this many steps inside an epoch (for long epochs: a kill then
    /// loses at most this many steps); absent = at each epoch's end only.
    pub checkpoint_every_steps: Option<usize>,
}

impl Default for Train {
    fn default() -> Self {
        Train {
            epochs: 5,
            class_weights: ClassWeights::Rule(WeightRule::None),
            batch_size: 64,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            weight_decay: 0.0,
            momentum: 0.0,
            nesterov: false,
            betas: [0.9, 0.999],
            eps: 1e-8,
            alpha: 0.99,
            clip_norm: None,
            clip_value: None,
            tbptt: 0,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            step_every: 1,
            gamma: 0.5,
            min_lr: 0.0,
            patience: None,
            monitor: Monitor::ValAcc,
            max_steps: None,
            checkpoint_every_steps: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ClassWeights {
    Rule(WeightRule),
    Given(Vec<f64>),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WeightRule {
    None,
    Balanced,
}

impl Train {
    /// Ranges, and the settings that must agree with each other or with the model.
    /// (Negated comparisons on purpose: NaN fails them.)
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub(super) fn check(&self, m: &Model) -> Checked {
        let t = self;
        if t.epochs == 0 {
            return bad("train.epochs", "must be at least 1");
        }
        if let ClassWeights::Given(w) = &t.class_weights {
            if w.is_empty() || !w.iter().all(|v| *v >= 0.0 && v.is_finite()) {
                return bad(
                    "train.class_weights",
                    "must be \"none\", \"balanced\" or a list of finite weights >= 0",
                );
            }
            if w.iter().all(|v| *v == 0.0) {
                return bad(
                    "train.class_weights",
                    "at least one weight must be > 0 (with every weight 0 the loss is 0/0)",
                );
            }
        }
        if t.batch_size == 0 {
            return bad("train.batch_size", "must be at least 1");
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad("train.lr", "must be > 0");
        }
        if !(t.weight_decay >= 0.0) {
            return bad("train.weight_decay", "must be >= 0");
        }
        if !(0.0..1.0).contains(&t.momentum) {
            return bad("train.momentum", "must be in [0, 1)");
        }
        if t.nesterov && (t.optimizer != OptimizerKind::Sgd || t.momentum == 0.0) {
            return bad(
                "train.nesterov",
                "needs optimizer = \"sgd\" and momentum > 0",
            );
        }
        if !t.betas.iter().all(|b| (0.0..1.0).contains(b)) {
            return bad("train.betas", "each beta must be in [0, 1)");
        }
        if !(t.eps > 0.0) {
            return bad("train.eps", "must be > 0");
        }
        if !(0.0..1.0).contains(&t.alpha) {
            return bad("train.alpha", "must be in [0, 1)");
        }
        if let Some(c) = t.clip_norm {
            if !(c > 0.0) {
                return bad("train.clip_norm", "must be > 0 (remove the key to disable)");
            }
        }
        if let Some(c) = t.clip_value {
            if !(c > 0.0) {
                return bad(
                    "train.clip_value",
                    "must be > 0 (remove the key to disable)",
                );
            }
        }
        if t.tbptt > 0 && m.bidirectional {
            return bad(
                "train.tbptt",
                "truncated BPTT needs bidirectional = false (the backward direction sees the future)",
            );
        }
        if t.step_every == 0 {
            return bad("train.step_every", "must be at least 1");
        }
        if !(t.gamma > 0.0) {
            return bad("train.gamma", "must be > 0");
        }
        if !(t.min_lr >= 0.0) {
            return bad("train.min_lr", "must be >= 0");
        }
        if t.patience == Some(0) {
            return bad(
                "train.patience",
                "must be at least 1 (remove the key to disable)",
            );
        }
        if t.max_steps == Some(0) {
            return bad("train.max_steps", "must be at least 1");
        }
        if t.checkpoint_every_steps == Some(0) {
            return bad(
                "train.checkpoint_every_steps",
                "must be at least 1 (remove the key to checkpoint at epoch ends only)",
            );
        }
        Ok(())
    }
}
