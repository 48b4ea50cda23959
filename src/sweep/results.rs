//! A sweep's results held in memory while it runs (each trial folder read once, then updated
//! as trials finish) and written after every trial, each file whole (temp + rename): the
//! tables (`tables`), `best.toml` (the winning configuration, runnable), `curves.png` and the
//! HParams experiment.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::importance::{importances, Importance};
use super::summary::{
    groups, rank, row, Group, Row, Study, BEST_TOML, BY_CONFIG_CSV, CURVES_PNG, IMPORTANCE_CSV,
    IMPORTANCE_PNG, SUMMARY_CSV, SUMMARY_PARQUET,
};
use super::tables::{csv_bytes, groups_frame, polars_err, trials_frame};
use super::Plan;
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::log::plots::{self, Curve};

/// The winning configuration (its group name), its mean metric and n.
pub type Best = (String, f64, usize);

pub struct Results {
    root: PathBuf,
    study: Study,
    rows: Vec<Row>,
    at: std::collections::HashMap<String, usize>,
    /// When the files were last written, and what that cost.
    written: Option<(std::time::Instant, std::time::Duration)>,
    /// Which axes mattered (written with the last tables: `importance.csv`, `.png`).
    importance: Vec<Importance>,
}

impl Results {
    /// From the folder alone (its sweep.json).
    pub fn read(root: &Path) -> Result<Results> {
        let study = Study::read(root)?;
        Results::of(root, study)
    }

    /// For a plan about to run (its sweep.json is being written from the same plan).
    pub fn of_plan(plan: &Plan) -> Result<Results> {
        Results::of(&plan.root, Study::of(plan))
    }

