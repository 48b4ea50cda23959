//! One trial in this process (`run-exp sweep.toml --trial <id>`, from the local driver, a
//! Slurm task or a user): claim it, run it (a new run folder, or a resume from its last
//! checkpoint when an earlier attempt left one), and record how it ended. A halving trial
//! trains rung by rung, each rung a resume of the last with more epochs.

use std::path::Path;
use std::time::Duration;

use super::halving;
use super::record::{self, Record, Rung, TrialStatus, CLAIM};
use super::{Plan, Trial};
use crate::checkpoint::{self, RunDir};
use crate::config::{Config, Monitor, SweepMethod};
use crate::error::{Error, Result};
use crate::log::hparams;
use crate::stop::Stop;
use crate::summary::{Status, Summary};
use crate::{prepare, train};

/// How a `--trial` call ended.
#[derive(Debug)]
pub enum Outcome {
    /// The trial ran (or went on) in this process and ended with this status.
    Ran(TrialStatus),
    /// It was final already: nothing was run.
    AlreadyFinal(TrialStatus),
    /// Another process holds it (its lock stamp).
    Busy(String),
}

/// Claims and runs one trial. Errors before training (bad input) are returned, and recorded as
/// `failed` when the trial had been claimed.
pub fn run(plan: &Plan, id: &str, stop: &Stop) -> Result<Outcome> {
    plan.trial(id)?;
    let dir = plan.trial_dir(id);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    match crate::fsutil::lock_stamped(&dir.join(CLAIM))? {
        Ok(claim) => run_claimed(plan, id, claim, stop),
        Err(holder) => Ok(Outcome::Busy(holder)),
    }
}

/// How a slot (`--trial next`) ended: the trials it ran, by status.
#[derive(Debug, Default)]
pub struct Slot {
    pub ran: Vec<(String, TrialStatus)>,
}

/// `--trial next`: runs trials in this process, one after another — those not final and not
/// held elsewhere, then (TPE) newly asked ones — until none is left or a signal stops it. A
/// trial whose input is bad is recorded failed and the slot goes on to the next.
pub fn run_next(plan: &mut Plan, stop: &Stop) -> Result<Slot> {
    let mut slot = Slot::default();
    let mut tried = std::collections::BTreeSet::new();
    while stop.requested().is_none() {
        let Some((id, claim)) = super::ask::next(plan, &tried)? else {
            break;
        };
        tried.insert(id.clone());
        let status = match run_claimed(plan, &id, claim, stop) {
            Ok(Outcome::Ran(s) | Outcome::AlreadyFinal(s)) => s,
            Ok(Outcome::Busy(_)) => continue,
            Err(e) => {
                crate::say!("trial {id}: {e:#}");
                TrialStatus::Failed
            }
        };
        crate::say!("trial {id}: {}", status.name());
        slot.ran.push((id, status));
    }
    Ok(slot)
}

