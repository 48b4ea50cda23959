//! `trial.json`: what a sweep knows about one trial, written whole (temp file + rename) by the
//! process that holds the trial folder's lock. The lock is the claim: a trial process takes it
//! before anything else and reads the record again under it, so two sweep processes never run
//! one trial twice, and a trial that is already final is never run again.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Trial;
use crate::checkpoint;
use crate::config::Config;
use crate::error::Result;

pub const RECORD: &str = "trial.json";
/// Touched every few seconds by a running trial: its heartbeat.
pub const HEARTBEAT: &str = "heartbeat";
/// The file whose lock is a trial's claim, held by its process for the whole trial (across
/// halving rungs; the run folder's own lock is taken per rung).
pub const CLAIM: &str = "claim";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TrialStatus {
    /// Not started, or stopped by a signal (its checkpoint is kept; the next run continues it).
    Pending,
    Running,
    Completed,
    Diverged,
    Failed,
    /// Stopped at a halving rung: its metric there was not in the top 1/eta.
    Pruned,
}

impl TrialStatus {
    /// A final status: rerunning the sweep keeps the trial as it is.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TrialStatus::Completed | TrialStatus::Diverged | TrialStatus::Pruned
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            TrialStatus::Pending => "pending",
            TrialStatus::Running => "running",
            TrialStatus::Completed => "completed",
            TrialStatus::Diverged => "diverged",
            TrialStatus::Failed => "failed",
            TrialStatus::Pruned => "pruned",
        }
    }
}

/// A halving rung a trial reached: its epochs and its metric there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rung {
    pub rung: usize,
    pub epochs: usize,
    pub value: f64,
}

/// How long a trial trains: `train.epochs` and `train.max_steps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub epochs: usize,
    pub max_steps: Option<usize>,
}

impl Budget {
    pub fn of(c: &Config) -> Budget {
        Budget {
            epochs: c.train.epochs,
            max_steps: c.train.max_steps,
        }
    }

    /// Whether a run that ended (completed) after `epochs` and `steps` would train further
    /// under this budget: it neither stopped early nor reached these epochs or steps
    /// (unknown: it would not).
    pub fn trains_on(&self, epochs: Option<u64>, steps: Option<u64>, stopped_early: bool) -> bool {
        let (Some(epochs), Some(steps)) = (epochs, steps) else {
            return false;
        };
        !stopped_early
            && epochs < self.epochs as u64
            && self.max_steps.is_none_or(|m| steps < m as u64)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub status: TrialStatus,
    /// Every override the trial applies to the base config, the seed included.
    pub overrides: serde_json::Map<String, serde_json::Value>,
    /// The configuration without the seed (TensorBoard's session group).
    pub group: String,
    pub seed: u64,
    /// The process that runs or last ran the trial, and where.
    pub pid: Option<u32>,
    pub host: Option<String>,
    /// RFC 3339, UTC: the latest attempt's start and end.
    pub started: Option<String>,
    pub ended: Option<String>,
    /// Processes that have started this trial (a rerun after a crash adds one).
    pub attempts: u32,
    pub error: Option<String>,
    /// halving: the rungs reached, in order.
    #[serde(default)]
    pub rungs: Vec<Rung>,
    /// The budget of the latest attempt (absent in records written before it was kept).
    #[serde(default)]
    pub budget: Option<Budget>,
}

impl Record {
    pub fn new(t: &Trial) -> Record {
        let mut overrides = serde_json::Map::new();
        for (k, v) in &t.values {
            overrides.insert(k.clone(), serde_json::to_value(v).unwrap_or_default());
        }
        overrides.insert("experiment.seed".into(), t.seed.into());
        Record {
            id: t.id.clone(),
            status: TrialStatus::Pending,
            overrides,
            group: t.group(),
            seed: t.seed,
            pid: None,
            host: None,
            started: None,
            ended: None,
            attempts: 0,
            error: None,
            rungs: Vec::new(),
            budget: None,
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(RECORD)
    }

    /// The trial's record, None when it has none yet.
    pub fn read(dir: &Path) -> Result<Option<Record>> {
        let p = Record::path(dir);
        if !p.exists() {
            return Ok(None);
        }
        checkpoint::load_json(&p).map(Some)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        checkpoint::save_json(&Record::path(dir), self)
    }

    /// Whether the trial is done for `want`: a final status, except a completed trial that
    /// would train further under a raised budget (`train.epochs` or `train.max_steps`): rerunning
    /// the sweep continues it from its last checkpoint. Pruned and diverged trials stay final.
    pub fn is_final_for(&self, dir: &Path, want: Budget) -> bool {
        if self.status != TrialStatus::Completed {
            return self.status.is_final();
        }
        let Ok(s) = crate::summary::Summary::read(dir) else {
            return true;
        };
        !want.trains_on(
            Some(s.epochs_done as u64),
            Some(s.steps as u64),
            s.stopped_early,
        )
    }

    /// Whether a `running` record's process is gone: on this host, its pid is not alive (or
    /// the folder's lock is free); elsewhere, its heartbeat is older than `stale_after`.
    pub fn is_abandoned(&self, dir: &Path, stale_after: Duration) -> bool {
        if self.status != TrialStatus::Running {
            return false;
        }
        if self.host.as_deref() == Some(&crate::fsutil::hostname()) {
            let alive = self
                .pid
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            return !alive || !is_locked(dir);
        }
        let beat = std::fs::metadata(dir.join(HEARTBEAT))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        SystemTime::now()
            .duration_since(beat)
            .is_ok_and(|age| age > stale_after)
    }
}

/// True when a process holds the trial's claim right now.
pub fn is_locked(dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(dir.join(CLAIM)) else {
        return false;
    };
    matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Now, as RFC 3339 UTC.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
