//! Slurm: `run-exp sweep.toml --slurm` writes `<root>/sweep.sbatch`, a job array with one task
//! per trial that is not final yet, each running `run-exp sweep.toml --trial <id>` from the
//! directory the sweep was submitted from, and submits it with `sbatch`. A task that Slurm
//! stops (time limit, preemption: SIGTERM first, by `--signal`) checkpoints; a requeued or
//! resubmitted task resumes it. Halving needs no coordinator: each task does its own rungs
//! against the values the other trial folders hold. `run-exp summarize` gathers the results.

use std::path::PathBuf;
use std::process::Command;

use super::record;
use super::{summary, Plan};
use crate::error::{Error, Result};

/// `--slurm` options, passed to `#SBATCH` lines when given.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub time: Option<String>,
    pub cpus_per_task: Option<usize>,
    pub mem: Option<String>,
    pub gpus: Option<String>,
    /// At most this many tasks at once (`--array=...%K`).
    pub max_parallel: Option<usize>,
    /// Write the script but do not submit it.
    pub no_submit: bool,
}

/// The script for the trials still to run (None: every trial is final already).
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
    if ids.is_empty() {
        return Ok(None);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("run-exp", e))?;
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut s = String::from("#!/bin/bash\n");
    s += &format!(
        "# {} trials of {}, written by run-exp --slurm\n",
        ids.len(),
        plan.file.display()
    );
    s += &format!("#SBATCH --job-name={}\n", plan.base.experiment.name);
    s += &format!(
        "#SBATCH --array=0-{}{}\n",
        ids.len() - 1,
        opts.max_parallel
            .map(|k| format!("%{k}"))
            .unwrap_or_default()
    );
    s += &format!("#SBATCH --output={}/slurm/%A_%a.out\n", plan.root.display());
    s += "#SBATCH --requeue\n#SBATCH --open-mode=append\n";
    // SIGTERM to run-exp (the batch shell execs it) two minutes before the time limit: it
    // checkpoints and stops; a resubmission continues it.
    s += "#SBATCH --signal=B:TERM@120\n";
    if let Some(p) = &opts.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if let Some(t) = &opts.time {
        s += &format!("#SBATCH --time={t}\n");
    }
    if let Some(c) = opts.cpus_per_task {
        s += &format!("#SBATCH --cpus-per-task={c}\n");
    }
    if let Some(m) = &opts.mem {
        s += &format!("#SBATCH --mem={m}\n");
    }
    if let Some(g) = &opts.gpus {
        s += &format!("#SBATCH --gpus={g}\n");
    }
    s += &format!("cd {}\n", q(&cwd.display().to_string()));
    s += &format!("ids=({})\n", ids.join(" "));
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
    cmd += " --trial \"${ids[$SLURM_ARRAY_TASK_ID]}\"\n";
    s += &cmd;
    Ok(Some((s, ids.len())))
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
    let slurm_dir = plan.root.join("slurm");
    std::fs::create_dir_all(&slurm_dir).map_err(|e| Error::io(&slurm_dir, e))?;
    let path = plan.root.join("sweep.sbatch");
    crate::fsutil::write_atomic(&path, text.as_bytes())?;
    if opts.no_submit {
        return Ok(Some((path, n, None)));
    }
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&path)
        .output()
        .map_err(|e| Error::Checkpoint {
            path: path.clone(),
            msg: format!("cannot run sbatch ({e}); is Slurm installed here? --no-submit writes the script only"),
        })?;
    if !out.status.success() {
        return Err(Error::Checkpoint {
            path,
            msg: format!(
                "sbatch failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    Ok(Some((path, n, Some(id))))
}