/// Runs one trial whose claim this process holds (dropped when it ends).
pub fn run_claimed(plan: &Plan, id: &str, _claim: std::fs::File, stop: &Stop) -> Result<Outcome> {
    let trial = plan.trial(id)?;
    let dir = plan.trial_dir(id);
    // Read again under the claim: another process may have finished it a moment ago. A record
    // that cannot be read (a disk that filled up, a hand edit) is set aside and the trial runs
    // again, from its last checkpoint if it has one.
    let mut rec = match Record::read(&dir) {
        Ok(r) => r.unwrap_or_else(|| Record::new(trial)),
        Err(e) => {
            let aside = dir.join(format!("{}.unreadable", record::RECORD));
            std::fs::rename(Record::path(&dir), &aside).map_err(|e| Error::io(&aside, e))?;
            crate::say!(
                "trial {id}: {e:#}; moved to {} and the trial runs again",
                aside.display()
            );
            Record::new(trial)
        }
    };
    if rec.is_final_for(&dir, trial.budget) {
        return Ok(Outcome::AlreadyFinal(rec.status));
    }
    if rec.status == TrialStatus::Completed {
        crate::say!(
            "trial {id}: completed before with a smaller budget; it continues to train.epochs = {}{}",
            trial.budget.epochs,
            trial
                .budget
                .max_steps
                .map(|m| format!(", train.max_steps = {m}"))
                .unwrap_or_default()
        );
    }
    rec.budget = Some(trial.budget);
    rec.status = TrialStatus::Running;
    rec.pid = Some(std::process::id());
    rec.host = Some(crate::fsutil::hostname());
    rec.started = Some(record::now());
    rec.ended = None;
    rec.error = None;
    rec.attempts += 1;
    rec.write(&dir)?;
    session_start(trial, &dir)?;
    let heartbeat = Heartbeat::start(&dir, plan.sweep.stale_after_s);
    let result = train_trial(plan, trial, &dir, &mut rec, stop);
    drop(heartbeat);
    let (status, error) = match &result {
        Ok((status, s)) => (*status, s.as_ref().and_then(|s| s.reason.clone())),
        Err(e) => (TrialStatus::Failed, Some(format!("{e:#}"))),
    };
    rec.status = status;
    rec.error = match status {
        TrialStatus::Completed | TrialStatus::Pruned => None,
        _ => error,
    };
    rec.ended = Some(record::now());
    rec.write(&dir)?;
    // TensorBoard keeps the first session end it reads: only a final status is written.
    match status {
        TrialStatus::Completed => hparams::write_session_end(&dir, 1)?,
        TrialStatus::Diverged => hparams::write_session_end(&dir, 2)?,
        TrialStatus::Pruned => hparams::write_session_end(&dir, 0)?,
        _ => {}
    }
    result.map(|(s, _)| Outcome::Ran(s))
}

/// The HParams session start: the trial's axis values and seed, grouped with the trials that
/// differ only in seed.
fn session_start(trial: &Trial, dir: &Path) -> Result<()> {
    let mut hp: std::collections::HashMap<String, hparams::ProtoValue> = trial
        .values
        .iter()
        .map(|(k, v)| (k.clone(), hparams::value_of(v)))
        .collect();
    hp.insert(
        "experiment.seed".into(),
        hparams::value_of(&toml::Value::Integer(trial.seed as i64)),
    );
    let group = trial.group();
    hparams::write_session_start(
        dir,
        hparams::SessionStartInfo {
            hparams: hp,
            model_uri: dir.display().to_string(),
            group_name: if group.is_empty() {
                "base config".into()
            } else {
                group
            },
            start_time_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        },
    )
}

/// Trains the trial to its end, rung by rung for halving. Returns its status and the last
/// run summary.
fn train_trial(
    plan: &Plan,
    trial: &Trial,
    dir: &Path,
    rec: &mut Record,
    stop: &Stop,
) -> Result<(TrialStatus, Option<Summary>)> {
    let base = plan.config(trial)?;
    let epochs = base.train.epochs;
    let budgets = if plan.sweep.prunes() {
        halving::budgets(plan.sweep.min_epochs, plan.sweep.eta, epochs)
    } else {
        vec![epochs]
    };
    let maximize = plan.sweep.metric == Monitor::ValAcc;
    let mut last = None;
    for (k, &budget) in budgets.iter().enumerate() {
        let final_rung = k + 1 == budgets.len();
        // A rung this trial passed already (it is continuing to a raised budget).
        if !final_rung && rec.rungs.iter().any(|r| r.rung == k && r.epochs == budget) {
            continue;
        }
        let mut config = base.clone();
        config.train.epochs = budget;
        let ready = open(dir, config, &trial.id)?;
        let ready = if final_rung {
            ready
        } else {
            ready.without_final_eval()
        };
        // A trial is continued by its sweep, not by --resume of its folder.
        let mut again = format!("the sweep: run-exp {}", plan.file.display());
        for s in &plan.sets {
            again += &format!(" --set '{s}'");
        }
        let ready = ready.resume_hint(again + " (it continues this trial from here)");
        let s = train::run(ready, stop)?;
        let status = s.status;
        last = Some(s);
        match status {
            Status::Completed => {}
            Status::Diverged => return Ok((TrialStatus::Diverged, last)),
            // Checkpointed: the next run of the sweep continues it.
            Status::Interrupted => return Ok((TrialStatus::Pending, last)),
            Status::Failed => return Ok((TrialStatus::Failed, last)),
        }
        if final_rung {
            break;
        }
        let s = last.as_ref().ok_or_else(|| Error::Checkpoint {
            path: dir.to_path_buf(),
            msg: "no summary".into(),
        })?;
        let value = match plan.sweep.metric {
            Monitor::ValAcc => s.best_val_acc,
            Monitor::ValLoss => s.best_val_loss,
        };
        rec.rungs.truncate(k);
        rec.rungs.push(Rung {
            rung: k,
            epochs: budget,
            value,
        });
        rec.write(dir)?;
        let competing = rung_values(plan, k)?;
        if !halving::promotable(value, &competing, plan.sweep.eta, maximize) {
            crate::say!(
                "trial {}: pruned at rung {k} ({budget} epochs): {value:.4} is not in the top 1/{} of {} values there",
                trial.id,
                plan.sweep.eta,
                competing.len()
            );
            return Ok((TrialStatus::Pruned, last));
        }
        crate::say!(
            "trial {}: promoted from rung {k} ({budget} epochs) with {value:.4} ({} values there)",
            trial.id,
            competing.len()
        );
    }
    Ok((TrialStatus::Completed, last))
}

