//! Slurm job arrays: the `#SBATCH` header every array run-exp submits shares (a sweep's
//! trials, `run-exp features` shards), and `sbatch` itself.

use std::process::Command;

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

/// A shell word: `s` in single quotes.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `#SBATCH` lines of a job array of `tasks` tasks named `job`, its logs in `logs`
/// (`%A_%a.out`), requeued on preemption, SIGTERM two minutes before the time limit.
pub fn header(
    what: &str,
    job: &str,
    tasks: usize,
    logs: &std::path::Path,
    opts: &SlurmOptions,
) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("# {what}, written by run-exp --slurm\n");
    s += &format!("#SBATCH --job-name={job}\n");
    s += &format!(
        "#SBATCH --array=0-{}{}\n",
        tasks - 1,
        opts.max_parallel
            .map(|k| format!("%{k}"))
            .unwrap_or_default()
    );
    s += &format!("#SBATCH --output={}/%A_%a.out\n", logs.display());
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
    s
}

/// Writes the script `text` to `path` (and the log folder `logs`) and submits it with sbatch
/// unless `no_submit`; returns the job id.
pub fn sbatch(
    path: &std::path::Path,
    text: &str,
    logs: &std::path::Path,
    no_submit: bool,
) -> Result<Option<String>> {
    std::fs::create_dir_all(logs).map_err(|e| Error::io(logs, e))?;
    crate::fsutil::write_atomic(path, text.as_bytes())?;
    if no_submit {
        return Ok(None);
    }
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(path)
        .output()
        .map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("cannot run sbatch ({e}); is Slurm installed here? --no-submit writes the script only"),
        })?;
    if !out.status.success() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!(
                "sbatch failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(Some(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .to_string(),
    ))
}
