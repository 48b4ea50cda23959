//! Training: `prepare` checks everything a config can get wrong (device, data) before any file
//! is written; `fit` is the whole epoch loop, top to bottom, in nanoGPT's order: lr for this
//! step -> forward -> loss -> backward -> clip -> step -> log, then validate, checkpoint and
//! decide whether to stop, once per epoch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;

use crate::checkpoint::{self, State};
use crate::config::{ClassWeights, Config, Monitor, WeightRule};
use crate::data::vectors::{self, Vectors};
use crate::data::{self, batch, Dataset};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::eval::{self, Scores};
use crate::grads;
use crate::log::progress::epoch_bar;
use crate::log::tensorboard::EventWriter;
use crate::log::Metrics;
use crate::model::classifier::{Classifier, Input};
use crate::model::stack::RunOpts;
use crate::optim::{self, Optimizer};

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
    if config.experiment.threads > 0 {
        // candle reads RAYON_NUM_THREADS for its CPU kernels; set before the first op.
        std::env::set_var("RAYON_NUM_THREADS", config.experiment.threads.to_string());
    }
    let device = DeviceSpec::parse(&config.experiment.device)
        .map_err(Error::Device)?
        .open()?;
    let data = data::load(&config.data, config.experiment.seed)?;
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

/// Training examples per class.
pub fn class_counts(data: &Dataset) -> Vec<usize> {
    let mut counts = vec![0usize; data.classes.len()];
    for &y in &data.train.labels {
        counts[y as usize] += 1;
    }
    counts
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
        ClassWeights::Given(w) if w.len() == k => Ok(Some(w.clone())),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Completed,
    Diverged,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub status: Status,
    pub experiment: String,
    pub run_dir: PathBuf,
    pub seed: u64,
    pub epochs_done: usize,
    pub steps: usize,
    pub best_epoch: Option<usize>,
    pub best_val_acc: f64,
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
    pub classes: Vec<String>,
    pub train_class_counts: Vec<usize>,
    pub stopped_early: bool,
    /// Why the run did not complete (diverged or failed).
    pub reason: Option<String>,
    pub elapsed_s: f64,
    pub train_samples_per_s: f64,
    pub parameters: usize,
    pub versions: serde_json::Value,
}

fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(1)?;
    Ok(pred
        .eq(labels)?
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as usize)
}

