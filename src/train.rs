//! Training a `Ready` run (see `prepare` and `run_folder` for how one is made): `run` trains
//! it to the end and writes summary.json; `fit` is the whole epoch loop, top to bottom, in
//! nanoGPT's order: lr for this step -> forward -> loss -> backward -> clip -> step -> log, then
//! validate, log, checkpoint and decide whether to stop, once per epoch (and on a stop request
//! or every `checkpoint_every_steps`). Every logged value goes through `log::writer`; what is
//! measured beyond the loss is `instruments`'.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use serde_json::json;

use crate::checkpoint::{self, Checkpoint, RunDir, State};
use crate::config::{Config, Monitor};
use crate::data::{batch, Dataset};
use crate::error::Result;
use crate::eval::{self, Scores};
use crate::grads;
use crate::instruments::{self, EpochView, StepView};
use crate::log::plots;
use crate::log::progress::epoch_bar;
use crate::log::tensorboard::EventWriter;
use crate::log::writer::{RunLog, StepLog};
use crate::model::classifier::Classifier;
use crate::model::stack::RunOpts;
use crate::optim::{self, Optimizer};
use crate::prepare::{class_counts, Prepared};
use crate::run_folder::Ready;
use crate::stop::Stop;
use crate::summary::{versions, Status, Summary};
use crate::EpochRng;

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
    let result = fit(Fit {
        cfg: &config,
        device: &device,
        data: &data,
        model: &model,
        optimizer: &mut optimizer,
        run: &run,
        resumed,
        from: checkpoint.as_ref(),
        class_weights: weights.as_ref(),
        stop,
    });
    let f = match result {
        Ok(f) => f,
        Err(e) => {
            // Record the failure, then report it: the summary never claims a finished run.
            let st = checkpoint::newest(&dir)
                .ok()
                .flatten()
                .map(|c| c.state)
                .unwrap_or_default();
            let failed = Fitted {
                status: Status::Failed,
                state: st,
                checkpoint: None,
                reason: Some(format!("{e:#}")),
                stopped_early: false,
            };
            let s = summary(&config, &dir, &model, &data, failed, (None, None));
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
            let score = |split, view| {
                eval::evaluate(
                    &model,
                    split,
                    data.classes.len(),
                    config.train.batch_size,
                    &device,
                    weights.as_ref(),
                    view,
                )
            };
            // The test split holds [eval] clips views of each clip.
            let test_view = config.eval.test_view(&config.data);
            (
                Some(score(&data.valid, None)?),
                data.test
                    .as_ref()
                    .map(|t| score(t, test_view))
                    .transpose()?,
            )
        }
        None => (None, None),
    };
    if let Some(scores) = &test {
        // Into TensorBoard only: metrics.jsonl ends with the last checkpoint's rows.
        let mut tb = EventWriter::create(&dir)?;
        scores.log(
            "test",
            &data.classes,
            &mut StepLog::new(&mut tb, f.state.step, json!({})),
        )?;
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
    let s = summary(&config, &dir, &model, &data, f, (val, test));
    checkpoint::save_json(&dir.join(checkpoint::SUMMARY), &s)?;
    Ok(s)
}

fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(1)?;
    Ok(pred
        .eq(labels)?
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as usize)
}

/// summary.json of a run that ended as `f`, with the best weights' validation and test scores.
fn summary(
    config: &Config,
    dir: &Path,
    model: &Classifier,
    data: &Dataset,
    f: Fitted,
    (val, test): (Option<Scores>, Option<Scores>),
) -> Summary {
    let st = &f.state;
    Summary {
        status: f.status,
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
        test_mean_class_acc: test.as_ref().map(|t| t.mean_class_acc),
        test_top5: test.as_ref().and_then(|t| t.top5),
        test_scores: test,
        val_scores: val,
        classes: data.classes.clone(),
        train_class_counts: class_counts(data),
        stopped_early: f.stopped_early,
        skipped_inputs: data.skipped.clone(),
        reason: f.reason,
        elapsed_s: st.elapsed_s,
        train_samples_per_s: st.samples as f64 / st.elapsed_s.max(1e-9),
        parameters: model.params.numel(),
        versions: versions(),
    }
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

/// What `fit` trains, on what, and where it writes.
struct Fit<'a> {
    cfg: &'a Config,
    device: &'a Device,
    data: &'a Dataset,
    model: &'a Classifier,
    optimizer: &'a mut Optimizer,
    run: &'a RunDir,
    /// The folder held an earlier process's output: cut it back to `from` (all of it without).
    resumed: bool,
    /// The checkpoint to continue from (None: the seeded init).
    from: Option<&'a Checkpoint>,
    class_weights: Option<&'a Tensor>,
    stop: &'a Stop,
}

