//! The run folder as one crash-consistent unit. One process at a time holds it (an exclusive
//! lock on `RUN/lock`); a checkpoint (weights, optimizer moments, best weights, the resume
//! point) is built in a temporary folder and committed by one rename to
//! `checkpoints/<seq>-step-<step>`, so the newest checkpoint is always whole and a resume can
//! never mix weights of one step with the state of another. Everything else a run writes is
//! cut back to the checkpoint on resume (`State::metrics_bytes`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::data::text::Vocab;
use crate::error::{Error, Result};
use crate::fsutil::{replace_with_link, sync_dir, write_atomic};
use crate::model::architecture::Input;
use crate::model::classifier::Classifier;
use crate::model::Params;

pub const CONFIG: &str = "config.toml";
pub const VOCAB: &str = "vocab.json";
/// What each step of the model's input is (tokens and vocabulary size, features, frames).
pub const INPUT: &str = "input.json";
pub const CLASSES: &str = "classes.json";
/// A pretrained encoder's weights file and its hash (`model::provenance::Provenance`).
pub const ENCODER: &str = "encoder.json";
/// Copies (hard links) of the newest checkpoint's weights, for other tools.
pub const BEST: &str = "best.safetensors";
pub const LAST: &str = "last.safetensors";
/// The metrics file (its writer, `log::Metrics`, names it).
pub const METRICS: &str = crate::log::METRICS;
pub const SUMMARY: &str = "summary.json";
pub const LOCK: &str = "lock";
pub const CHECKPOINTS: &str = "checkpoints";
/// Files inside one checkpoint folder.
const MODEL: &str = "model.safetensors";
const OPTIM: &str = "optim.safetensors";
const STATE: &str = "state.json";

/// Where training stands at a checkpoint (`state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Optimizer steps taken.
    pub step: usize,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Batches of the epoch in progress already trained (a mid-epoch checkpoint); 0 at an
    /// epoch's end. That epoch's batch order is seeded, so a resume skips exactly these.
    pub batches_done: usize,
    /// The epoch generator's position (shuffling and dropout) after those batches.
    pub rng_word_pos: u128,
    /// The epoch in progress so far: summed loss, correct predictions, examples.
    pub epoch_loss_sum: f64,
    pub epoch_correct: usize,
    pub epoch_examples: usize,
    pub best_epoch: Option<usize>,
    pub best_val_acc: f64,
    pub best_val_loss: f64,
    /// Epochs since the monitored metric last improved (early stopping).
    pub bad_epochs: usize,
    /// Training time and examples over the whole run, across resumes.
    pub elapsed_s: f64,
    pub samples: usize,
    /// Length of metrics.jsonl at this checkpoint: a resume cuts the file back to it.
    pub metrics_bytes: u64,
}

impl State {
    /// Epoch `epochs_done` has ended: nothing of an epoch in progress remains.
    pub fn end_epoch(&mut self, epochs_done: usize) {
        self.epochs_done = epochs_done;
        self.batches_done = 0;
        self.rng_word_pos = 0;
        self.epoch_loss_sum = 0.0;
        self.epoch_correct = 0;
        self.epoch_examples = 0;
    }
}

/// A committed checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    /// Its place in the run's sequence of commits (the folder name's prefix).
    pub seq: u64,
    pub state: State,
}

impl Checkpoint {
    pub fn model(&self) -> PathBuf {
        self.dir.join(MODEL)
    }

    pub fn optim(&self) -> PathBuf {
        self.dir.join(OPTIM)
    }

    /// The best epoch's weights (absent before the first epoch ends).
    pub fn best(&self) -> Option<PathBuf> {
        let p = self.dir.join(BEST);
        p.exists().then_some(p)
    }
}

fn checkpoint_error(path: impl Into<PathBuf>, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.into(),
        msg: msg.into(),
    }
}

/// `checkpoints/<seq>-step-<step>` -> seq.
fn sequence_of(name: &str) -> Option<u64> {
    let (seq, rest) = name.split_once('-')?;
    rest.strip_prefix("step-")?;
    seq.parse().ok()
}

/// Committed checkpoint folders, oldest first, by sequence number.
fn committed(run: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let root = run.join(CHECKPOINTS);
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&root, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&root, e))?;
        if let Some(seq) = sequence_of(&entry.file_name().to_string_lossy()) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest committed checkpoint of a run folder, if any.
