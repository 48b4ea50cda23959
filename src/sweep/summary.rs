//! A sweep's results, gathered from its folder alone (so `run-exp summarize` works while a
//! sweep runs, and on a Slurm results folder): `sweep.json` (the plan: axes, trials), each
//! trial's `trial.json` and run summary (or newest checkpoint), as rows, grouped by
//! configuration and ranked. `results` holds them while a sweep runs and writes the files
//! (`summary.csv` / `.parquet`, `summary_by_config.csv`, `best.toml`, `curves.png`, the HParams
//! experiment); `tables` builds the polars frames.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::{Budget, Record, TrialStatus};
use super::{Domain, Plan};
use crate::checkpoint;
use crate::config::{Monitor, SweepMethod};
use crate::error::{Error, Result};
use crate::log::hparams;

pub const SWEEP_JSON: &str = "sweep.json";
pub const SUMMARY_CSV: &str = "summary.csv";
pub const SUMMARY_PARQUET: &str = "summary.parquet";
pub const BY_CONFIG_CSV: &str = "summary_by_config.csv";
pub const BEST_TOML: &str = "best.toml";
pub const CURVES_PNG: &str = "curves.png";
pub const IMPORTANCE_CSV: &str = "importance.csv";
pub const IMPORTANCE_PNG: &str = "importance.png";

/// `sweep.json`: what the folder needs to describe itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Study {
    pub file: PathBuf,
    pub sets: Vec<String>,
    pub method: SweepMethod,
    pub metric: Monitor,
    pub axes: Vec<String>,
    pub trials: Vec<StudyTrial>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyTrial {
    pub id: String,
    pub group: String,
    pub seed: u64,
    pub values: Vec<(String, toml::Value)>,
    /// The budget the plan gives it (absent in folders written before it was kept).
    #[serde(default)]
    pub budget: Option<Budget>,
}

impl Study {
    pub fn of(plan: &Plan) -> Study {
        Study {
            file: plan.file.clone(),
            sets: plan.sets.clone(),
            method: plan.sweep.method,
            metric: plan.sweep.metric,
            axes: plan.axes.iter().map(|(k, _)| k.clone()).collect(),
            trials: plan
                .trials
                .iter()
                .map(|t| StudyTrial {
                    id: t.id.clone(),
                    group: t.group(),
                    seed: t.seed,
                    values: t.values.clone(),
                    budget: Some(t.budget),
                })
                .collect(),
        }
    }

    pub fn read(root: &Path) -> Result<Study> {
        let p = root.join(SWEEP_JSON);
        if !root.exists() {
            return Err(Error::Checkpoint {
                path: root.to_path_buf(),
                msg: "no such folder; give results/<name> of a sweep".into(),
            });
        }
        if !p.is_file() {
            return Err(Error::Checkpoint {
                path: root.to_path_buf(),
                msg: format!("is not a sweep folder (it has no {SWEEP_JSON}); give results/<name> of a sweep"),
            });
        }
        checkpoint::load_json(&p)
    }

    fn maximize(&self) -> bool {
        self.metric == Monitor::ValAcc
    }
}

/// Writes `sweep.json` (the plan's trials; a TPE sweep rewrites it as trials are asked).
pub fn write_study(plan: &Plan) -> Result<()> {
    std::fs::create_dir_all(&plan.root).map_err(|e| Error::io(&plan.root, e))?;
    checkpoint::save_json(&plan.root.join(SWEEP_JSON), &Study::of(plan))
}

/// Writes `sweep.json` and the HParams experiment (every axis with its domain, the seed, the
/// metrics) into the sweep's root.
pub fn write_plan(plan: &Plan) -> Result<()> {
    write_study(plan)?;
    let mut infos: Vec<hparams::HParamInfo> = plan
        .axes
        .iter()
        .map(|(key, axis)| match axis.domain() {
            Domain::Discrete(vs) => hparams::HParamInfo {
                name: key.clone(),
                r#type: hparams::type_of(&vs),
                domain_discrete: Some(hparams::ListValue {
                    values: vs.iter().map(hparams::value_of).collect(),
                }),
                ..Default::default()
            },
            Domain::Interval(lo, hi) => hparams::HParamInfo {
                name: key.clone(),
                r#type: 3,
                domain_interval: Some(hparams::Interval {
                    min_value: lo,
                    max_value: hi,
                }),
                ..Default::default()
            },
        })
        .collect();
    let seeds: Vec<toml::Value> = plan
        .seed_list()
        .iter()
        .map(|&s| toml::Value::Integer(s as i64))
        .collect();
    infos.push(hparams::HParamInfo {
        name: "experiment.seed".into(),
        r#type: 3,
        domain_discrete: Some(hparams::ListValue {
            values: seeds.iter().map(hparams::value_of).collect(),
        }),
        ..Default::default()
    });
    let metric = |tag: &str, dataset_type: i32| hparams::MetricInfo {
        name: Some(hparams::MetricName {
            group: String::new(),
            tag: tag.into(),
        }),
        display_name: tag.into(),
        dataset_type,
    };
    hparams::write_experiment(
        &plan.root,
        hparams::Experiment {
            name: plan.base.experiment.name.clone(),
            description: format!("run-exp {}", plan.file.display()),
            time_created_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            hparam_infos: infos,
            metric_infos: vec![
                metric("val/acc", 2),
                metric("val/loss", 2),
                metric("test/acc", 0),
            ],
        },
    )
}

