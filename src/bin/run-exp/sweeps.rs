//! A sweep file's command: its dry run, one trial, a Slurm submission, or the whole sweep.

use std::process::ExitCode;

use rnnlab::stop::Stop;
use rnnlab::sweep::{self, record::TrialStatus};

use crate::{emit, fail, trial_exit, Cli, FAILED};

/// Runs a sweep file: the dry run, one trial, a Slurm submission, or the whole sweep here.
pub fn run_sweep(cli: &Cli, file: &std::path::Path, stop: &Stop) -> ExitCode {
    // A trial process builds its own trial's config only (the driver checked them all).
    let check = match cli.trial.as_deref() {
        Some(sweep::ask::NEXT) => sweep::Check::Nothing,
        Some(id) => sweep::Check::Only(id),
        None => sweep::Check::All,
    };
    let mut plan = match sweep::Plan::load(file, &cli.set, check) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if cli.dry_run {
        return emit(plan.describe().trim_end())
            .err()
            .unwrap_or(ExitCode::SUCCESS);
    }
    if cli.trial.as_deref() == Some(sweep::ask::NEXT) {
        return match sweep::trial::run_next(&mut plan, stop) {
            Ok(slot) => {
                let failed = slot.ran.iter().any(|(_, s)| *s == TrialStatus::Failed);
                rnnlab::say!(
                    "sweep {}: this slot ran {} trial(s); {}",
                    plan.root.display(),
                    slot.ran.len(),
                    if stop.requested().is_some() {
                        "stopped by a signal (its trial checkpointed; any slot continues it)"
                    } else {
                        "nothing is left to run or ask here"
                    }
                );
                if let Some(sig) = stop.requested() {
                    ExitCode::from(Stop::exit_code(sig))
                } else if failed {
                    ExitCode::from(FAILED)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => fail(e),
        };
    }
    if let Some(id) = &cli.trial {
        return match sweep::trial::run(&plan, id, stop) {
            Ok(sweep::trial::Outcome::Ran(status)) => {
                rnnlab::say!("trial {id}: {}", status.name());
                trial_exit(status, stop)
            }
            Ok(sweep::trial::Outcome::AlreadyFinal(status)) => {
                rnnlab::say!("trial {id} is {} already: nothing to do", status.name());
                ExitCode::SUCCESS
            }
            Ok(sweep::trial::Outcome::Busy(holder)) => {
                rnnlab::say!("trial {id} is being run by another process ({holder})");
                ExitCode::from(sweep::driver::EXIT_BUSY)
            }
            Err(e) => fail(e),
        };
    }
    if cli.slurm.slurm {
        let opts = cli.slurm.options();
        return match sweep::slurm::submit(&plan, &opts) {
            Ok(None) => {
                rnnlab::say!(
                    "every trial of {} is final: nothing to submit",
                    plan.root.display()
                );
                ExitCode::SUCCESS
            }
            Ok(Some((path, n, job))) => {
                match job {
                    Some(id) => {
                        rnnlab::say!("submitted {path} as job array {id} ({n} tasks); results: run-exp summarize {}", plan.root.display(), path = path.display());
                        let _ = emit(&id);
                    }
                    None => rnnlab::say!(
                        "wrote {} ({n} tasks); submit it with sbatch",
                        path.display()
                    ),
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    match sweep::driver::run(&mut plan, stop) {
        Ok(out) => {
            // The tables are on disk too: a closed stdout does not change the exit code.
            let _ = emit(out.text.trim_end());
            let counts: Vec<String> = out
                .counts
                .iter()
                .map(|(s, n)| format!("{n} {}", s.name()))
                .collect();
            let tables = match out.table_secs.len() {
                0 => String::new(),
                n => format!(
                    "; tables rewritten after each of {n} trials in {:.3} s on average",
                    out.table_secs.iter().sum::<f64>() / n as f64
                ),
            };
            rnnlab::say!(
                "sweep {}: {}{tables}",
                plan.root.display(),
                counts.join(", ")
            );
            if let Some(sig) = out.interrupted {
                return ExitCode::from(Stop::exit_code(sig));
            }
            if out.counts.get(&TrialStatus::Failed).copied().unwrap_or(0) > 0 {
                rnnlab::say!("error: some trials failed (their error is in summary.csv and <trial>/trial.log); rerun the same command to retry them");
                return ExitCode::from(FAILED);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
