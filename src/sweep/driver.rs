//! The local sweep driver (`run-exp sweep.toml`): runs the trials that are not final, `jobs`
//! at a time, each as its own `run-exp sweep.toml --trial <id>` process (a panic, abort or
//! out-of-memory kill ends that trial only, and is recorded as `failed`), rewrites the results
//! tables after each, and shows one progress line for the sweep. Trials another process is
//! running are left to it (and waited for); ones whose process is gone are run again, from
//! their last checkpoint. If the driver itself is killed, its trial processes notice (their
//! parent changes) and stop with a checkpoint, and the next run continues them.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::record::{self, Record, TrialStatus, CLAIM};
use super::{results, summary, Plan};
use crate::error::{Error, Result};
use crate::stop::Stop;

/// The `--trial` process's exit code when another process holds the trial.
pub const EXIT_BUSY: u8 = 75;

/// How the sweep ended: trials per status, the signal that stopped it, if any, and the
/// results tables as written last.
pub struct Outcome {
    pub counts: std::collections::BTreeMap<TrialStatus, usize>,
    pub interrupted: Option<i32>,
    /// The results tables as written last, as printed.
    pub text: String,
    /// Seconds each rewrite of the tables after a trial took (re-reading that trial, writing
    /// every file): a trial's cost to the driver.
    pub table_secs: Vec<f64>,
}

/// Trials at once when `sweep.jobs` is absent: one per core, each on one thread (the jobs x
/// threads measurement in the README: small models gain nothing from a second thread).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Running {
    id: String,
    child: Child,
    started: Instant,
}