/// Creates `<out_dir>/<name>/run-NNN`, the first number not taken (never reuses a folder).
pub fn new_run_dir(config: &Config) -> Result<PathBuf> {
    let parent = config.experiment.out_dir.join(&config.experiment.name);
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    for n in 1.. {
        let dir = parent.join(format!("run-{n:03}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    unreachable!("run numbers are unbounded")
}

/// Trains in a new run folder, or continues `resume` (a run folder) from its last checkpoint.
pub fn run(prep: Prepared, resume: Option<&Path>) -> Result<Summary> {
    let Prepared {
        config,
        device,
        data,
        vectors,
        class_weights,
    } = prep;
    for note in &data.notes {
        eprintln!("{note}");
    }
    let counts = class_counts(&data);
    eprintln!(
        "classes (train examples): {}",
        data.classes
            .iter()
            .zip(&counts)
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(w) = &class_weights {
        eprintln!("class weights: {w:?}");
    }
    let dir = match resume {
        Some(d) => d.to_path_buf(),
        None => new_run_dir(&config)?,
    };
    // The resolved config first (a resume may have changed it, e.g. more epochs).
    crate::fsutil::write_atomic(&dir.join(checkpoint::CONFIG), config.to_toml().as_bytes())?;
    data.vocab.save(&dir.join(checkpoint::VOCAB))?;
    checkpoint::save_json(&dir.join(checkpoint::CLASSES), &data.classes)?;
    let model = Classifier::new(
        &config.model,
        Input::Tokens {
            vocab: data.vocab.len(),
        },
        data.classes.len(),
        config.experiment.seed,
        &device,
    )?;
    let mut optimizer = Optimizer::new(&config.train);
    let state = match resume {
        Some(d) => {
            let st = State::load(d)?;
            model.params.load(&d.join(checkpoint::LAST))?;
            optimizer.load_state(
                st.step,
                checkpoint::load_optimizer_state(d, &device)?,
                &model.params,
            );
            st
        }
        None => {
            if let (Some(v), Some(p)) = (&vectors, &config.model.embeddings) {
                model.set_embedding_rows(&v.rows)?;
                eprintln!("{}", v.report(&data.vocab, p));
            }
            State::default()
        }
    };
    let weights = class_weights
        .as_ref()
        .map(|w| {
            let w: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            Tensor::new(w, &device)
        })
        .transpose()?;
    let started = Instant::now();
    let result = fit(
        &config,
        &device,
        &data,
        &model,
        &mut optimizer,
        state,
        &dir,
        weights.as_ref(),
    );
    let elapsed = started.elapsed().as_secs_f64();
    let (status, state, reason, stopped_early, samples) = match result {
        Ok(f) => (f.status, f.state, f.reason, f.stopped_early, f.samples),
        Err(e) => {
            // Record the failure, then report it: the summary never claims a finished run.
            let st = State::load(&dir).unwrap_or_default();
            let s = summary(
                &config,
                &dir,
                Status::Failed,
                &st,
                (None, None),
                Some(format!("{e:#}")),
                false,
                elapsed,
                0,
                &model,
                &data,
            );
            let _ = checkpoint::save_json(&dir.join(checkpoint::SUMMARY), &s);
            return Err(e);
        }
    };
    // Test metrics of the best epoch's weights.
    // The best epoch's weights: validation scores in full, and the test split.
    let (val, test) = match state.best_epoch {
        Some(_) => {
            model.params.load(&dir.join(checkpoint::BEST))?;
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
        let mut tb = EventWriter::create(&dir).map_err(|e| Error::io(&dir, e))?;
        log_scores(&mut tb, "test", state.step, scores, &data.classes)?;
        tb.flush().map_err(|e| Error::io(&dir, e))?;
        eprintln!(
            "test (epoch {} weights): loss {:.4} acc {:.4} macro-F1 {:.4}\n{}",
            state.best_epoch.unwrap_or(0),
            scores.loss,
            scores.acc,
            scores.macro_f1,
            scores.confusion_markdown(&data.classes)
        );
    }
    let s = summary(
        &config,
        &dir,
        status,
        &state,
        (val, test),
        reason,
        stopped_early,
        elapsed,
        samples,
        &model,
        &data,
    );
    checkpoint::save_json(&dir.join(checkpoint::SUMMARY), &s)?;
    Ok(s)
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
    let dir = tb.path().to_path_buf();
    let io = |e| Error::io(&dir, e);
    tb.scalar(&format!("{split}/loss"), step, s.loss)
        .map_err(io)?;
    tb.scalar(&format!("{split}/acc"), step, s.acc)
        .map_err(io)?;
    tb.scalar(&format!("{split}/macro_f1"), step, s.macro_f1)
        .map_err(io)?;
    for (c, name) in classes.iter().enumerate() {
        tb.scalar(&format!("{split}/precision/{name}"), step, s.precision[c])
            .map_err(io)?;
        tb.scalar(&format!("{split}/recall/{name}"), step, s.recall[c])
            .map_err(io)?;
    }
    let (png, w, h) = eval::confusion_png(&s.confusion)?;
    tb.image(&format!("{split}/confusion_matrix"), step, &png, w, h)
        .map_err(io)?;
    tb.text(
        &format!("{split}/confusion_table"),
        step,
        &s.confusion_markdown(classes),
    )
    .map_err(io)?;
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
    elapsed: f64,
    samples: usize,
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
        elapsed_s: elapsed,
        train_samples_per_s: samples as f64 / elapsed.max(1e-9),
        parameters: model.params.numel(),
        versions: versions(),
    }
}

/// Crate versions (from the Cargo.lock this binary was built with) and the git commit.
pub fn versions() -> serde_json::Value {
    let lock = include_str!("../Cargo.lock");
    let version_of = |name: &str| -> Option<String> {
        let key = format!("name = \"{name}\"\nversion = \"");
        let at = lock.find(&key)? + key.len();
        Some(lock[at..].split('"').next()?.to_string())
    };
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
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
    reason: Option<String>,
    stopped_early: bool,
    samples: usize,
}

/// The epoch loop. Writes events, metrics and checkpoints into `dir`.
#[allow(clippy::too_many_arguments)]
fn fit(
    cfg: &Config,
    device: &Device,
    data: &Dataset,
    model: &Classifier,
    optimizer: &mut Optimizer,
    mut state: State,
    dir: &Path,
    class_weights: Option<&Tensor>,
) -> Result<Fitted> {
    let t = &cfg.train;
    let io = |e| Error::io(dir, e);
    let mut tb = EventWriter::create(dir).map_err(io)?;
    let mut metrics = Metrics::create(&dir.join(checkpoint::METRICS))?;
    let steps_per_epoch = data.train.len().div_ceil(t.batch_size);
    let total_steps = t
        .max_steps
        .unwrap_or(usize::MAX)
        .min(steps_per_epoch * t.epochs);
    let mut samples = 0usize;
    let mut stopped_early = false;
    let run_start = Instant::now();

    for epoch in state.epochs_done..t.epochs {
        // One generator per epoch: shuffling and dropout repeat exactly, also after a resume.
        let mut rng = StdRng::seed_from_u64(
            cfg.experiment.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(epoch as u64 + 1)),
        );
        let plan = batch::plan(&data.train, t.batch_size, Some(&mut rng));
        let bar = epoch_bar(cfg.log.progress, epoch, t.epochs, plan.len());
        let (mut epoch_loss, mut epoch_correct, mut epoch_n) = (0f64, 0usize, 0usize);
        let epoch_start = Instant::now();
        let mut last_grads = None;

        for idx in &plan {
            if state.step >= total_steps {
                break;
            }
            let step = state.step;
            let lr = optim::lr_at(t, step, epoch, total_steps);
            let b = batch::make(&data.train, idx, device)?;
            let log_now = step.is_multiple_of(cfg.log.every_steps);

            let fwd = model.forward(
                &b.ids,
                RunOpts {
                    lengths: Some(&b.lengths),
                    tbptt: t.tbptt,
                    dropout_rng: Some(&mut rng),
                    probe: log_now && cfg.log.grad_flow,
                    ..Default::default()
                },
            )?;
            let loss = eval::loss(&fwd.logits, &b.labels, class_weights)?;
            let loss_v = loss.to_scalar::<f32>()? as f64;
            if !loss_v.is_finite() {
                bar.abandon();
                let reason = format!("loss is {loss_v} at epoch {} step {step}", epoch + 1);
                metrics.row(json!({"step": step, "epoch": epoch + 1, "split": "train", "loss": null, "diverged": true}))?;
                metrics.flush()?;
                tb.flush().map_err(io)?;
                return Ok(Fitted {
                    status: Status::Diverged,
                    state,
                    reason: Some(reason),
                    stopped_early: false,
                    samples,
                });
            }
            let store = loss.backward()?;
            let mut g = grads::collect(model, &fwd, &store)?;
            let flow = grads::flow(&fwd.flow, &store)?;
            let (norm, clipped) = match t.clip_norm {
                Some(max) => optim::clip_norm(&mut g, max)?,
                None => (grads::global_norm(&g)?, false),
            };
            if let Some(v) = t.clip_value {
                optim::clip_value(&mut g, v)?;
            }
            optimizer.step(&model.params, &g, lr)?;

            state.step += 1;
            samples += idx.len();
            epoch_loss += loss_v * idx.len() as f64;
            epoch_correct += count_correct(&fwd.logits, &b.labels)?;
            epoch_n += idx.len();
            if log_now {
                tb.scalar("train/loss", step, loss_v).map_err(io)?;
                tb.scalar("train/lr", step, lr).map_err(io)?;
                tb.scalar("grad/global_norm", step, norm).map_err(io)?;
                tb.scalar("grad/clipped", step, clipped as u8 as f64)
                    .map_err(io)?;
                for (name, grad) in &g {
                    tb.scalar(&format!("grad_norm/{name}"), step, grads::norm(grad)?)
                        .map_err(io)?;
                }
                if !flow.is_empty() {
                    tb.curve("grad_flow/by_timestep", step, &flow).map_err(io)?;
                    tb.scalar("grad_flow/first_step", step, flow[0])
                        .map_err(io)?;
                    tb.scalar("grad_flow/last_step", step, flow[flow.len() - 1])
                        .map_err(io)?;
                }
                metrics.row(json!({
                    "step": step, "epoch": epoch + 1, "split": "train", "loss": loss_v, "lr": lr,
                    "grad_norm": norm, "clipped": clipped,
                    "grad_flow": if flow.is_empty() { None } else { Some(&flow) },
                }))?;
            }
            let rate = epoch_n as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {loss_v:.4} {rate:.0} samples/s"));
            bar.inc(1);
            last_grads = Some(g);
        }
        bar.finish_and_clear();

        // End of epoch: validate, log, checkpoint, decide.
        let val = eval::evaluate(
            model,
            &data.valid,
            data.classes.len(),
            t.batch_size,
            device,
            class_weights,
        )?;
        let (val_loss, val_acc) = (val.loss, val.acc);
        let train_loss = epoch_loss / epoch_n.max(1) as f64;
        let train_acc = epoch_correct as f64 / epoch_n.max(1) as f64;
        let e = epoch + 1;
        let step = state.step;
        tb.scalar("train/acc", step, train_acc).map_err(io)?;
        tb.scalar("train/epoch_loss", step, train_loss)
            .map_err(io)?;
        log_scores(&mut tb, "val", step, &val, &data.classes)?;
        let hist = cfg.log.histograms_every_epochs;
        if hist > 0 && e % hist == 0 {
            for (name, var) in model.params.iter() {
                let w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                tb.histogram(&format!("weights/{name}"), step, &w)
                    .map_err(io)?;
            }
            for (name, grad) in last_grads.iter().flatten() {
                let v = grad.flatten_all()?.to_vec1::<f32>()?;
                tb.histogram(&format!("grads/{name}"), step, &v)
                    .map_err(io)?;
            }
        }
        metrics.row(json!({
            "step": step, "epoch": e, "split": "epoch", "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "val_macro_f1": val.macro_f1,
            "val_precision": &val.precision, "val_recall": &val.recall, "val_confusion": &val.confusion,
            "elapsed_s": run_start.elapsed().as_secs_f64(),
        }))?;
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
            model.params.save(&dir.join(checkpoint::BEST))?;
        } else {
            state.bad_epochs += 1;
        }
        state.epochs_done = e;
        model.params.save(&dir.join(checkpoint::LAST))?;
        crate::model::save_tensors(
            &optimizer.state(&model.params),
            &dir.join(checkpoint::LAST_OPTIM),
        )?;
        state.save(dir)?;
        metrics.flush()?;
        tb.flush().map_err(io)?;
        eprintln!(
            "epoch {e}/{}: train loss {train_loss:.4} acc {train_acc:.4} | val loss {val_loss:.4} acc {val_acc:.4} macro-F1 {:.4}{}",
            t.epochs,
            val.macro_f1,
            if improved { " *" } else { "" }
        );
        if t.patience.is_some_and(|p| state.bad_epochs >= p) {
            stopped_early = true;
            break;
        }
        if state.step >= total_steps {
            break;
        }
    }
    Ok(Fitted {
        status: Status::Completed,
        state,
        reason: None,
        stopped_early,
        samples,
    })
}
