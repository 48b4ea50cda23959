//! Ask and tell through the sweep folder: a TPE sweep's trials are asked one configuration at
//! a time, by whichever slot is free (the local driver's jobs, Slurm tasks running
//! `--trial next`, a second driver on the same folder), with no coordinator. A slot takes the
//! sweep lock (an flock on `<root>/sweep.lock`, held only while it asks), reads every asked
//! trial's record and result, asks the sampler for configuration number n — trials still
//! running counted at the worst finished value (the constant liar) — and records the
//! configuration's trials (`t0007`, or `t0007-s1` ... when the sweep has several seeds) before
//! the lock is released: each folder is made whole under a temporary name (a pending
//! `trial.json` with its overrides) and renamed. A crash before the rename leaves no trial;
//! after it, the trial is there for any slot to run. The folder names are the registry.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::record::{Record, TrialStatus, CLAIM};
use super::tpe::{Recorded, Tpe};
use super::{summary, Check, Plan, Trial};
use crate::config::{Monitor, SweepMethod};
use crate::error::{Error, Result};

/// The file whose lock is the sweep lock.
pub const LOCK: &str = "sweep.lock";

/// `--trial next`: run the trials still to run, asking new ones, until none is left.
pub const NEXT: &str = "next";

/// The sweep lock, held until dropped (or the process dies).
pub struct SweepLock {
    _file: std::fs::File,
}

/// Waits for the sweep lock.
pub fn lock(root: &Path) -> Result<SweepLock> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let path = root.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    file.lock().map_err(|e| Error::io(&path, e))?;
    Ok(SweepLock { _file: file })
}

/// The id of configuration `n`'s trial with `seed` (`seeds`: how many the sweep has).
pub fn trial_id(n: usize, seed: u64, seeds: usize) -> String {
    if seeds > 1 {
        format!("t{n:04}-s{seed}")
    } else {
        format!("t{n:04}")
    }
}

/// The configuration number in a TPE trial's id.
fn ask_number(id: &str) -> Option<usize> {
    let rest = id.strip_prefix('t')?;
    let (digits, seed) = rest.split_once("-s").unwrap_or((rest, "0"));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits.len() < 4 || !all_digits(digits) || !all_digits(seed) {
        return None;
    }
    digits.parse().ok()
}

/// The asked trials' records, in ask order, then seed order.
pub(super) fn records(root: &Path) -> Result<Vec<(usize, Record)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = ask_number(&name) else { continue };
        let dir = e.path();
        match Record::read(&dir) {
            Ok(Some(r)) => out.push((n, r)),
            Ok(None) => {}
            Err(e) => {
                return Err(Error::Checkpoint {
                    path: Record::path(&dir),
                    msg: format!(
                        "{e:#}: a TPE trial's configuration is in its record; restore it, or remove the folder {} (the trial is then asked again)",
                        dir.display()
                    ),
                })
            }
        }
    }
    out.sort_by_key(|(n, r)| (*n, r.seed));
    Ok(out)
}

/// Every asked trial, as the plan's trials (each config built as `check` asks). A trial asked
/// over other axes than the file's now is refused: the folder belongs to another sweep.
pub fn registered(plan: &Plan, check: Check) -> Result<Vec<Trial>> {
    trials_of(plan, &records(&plan.root)?, check)
}

/// These records as the plan's trials, in their order.
fn trials_of(plan: &Plan, recs: &[(usize, Record)], check: Check) -> Result<Vec<Trial>> {
    recs.iter()
        .map(|(_, r)| plan.built(r.id.clone(), values_of(plan, r)?, r.seed, check))
        .collect()
}

