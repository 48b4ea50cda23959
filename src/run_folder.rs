//! A run folder's lifecycle: create it (`open_new`) or take one this process holds
//! (`open_in`, a sweep trial), or lock one to resume (`resume_config` / `resume_in`, then
//! `open_resume`: config, data and checkpoint all checked before anything is written); each
//! hands training a `Ready` run. The folder's files and the checkpoint commit itself are
//! `checkpoint`'s.

use std::path::Path;

use crate::checkpoint::{self, Checkpoint, RunDir};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::classifier::Classifier;
use crate::optim::Optimizer;
use crate::prepare::Prepared;
use crate::summary::{Status, Summary};

/// A run folder taken for training, with every check done and the model ready: what is left
/// can only fail while running.
pub struct Ready {
    pub(crate) prep: Prepared,
    pub(crate) run: RunDir,
    pub(crate) model: Classifier,
    pub(crate) optimizer: Optimizer,
    /// A resume: the folder held an earlier process's output, cut back to `checkpoint`
    /// (None: it had none, and the run starts over from its seeded init).
    pub(crate) resumed: bool,
    pub(crate) checkpoint: Option<Checkpoint>,
    /// Score the best weights on validation and test once completed (not at a halving rung
    /// that training will continue from).
    pub(crate) final_eval: bool,
    /// The command that continues the run after an interruption (a sweep's trial: the sweep).
    pub(crate) resume_hint: Option<String>,
}

impl Ready {
    pub fn dir(&self) -> &Path {
        &self.run.path
    }

    /// Completes without the final scoring of the best weights: the run will be resumed for
    /// more epochs (a halving rung).
    pub fn without_final_eval(mut self) -> Ready {
        self.final_eval = false;
        self
    }

    /// How to continue the run once interrupted, when it is not `run-exp --resume DIR`.
    pub fn resume_hint(mut self, command: String) -> Ready {
        self.resume_hint = Some(command);
        self
    }
}

/// The classifier at its seeded init, with `model.embeddings` written in.
fn build_model(prep: &Prepared) -> Result<Classifier> {
    let model = Classifier::new(
        &prep.config.model,
        prep.input,
        prep.data.classes.len(),
        prep.config.experiment.seed,
        &prep.device,
    )?;
    if let (Some(v), Some(p), Some(vocab)) = (
        &prep.vectors,
        &prep.config.model.embeddings,
        &prep.data.vocab,
    ) {
        model.set_embedding_rows(&v.rows)?;
        crate::say!("{}", v.report(vocab, p));
    }
    Ok(model)
}

/// Creates a new run folder under `<out_dir>/<name>/` and starts the run there; on a failure
/// the folder goes again.
pub fn open_new(prep: Prepared) -> Result<Ready> {
    let cfg = &prep.config;
    let run = RunDir::create(&cfg.experiment.out_dir.join(&cfg.experiment.name))?;
    let path = run.path.clone();
    open_in(prep, run).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&path);
    })
}

/// Starts a run from its seeded init in a folder this process holds (a new one, or a sweep
/// trial's): writes what describes it (the config with absolute paths, the input, for text
/// the vocabulary, class names), and removes those again on a failure.
pub fn open_in(prep: Prepared, run: RunDir) -> Result<Ready> {
    let model = build_model(&prep)?;
    let cfg = &prep.config;
    let files = [
        checkpoint::CONFIG,
        checkpoint::INPUT,
        checkpoint::VOCAB,
        checkpoint::CLASSES,
        checkpoint::ENCODER,
    ]
    .map(|f| run.path.join(f));
    let input = prep.input;
    let describe = || -> Result<()> {
        let config = cfg.clone().with_absolute_paths();
        crate::fsutil::write_atomic(&files[0], config.to_toml().as_bytes())?;
        checkpoint::save_json(&files[1], &input)?;
        if let Some(vocab) = &prep.data.vocab {
            vocab.save(&files[2])?;
        }
        if let Some(p) = &model.encoder_weights {
            checkpoint::save_json(&files[4], p)?;
        }
        checkpoint::save_json(&files[3], &prep.data.classes)
    };
    if let Err(e) = describe() {
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        return Err(e);
    }
    let optimizer = Optimizer::new(&cfg.train);
    Ok(Ready {
        prep,
        run,
        model,
        optimizer,
        resumed: false,
        checkpoint: None,
        final_eval: true,
        resume_hint: None,
    })
}

/// A run folder to resume, taken and checked by [`resume_config`].
pub struct Resume {
    pub run: RunDir,
    /// The newest checkpoint (None: killed before its first, so the run starts over in the
    /// same folder).
    pub checkpoint: Option<Checkpoint>,
    /// The config to continue with, and the one the run was started with.
    pub config: Config,
    saved: Config,
}