pub fn newest(run: &Path) -> Result<Option<Checkpoint>> {
    let Some((seq, dir)) = committed(run)?.pop() else {
        return Ok(None);
    };
    let path = dir.join(STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let state: State = serde_json::from_str(&text)
        .map_err(|e| checkpoint_error(&path, format!("not a checkpoint state: {e}")))?;
    Ok(Some(Checkpoint { dir, seq, state }))
}

/// A run folder held by this process: the lock lasts until the value is dropped (or the
/// process dies, however it dies).
pub struct RunDir {
    pub path: PathBuf,
    _lock: File,
}

impl RunDir {
    /// Creates `<parent>/run-NNN`, the first number not taken (never reuses a folder), and
    /// locks it.
    pub fn create(parent: &Path) -> Result<RunDir> {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        for n in 1.. {
            let dir = parent.join(format!("run-{n:03}"));
            match std::fs::create_dir(&dir) {
                Ok(()) => return RunDir::open(&dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            }
        }
        unreachable!("run numbers are unbounded")
    }

    /// Locks an existing run folder; a folder another process holds is an error naming its pid.
    pub fn open(dir: &Path) -> Result<RunDir> {
        if !dir.is_dir() {
            return Err(checkpoint_error(dir, "is not a run folder"));
        }
        let file = match crate::fsutil::lock_stamped(&dir.join(LOCK))? {
            Ok(f) => f,
            Err(holder) => {
                return Err(checkpoint_error(
                    dir,
                    format!(
                        "the run folder is in use by another run-exp ({holder}); wait for it to end or stop it"
                    ),
                ))
            }
        };
        Ok(RunDir {
            path: dir.to_path_buf(),
            _lock: file,
        })
    }

    /// Commits a checkpoint: the model, the optimizer moments, the best weights (`improved`:
    /// the model is the new best; otherwise the previous checkpoint's best is kept) and
    /// `state`, made visible by one rename. Then the top-level `last`/`best` links follow and
    /// older checkpoints go.
    pub fn commit(
        &self,
        params: &Params,
        optim: &HashMap<String, Tensor>,
        improved: bool,
        state: &State,
    ) -> Result<Checkpoint> {
        let root = self.path.join(CHECKPOINTS);
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let previous = newest(&self.path)?;
        let tmp = crate::fsutil::temp_sibling(&root.join("checkpoint"));
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let build = || -> Result<()> {
            params.save(&tmp.join(MODEL))?;
            crate::model::save_tensors(optim, &tmp.join(OPTIM))?;
            let best = tmp.join(BEST);
            match (improved, previous.as_ref().and_then(Checkpoint::best)) {
                (true, _) => replace_with_link(&tmp.join(MODEL), &best)?,
                (false, Some(prev)) => replace_with_link(&prev, &best)?,
                (false, None) => {}
            }
            let json = serde_json::to_string_pretty(state)
                .map_err(|e| checkpoint_error(tmp.join(STATE), e.to_string()))?;
            write_atomic(&tmp.join(STATE), json.as_bytes())?;
            sync_dir(&tmp)
        };
        if let Err(e) = build() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        crate::stop::crash_point("commit", state.step);
        let seq = previous.as_ref().map_or(1, |c| c.seq + 1);
        let dir = root.join(format!("{seq:06}-step-{}", state.step));
        std::fs::rename(&tmp, &dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            Error::io(&dir, e)
        })?;
        sync_dir(&root)?;
        crate::stop::crash_point("committed", state.step);
        let ckpt = Checkpoint {
            dir,
            seq,
            state: state.clone(),
        };
        self.tidy(Some(&ckpt))?;
        Ok(ckpt)
    }

    /// Makes the run folder agree with its newest checkpoint `ckpt` (None: it has none): the
    /// top-level weight links point at it, and older checkpoints and any unfinished temporary
    /// folder are gone.
    pub fn tidy(&self, ckpt: Option<&Checkpoint>) -> Result<()> {
        if let Some(ckpt) = ckpt {
            replace_with_link(&ckpt.model(), &self.path.join(LAST))?;
            if let Some(best) = ckpt.best() {
                replace_with_link(&best, &self.path.join(BEST))?;
            }
        }
        let root = self.path.join(CHECKPOINTS);
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let p = entry.path();
                if ckpt.is_none_or(|c| p != c.dir) {
                    let _ = std::fs::remove_dir_all(&p);
                }
            }
        }
        // Temporary files of writers that died before their rename.
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

pub fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json =
        serde_json::to_string_pretty(value).map_err(|e| checkpoint_error(path, e.to_string()))?;
    write_atomic(path, json.as_bytes())
}