pub fn run(plan: &mut Plan, stop: &Stop) -> Result<Outcome> {
    // Every check first: nothing is written before they pass.
    check_folder(plan)?;
    let jobs = plan.sweep.jobs.unwrap_or_else(default_jobs).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match plan.base.experiment.threads {
        0 => (cores / jobs).max(1),
        n => n,
    };
    let stale = Duration::from_secs(plan.sweep.stale_after_s);

    // Each trial's folder read once: its row of the tables, and where it stands.
    let mut results = results::Results::of_plan(plan)?;
    let mut queue = VecDeque::new();
    let mut elsewhere = Vec::new();
    let (mut done, mut continued) = (0usize, 0usize);
    let mut notes = Vec::new();
    for row in results.rows() {
        let id = row.trial.clone();
        let dir = plan.trial_dir(&id);
        if let Some(e) = &row.unreadable {
            notes.push(format!(
                "trial {id}: {e}; it runs again (the record is set aside as {}.unreadable)",
                record::RECORD
            ));
            queue.push_back(id);
        } else if row.is_final() {
            done += 1;
        } else if row.status == TrialStatus::Running
            && Record::read(&dir)?.is_some_and(|r| !r.is_abandoned(&dir, stale))
        {
            elsewhere.push(id);
        } else {
            if row.status == TrialStatus::Completed {
                continued += 1;
            }
            queue.push_back(id);
        }
    }
    std::fs::create_dir_all(&plan.root).map_err(|e| Error::io(&plan.root, e))?;
    summary::write_plan(plan)?;
    let tpe = plan.sweep.method == crate::config::SweepMethod::Tpe;
    crate::say!(
        "sweep {}: {} trials{}, {} final already, {} to run here{} ({} at a time, {} thread{} each){}",
        plan.root.display(),
        plan.total(),
        if tpe {
            format!(
                " ({} asked so far; TPE asks the rest one at a time from the results)",
                plan.trials.len()
            )
        } else {
            String::new()
        },
        done,
        queue.len(),
        if continued > 0 {
            format!(
                ", {continued} of them completed before and continued to the raised budget (train.epochs = {})",
                plan.base.train.epochs
            )
        } else {
            String::new()
        },
        jobs,
        threads,
        if threads == 1 { "" } else { "s" },
        if elsewhere.is_empty() {
            String::new()
        } else {
            format!(", {} running in another process", elsewhere.len())
        }
    );
    for n in notes {
        crate::say!("{n}");
    }
    let bar = progress_bar();
    let mut running: Vec<Running> = Vec::new();
    let mut durations: Vec<f64> = Vec::new();
    let mut table_secs: Vec<f64> = Vec::new();
    let mut forwarded = false;
    let mut last_poll = Instant::now();
    let mut asking = tpe;
    update_bar(&bar, plan, &results, &running, &elsewhere, &durations, jobs);
    loop {
        if let Some(sig) = stop.requested() {
            if !forwarded {
                for r in &running {
                    // SAFETY: kill(2) with a pid of our own child.
                    unsafe { libc::kill(r.child.id() as i32, sig) };
                }
                forwarded = true;
                say(
                    &bar,
                    format!(
                        "stopping: {} trial(s) checkpoint and stop; rerun the same command to continue",
                        running.len()
                    ),
                );
            }
        } else {
            let before = running.len();
            while running.len() < jobs {
                let Some(id) = queue.pop_front() else {
                    // TPE: the next configuration, from every result recorded so far.
                    if !asking {
                        break;
                    }
                    let asked = super::ask::ask(plan)?;
                    results.sync(plan)?;
                    asking = !asked.is_empty();
                    // Trials other slots asked meanwhile: theirs to run, waited for here
                    // (and run here if their process is gone) so the last tables hold them.
                    for row in results.rows() {
                        let id = &row.trial;
                        let ours = asked.contains(id)
                            || running.iter().any(|r| &r.id == id)
                            || queue.contains(id)
                            || elsewhere.contains(id);
                        let open =
                            matches!(row.status, TrialStatus::Pending | TrialStatus::Running);
                        if !ours && open {
                            elsewhere.push(id.clone());
                        }
                    }
                    queue.extend(asked);
                    continue;
                };
                running.push(spawn(plan, &id, threads)?);
            }
            if running.len() != before {
                update_bar(&bar, plan, &results, &running, &elsewhere, &durations, jobs);
            }
        }
        if running.is_empty() && (elsewhere.is_empty() || stop.requested().is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut i = 0;
        while i < running.len() {
            let exited = running[i]
                .child
                .try_wait()
                .map_err(|e| Error::io(plan.trial_dir(&running[i].id), e))?;
            let Some(status) = exited else {
                i += 1;
                continue;
            };
            let r = running.swap_remove(i);
            let secs = r.started.elapsed().as_secs_f64();
            if status.code() == Some(EXIT_BUSY as i32) {
                elsewhere.push(r.id.clone());
                continue;
            }
            let rec = settle(plan, &r, status)?;
            if rec.status != TrialStatus::Pending {
                durations.push(secs);
            }
            // The tables are a view: failing to write them must not stop the trials.
            let t0 = Instant::now();
            let written = results.refresh(&r.id).and_then(|_| results.write(false));
            table_secs.push(t0.elapsed().as_secs_f64());
            let metric = results
                .row(&r.id)
                .and_then(|row| row.best(plan.sweep.metric))
                .map(|v| format!(", best {} {v:.4}", plan.sweep.metric.key()))
                .unwrap_or_default();
            say(
                &bar,
                format!(
                    "trial {} {} in {secs:.2}s{metric}{} — {}",
                    r.id,
                    rec.status.name(),
                    rec.error
                        .as_deref()
                        .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
                        .unwrap_or_default(),
                    if rec.group.is_empty() {
                        "the base config"
                    } else {
                        &rec.group
                    }
                ),
            );
            if let Err(e) = written {
                say(
                    &bar,
                    format!("warning: could not write the sweep's tables: {e:#}"),
                );
            }
            update_bar(&bar, plan, &results, &running, &elsewhere, &durations, jobs);
        }
        // Trials of other processes: ours to run once their process is gone.
        if !elsewhere.is_empty() && last_poll.elapsed() > Duration::from_secs(1) {
            last_poll = Instant::now();
            let mut still = Vec::new();
            for id in elsewhere.drain(..) {
                let dir = plan.trial_dir(&id);
                match Record::read(&dir) {
                    Ok(Some(r)) if r.status.is_final() => {
                        let _ = results.refresh(&id);
                    }
                    Ok(Some(r))
                        if r.status == TrialStatus::Running && !r.is_abandoned(&dir, stale) =>
                    {
                        still.push(id)
                    }
                    _ if record::is_locked(&dir) => still.push(id),
                    _ => queue.push_back(id),
                }
            }
            elsewhere = still;
            update_bar(&bar, plan, &results, &running, &elsewhere, &durations, jobs);
        }
    }
    bar.finish_and_clear();
    let best = results.write(true)?;
    let mut out = Outcome {
        interrupted: stop.requested(),
        counts: Default::default(),
        text: super::report::render(&results, best.as_ref()),
        table_secs,
    };
    for r in results.rows() {
        *out.counts.entry(r.status).or_default() += 1;
    }
    Ok(out)
}

/// A trial id names its axis values only: a trial folder trained with another base config (the
/// file edited since) would be kept, or resumed, as if it were this sweep's. Refused, naming
/// the first key that differs. So is a budget that would mix with the one the trials ran:
/// `train.epochs` or `train.max_steps` lowered, or `train.patience` changed (a raised budget
/// continues the completed trials).
pub fn check_folder(plan: &Plan) -> Result<()> {
    for t in &plan.trials {
        let saved = plan.trial_dir(&t.id).join(crate::checkpoint::CONFIG);
        if !saved.is_file() {
            continue;
        }
        // The common case, a rerun of the same sweep: the folder holds exactly the config this
        // trial would write (its text), and nothing needs comparing key by key.
        if t.config_hash.is_some()
            && std::fs::read_to_string(&saved)
                .is_ok_and(|text| Some(super::text_hash(&text)) == t.config_hash)
        {
            continue;
        }
        let now = plan.config(t)?;
        let before = crate::Config::load_saved(&saved, &[])?;
        let refuse = |key: &str, old: String, new: String, why: &str| Error::Config {
            location: plan.file.display().to_string(),
            key: key.into(),
            msg: format!(
                "{} holds trial {} trained with {key} = {old}, the sweep now gives {new}: {why}",
                plan.root.display(),
                t.id
            ),
        };
        if let Some((key, old, new)) = now.unsafe_resume_changes(&before).into_iter().next() {
            return Err(refuse(
                &key,
                old,
                new,
                "the sweep's base config changed since; use another experiment.name (or remove that folder)",
            ));
        }
        let show = |m: Option<usize>| m.map_or("(unset)".to_string(), |m| m.to_string());
        let mix = "a budget can be raised (completed trials continue to it) but not lowered: the trials would mix budgets; use another experiment.name for a shorter sweep";
        if before.train.epochs > now.train.epochs {
            return Err(refuse(
                "train.epochs",
                before.train.epochs.to_string(),
                now.train.epochs.to_string(),
                mix,
            ));
        }
        let lowered = match (before.train.max_steps, now.train.max_steps) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(a), Some(b)) => b < a,
        };
        if lowered {
            return Err(refuse(
                "train.max_steps",
                show(before.train.max_steps),
                show(now.train.max_steps),
                mix,
            ));
        }
        if before.train.patience != now.train.patience {
            return Err(refuse(
                "train.patience",
                show(before.train.patience),
                show(now.train.patience),
                "early stopping decides when a trial ends: its trials would have stopped by another rule; use another experiment.name",
            ));
        }
    }
    Ok(())
}

