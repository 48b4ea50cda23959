//! Training: `prepare` checks everything a config can get wrong (device, data, memory) before
//! any file is written; `open_new` / `open_resume` then take and check the run folder (a
//! resume is checked whole, config, data and checkpoint, before it writes anything); `fit` is
//! the whole epoch loop, top to bottom, in nanoGPT's order: lr for this step -> forward ->
//! loss -> backward -> clip -> step -> log, then validate, checkpoint and decide whether to
//! stop, once per epoch (and on a stop request or every `checkpoint_every_steps`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;

use crate::checkpoint::{self, Checkpoint, RunDir, State};
use crate::config::{ClassWeights, Config, Monitor, WeightRule};
use crate::data::vectors::{self, Vectors};
use crate::data::{self, batch, Dataset};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::eval::{self, Scores};
use crate::grads;
use crate::instruments::{self, StepLog, StepView};
use crate::log::plots;
use crate::log::progress::epoch_bar;
use crate::log::tensorboard::EventWriter;
use crate::log::Metrics;
use crate::memory;
use crate::model::classifier::{Classifier, Input};
use crate::model::stack::RunOpts;
use crate::optim::{self, Optimizer};
use crate::stop::Stop;
use crate::EpochRng;

/// A config with its device opened and its data loaded: nothing left that bad input can break.
pub struct Prepared {
    pub config: Config,
    pub device: Device,
    pub data: Dataset,
    /// `model.embeddings`, read and checked against the vocabulary.
    pub vectors: Option<Vectors>,
    /// Per-class loss weights (`train.class_weights`), one per class.
    pub class_weights: Option<Vec<f64>>,
}

pub fn prepare(config: Config) -> Result<Prepared> {
    crate::device::set_cpu_threads(config.experiment.threads);
    let device = DeviceSpec::parse(&config.experiment.device)
        .map_err(Error::Device)?
        .open()?;
    let available = memory::available();
    let generated = memory::synthetic_data_part(&config);
    memory::check(generated.as_slice(), available)?;
    let mut data = data::load(&config.data_to_load(), config.experiment.seed)?;
    let steps: Vec<usize> = (0..data.train.len())
        .map(|i| data.train.inputs.steps(i))
        .collect();
    data.notes.extend(cannot_act_as_written(&config, &steps));
    let longest = steps.iter().copied().max().unwrap_or(1);
    let mut parts = memory::model_parts(&config, data.vocab.len(), data.classes.len(), longest);
    let uses_cnn = !matches!(
        config.model.frame_encoder,
        Some(crate::config::FrameEncoder::Linear | crate::config::FrameEncoder::None)
    );
    if let (Input::Frames { height, width, .. }, true) = (input_of(&data), uses_cnn) {
        let fused = device.is_cpu();
        parts.push(memory::frame_encoder_part(
            &config, longest, height, width, fused,
        ));
    }
    parts.extend(generated);
    memory::check(&parts, available)?;
    let vectors = match &config.model.embeddings {
        Some(p) => Some(vectors::load(p, &data.vocab, config.model.embedding_dim)?),
        None => None,
    };
    let class_weights = class_weights(&config, &data)?;
    Ok(Prepared {
        config,
        device,
        data,
        vectors,
        class_weights,
    })
}

/// One line for each setting that cannot act as written on this machine or this data:
/// `experiment.threads` above the cores, `data.frames_per_clip` above clips' frames (`steps`:
/// each training clip's).
fn cannot_act_as_written(config: &Config, steps: &[usize]) -> Vec<String> {
    let mut notes = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if config.experiment.threads > cores {
        notes.push(format!(
            "warning: experiment.threads = {} is above this machine's {cores} cores: the threads take turns, which is slower than {cores}",
            config.experiment.threads
        ));
    }
    if let Some(k) = config.data.frames_per_clip {
        let short: Vec<usize> = steps.iter().copied().filter(|&t| t < k).collect();
        if let Some(min) = short.iter().min() {
            notes.push(format!(
                "note: data.frames_per_clip = {k}, but {} of {} training clips have fewer frames (the shortest {min}): they keep all of theirs",
                short.len(),
                steps.len()
            ));
        }
    }
    notes
}

/// Training examples per class.
pub fn class_counts(data: &Dataset) -> Vec<usize> {
    data::label_counts(&data.train.labels, data.classes.len())
}