/// The trial's run folder, ready to train `config`: started afresh, or resumed from its
/// newest checkpoint (an earlier attempt's, or the previous rung's).
fn open(dir: &Path, config: Config, id: &str) -> Result<crate::run_folder::Ready> {
    let run = RunDir::open(dir)?;
    if dir.join(checkpoint::CONFIG).is_file() {
        let resume = crate::run_folder::resume_in(run, config, |_| format!("--trial {id}"))?;
        let prep = prepare::prepare(resume.config.clone())?;
        crate::run_folder::open_resume(prep, resume)
    } else {
        crate::run_folder::open_in(prepare::prepare(config)?, run)
    }
}

/// Every value recorded at rung `k` by the plan's trials (for TPE, every trial asked so far).
fn rung_values(plan: &Plan, k: usize) -> Result<Vec<f64>> {
    let records: Vec<Record> = if plan.sweep.method == SweepMethod::Tpe {
        super::ask::records(&plan.root)?
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    } else {
        let mut out = Vec::new();
        for t in &plan.trials {
            out.extend(Record::read(&plan.trial_dir(&t.id))?);
        }
        out
    };
    Ok(records
        .iter()
        .flat_map(|r| r.rungs.iter().filter(|g| g.rung == k).map(|g| g.value))
        .collect())
}

/// Touches `<trial>/heartbeat` every few seconds while the trial runs, so a sweep process on
/// another host can tell a live trial from a dead one; and, for a trial the local driver
/// started (`RNNLAB_SWEEP_DRIVER` = its pid), raises SIGTERM once if the driver dies (kill -9):
/// the trial checkpoints and stops as pending. (Not PR_SET_PDEATHSIG: the kernel sends that
/// signal once per thread of the child, and a second SIGTERM ends a run without its checkpoint.)
struct Heartbeat {
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(dir: &Path, stale_after_s: u64) -> Heartbeat {
        let path = dir.join(record::HEARTBEAT);
        let every = Duration::from_secs((stale_after_s / 4).clamp(1, 30));
        let driver: Option<i32> = std::env::var(DRIVER_ENV).ok().and_then(|v| v.parse().ok());
        let tick = Duration::from_millis(if driver.is_some() { 100 } else { 1000 }).min(every);
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut since_beat = every;
            let mut orphaned = false;
            loop {
                if since_beat >= every {
                    let _ = std::fs::write(&path, record::now());
                    since_beat = Duration::ZERO;
                }
                // SAFETY: getppid has no preconditions.
                if !orphaned && driver.is_some_and(|d| d != unsafe { libc::getppid() }) {
                    orphaned = true;
                    let _ = signal_hook::low_level::raise(signal_hook::consts::SIGTERM);
                }
                match wait.recv_timeout(tick) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => since_beat += tick,
                    _ => break,
                }
            }
        });
        Heartbeat {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

/// Set by the local driver on the trial processes it starts: its pid.
pub const DRIVER_ENV: &str = "RNNLAB_SWEEP_DRIVER";

impl Drop for Heartbeat {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once.
        self.done.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