/// One trial's line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub trial: String,
    pub status: TrialStatus,
    pub group: String,
    pub values: Vec<(String, toml::Value)>,
    pub seed: u64,
    pub best_val_acc: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub best_epoch: Option<u64>,
    pub epochs_done: Option<u64>,
    pub test_acc: Option<f64>,
    pub test_macro_f1: Option<f64>,
    pub test_mean_class_acc: Option<f64>,
    pub test_top5: Option<f64>,
    pub elapsed_s: Option<f64>,
    /// Trainable parameters (from the run's summary.json).
    pub parameters: Option<u64>,
    pub error: Option<String>,
    /// The budget it ran with, and the one the plan gives it: a completed trial counts in the
    /// by-configuration means only at the plan's budget.
    pub budget: Option<Budget>,
    pub planned: Option<Budget>,
    /// The validation metric by epoch (curves.png).
    pub curve: Vec<(f64, f64)>,
    /// Steps trained, and whether `patience` ended it: with `budget`, whether a raised
    /// budget would train it further.
    pub steps: Option<u64>,
    pub stopped_early: bool,
    /// Why its trial.json could not be read, if it could not.
    pub unreadable: Option<String>,
}

/// One trial's row, from its folder. A `trial.json` that cannot be read shows as failed with
/// the reason (the next run of the sweep sets it aside and runs the trial again).
pub fn row(root: &Path, study: &Study, t: &StudyTrial) -> Result<Row> {
    let dir = root.join(&t.id);
    let (rec, unreadable) = match Record::read(&dir) {
        Ok(r) => (r, None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let mut row = Row {
        trial: t.id.clone(),
        status: match (&rec, &unreadable) {
            (_, Some(_)) => TrialStatus::Failed,
            (Some(r), None) => r.status,
            (None, None) => TrialStatus::Pending,
        },
        group: t.group.clone(),
        values: t.values.clone(),
        seed: t.seed,
        best_val_acc: None,
        best_val_loss: None,
        best_epoch: None,
        epochs_done: None,
        test_acc: None,
        test_macro_f1: None,
        test_mean_class_acc: None,
        test_top5: None,
        elapsed_s: None,
        parameters: None,
        error: match &unreadable {
            Some(e) => Some(format!("{e}; the next run of the sweep runs it again")),
            None => rec.as_ref().and_then(|r| r.error.clone()),
        },
        budget: rec.as_ref().and_then(|r| r.budget),
        planned: t.budget,
        curve: Vec::new(),
        steps: None,
        stopped_early: false,
        unreadable,
    };
    if row.budget.is_none() && rec.is_some() {
        row.budget = saved_budget(&dir);
    }
    if dir.join(checkpoint::SUMMARY).is_file() {
        let s = crate::summary::Summary::read(&dir)?;
        let finite = |v: f64| v.is_finite().then_some(v);
        row.best_epoch = s.best_epoch.map(|e| e as u64);
        if row.best_epoch.is_some() {
            row.best_val_acc = finite(s.best_val_acc);
            row.best_val_loss = finite(s.best_val_loss);
        }
        row.epochs_done = Some(s.epochs_done as u64);
        row.steps = Some(s.steps as u64);
        row.stopped_early = s.stopped_early;
        row.test_acc = s.test_acc;
        row.test_macro_f1 = s.test_macro_f1;
        row.test_mean_class_acc = s.test_mean_class_acc;
        row.test_top5 = s.test_top5;
        row.elapsed_s = finite(s.elapsed_s);
        row.parameters = (s.parameters > 0).then_some(s.parameters as u64);
    } else if let Some(c) = checkpoint::newest(&dir)? {
        let st = &c.state;
        row.best_epoch = st.best_epoch.map(|e| e as u64);
        if st.best_epoch.is_some() {
            row.best_val_acc = Some(st.best_val_acc);
            row.best_val_loss = Some(st.best_val_loss);
        }
        row.epochs_done = Some(st.epochs_done as u64);
        row.steps = Some(st.step as u64);
        row.elapsed_s = Some(st.elapsed_s);
    }
    row.curve = curve(&dir, study.metric.key());
    Ok(row)
}

/// The budget in a trial folder's config.toml (records written before they kept it).
fn saved_budget(dir: &Path) -> Option<Budget> {
    crate::Config::load_saved(&dir.join(checkpoint::CONFIG), &[])
        .ok()
        .map(|c| Budget::of(&c))
}

/// `key` by epoch from a run's metrics.jsonl (only its epoch rows are parsed).
fn curve(dir: &Path, key: &str) -> Vec<(f64, f64)> {
    let Ok(text) = std::fs::read_to_string(dir.join(checkpoint::METRICS)) else {
        return Vec::new();
    };
    text.lines()
        // serde_json writes `"split":"epoch"` so: the step rows are not parsed.
        .filter(|l| l.contains("\"split\":\"epoch\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["split"] == "epoch")
        .filter_map(|v| Some((v["epoch"].as_f64()?, v[key].as_f64()?)))
        .collect()
}

impl Row {
    /// Done for the budget the plan gives it: trained to it, or ended before it would matter
    /// (stopped early, or at a `max_steps` the raise did not change). Unknown in older folders:
    /// taken as yes.
    pub fn at_budget(&self) -> bool {
        match (self.budget, self.planned) {
            (Some(b), Some(p)) if b != p => {
                !p.trains_on(self.epochs_done, self.steps, self.stopped_early)
            }
            _ => true,
        }
    }

    /// Completed at the plan's budget: it counts in the means and for the best.
    pub fn completed(&self) -> bool {
        self.status == TrialStatus::Completed && self.at_budget()
    }

    /// Nothing left to run: a final status, and a completed trial at the plan's budget.
    pub fn is_final(&self) -> bool {
        self.status.is_final() && (self.status != TrialStatus::Completed || self.at_budget())
    }

    /// Its best validation value of `m`.
    pub fn best(&self, m: Monitor) -> Option<f64> {
        match m {
            Monitor::ValAcc => self.best_val_acc,
            Monitor::ValLoss => self.best_val_loss,
        }
    }

    pub fn metric(&self, study: &Study) -> Option<f64> {
        self.best(study.metric)
    }

    /// (the sweep's metric, the other validation metric): the ranking key.
    pub(super) fn key(&self, study: &Study) -> (Option<f64>, Option<f64>) {
        (self.best(study.metric), self.best(study.metric.other()))
    }
}

/// Best first by the sweep's metric, ties broken by the other validation metric (lower loss,
/// or higher accuracy).
pub(super) fn rank(
    study: &Study,
    a: (Option<f64>, Option<f64>),
    b: (Option<f64>, Option<f64>),
) -> std::cmp::Ordering {
    let max = study.maximize();
    order(max, a.0, b.0).then_with(|| order(!max, a.1, b.1))
}

/// Best first (higher first when `maximize`), values missing last.
fn order(maximize: bool, a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Some(a), Some(b)) => {
            let o = a.partial_cmp(&b).unwrap_or(Equal);
            if maximize {
                o.reverse()
            } else {
                o
            }
        }
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (None, None) => Equal,
    }
}

/// A configuration's metrics over its completed trials (one per seed).
pub struct Group<'a> {
    pub name: String,
    pub rows: Vec<&'a Row>,
}

impl Group<'_> {
    /// Its completed trials at the plan's budget (one trained to a smaller budget, waiting to
    /// be continued, is not averaged with them).
    pub fn done(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .copied()
            .filter(|r| r.completed())
            .collect()
    }

    /// (mean, sample std, n) of `get` over completed trials.
    pub(super) fn stats(
        &self,
        get: impl Fn(&Row) -> Option<f64>,
    ) -> (Option<f64>, Option<f64>, usize) {
        let v: Vec<f64> = self.done().into_iter().filter_map(get).collect();
        let n = v.len();
        if n == 0 {
            return (None, None, 0);
        }
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = (n > 1)
            .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        (Some(mean), std, n)
    }

    pub fn metric_mean(&self, study: &Study) -> Option<f64> {
        self.stats(|r| r.metric(study)).0
    }

    pub(super) fn key(&self, study: &Study) -> (Option<f64>, Option<f64>) {
        (
            self.stats(|r| r.key(study).0).0,
            self.stats(|r| r.key(study).1).0,
        )
    }
}