/// A record's axis values, in the plan's axis order.
fn values_of(plan: &Plan, r: &Record) -> Result<Vec<(String, toml::Value)>> {
    let keys: BTreeSet<&str> = r
        .overrides
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "experiment.seed")
        .collect();
    let axes: BTreeSet<&str> = plan.axes.iter().map(|(k, _)| k.as_str()).collect();
    if keys != axes {
        return Err(Error::Config {
            location: plan.file.display().to_string(),
            key: "sweep.axes".into(),
            msg: format!(
                "{} holds trial {} asked over the axes {keys:?}; the file now has {axes:?}: use another experiment.name (or remove that folder)",
                plan.root.display(),
                r.id
            ),
        });
    }
    plan.axes
        .iter()
        .map(|(k, _)| {
            let v = r.overrides[k].clone();
            serde_json::from_value::<toml::Value>(v)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::Checkpoint {
                    path: plan.root.join(&r.id).join(super::record::RECORD),
                    msg: format!("{k}: not a config value: {e}"),
                })
        })
        .collect()
}

/// What a trial tells the sampler: None to leave it out (failed: it runs again), Some(None)
/// while it is pending or running (the constant liar stands in), else its loss (the metric,
/// negated for an accuracy; a pruned trial's value at the last rung it reached; a diverged
/// trial the worst there is).
fn told(plan: &Plan, r: &Record) -> Option<Option<f64>> {
    let sign = match plan.sweep.metric {
        Monitor::ValAcc => -1.0,
        Monitor::ValLoss => 1.0,
    };
    match r.status {
        TrialStatus::Pending | TrialStatus::Running => Some(None),
        TrialStatus::Failed => None,
        TrialStatus::Diverged => Some(Some(f64::INFINITY)),
        TrialStatus::Pruned => Some(r.rungs.last().map(|g| sign * g.value)),
        TrialStatus::Completed => {
            let s = crate::summary::Summary::read(&plan.trial_dir(&r.id)).ok()?;
            s.best_epoch?;
            let v = match plan.sweep.metric {
                Monitor::ValAcc => s.best_val_acc,
                Monitor::ValLoss => s.best_val_loss,
            };
            Some(Some(sign * v).filter(|l| !l.is_nan()))
        }
    }
}

/// Each asked configuration as the sampler sees it: its values and the mean loss of its
/// finished seeds (None while none has finished). `trials`: the records' trials, in order.
fn history(plan: &Plan, recs: &[(usize, Record)], trials: &[Trial]) -> Vec<Recorded> {
    let mut out: Vec<(usize, Recorded, Vec<f64>)> = Vec::new();
    for ((n, r), t) in recs.iter().zip(trials) {
        let Some(loss) = told(plan, r) else { continue };
        let values: Vec<toml::Value> = t.values.iter().map(|(_, v)| v.clone()).collect();
        if out.last().is_none_or(|(m, _, _)| m != n) {
            out.push((*n, Recorded { values, loss: None }, Vec::new()));
        }
        if let (Some(l), Some((_, _, losses))) = (loss, out.last_mut()) {
            losses.push(l);
        }
    }
    out.into_iter()
        .map(|(_, mut r, losses)| {
            if !losses.is_empty() {
                r.loss = Some(losses.iter().sum::<f64>() / losses.len() as f64);
            }
            r
        })
        .collect()
}

/// Asks for the next configuration and records its trials (one per seed), under the sweep
/// lock; returns their ids, none once `sweep.trials` configurations have been asked. The
/// plan's trials become every trial asked so far, by any slot.
pub fn ask(plan: &mut Plan) -> Result<Vec<String>> {
    let _lock = lock(&plan.root)?;
    ask_locked(plan)
}