/// Locks a run folder to resume and finds its newest checkpoint and the config to continue
/// with (`config`, else the folder's own, with `--set` overrides), checked against the one the
/// run was started with. Nothing is written.
pub fn resume_config(dir: &Path, config: Option<&Path>, overrides: &[String]) -> Result<Resume> {
    if !dir.join(checkpoint::CONFIG).is_file() {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            msg: format!(
                "is not a run folder (it has no {}); give a results/<name>/run-NNN folder",
                checkpoint::CONFIG
            ),
        });
    }
    let run = RunDir::open(dir)?;
    let wanted = match config {
        Some(p) => Config::load(p, overrides)?,
        None => Config::load_saved(&dir.join(checkpoint::CONFIG), overrides)?,
    };
    resume_in(run, wanted, |key| {
        overrides
            .iter()
            .find(|o| o.split_once('=').map(|(k, _)| k.trim()) == Some(key))
            .map(|o| format!("--set {o}"))
            .or_else(|| config.map(|p| p.display().to_string()))
            .unwrap_or_else(|| format!("--resume {}", dir.display()))
    })
}

/// [`resume_config`] for a run folder this process already holds and the config to continue
/// with; `location(key)` names where a changed key was set.
pub fn resume_in(run: RunDir, wanted: Config, location: impl Fn(&str) -> String) -> Result<Resume> {
    let dir = run.path.clone();
    if dir.join(checkpoint::SUMMARY).exists() {
        let s = Summary::read(&dir)?;
        if s.status == Status::Diverged {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                msg: format!(
                    "the run diverged ({}); resuming would repeat it: start a new run with other settings (e.g. a lower train.lr or train.clip_norm)",
                    s.reason.as_deref().unwrap_or("non-finite values")
                ),
            });
        }
    }
    let ckpt = checkpoint::newest(&dir)?;
    let saved = Config::load_saved(&dir.join(checkpoint::CONFIG), &[])?;
    if let Some((key, old, new)) = wanted.unsafe_resume_changes(&saved).into_iter().next() {
        return Err(Error::Config {
            location: location(&key),
            key: key.clone(),
            msg: format!(
                "cannot change when resuming (the checkpoint was trained with {key} = {old}, now {new}); a resume may change only {}; start a new run for this",
                crate::config::RESUMABLE_KEYS
                    .iter()
                    .map(|k| if k.ends_with('.') { format!("{k}*") } else { k.to_string() })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(Resume {
        run,
        checkpoint: ckpt,
        config: wanted,
        saved,
    })
}

/// Checks that the data still reads as it did (vocabulary, classes), loads the checkpoint
/// into a fresh model and optimizer (without one: the seeded init), and only then writes: the
/// new config (if a resumable key changed) and a tidy folder (older checkpoints and temporary
/// files gone). `prep` is `resume.config` prepared.
pub fn open_resume(prep: Prepared, resume: Resume) -> Result<Ready> {
    let Resume {
        run,
        checkpoint: ckpt,
        saved,
        ..
    } = resume;
    let dir = run.path.clone();
    let (saved_input, saved_vocab) = checkpoint::read_input(&dir)?;
    let input = prep.input;
    if saved_input != input {
        return Err(Error::Checkpoint {
            path: dir.join(checkpoint::INPUT),
            msg: format!(
                "the data now gives {input}, the run was trained on {saved_input}: the data changed since the run started"
            ),
        });
    }
    if let Some(vocab) = &prep.data.vocab {
        if saved_vocab.itos != vocab.itos {
            return Err(Error::Checkpoint {
                path: dir.join(checkpoint::VOCAB),
                msg: format!(
                    "the data now gives a different vocabulary ({} tokens, the run has {}): the data files changed since the run started",
                    vocab.len(),
                    saved_vocab.len()
                ),
            });
        }
    }
    let classes_path = dir.join(checkpoint::CLASSES);
    let saved_classes: Vec<String> = checkpoint::load_json(&classes_path)?;
    if saved_classes != prep.data.classes {
        return Err(Error::Checkpoint {
            path: classes_path,
            msg: format!(
                "the data now gives classes {:?}, the run has {saved_classes:?}",
                prep.data.classes
            ),
        });
    }
    let model = build_model(&prep)?;
    checkpoint::check_encoder(&dir, &model)?;
    let mut optimizer = Optimizer::new(&prep.config.train);
    if let Some(ckpt) = &ckpt {
        model.params.load(&ckpt.model())?;
        optimizer.load_state(
            ckpt.state.step,
            checkpoint::load_optimizer_state(ckpt, &prep.device)?,
            &model.params,
            &ckpt.optim(),
        )?;
    }
    // Checked: now write.
    let config = prep.config.clone().with_absolute_paths();
    if config != saved.with_absolute_paths() {
        crate::fsutil::write_atomic(&dir.join(checkpoint::CONFIG), config.to_toml().as_bytes())?;
    }
    run.tidy(ckpt.as_ref())?;
    // The summary described the process that ended; this one writes its own.
    let summary = dir.join(checkpoint::SUMMARY);
    if summary.exists() {
        std::fs::remove_file(&summary).map_err(|e| Error::io(&summary, e))?;
    }
    match &ckpt {
        Some(c) => crate::say!(
            "resuming {} from step {} (epoch {}{})",
            dir.display(),
            c.state.step,
            c.state.epochs_done + 1,
            if c.state.batches_done > 0 {
                format!(", batch {}", c.state.batches_done + 1)
            } else {
                String::new()
            }
        ),
        None => crate::say!(
            "resuming {}: no checkpoint was written, starting over from the seeded init",
            dir.display()
        ),
    }
    Ok(Ready {
        prep,
        run,
        model,
        optimizer,
        resumed: true,
        checkpoint: ckpt,
        final_eval: true,
        resume_hint: None,
    })
}