/// Starts `run-exp FILE [--set ...] --trial ID` with its output in `<trial>/trial.log`.
fn spawn(plan: &Plan, id: &str, threads: usize) -> Result<Running> {
    let dir = plan.trial_dir(id);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let log_path = dir.join("trial.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
    // The binary this driver runs, even after a rebuild replaced its file (cargo unlinks the
    // old one; the path then names the new build, or nothing while it is written): every trial
    // of a run of the sweep runs the same code, and a rebuild does not stop the sweep.
    let exe = std::env::current_exe().map_err(|e| Error::io("run-exp", e))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(exe.to_string_lossy().trim_end_matches(" (deleted)"));
    cmd.arg(&plan.file);
    for s in &plan.sets {
        cmd.arg("--set").arg(s);
    }
    if plan.base.experiment.threads == 0 {
        cmd.arg("--set")
            .arg(format!("experiment.threads={threads}"));
    }
    cmd.arg("--trial").arg(id);
    cmd.env("RAYON_NUM_THREADS", threads.to_string());
    cmd.stdin(Stdio::null()).stdout(log).stderr(err);
    // Its own process group: a Ctrl-C at the terminal reaches the driver only, which passes
    // it on once (a second signal would end the trial without its checkpoint).
    cmd.process_group(0);
    // If the driver dies, the trial notices (its parent changes) and stops with a checkpoint.
    cmd.env(super::trial::DRIVER_ENV, std::process::id().to_string());
    let child = cmd.spawn().map_err(|e| Error::io(&dir, e))?;
    Ok(Running {
        id: id.to_string(),
        child,
        started: Instant::now(),
    })
}

/// The record of a trial process that has exited. One that died without writing its end (a
/// panic, an abort, a kill: still `running` with its pid) is recorded `failed` here, under the
/// trial's claim.
fn settle(plan: &Plan, r: &Running, status: ExitStatus) -> Result<Record> {
    let dir = plan.trial_dir(&r.id);
    let pid = r.child.id();
    if let Some(rec) = Record::read(&dir)? {
        if !(rec.status == TrialStatus::Running && rec.pid == Some(pid)) {
            return Ok(rec);
        }
    }
    let how = match (status.code(), status.signal()) {
        (Some(101), _) => "panicked (exit 101)".to_string(),
        (Some(c), _) => format!("exited with code {c} before recording an end"),
        (None, Some(9)) => "was killed (SIGKILL: out of memory, or kill -9)".to_string(),
        (None, Some(6)) => "aborted (SIGABRT)".to_string(),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => "ended without an exit status".to_string(),
    };
    let trial = plan.trial(&r.id)?;
    let fresh =
        || -> Result<Record> { Ok(Record::read(&dir)?.unwrap_or_else(|| Record::new(trial))) };
    // Held by another process: it has taken the trial up already.
    let Ok(_claim) = crate::fsutil::lock_stamped(&dir.join(CLAIM))? else {
        return fresh();
    };
    let mut rec = fresh()?;
    if !rec.status.is_final() {
        rec.status = TrialStatus::Failed;
        rec.error = Some(format!(
            "the trial process {how}; its output is in {}",
            dir.join("trial.log").display()
        ));
        rec.ended = Some(record::now());
        rec.write(&dir)?;
    }
    Ok(rec)
}

/// A line above the progress bar, or on stderr when there is no bar (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        crate::say!("{line}");
    } else {
        bar.println(line);
    }
}

fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// "trials 5/12 done (1 failed), 2 running | best val_acc 0.8123 (a1b2c3d4) | ETA 1m 20s".
fn update_bar(
    bar: &ProgressBar,
    plan: &Plan,
    results: &results::Results,
    running: &[Running],
    elsewhere: &[String],
    durations: &[f64],
    jobs: usize,
) {
    if bar.is_hidden() {
        return;
    }
    let rows = results.rows();
    let count = |s: TrialStatus| rows.iter().filter(|r| r.status == s).count();
    // A completed trial waiting to be continued to a raised budget is not done yet.
    let finals = rows.iter().filter(|r| r.is_final()).count();
    let failed = count(TrialStatus::Failed);
    let remaining = plan.total().saturating_sub(finals + failed);
    let best = results.best_so_far();
    let eta = if durations.is_empty() {
        "ETA -".to_string()
    } else {
        let mean = durations.iter().sum::<f64>() / durations.len() as f64;
        let secs = mean * remaining as f64 / jobs as f64;
        format!(
            "ETA {}",
            humantime::format_duration(Duration::from_secs(secs as u64))
        )
    };
    let metric = plan.sweep.metric.key();
    bar.set_message(format!(
        "trials {finals}/{} done ({failed} failed, {} diverged, {} pruned), {} running{} | best {metric} {} | {eta}",
        plan.total(),
        count(TrialStatus::Diverged),
        count(TrialStatus::Pruned),
        running.len(),
        if elsewhere.is_empty() {
            String::new()
        } else {
            format!(" (+{} elsewhere)", elsewhere.len())
        },
        best.map(|(id, v)| format!("{v:.4} ({id})")).unwrap_or_else(|| "-".into()),
    ));
}