/// `train.class_weights` resolved: "balanced" is n / (k * count_c) (scikit-learn's rule).
fn class_weights(config: &Config, data: &Dataset) -> Result<Option<Vec<f64>>> {
    let k = data.classes.len();
    match &config.train.class_weights {
        ClassWeights::Rule(WeightRule::None) => Ok(None),
        ClassWeights::Rule(WeightRule::Balanced) => {
            let counts = class_counts(data);
            let n: usize = counts.iter().sum();
            Ok(Some(
                counts
                    .iter()
                    .map(|&c| {
                        if c == 0 {
                            0.0
                        } else {
                            n as f64 / (k * c) as f64
                        }
                    })
                    .collect(),
            ))
        }
        ClassWeights::Given(w) if w.len() == k => {
            let counts = class_counts(data);
            if w.iter().zip(&counts).all(|(&wc, &n)| wc == 0.0 || n == 0) {
                return Err(Error::Config {
                    location: "config".into(),
                    key: "train.class_weights".into(),
                    msg: format!(
                        "{w:?} gives weight 0 to every class with training examples (counts {counts:?}): the loss would be 0/0"
                    ),
                });
            }
            Ok(Some(w.clone()))
        }
        ClassWeights::Given(w) => Err(Error::Config {
            location: "config".into(),
            key: "train.class_weights".into(),
            msg: format!(
                "has {} weights but the data has {k} classes {:?}",
                w.len(),
                data.classes
            ),
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Completed,
    Diverged,
    /// Stopped by SIGINT / SIGTERM after checkpointing; `--resume` continues it.
    Interrupted,
    Failed,
}

/// A run folder taken for training, with every check done and the model ready: what is left
/// can only fail while running.
pub struct Ready {
    prep: Prepared,
    run: RunDir,
    model: Classifier,
    optimizer: Optimizer,
    /// A resume: the folder held an earlier process's output, cut back to `checkpoint`
    /// (None: it had none, and the run starts over from its seeded init).
    resumed: bool,
    checkpoint: Option<Checkpoint>,
    /// Score the best weights on validation and test once completed (not at a halving rung
    /// that training will continue from).
    final_eval: bool,
    /// The command that continues the run after an interruption (a sweep's trial: the sweep).
    resume_hint: Option<String>,
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

/// What the dataset's sequences hold, as the classifier's front end takes it.
pub fn input_of(data: &Dataset) -> Input {
    match &data.train.inputs {
        data::Inputs::Tokens(_) => Input::Tokens {
            vocab: data.vocab.len(),
        },
        data::Inputs::Features { dim, .. } => Input::Features { dim: *dim },
        data::Inputs::Frames { shape, .. } => Input::Frames {
            channels: shape.channels,
            height: shape.height,
            width: shape.width,
        },
    }
}

/// The classifier at its seeded init, with `model.embeddings` written in.
fn build_model(prep: &Prepared) -> Result<Classifier> {
    let model = Classifier::new(
        &prep.config.model,
        input_of(&prep.data),
        prep.data.classes.len(),
        prep.config.experiment.seed,
        &prep.device,
    )?;
    if let (Some(v), Some(p)) = (&prep.vectors, &prep.config.model.embeddings) {
        model.set_embedding_rows(&v.rows)?;
        crate::say!("{}", v.report(&prep.data.vocab, p));
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
    ]
    .map(|f| run.path.join(f));
    let input = input_of(&prep.data);
    let describe = || -> Result<()> {
        let config = cfg.clone().with_absolute_paths();
        crate::fsutil::write_atomic(&files[0], config.to_toml().as_bytes())?;
        checkpoint::save_json(&files[1], &input)?;
        if matches!(input, Input::Tokens { .. }) {
            prep.data.vocab.save(&files[2])?;
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
        None => Config::load(&dir.join(checkpoint::CONFIG), overrides)?,
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
    let saved = Config::load(&dir.join(checkpoint::CONFIG), &[])?;
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
    let input = input_of(&prep.data);
    if saved_input != input {
        return Err(Error::Checkpoint {
            path: dir.join(checkpoint::INPUT),
            msg: format!(
                "the data now gives {input}, the run was trained on {saved_input}: the data changed since the run started"
            ),
        });
    }
    if matches!(input, Input::Tokens { .. }) && saved_vocab.itos != prep.data.vocab.itos {
        return Err(Error::Checkpoint {
            path: dir.join(checkpoint::VOCAB),
            msg: format!(
                "the data now gives a different vocabulary ({} tokens, the run has {}): the data files changed since the run started",
                prep.data.vocab.len(),
                saved_vocab.len()
            ),
        });
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

/// Trains a ready run folder to the end (or divergence, or a stop request) and writes its
/// summary.
pub fn run(ready: Ready, stop: &Stop) -> Result<Summary> {
    let Ready {
        prep,
        run,
        model,
        mut optimizer,
        resumed,
        checkpoint,
        final_eval,
        resume_hint,
    } = ready;
    let Prepared {
        config,
        device,
        data,
        class_weights,
        ..
    } = prep;
    for note in &data.notes {
        crate::say!("{note}");
    }
    let counts = class_counts(&data);
    crate::say!(
        "classes (train examples): {}",
        data.classes
            .iter()
            .zip(&counts)
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(w) = &class_weights {
        crate::say!("class weights: {w:?}");
    }
    let dir = run.path.clone();
    let weights = class_weights
        .as_ref()
        .map(|w| {
            let w: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            Tensor::new(w, &device)
        })
        .transpose()?;
    let result = fit(
        &config,
        &device,
        &data,
        &model,
        &mut optimizer,
        &run,
        resumed,
        checkpoint.as_ref(),
        weights.as_ref(),
        stop,
    );
    let f = match result {
        Ok(f) => f,
        Err(e) => {
            // Record the failure, then report it: the summary never claims a finished run.
            let st = checkpoint::newest(&dir)
                .ok()
                .flatten()
                .map(|c| c.state)
                .unwrap_or_default();
            let s = summary(
                &config,
                &dir,
                Status::Failed,
                &st,
                (None, None),
                Some(format!("{e:#}")),
                false,
                &model,
                &data,
            );
            let _ = checkpoint::save_json(&dir.join(checkpoint::SUMMARY), &s);
            return Err(e);
        }
    };
    if f.status == Status::Interrupted {
        crate::say!(
            "continue with {}",
            resume_hint.unwrap_or_else(|| format!("run-exp --resume {}", dir.display()))
        );
    }
    // A completed run: the best epoch's weights in full on validation, and on the test split.
    let best = match (f.status, &f.checkpoint) {
        (Status::Completed, Some(c)) if final_eval => c.best(),
        _ => None,
    };
    let (val, test) = match best {
        Some(best) => {
            model.params.load(&best)?;
            let score = |split| {
                eval::evaluate(
                    &model,
                    split,
                    data.classes.len(),
                    config.train.batch_size,
                    &device,
                    weights.as_ref(),
                )
            };
            (
                Some(score(&data.valid)?),
                data.test.as_ref().map(score).transpose()?,
            )
        }
        None => (None, None),
    };
    if let Some(scores) = &test {
        let mut tb = EventWriter::create(&dir)?;
        log_scores(&mut tb, "test", f.state.step, scores, &data.classes)?;
        tb.flush()?;
        crate::say!(
            "test (epoch {} weights): loss {:.4} acc {:.4} macro-F1 {:.4}\n{}",
            f.state.best_epoch.unwrap_or(0),
            scores.loss,
            scores.acc,
            scores.macro_f1,
            scores.confusion_markdown(&data.classes)
        );
    }
    let s = summary(
        &config,
        &dir,
        f.status,
        &f.state,
        (val, test),
        f.reason,
        f.stopped_early,
        &model,
        &data,
    );
    checkpoint::save_json(&dir.join(checkpoint::SUMMARY), &s)?;
    Ok(s)
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

fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(1)?;
    Ok(pred
        .eq(labels)?
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as usize)
}

/// `<split>/loss`, `/acc`, `/macro_f1`, `/precision/<class>`, `/recall/<class>` scalars and
/// the confusion matrix as an image and a Markdown table.
fn log_scores(
    tb: &mut EventWriter,
    split: &str,
    step: usize,
    s: &Scores,
    classes: &[String],
) -> Result<()> {
    tb.scalar(&format!("{split}/loss"), step, s.loss)?;
    tb.scalar(&format!("{split}/acc"), step, s.acc)?;
    tb.scalar(&format!("{split}/macro_f1"), step, s.macro_f1)?;
    for (c, name) in classes.iter().enumerate() {
        tb.scalar(&format!("{split}/precision/{name}"), step, s.precision[c])?;
        tb.scalar(&format!("{split}/recall/{name}"), step, s.recall[c])?;
    }
    let (png, w, h) = eval::confusion_png(&s.confusion)?;
    tb.image(&format!("{split}/confusion_matrix"), step, &png, w, h)?;
    tb.text(
        &format!("{split}/confusion_table"),
        step,
        &s.confusion_markdown(classes),
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn summary(
    config: &Config,
    dir: &Path,
    status: Status,
    st: &State,
    (val, test): (Option<Scores>, Option<Scores>),
    reason: Option<String>,
    stopped_early: bool,
    model: &Classifier,
    data: &Dataset,
) -> Summary {
    Summary {
        status,
        experiment: config.experiment.name.clone(),
        run_dir: dir.to_path_buf(),
        seed: config.experiment.seed,
        epochs_done: st.epochs_done,
        steps: st.step,
        best_epoch: st.best_epoch,
        best_val_acc: st.best_val_acc,
        best_val_loss: st.best_val_loss,
        test_loss: test.as_ref().map(|t| t.loss),
        test_acc: test.as_ref().map(|t| t.acc),
        test_macro_f1: test.as_ref().map(|t| t.macro_f1),
        test_scores: test,
        val_scores: val,
        classes: data.classes.clone(),
        train_class_counts: class_counts(data),
        stopped_early,
        reason,
        elapsed_s: st.elapsed_s,
        train_samples_per_s: st.samples as f64 / st.elapsed_s.max(1e-9),
        parameters: model.params.numel(),
        versions: versions(),
    }
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

struct Fitted {
    status: Status,
    state: State,
    /// The newest checkpoint (None: the run stopped before its first).
    checkpoint: Option<Checkpoint>,
    reason: Option<String>,
    stopped_early: bool,
}

/// Why a step or an epoch end found the run diverged: a non-finite loss, gradient norm,
/// validation loss or parameter.
fn non_finite(what: &str, v: f64, epoch: usize, step: usize) -> Option<String> {
    (!v.is_finite()).then(|| format!("{what} is {v} at epoch {epoch} step {step}"))
}

/// The epoch loop. Writes events, metrics and checkpoints into the run folder. Every step
/// axis is the number of optimizer steps taken (a step's scalars are logged after its update,
/// at 1, 2, ...; an epoch's at the count at its end), so a checkpoint at step S holds exactly
/// what was logged at steps <= S, and a resume restarts TensorBoard's curves at S + 1.
#[allow(clippy::too_many_arguments)]
fn fit(
    cfg: &Config,
    device: &Device,
    data: &Dataset,
    model: &Classifier,
    optimizer: &mut Optimizer,
    run: &RunDir,
    resumed: bool,
    from: Option<&Checkpoint>,
    class_weights: Option<&Tensor>,
    stop: &Stop,
) -> Result<Fitted> {
    let t = &cfg.train;
    let dir = &run.path;
    let mut state = from.map(|c| c.state.clone()).unwrap_or_default();
    let mut checkpoint = from.cloned();
    let mut tb = EventWriter::create(dir)?;
    // A resume cuts what the previous process logged back to its checkpoint (all of it, when
    // it had none).
    let mut metrics = Metrics::open(
        &dir.join(checkpoint::METRICS),
        resumed.then_some(state.metrics_bytes),
    )?;
    if resumed {
        tb.session_start(state.step + 1)?;
    }
    let steps_per_epoch = data.train.len().div_ceil(t.batch_size);
    let augment = batch::Augment::of(&cfg.data);
    let mut instruments = instruments::from_config(&cfg.log);
    let total_steps = t
        .max_steps
        .unwrap_or(usize::MAX)
        .min(steps_per_epoch * t.epochs);
    let mut stopped_early = false;
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    // Commits a checkpoint of the model, the optimizer and `state` (`improved`: the model is
    // the new best), after bringing the run's totals and the metrics length up to date.
    macro_rules! commit {
        ($state:expr, $improved:expr) => {{
            $state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
            metrics.flush()?;
            tb.flush()?;
            $state.metrics_bytes = metrics.bytes();
            checkpoint = Some(run.commit(
                &model.params,
                &optimizer.state(&model.params),
                $improved,
                &$state,
            )?);
        }};
    }
    macro_rules! finish {
        ($status:expr, $reason:expr) => {{
            state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
            metrics.flush()?;
            tb.flush()?;
            return Ok(Fitted {
                status: $status,
                state,
                checkpoint,
                reason: $reason,
                stopped_early,
            });
        }};
    }
    // `$step`: the step whose update (or the epoch end whose check) found non-finite values.
    macro_rules! diverged {
        ($step:expr, $reason:expr) => {{
            let reason: String = $reason;
            metrics.row(json!({"step": $step, "epoch": state.epochs_done + 1, "split": "diverged", "reason": &reason}))?;
            finish!(Status::Diverged, Some(reason))
        }};
    }
    macro_rules! interrupted {
        ($sig:expr) => {{
            let name = if $sig == signal_hook::consts::SIGTERM {
                "SIGTERM"
            } else {
                "SIGINT"
            };
            crate::say!("{name}: checkpointed at step {}", state.step);
            let reason = format!("{name} at step {}", state.step);
            finish!(Status::Interrupted, Some(reason))
        }};
    }

    for epoch in state.epochs_done..t.epochs {
        // One generator per epoch: shuffling and dropout repeat exactly; a mid-epoch
        // checkpoint records its position, so a resume continues the same stream.
        let mut rng = EpochRng::seed_from_u64(
            cfg.experiment.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(epoch as u64 + 1)),
        );
        let plan = batch::plan(&data.train, t.batch_size, Some(&mut rng));
        if state.batches_done > 0 {
            rng.set_word_pos(state.rng_word_pos);
        }
        let bar = epoch_bar(cfg.log.progress, epoch, t.epochs, plan.len());
        bar.inc(state.batches_done as u64);
        let epoch_start = Instant::now();
        let mut epoch_seen = 0usize;
        let mut last_grads = None;
        let mut ahead = batch::Ahead::new(&data.train, &plan[state.batches_done.min(plan.len())..]);

        for idx in plan.iter().skip(state.batches_done) {
            if let Some(sig) = stop.requested() {
                bar.abandon();
                state.rng_word_pos = rng.get_word_pos();
                commit!(state, false);
                interrupted!(sig);
            }
            if state.step >= total_steps {
                break;
            }
            let index = state.step;
            let lr = optim::lr_at(t, index, epoch, total_steps);
            let b = ahead.make(&data.train, idx, device, augment.map(|a| (a, &mut rng)))?;
            let log_now = index.is_multiple_of(cfg.log.every_steps);

            let fwd = model.forward(
                &b.x,
                RunOpts {
                    lengths: Some(&b.lengths),
                    tbptt: t.tbptt,
                    dropout_rng: Some(&mut rng),
                    probe: log_now && instruments.iter().any(|i| i.needs_probe()),
                    ..Default::default()
                },
            )?;
            let loss = eval::loss(&fwd.logits, &b.labels, class_weights)?;
            let loss_v = loss.to_scalar::<f32>()? as f64;
            if let Some(reason) = non_finite("loss", loss_v, epoch + 1, index + 1) {
                bar.abandon();
                diverged!(index + 1, reason);
            }
            let store = loss.backward()?;
            let mut g = grads::collect(model, &fwd, &store)?;
            let (norm, clipped) = match t.clip_norm {
                Some(max) => optim::clip_norm(&mut g, max)?,
                None => (grads::global_norm(&g)?, false),
            };
            // Before the update: the weights stay those of the last finite step.
            if let Some(reason) = non_finite("gradient norm", norm, epoch + 1, index + 1) {
                bar.abandon();
                diverged!(index + 1, reason);
            }
            if let Some(v) = t.clip_value {
                optim::clip_value(&mut g, v)?;
            }
            if log_now {
                for i in instruments.iter_mut() {
                    i.before_update(model)?;
                }
            }
            optimizer.step(&model.params, &g, lr)?;

            state.step += 1;
            state.batches_done += 1;
            state.samples += idx.len();
            epoch_seen += idx.len();
            state.epoch_loss_sum += loss_v * idx.len() as f64;
            state.epoch_correct += count_correct(&fwd.logits, &b.labels)?;
            state.epoch_examples += idx.len();
            let step = state.step;
            if log_now {
                let row = json!({"step": step, "epoch": epoch + 1, "split": "train"});
                let mut log = StepLog::new(&mut tb, step, row);
                log.scalar("loss", "train/loss", loss_v)?;
                log.scalar("lr", "train/lr", lr)?;
                log.scalar("grad_norm", "grad/global_norm", norm)?;
                log.tb_scalar("grad/clipped", clipped as u8 as f64)?;
                log.field("clipped", clipped.into());
                let norms = g
                    .iter()
                    .map(|(name, grad)| Ok((name.clone(), grads::norm(grad)?)))
                    .collect::<Result<Vec<_>>>()?;
                log.group(&["param_grad_norm"], "grad_norm", &norms)?;
                let view = StepView {
                    model,
                    fwd: &fwd,
                    store: &store,
                };
                for i in instruments.iter_mut() {
                    i.record(&view, &mut log)?;
                }
                metrics.row(log.into_row())?;
            }
            let rate = epoch_seen as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {loss_v:.4} {rate:.0} samples/s"));
            bar.inc(1);
            last_grads = Some(g);
            if crate::stop::test_hook(step) == Some("step") {
                // As if killed with everything written so far on disk: the worst case.
                metrics.flush()?;
                tb.flush()?;
                std::process::abort();
            }
            crate::stop::signal_point(step);
            let mid_epoch = state.batches_done < plan.len() && step < total_steps;
            if mid_epoch
                && t.checkpoint_every_steps
                    .is_some_and(|k| step.is_multiple_of(k))
            {
                state.rng_word_pos = rng.get_word_pos();
                commit!(state, false);
            }
        }
        bar.finish_and_clear();

        // End of epoch: validate, log, check, checkpoint, decide.
        let e = epoch + 1;
        let step = state.step;
        let val = eval::evaluate(
            model,
            &data.valid,
            data.classes.len(),
            t.batch_size,
            device,
            class_weights,
        )?;
        if let Some(reason) = non_finite("validation loss", val.loss, e, step) {
            diverged!(step, reason);
        }
        if let Some(name) = model.params.first_non_finite()? {
            diverged!(
                step,
                format!("parameter {name} holds NaN or infinite values at epoch {e} step {step}")
            );
        }
        let (val_loss, val_acc) = (val.loss, val.acc);
        let train_loss = state.epoch_loss_sum / state.epoch_examples.max(1) as f64;
        let train_acc = state.epoch_correct as f64 / state.epoch_examples.max(1) as f64;
        tb.scalar("train/acc", step, train_acc)?;
        tb.scalar("train/epoch_loss", step, train_loss)?;
        log_scores(&mut tb, "val", step, &val, &data.classes)?;
        // The run's whole history so far (from metrics.jsonl, so a resumed run's too): the
        // gradient-flow heatmaps (a TensorBoard image and a PNG each) and, after the epoch's
        // row, the loss and accuracy curves.
        let mut history = plots::metrics_rows(&dir.join(checkpoint::METRICS))?;
        for i in instruments.iter_mut() {
            i.epoch_end(&history, dir, &mut tb, step)?;
        }
        let hist = cfg.log.histograms_every_epochs;
        if hist > 0 && e % hist == 0 {
            for (name, var) in model.params.iter() {
                let w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                tb.histogram(&format!("weights/{name}"), step, &w)?;
            }
            for (name, grad) in last_grads.iter().flatten() {
                let v = grad.flatten_all()?.to_vec1::<f32>()?;
                tb.histogram(&format!("grads/{name}"), step, &v)?;
            }
        }
        let improved = match (state.best_epoch, t.monitor) {
            (None, _) => true,
            (Some(_), Monitor::ValAcc) => val_acc > state.best_val_acc,
            (Some(_), Monitor::ValLoss) => val_loss < state.best_val_loss,
        };
        if improved {
            state.best_epoch = Some(e);
            state.best_val_acc = val_acc;
            state.best_val_loss = val_loss;
            state.bad_epochs = 0;
        } else {
            state.bad_epochs += 1;
        }
        state.end_epoch(e);
        let row = json!({
            "step": step, "epoch": e, "split": "epoch", "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "val_macro_f1": val.macro_f1,
            "val_precision": &val.precision, "val_recall": &val.recall, "val_confusion": &val.confusion,
            "elapsed_s": elapsed_before + started.elapsed().as_secs_f64(),
        });
        metrics.row(row.clone())?;
        history.push(row);
        plots::epoch_curves(&history, dir)?;
        commit!(state, improved);
        crate::say!(
            "epoch {e}/{}: train loss {train_loss:.4} acc {train_acc:.4} | val loss {val_loss:.4} acc {val_acc:.4} macro-F1 {:.4}{}",
            t.epochs,
            val.macro_f1,
            if improved { " *" } else { "" }
        );
        if let Some(sig) = stop.requested() {
            interrupted!(sig);
        }
        if t.patience.is_some_and(|p| state.bad_epochs >= p) {
            stopped_early = true;
            break;
        }
        if state.step >= total_steps {
            if state.epochs_done < t.epochs {
                crate::say!(
                    "stopped at train.max_steps = {} (in epoch {} of train.epochs = {})",
                    state.step,
                    state.epochs_done,
                    t.epochs
                );
            }
            break;
        }
    }
    finish!(Status::Completed, None)
}