pub fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| checkpoint_error(path, e.to_string()))
}

/// Which weights of a run to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// The best epoch's (by `train.monitor`).
    Best,
    /// The newest checkpoint's.
    Last,
}

/// A trained model with everything needed to use it.
pub struct LoadedRun {
    pub dir: PathBuf,
    pub config: Config,
    /// The vocabulary of a text run (empty for features and frames).
    pub vocab: Vocab,
    pub input: Input,
    pub classes: Vec<String>,
    pub model: Classifier,
}

/// A run folder's input: `input.json`, or token ids of its vocabulary for runs made before
/// input.json existed.
pub fn read_input(dir: &Path) -> Result<(Input, Vocab)> {
    let path = dir.join(INPUT);
    let input = if path.is_file() {
        Some(load_json::<Input>(&path)?)
    } else {
        None
    };
    match input {
        Some(Input::Tokens { .. }) | None => {
            let vocab = Vocab::load(&dir.join(VOCAB))?;
            Ok((Input::Tokens { vocab: vocab.len() }, vocab))
        }
        Some(other) => Ok((other, Vocab::from_tokens(Vec::new()))),
    }
}

/// Rebuilds the classifier from a run folder and loads its best or last weights, refusing
/// weights that hold a NaN or an infinity.
pub fn load_run(dir: &Path, weights: Weights, device: &Device) -> Result<LoadedRun> {
    let config = Config::load_saved(&dir.join(CONFIG), &[])?;
    let (input, vocab) = read_input(dir)?;
    let classes: Vec<String> = load_json(&dir.join(CLASSES))?;
    let model = Classifier::new(
        &config.model,
        input,
        classes.len(),
        config.experiment.seed,
        device,
    )?;
    // A run still training commits newer checkpoints and deletes older ones: read the newest
    // again if it went between finding it and reading it.
    let mut attempts = 0;
    let (file, bytes) = loop {
        let ckpt = newest(dir)?.ok_or_else(|| {
            checkpoint_error(
                dir,
                "has no checkpoint yet (no epoch finished and no interrupted step was saved)",
            )
        })?;
        let file = match weights {
            Weights::Last => ckpt.model(),
            Weights::Best => ckpt.dir.join(BEST),
        };
        match std::fs::read(&file) {
            Ok(bytes) => break (file, bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && ckpt.dir.is_dir() => {
                return Err(checkpoint_error(
                    &ckpt.dir,
                    "has no best weights yet (no epoch finished); use --weights last",
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
            Err(e) => return Err(Error::io(&file, e)),
        }
    };
    model.params.load_bytes(&bytes, &file)?;
    check_encoder(dir, &model)?;
    if let Some(name) = model.params.first_non_finite()? {
        return Err(checkpoint_error(
            &file,
            format!("parameter {name} holds NaN or infinite values (the run diverged); these weights cannot predict"),
        ));
    }
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        config,
        vocab,
        input,
        classes,
        model,
    })
}

/// A run trained on a pretrained encoder's weights: the file the model was built from now must
/// hold the same bytes (the frozen weights are not copied into checkpoints).
pub fn check_encoder(dir: &Path, model: &Classifier) -> Result<()> {
    let path = dir.join(ENCODER);
    let Some(now) = &model.encoder_weights else {
        return Ok(());
    };
    if !path.is_file() {
        return Err(checkpoint_error(
            &path,
            "is missing: the run does not say which encoder weights it was trained on",
        ));
    }
    let saved: crate::model::provenance::Provenance = load_json(&path)?;
    if saved.fnv1a != now.fnv1a || saved.encoder != now.encoder {
        return Err(checkpoint_error(
            &path,
            format!(
                "the run was trained on {} weights {} (hash {}); {} now holds other bytes (hash {}): put the original file back, or start a new run",
                saved.encoder,
                saved.file.display(),
                saved.fnv1a,
                now.file.display(),
                now.fnv1a
            ),
        ));
    }
    Ok(())
}

pub fn load_optimizer_state(ckpt: &Checkpoint, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = ckpt.optim();
    candle_core::safetensors::load(&path, device)
        .map_err(|e| checkpoint_error(path, format!("cannot read safetensors: {e}")))
}