fn ask_locked(plan: &mut Plan) -> Result<Vec<String>> {
    if plan.sweep.method != SweepMethod::Tpe {
        return Ok(Vec::new());
    }
    // A slot killed while it recorded a trial left its half-made folder: no slot is asking now.
    for e in std::fs::read_dir(&plan.root)
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().contains(".asking-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let recs = records(&plan.root)?;
    plan.trials = trials_of(plan, &recs, Check::All)?;
    let asked: BTreeSet<usize> = recs.iter().map(|(n, _)| *n).collect();
    if asked.len() >= plan.sweep.trials.unwrap_or(0) {
        return Ok(Vec::new());
    }
    let n = asked.last().map_or(0, |m| m + 1);
    let axes: Vec<super::Axis> = plan.axes.iter().map(|(_, a)| a.clone()).collect();
    let history = history(plan, &recs, &plan.trials);
    let seeds = plan.seed_list();
    // A combination the config refuses (e.g. chrono gate biases on an rnn cell) is drawn
    // again, from a generator that is still a function of (sweep.seed, n); the refusal is
    // the error once every try has met one.
    let mut tries = 0u64;
    let trials = loop {
        let index = n as u64 + (tries << 32);
        let tpe = Tpe {
            multivariate: plan.sweep.multivariate,
            ..Tpe::default()
        };
        let drawn = tpe.ask(&axes, &history, plan.sweep.seed, index);
        let values: Vec<(String, toml::Value)> = plan
            .axes
            .iter()
            .map(|(k, _)| k.clone())
            .zip(drawn)
            .collect();
        let built: Result<Vec<Trial>> = seeds
            .iter()
            .map(|&seed| {
                plan.built(
                    trial_id(n, seed, seeds.len()),
                    values.clone(),
                    seed,
                    Check::All,
                )
            })
            .collect();
        match built {
            Ok(t) => break t,
            Err(e @ Error::Config { .. }) if tries + 1 >= INFEASIBLE_TRIES => return Err(e),
            Err(Error::Config { .. }) => tries += 1,
            Err(e) => return Err(e),
        }
    };
    if tries > 0 {
        crate::say!(
            "sweep {}: configuration {n} drawn {} times: the config refused {tries} combination(s) of the axes",
            plan.root.display(),
            tries + 1
        );
    }
    let mut ids = Vec::new();
    for trial in trials {
        record_new(&plan.trial_dir(&trial.id), &Record::new(&trial))?;
        ids.push(trial.id.clone());
        plan.trials.push(trial);
    }
    summary::write_study(plan)?;
    Ok(ids)
}

/// Draws of one configuration before a combination the config refuses is the sweep's error.
const INFEASIBLE_TRIES: u64 = 100;

/// The trial's folder with its pending record, made whole under a temporary name, then renamed.
fn record_new(dir: &Path, rec: &Record) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.with_file_name(format!(".{name}.asking-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    rec.write(&tmp)?;
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    crate::fsutil::sync_dir(dir.parent().unwrap_or(dir))
}

/// A slot's next trial (`--trial next`), its claim taken under the sweep lock: the first trial
/// not final, not held by another process and not in `tried` (this slot's earlier ones), or
/// else a newly asked one. None: nothing is left to run or ask.
pub fn next(plan: &mut Plan, tried: &BTreeSet<String>) -> Result<Option<(String, std::fs::File)>> {
    let _lock = lock(&plan.root)?;
    if plan.sweep.method == SweepMethod::Tpe {
        plan.trials = registered(plan, Check::All)?;
    }
    let stale = Duration::from_secs(plan.sweep.stale_after_s);
    let mut fresh = Vec::new();
    loop {
        for t in plan
            .trials
            .iter()
            .filter(|t| fresh.is_empty() || fresh.contains(&t.id))
        {
            if tried.contains(&t.id) {
                continue;
            }
            let dir = plan.trial_dir(&t.id);
            match Record::read(&dir) {
                Ok(Some(r)) if r.is_final_for(&dir, t.budget) => continue,
                Ok(Some(r)) if r.status == TrialStatus::Running && !r.is_abandoned(&dir, stale) => {
                    continue
                }
                _ => {}
            }
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            if let Ok(claim) = crate::fsutil::lock_stamped(&dir.join(CLAIM))? {
                return Ok(Some((t.id.clone(), claim)));
            }
        }
        fresh = ask_locked(plan)?;
        if fresh.is_empty() {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_in_ask_order_and_read_back() {
        assert_eq!(trial_id(7, 0, 1), "t0007");
        assert_eq!(trial_id(12345, 3, 2), "t12345-s3");
        assert_eq!(ask_number("t0007"), Some(7));
        assert_eq!(ask_number("t12345-s3"), Some(12345));
        for other in [
            "t7",
            "0a1b2c3d4e5f6a7b",
            "t00x7",
            ".t0007.asking-12",
            "summary.csv",
        ] {
            assert_eq!(ask_number(other), None, "{other}");
        }
    }
}