/// What `fit` has written: the log, the newest checkpoint and the training clock.
struct Written<'a> {
    log: RunLog,
    run: &'a RunDir,
    checkpoint: Option<Checkpoint>,
    started: Instant,
    /// Training time of the processes before this one.
    elapsed_before: f64,
}

impl Written<'_> {
    /// Training time of the whole run so far.
    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// Commits a checkpoint of the model, the optimizer and `state` (`improved`: the model is
    /// the new best), after bringing the run's totals and the metrics length up to date.
    fn commit(
        &mut self,
        state: &mut State,
        model: &Classifier,
        optimizer: &Optimizer,
        improved: bool,
    ) -> Result<()> {
        state.elapsed_s = self.elapsed();
        self.log.flush()?;
        state.metrics_bytes = self.log.bytes();
        self.checkpoint = Some(self.run.commit(
            &model.params,
            &optimizer.state(&model.params),
            improved,
            state,
        )?);
        Ok(())
    }

    /// How the run ended, with everything written on disk.
    fn end(
        mut self,
        status: Status,
        mut state: State,
        reason: Option<String>,
        stopped_early: bool,
    ) -> Result<Fitted> {
        state.elapsed_s = self.elapsed();
        self.log.flush()?;
        Ok(Fitted {
            status,
            state,
            checkpoint: self.checkpoint,
            reason,
            stopped_early,
        })
    }

    /// Diverged at `step` (the step whose update, or the epoch end whose check, found
    /// non-finite values): a row saying why, and the end. The weights stay the last
    /// checkpoint's.
    fn diverged(mut self, state: State, step: usize, reason: String) -> Result<Fitted> {
        self.log.push(json!({
            "step": step, "epoch": state.epochs_done + 1, "split": "diverged", "reason": &reason,
        }))?;
        self.end(Status::Diverged, state, Some(reason), false)
    }

    /// Stopped by signal `sig`, after the checkpoint that `--resume` continues from.
    fn interrupted(self, state: State, sig: i32) -> Result<Fitted> {
        let name = if sig == signal_hook::consts::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        crate::say!("{name}: checkpointed at step {}", state.step);
        let reason = format!("{name} at step {}", state.step);
        self.end(Status::Interrupted, state, Some(reason), false)
    }
}