    fn of(root: &Path, study: Study) -> Result<Results> {
        let rows = study
            .trials
            .iter()
            .map(|t| row(root, &study, t))
            .collect::<Result<Vec<_>>>()?;
        let at = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.trial.clone(), i))
            .collect();
        Ok(Results {
            root: root.to_path_buf(),
            study,
            rows,
            at,
            written: None,
            importance: Vec::new(),
        })
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// One trial's row.
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.at.get(id).map(|&i| &self.rows[i])
    }

    /// Adds the rows of trials asked since (a TPE sweep grows as it runs).
    pub fn sync(&mut self, plan: &Plan) -> Result<()> {
        for t in Study::of(plan).trials {
            if !self.at.contains_key(&t.id) {
                let r = row(&self.root, &self.study, &t)?;
                self.at.insert(t.id.clone(), self.rows.len());
                self.rows.push(r);
                self.study.trials.push(t);
            }
        }
        Ok(())
    }

    /// Reads one trial's row again (it has just ended, or changed).
    pub fn refresh(&mut self, id: &str) -> Result<()> {
        let Some(&i) = self.at.get(id) else {
            return Ok(());
        };
        self.rows[i] = row(&self.root, &self.study, &self.study.trials[i])?;
        Ok(())
    }

    /// The best metric among the completed trials at their budget, and its trial.
    pub fn best_so_far(&self) -> Option<(String, f64)> {
        let study = &self.study;
        self.rows
            .iter()
            .filter(|r| r.completed())
            .min_by(|a, b| rank(study, a.key(study), b.key(study)))
            .and_then(|r| r.metric(study).map(|m| (r.trial.clone(), m)))
    }

    /// Writes summary.csv / .parquet, summary_by_config.csv, best.toml and curves.png, if due
    /// (see the type's doc; `last`: always). Returns the winner when it wrote.
    pub fn write(&mut self, last: bool) -> Result<Option<Best>> {
        let due = match self.written {
            None => true,
            Some((when, cost)) => when.elapsed() >= cost * 10,
        };
        if !(last || due) {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let (root, study, rows) = (&self.root, &self.study, &self.rows);
        let groups = groups(study, rows);
        let mut trials = trials_frame(study, rows)?;
        let p = root.join(SUMMARY_CSV);
        write_atomic(&p, &csv_bytes(&p, &mut trials)?)?;
        let p = root.join(SUMMARY_PARQUET);
        let mut buf = Vec::new();
        ParquetWriter::new(&mut buf)
            .finish(&mut trials)
            .map_err(|e| polars_err(&p, e))?;
        write_atomic(&p, &buf)?;
        let mut by_config = groups_frame(study, &groups)?;
        let p = root.join(BY_CONFIG_CSV);
        write_atomic(&p, &csv_bytes(&p, &mut by_config)?)?;
        let best = write_best(root, study, &groups)?;
        write_curves(root, study, &groups)?;
        if last {
            self.importance = write_importance(root, study, rows)?;
            super::marginals::draw(root, study, rows)?;
            super::marginals::draw_parallel(root, study, rows)?;
        }
        self.written = Some((std::time::Instant::now(), started.elapsed()));
        Ok(best)
    }

    /// Which axes mattered, as the last write found (best first; empty before it, with
    /// fewer than 4 trials with a metric, or without axes).
    pub fn importance(&self) -> &[Importance] {
        &self.importance
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn study(&self) -> &Study {
        &self.study
    }
}

/// `best.toml`: the winning configuration's config (its lowest-seed completed trial's, as
/// that trial ran it), renamed `<name>-best` so running it makes a new folder.
fn write_best(root: &Path, study: &Study, groups: &[Group]) -> Result<Option<Best>> {
    let Some(g) = groups.iter().find(|g| g.metric_mean(study).is_some()) else {
        return Ok(None);
    };
    let (mean, std, n) = g.stats(|r| r.metric(study));
    let Some(mean) = mean else { return Ok(None) };
    let mut done = g.done();
    done.sort_by_key(|r| r.seed);
    let Some(first) = done.first() else {
        return Ok(None);
    };
    let path = root.join(&first.trial).join(checkpoint::CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut config: crate::Config = toml::from_str(&text).map_err(|e| Error::Checkpoint {
        path: path.clone(),
        msg: format!("not a config: {e}"),
    })?;
    config.experiment.name = format!("{}-best", config.experiment.name);
    let header = format!(
        "# The best configuration of the sweep in {} by mean best_{} over {n} completed seed(s): {mean:.4}{}\n# ({}; trials {}). This is trial {}'s config, renamed; run it with run-exp {}\n",
        root.display(),
        study.metric.key(),
        std.map(|s| format!(" ± {s:.4}")).unwrap_or_default(),
        if g.name.is_empty() { "the base config" } else { &g.name },
        done.iter().map(|r| r.trial.as_str()).collect::<Vec<_>>().join(", "),
        first.trial,
        root.join(BEST_TOML).display(),
    );
    write_atomic(
        &root.join(BEST_TOML),
        (header + &config.to_toml()).as_bytes(),
    )?;
    Ok(Some((g.name.clone(), mean, n)))
}

/// Configurations curves.png draws at most (the best ones): more lines than this read as a
/// blur, and drawing 10,000 took a second.
const CURVE_GROUPS: usize = 50;

/// `curves.png`: each trial's validation metric by epoch, coloured by configuration, for the
/// best configurations.
fn write_curves(root: &Path, study: &Study, groups: &[Group]) -> Result<()> {
    let key = study.metric.key();
    let curves: Vec<Curve> = groups
        .iter()
        .take(CURVE_GROUPS)
        .flat_map(|g| g.rows.iter())
        .filter(|r| !r.curve.is_empty())
        .map(|r| Curve {
            group: if r.group.is_empty() {
                "base config".into()
            } else {
                r.group.clone()
            },
            points: r.curve.clone(),
        })
        .collect();
    if curves.is_empty() {
        return Ok(());
    }
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let which = if groups.len() > CURVE_GROUPS {
        format!(
            ", the best {CURVE_GROUPS} of {} configurations",
            groups.len()
        )
    } else {
        String::new()
    };
    plots::curves(
        &root.join(CURVES_PNG),
        &format!(
            "{name}: validation {} by epoch, one line per trial{which}",
            &key[4..]
        ),
        plots::Axes { x: "epoch", y: key },
        &curves,
    )
}

/// `importance.csv` and `importance.png`: each axis's PED-ANOVA importance over the trials that
/// have a metric (each seed a trial; a pruned trial with its value at the last rung it reached)
/// and its bootstrap spread. Nothing with fewer than 4 such trials.
fn write_importance(root: &Path, study: &Study, rows: &[Row]) -> Result<Vec<Importance>> {
    let sign = match study.metric {
        crate::config::Monitor::ValAcc => -1.0,
        crate::config::Monitor::ValLoss => 1.0,
    };
    let trials: Vec<(Vec<toml::Value>, f64)> = rows
        .iter()
        .filter_map(|r| {
            let m = r.metric(study)?;
            let values = study
                .axes
                .iter()
                .map(|k| {
                    r.values
                        .iter()
                        .find(|(a, _)| a == k)
                        .map(|(_, v)| v.clone())
                })
                .collect::<Option<Vec<_>>>()?;
            Some((values, sign * m))
        })
        .collect();
    let imp = importances(&study.axes, &trials);
    if imp.is_empty() {
        return Ok(imp);
    }
    let mut csv = String::from("axis,importance,std,trials\n");
    for i in &imp {
        csv += &format!(
            "{},{},{},{}\n",
            csv_field(&i.axis),
            i.importance,
            i.std,
            trials.len()
        );
    }
    write_atomic(&root.join(IMPORTANCE_CSV), csv.as_bytes())?;
    let bars: Vec<(String, f64, f64)> = imp
        .iter()
        .map(|i| (i.axis.clone(), i.importance, i.std))
        .collect();
    plots::bars(
        &root.join(IMPORTANCE_PNG),
        &format!(
            "which axes mattered: PED-ANOVA over {} trials (top 10% vs all; bars: bootstrap sd)",
            trials.len()
        ),
        &bars,
    )?;
    Ok(imp)
}

/// A CSV field, quoted when it holds a comma or a quote.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