/// Configurations, best mean first.
pub fn groups<'a>(study: &Study, rows: &'a [Row]) -> Vec<Group<'a>> {
    let mut by: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by.entry(&r.group).or_default().push(r);
    }
    let mut out: Vec<Group> = by
        .into_iter()
        .map(|(name, rows)| Group {
            name: name.to_string(),
            rows,
        })
        .collect();
    out.sort_by(|a, b| rank(study, a.key(study), b.key(study)));
    out
}

/// A sweep's results in memory: read once, then one trial at a time as trials end, and the
/// files rewritten from memory. Writing them grows with the sweep (10,000 rows: ~50 ms, the
/// curves of 50 configurations: ~0.1 s), so a write that is not the last waits until ten
/// times its predecessor's cost has passed: the files are never more than a few seconds
/// behind, and their cost per trial stays a tenth of the trials' pace at any sweep size.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::tables::{groups_frame, trials_frame};

    fn row(trial: &str, group: &str, seed: u64, status: TrialStatus, acc: Option<f64>) -> Row {
        Row {
            trial: trial.into(),
            status,
            group: group.into(),
            values: vec![("model.cell".into(), toml::Value::String(group.into()))],
            seed,
            best_val_acc: acc,
            best_val_loss: acc.map(|a| 1.0 - a),
            best_epoch: acc.map(|_| 1),
            epochs_done: Some(2),
            test_acc: None,
            test_macro_f1: None,
            test_mean_class_acc: None,
            test_top5: None,
            elapsed_s: Some(1.0),
            parameters: None,
            error: None,
            budget: None,
            planned: None,
            curve: Vec::new(),
            steps: None,
            stopped_early: false,
            unreadable: None,
        }
    }

    fn study(metric: Monitor) -> Study {
        Study {
            file: "s.toml".into(),
            sets: vec![],
            method: SweepMethod::Grid,
            metric,
            axes: vec!["model.cell".into()],
            trials: vec![],
        }
    }

    /// Worked by hand: gru seeds 0.80, 0.90 -> mean 0.85, sample std sqrt(0.005) = 0.070711;
    /// lstm 0.70, 0.74, 0.78 -> mean 0.74, std 0.04; rnn's pruned and failed trials do not count.
    #[test]
    fn groups_average_completed_seeds_best_first() {
        let rows = vec![
            row("a", "lstm", 0, TrialStatus::Completed, Some(0.70)),
            row("b", "gru", 0, TrialStatus::Completed, Some(0.80)),
            row("c", "lstm", 1, TrialStatus::Completed, Some(0.74)),
            row("d", "gru", 1, TrialStatus::Completed, Some(0.90)),
            row("e", "lstm", 2, TrialStatus::Completed, Some(0.78)),
            row("f", "rnn", 0, TrialStatus::Pruned, Some(0.99)),
            row("g", "rnn", 1, TrialStatus::Failed, None),
        ];
        let s = study(Monitor::ValAcc);
        let g = groups(&s, &rows);
        let names: Vec<&str> = g.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["gru", "lstm", "rnn"]);
        let (m, sd, n) = g[0].stats(|r| r.best_val_acc);
        assert_eq!(n, 2);
        assert!((m.unwrap() - 0.85).abs() < 1e-12);
        assert!((sd.unwrap() - 0.005f64.sqrt()).abs() < 1e-12);
        let (m, sd, n) = g[1].stats(|r| r.best_val_acc);
        assert_eq!(n, 3);
        assert!((m.unwrap() - 0.74).abs() < 1e-12);
        assert!((sd.unwrap() - 0.04).abs() < 1e-12);
        assert_eq!(g[2].stats(|r| r.best_val_acc), (None, None, 0));
        let df = groups_frame(&s, &g).unwrap();
        assert_eq!(df.height(), 3);
        assert_eq!(
            df.column("n")
                .unwrap()
                .u64()
                .unwrap()
                .into_no_null_iter()
                .collect::<Vec<_>>(),
            [2, 3, 0]
        );
        // val_loss: lower is better, so the order is the same here (loss = 1 - acc).
        let s = study(Monitor::ValLoss);
        let names: Vec<String> = groups(&s, &rows).iter().map(|g| g.name.clone()).collect();
        assert_eq!(names, ["gru", "lstm", "rnn"]);
        // The per-trial table: best first, a typed column per axis, rows without a value last.
        let df = trials_frame(&study(Monitor::ValAcc), &rows).unwrap();
        let ca = df.column("trial").unwrap().str().unwrap();
        let trials: Vec<&str> = (0..ca.len()).map(|i| ca.get(i).unwrap()).collect();
        assert_eq!(trials, ["f", "d", "b", "e", "c", "a", "g"]);
    }
}