/// The epoch loop. Writes events, metrics and checkpoints into the run folder. Every step
/// axis is the number of optimizer steps taken (a step's scalars are logged after its update,
/// at 1, 2, ...; an epoch's at the count at its end), so a checkpoint at step S holds exactly
/// what was logged at steps <= S, and a resume restarts TensorBoard's curves at S + 1.
fn fit(f: Fit) -> Result<Fitted> {
    let Fit {
        cfg,
        device,
        data,
        model,
        optimizer,
        run,
        resumed,
        from,
        class_weights,
        stop,
    } = f;
    let t = &cfg.train;
    let dir = &run.path;
    let mut state = from.map(|c| c.state.clone()).unwrap_or_default();
    let mut out = Written {
        // A resume cuts what the previous process logged back to its checkpoint (all of it,
        // when it had none).
        log: RunLog::open(dir, resumed.then_some((state.metrics_bytes, state.step)))?,
        run,
        checkpoint: from.cloned(),
        started: Instant::now(),
        elapsed_before: state.elapsed_s,
    };
    let steps_per_epoch = data.train.len().div_ceil(t.batch_size);
    let augment = batch::Augment::of(&cfg.data);
    let mut instruments = instruments::from_config(&cfg.log);
    let total_steps = t
        .max_steps
        .unwrap_or(usize::MAX)
        .min(steps_per_epoch * t.epochs);
    let mut stopped_early = false;

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
                out.commit(&mut state, model, optimizer, false)?;
                return out.interrupted(state, sig);
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
                return out.diverged(state, index + 1, reason);
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
                return out.diverged(state, index + 1, reason);
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
                let mut log = out.log.at(step, row);
                log.scalar("loss", "train/loss", loss_v)?;
                log.scalar("lr", "train/lr", lr)?;
                log.scalar("grad_norm", "grad/global_norm", norm)?;
                log.tb_scalar("grad/clipped", clipped as u8 as f64)?;
                log.field("clipped", clipped.into());
                let view = StepView {
                    model,
                    fwd: &fwd,
                    store: &store,
                    grads: &g,
                };
                for i in instruments.iter_mut() {
                    i.record(&view, &mut log)?;
                }
                let row = log.into_row();
                out.log.push(row)?;
            }
            let rate = epoch_seen as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {loss_v:.4} {rate:.0} samples/s"));
            bar.inc(1);
            last_grads = Some(g);
            crate::stop::crash_point_after("step", step, || out.log.flush())?;
            crate::stop::signal_point(step);
            let mid_epoch = state.batches_done < plan.len() && step < total_steps;
            if mid_epoch
                && t.checkpoint_every_steps
                    .is_some_and(|k| step.is_multiple_of(k))
            {
                state.rng_word_pos = rng.get_word_pos();
                out.commit(&mut state, model, optimizer, false)?;
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
            None,
        )?;
        if let Some(reason) = non_finite("validation loss", val.loss, e, step) {
            return out.diverged(state, step, reason);
        }
        if let Some(name) = model.params.first_non_finite()? {
            let reason =
                format!("parameter {name} holds NaN or infinite values at epoch {e} step {step}");
            return out.diverged(state, step, reason);
        }
        let train_loss = state.epoch_loss_sum / state.epoch_examples.max(1) as f64;
        let train_acc = state.epoch_correct as f64 / state.epoch_examples.max(1) as f64;
        let elapsed = out.elapsed();
        let mut log = out
            .log
            .at(step, json!({"step": step, "epoch": e, "split": "epoch"}));
        log.scalar("train_acc", "train/acc", train_acc)?;
        log.scalar("train_loss", "train/epoch_loss", train_loss)?;
        val.log("val", &data.classes, &mut log)?;
        let view = EpochView {
            model,
            grads: last_grads.as_deref(),
            epoch: e,
            dir,
        };
        for i in instruments.iter_mut() {
            i.epoch_end(&view, &mut log)?;
        }
        log.field("elapsed_s", elapsed.into());
        let row = log.into_row();
        out.log.push(row)?;
        // The loss and accuracy curves over the run's whole history (a resumed run's too).
        plots::epoch_curves(out.log.history(), dir)?;
        let improved = match (state.best_epoch, t.monitor) {
            (None, _) => true,
            (Some(_), Monitor::ValAcc) => val.acc > state.best_val_acc,
            (Some(_), Monitor::ValLoss) => val.loss < state.best_val_loss,
        };
        if improved {
            state.best_epoch = Some(e);
            state.best_val_acc = val.acc;
            state.best_val_loss = val.loss;
            state.bad_epochs = 0;
        } else {
            state.bad_epochs += 1;
        }
        state.end_epoch(e);
        out.commit(&mut state, model, optimizer, improved)?;
        crate::say!(
            "epoch {e}/{}: train loss {train_loss:.4} acc {train_acc:.4} | val loss {:.4} acc {:.4} macro-F1 {:.4}{}",
            t.epochs,
            val.loss,
            val.acc,
            val.macro_f1,
            if improved { " *" } else { "" }
        );
        if let Some(sig) = stop.requested() {
            return out.interrupted(state, sig);
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
    out.end(Status::Completed, state, None, stopped_early)
}
