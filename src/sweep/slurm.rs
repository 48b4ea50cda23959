//! Slurm: `run-exp sweep.toml --slurm` writes `<root>/sweep.sbatch`, a job array with one task
//! per trial that is not final yet, each running `run-exp sweep.toml --trial <id>` from the
//! directory the sweep was submitted from, and submits it with `sbatch`. A task that Slurm
//! stops (time limit, preemption: SIGTERM first, by `--signal`) checkpoints; a requeued or
//! resubmitted task resumes it. Halving needs no coordinator: each task does its own rungs
//! against the values the other trial folders hold. A TPE sweep's tasks are slots running
//! `--trial next`, asking configurations through the sweep folder (`ask.rs`). `run-exp
//! summarize` gathers the results.

use std::path::PathBuf;

use super::record;
use super::{summary, Plan};
use crate::config::SweepMethod;
use crate::error::{Error, Result};

pub use crate::slurm::SlurmOptions;
use crate::slurm::{header, quote, sbatch};

/// The script for the trials still to run (None: every trial is final already). A TPE sweep's
/// tasks are slots: each runs `--trial next` (the trials not final, then newly asked ones)
/// until `trials` configurations are asked and run; `sweep.jobs` tasks, or one per trial left.
pub fn script(plan: &Plan, opts: &SlurmOptions) -> Result<Option<(String, usize)>> {
    // Not final: no record, an unreadable one (the task sets it aside), or a completed trial
    // under a raised budget.
    let ids: Vec<String> = plan
        .trials
        .iter()
        .filter(|t| {
            let dir = plan.trial_dir(&t.id);
            !matches!(record::Record::read(&dir), Ok(Some(r)) if r.is_final_for(&dir, t.budget))
        })
        .map(|t| t.id.clone())
        .collect();
    let slots = (plan.sweep.method == SweepMethod::Tpe).then(|| {
        let left = ids.len() + plan.total().saturating_sub(plan.trials.len());
        plan.sweep.jobs.unwrap_or(left).min(left)
    });
    let tasks = slots.unwrap_or(ids.len());
    if tasks == 0 {
        return Ok(None);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("run-exp", e))?;
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let mut s = header(
        &match slots {
            Some(n) => format!("{n} slots running the trials of {}", plan.file.display()),
            None => format!("{} trials of {}", ids.len(), plan.file.display()),
        },
        &plan.base.experiment.name,
        tasks,
        &plan.root.join("slurm"),
        opts,
    );
    let q = quote;
    s += &format!("cd {}\n", q(&cwd.display().to_string()));
    if slots.is_none() {
        s += &format!("ids=({})\n", ids.join(" "));
    }
    let mut cmd = format!(
        "exec {} {}",
        q(&exe.display().to_string()),
        q(&plan.file.display().to_string())
    );
    for set in &plan.sets {
        cmd += &format!(" --set {}", q(set));
    }
    if plan.base.experiment.threads == 0 {
        let threads = opts
            .cpus_per_task
            .map_or("${SLURM_CPUS_PER_TASK:-1}".to_string(), |c| c.to_string());
        cmd += &format!(" --set experiment.threads={threads}");
    }
    cmd += match slots {
        Some(_) => " --trial next\n",
        None => " --trial \"${ids[$SLURM_ARRAY_TASK_ID]}\"\n",
    };
    s += &cmd;
    Ok(Some((s, tasks)))
}

/// Writes `<root>/sweep.sbatch` and submits it (unless `no_submit`); returns the script's path
/// and the job id.
pub fn submit(
    plan: &Plan,
    opts: &SlurmOptions,
) -> Result<Option<(PathBuf, usize, Option<String>)>> {
    super::driver::check_folder(plan)?;
    let Some((text, n)) = script(plan, opts)? else {
        return Ok(None);
    };
    summary::write_plan(plan)?;
    let path = plan.root.join("sweep.sbatch");
    let id = sbatch(&path, &text, &plan.root.join("slurm"), opts.no_submit)?;
    Ok(Some((path, n, id)))
}
