//! Sweeps: an experiment file with a `[sweep]` table is a study. `Plan::load` expands it into
//! trials (grid, random or halving over any dotted config key, times `seeds`), each checked
//! as a `--set` is before anything runs and named by a stable hash of its overrides, so
//! adding a value adds trials and renumbers nothing. Each trial is a normal run folder
//! `<out_dir>/<name>/<id>/` with a `trial.json` (`record.rs`), run in its own process
//! (`trial.rs`) by the local driver (`driver.rs`) or a Slurm array (`slurm.rs`), and gathered
//! into tables, a plot and TensorBoard's HParams data (`summary.rs`).

pub mod ask;
pub mod axis;
pub mod driver;
pub mod halving;
pub mod importance;
pub mod marginals;
pub mod pareto;
pub mod record;
pub mod report;
pub mod results;
pub mod slurm;
pub mod summary;
pub mod tables;
pub mod tpe;
pub mod trial;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rand::SeedableRng;

pub use axis::{number, Axis, Domain, ValueScale};

use crate::config::{locate_parts, Config, Override, Sweep, SweepMethod};
use crate::error::{Error, Result};
use record::Budget;

/// One trial: a configuration (axis values) and a seed.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Stable hash of `values` and `seed` (16 hex digits; 8 for a folder an earlier version
    /// made, kept as it is).
    pub id: String,
    /// (axis key, value), in the order of `Plan::axes`.
    pub values: Vec<(String, toml::Value)>,
    pub seed: u64,
    /// How long it trains (an axis may set it).
    pub budget: Budget,
    /// A hash of the config.toml text its run folder gets (when `Plan::load` built the config):
    /// a rerun finds an unchanged folder without building the config again.
    pub config_hash: Option<u64>,
}

/// The hash `Trial::config_hash` holds, of a config.toml's text.
pub fn text_hash(text: &str) -> u64 {
    let mut fnv = crate::fsutil::Fnv1a::new();
    fnv.eat(text.as_bytes());
    fnv.0
}

impl Trial {
    /// The configuration without the seed, e.g. `model.cell=gru train.lr=0.001`: trials that
    /// differ only in seed share it (TensorBoard's session group, the by-config table).
    pub fn group(&self) -> String {
        group_name(&self.values)
    }

    /// Every override, the seed included, as `key=value` words.
    pub fn describe(&self) -> String {
        let mut s = self.group();
        if !s.is_empty() {
            s.push(' ');
        }
        s + &format!("experiment.seed={}", self.seed)
    }
}

pub fn group_name(values: &[(String, toml::Value)]) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// FNV-1a (64 bits, then mixed) over the sorted `key=value` lines: the same overrides give the same id
/// on any machine, whatever their order in the file. 16 hex digits: a million trials collide
/// with odds of about 3 in 10^8.
pub fn trial_id(values: &[(String, toml::Value)], seed: u64) -> String {
    // FNV's last bytes reach the high bits weakly (grids differ in a digit or two): splitmix64's
    // finalizer spreads every input bit over the whole id.
    let mut z = trial_hash(values, seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
}

fn trial_hash(values: &[(String, toml::Value)], seed: u64) -> u64 {
    let mut lines: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    lines.push(format!("experiment.seed={seed}\n"));
    lines.sort();
    let mut fnv = crate::fsutil::Fnv1a::new();
    fnv.eat(lines.concat().as_bytes());
    fnv.0
}

/// The 8-hex id earlier versions gave the same trial (the hash's halves folded): their
/// folders keep it.
fn legacy_id(values: &[(String, toml::Value)], seed: u64) -> String {
    let h = trial_hash(values, seed);
    format!("{:08x}", (h >> 32) ^ (h & 0xffff_ffff))
}

/// Which trials' whole configs `Plan::load` builds and checks: every one (a sweep about to
/// run, a dry run), or one (`--trial ID`, whose process need not check the others again).
#[derive(Debug, Clone, Copy)]
pub enum Check<'a> {
    All,
    Only(&'a str),
    /// None: the ids and values are enough.
    Nothing,
}

/// A sweep file expanded and checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The sweep file, absolute, and the `--set`s given with it (a trial process gets both).
    pub file: PathBuf,
    pub sets: Vec<String>,
    pub sweep: Sweep,
    pub axes: Vec<(String, Axis)>,
    pub trials: Vec<Trial>,
    /// `<out_dir>/<name>`, absolute.
    pub root: PathBuf,
    /// The base config (no `[sweep]`).
    pub base: Config,
    /// The file's text and the `--set`s parsed: a trial's config is built from them.
    text: String,
    base_sets: Vec<Override>,
    /// `file:line:col` of `sweep.seeds`, where a trial's seed comes from.
    seeds_at: String,
}

impl Plan {
    /// Reads a sweep file, checks every axis value against the base config and builds every
    /// trial's config: all bad input is found here, before anything runs.
    pub fn load(file: &Path, sets: &[String], check: Check) -> Result<Plan> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        let base_sets = Override::parse_sets(sets)?;
        let mut base = Config::from_toml_with(file, &text, &base_sets)?;
        let Some(sweep) = base.sweep.take() else {
            return Err(Error::Config {
                location: file.display().to_string(),
                key: "sweep".into(),
                msg: "has no [sweep] table".into(),
            });
        };
        let at = |parts: &[&str]| locate_parts(file, &text, parts);
        let bad = |parts: &[&str], msg: String| Error::Config {
            location: at(parts),
            key: parts.join("."),
            msg,
        };
        let multi = sweep.samples();
        let seeds = if sweep.seeds.is_empty() {
            vec![base.experiment.seed]
        } else {
            sweep.seeds.clone()
        };

        // Each axis: a key a sweep may vary, a well-formed value, each value valid on the base.
        let mut axes = Vec::new();
        for (key, raw) in &sweep.axes {
            let here = ["sweep", "axes", key.as_str()];
            let fixed = [
                ("experiment.name", "names the sweep's folder"),
                ("experiment.out_dir", "is where the sweep's folder goes"),
            ];
            if let Some((_, why)) = fixed.iter().find(|(k, _)| k == key) {
                return Err(bad(&here, format!("cannot be an axis: it {why}")));
            }
            if key.starts_with("sweep.") || key == "sweep" {
                return Err(bad(&here, "the sweep cannot sweep itself".into()));
            }
            if key == "experiment.seed" {
                return Err(bad(&here, "use sweep.seeds = [...] for seeds".into()));
            }
            let axis = Axis::parse(raw).map_err(|m| bad(&here, m))?;
            if axis.is_distribution() && !multi {
                return Err(bad(
                    &here,
                    "a distribution needs method = \"random\", \"halving\" or \"tpe\"; a grid axis is a list of values".into(),
                ));
            }
            for v in axis.probes() {
                let origin = format!("{}: sweep.axes.\"{key}\" value {v}", at(&here));
                let mut all = base_sets.clone();
                all.push(Override {
                    key: key.clone(),
                    value: v,
                    origin,
                });
                Config::from_toml_with(file, &text, &all)?;
            }
            if let Axis::Values(vs) = &axis {
                for (i, v) in vs.iter().enumerate() {
                    if vs[..i].contains(v) {
                        return Err(bad(&here, format!("lists {v} twice")));
                    }
                }
            }
            axes.push((key.clone(), axis));
        }

        let configs = match sweep.method {
            SweepMethod::Grid => grid(&axes),
            SweepMethod::Random | SweepMethod::Halving => {
                sample(&axes, sweep.trials.unwrap_or(1), sweep.seed)
            }
            // Asked one at a time as results arrive: the trials are those asked so far.
            SweepMethod::Tpe => Vec::new(),
        };
        let root = std::path::absolute(base.experiment.out_dir.join(&base.experiment.name))
            .map_err(|e| Error::io(&base.experiment.out_dir, e))?;
        // Folders an earlier version named with 8-hex ids keep them.
        let existing: std::collections::HashSet<String> = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 8)
            .collect();
        let axes_at = at(&["sweep", "axes"]);
        let seeds_at = at(&["sweep", "seeds"]);
        let file = std::path::absolute(file).map_err(|e| Error::io(file, e))?;
        let mut plan = Plan {
            file,
            sets: sets.to_vec(),
            sweep,
            axes,
            trials: Vec::new(),
            root,
            base,
            text,
            base_sets,
            seeds_at,
        };
        let mut ids = std::collections::HashMap::new();
        for values in configs {
            for &seed in &seeds {
                let mut id = trial_id(&values, seed);
                if !existing.is_empty() {
                    let old = legacy_id(&values, seed);
                    if existing.contains(&old) && !plan.root.join(&id).exists() {
                        id = old;
                    }
                }
                let described = format!("{} experiment.seed={seed}", group_name(&values));
                if let Some(other) = ids.insert(id.clone(), described.clone()) {
                    return Err(Error::Config {
                        location: axes_at,
                        key: "sweep.axes".into(),
                        msg: format!("trials {other} and {described} hash to the same id {id}"),
                    });
                }
                let trial = plan.built(id, values.clone(), seed, check)?;
                plan.trials.push(trial);
            }
        }
        if plan.sweep.method == SweepMethod::Tpe {
            plan.trials = ask::registered(&plan, check)?;
        }
        Ok(plan)
    }

    /// A trial with its budget and config hash, its whole config built and checked when
    /// `check` asks for it.
    fn built(
        &self,
        id: String,
        values: Vec<(String, toml::Value)>,
        seed: u64,
        check: Check,
    ) -> Result<Trial> {
        let mut trial = Trial {
            id,
            values,
            seed,
            budget: Budget::of(&self.base),
            config_hash: None,
        };
        let build = match check {
            Check::All => true,
            Check::Only(want) => trial.id == want,
            Check::Nothing => false,
        };
        if build {
            let config = self.config(&trial)?;
            trial.budget = Budget::of(&config);
            trial.config_hash = Some(text_hash(&config.with_absolute_paths().to_toml()));
        }
        Ok(trial)
    }

    /// Trials the sweep runs when it is done: every one planned, or for TPE `trials`
    /// configurations times the seeds.
    pub fn total(&self) -> usize {
        match self.sweep.method {
            SweepMethod::Tpe => self.sweep.trials.unwrap_or(0) * self.seed_list().len(),
            _ => self.trials.len(),
        }
    }

    /// `sweep.seeds`, or the base config's seed.
    pub fn seed_list(&self) -> Vec<u64> {
        if self.sweep.seeds.is_empty() {
            vec![self.base.experiment.seed]
        } else {
            self.sweep.seeds.clone()
        }
    }

    /// A trial's whole config: the base with its values and seed applied (no `[sweep]`),
    /// checked as a `--set` is.
    pub fn config(&self, trial: &Trial) -> Result<Config> {
        let origin = format!("trial {} ({})", trial.id, trial.describe());
        let mut all = self.base_sets.clone();
        for (k, v) in &trial.values {
            all.push(Override {
                key: k.clone(),
                value: v.clone(),
                origin: origin.clone(),
            });
        }
        all.push(Override {
            key: "experiment.seed".into(),
            value: toml::Value::Integer(trial.seed as i64),
            origin: self.seeds_at.clone(),
        });
        let mut config = Config::from_toml_with(&self.file, &self.text, &all)?;
        config.sweep = None;
        Ok(config)
    }

    pub fn trial(&self, id: &str) -> Result<&Trial> {
        self.trials
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| Error::Config {
                location: format!("--trial {id}"),
                key: "trial".into(),
                msg: format!(
                    "{} has no trial {id} ({} trials; run-exp {} --dry-run lists them)",
                    self.file.display(),
                    self.trials.len(),
                    self.file.display()
                ),
            })
    }

    pub fn trial_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// `--dry-run`: the trial count and every trial's overrides.
    pub fn describe(&self) -> String {
        let configs = self.trials.len() / self.seeds().len().max(1);
        let mut s = format!(
            "{}: {} sweep, {} trials ({} configurations x {} seeds) into {}\n",
            self.file.display(),
            serde_json::to_string(&self.sweep.method)
                .unwrap_or_default()
                .trim_matches('"'),
            self.trials.len(),
            configs,
            self.seeds().len(),
            self.root.display()
        );
        if self.sweep.method == SweepMethod::Tpe {
            s = format!(
                "{}: tpe sweep, {} trials ({} configurations x {} seeds) into {}; {} asked so far, the rest are drawn one at a time from the results as they arrive\n",
                self.file.display(),
                self.total(),
                self.sweep.trials.unwrap_or(0),
                self.seed_list().len(),
                self.root.display(),
                self.trials.len()
            );
        }
        for t in &self.trials {
            s += &format!("{}  {}\n", t.id, t.describe());
        }
        s
    }

    pub fn seeds(&self) -> Vec<u64> {
        let mut s: Vec<u64> = self.trials.iter().map(|t| t.seed).collect();
        s.sort_unstable();
        s.dedup();
        s
    }
}

/// Every combination, the first axis varying slowest.
fn grid(axes: &[(String, Axis)]) -> Vec<Vec<(String, toml::Value)>> {
    let mut out: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for (key, axis) in axes {
        let Axis::Values(vs) = axis else { continue };
        out = out
            .into_iter()
            .flat_map(|prefix| {
                vs.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push((key.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    out
}

/// `n` distinct configurations drawn in order from one seeded stream: asking for more trials
/// later keeps the first ones (and their ids). A small discrete space gives fewer.
fn sample(axes: &[(String, Axis)], n: usize, seed: u64) -> Vec<Vec<(String, toml::Value)>> {
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut draws = 0usize;
    while out.len() < n && draws < n.saturating_mul(100).max(1000) {
        draws += 1;
        let values: Vec<(String, toml::Value)> = axes
            .iter()
            .map(|(k, a)| (k.clone(), a.sample(&mut rng)))
            .collect();
        if seen.insert(group_name(&values)) {
            out.push(values);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str, sets: &[&str]) -> Result<Plan> {
        let dir = std::env::temp_dir().join(format!("rnnlab-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        let path = dir.join(format!(
            "s{}-{}.toml",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            trial_id(&[("x".into(), toml::Value::String(text.into()))], 0)
        ));
        std::fs::write(&path, text).unwrap();
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Plan::load(&path, &sets, Check::All)
    }

    fn err(r: Result<Plan>) -> String {
        match r {
            Ok(p) => panic!("expected an error, got {} trials", p.trials.len()),
            Err(e) => e.to_string(),
        }
    }

    const GRID: &str = "[experiment]\nname = \"g\"\n[train]\nepochs = 3\n[sweep]\nseeds = [0, 1]\n[sweep.axes]\n\"model.cell\" = [\"rnn\", \"gru\"]\n\"train.lr\" = [1e-3, 1e-2, 3e-2]\n";

    #[test]
    fn a_grid_is_every_combination_times_seeds_each_applied() {
        let p = plan(GRID, &[]).unwrap();
        assert_eq!(p.trials.len(), 2 * 3 * 2);
        let ids: BTreeSet<&str> = p.trials.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids.len(), 12);
        let t = p
            .trials
            .iter()
            .find(|t| t.group() == "model.cell=\"gru\" train.lr=0.01" && t.seed == 1)
            .unwrap();
        let c = p.config(t).unwrap();
        assert_eq!(c.model.cell, crate::config::CellKind::Gru);
        assert_eq!(c.train.lr, 1e-2);
        assert_eq!(c.experiment.seed, 1);
        assert!(c.sweep.is_none());
        // --set changes the base of every trial; an axis wins over it.
        let p = plan(GRID, &["train.epochs=2", "train.lr=0.5"]).unwrap();
        assert!(p
            .trials
            .iter()
            .all(|t| p.config(t).unwrap().train.epochs == 2));
        assert!(p.trials.iter().all(|t| t.budget.epochs == 2));
        assert!(p.trials.iter().all(|t| p.config(t).unwrap().train.lr < 0.1));
    }

    #[test]
    fn ids_are_stable_when_values_are_added_or_reordered() {
        let a = plan(GRID, &[]).unwrap();
        let more = GRID.replace("[1e-3, 1e-2, 3e-2]", "[3e-2, 1e-3, 1e-2, 0.1]");
        let b = plan(&more, &[]).unwrap();
        assert_eq!(b.trials.len(), 16);
        let ids_b: BTreeSet<&str> = b.trials.iter().map(|t| t.id.as_str()).collect();
        for t in &a.trials {
            assert!(
                ids_b.contains(t.id.as_str()),
                "{} lost its id",
                t.describe()
            );
        }
        // The id hashes key=value pairs, whatever their order.
        let x = [
            ("a.b".to_string(), toml::Value::Integer(1)),
            ("c.d".into(), toml::Value::Boolean(true)),
        ];
        let y = [x[1].clone(), x[0].clone()];
        assert_eq!(trial_id(&x, 3), trial_id(&y, 3));
        // 64 bits: 16 hex digits (earlier versions folded them to 8; their folders keep those).
        assert_eq!(trial_id(&x, 3).len(), 16);
        assert_eq!(legacy_id(&x, 3).len(), 8);
        assert_ne!(trial_id(&x, 3), trial_id(&x, 4));
    }

    #[test]
    fn bad_axes_are_refused_naming_the_axis_value_and_line() {
        let m = err(plan(&GRID.replace("\"gru\"]", "\"gru\", \"lsm\"]"), &[]));
        assert!(
            m.contains(":8:1: sweep.axes.\"model.cell\" value \"lsm\"")
                && m.contains("model.cell: unknown variant"),
            "{m}"
        );
        let m = err(plan(&GRID.replace("\"train.lr\"", "\"train.lrr\""), &[]));
        assert!(
            m.contains("sweep.axes.\"train.lrr\"") && m.contains("unknown field"),
            "{m}"
        );
        let m = err(plan(&GRID.replace("1e-3, 1e-2, 3e-2", "1e-3, -1.0"), &[]));
        assert!(
            m.contains("value -1.0") && m.contains("train.lr: must be > 0"),
            "{m}"
        );
        let m = err(plan(
            &GRID.replace("[1e-3, 1e-2, 3e-2]", "{ log_uniform = [1e-4, 1e-2] }"),
            &[],
        ));
        assert!(
            m.contains(":9:1: sweep.axes.train.lr: a distribution needs method"),
            "{m}"
        );
        let m = err(plan(
            &GRID.replace("[sweep]", "[sweep]\nmethod = \"random\""),
            &[],
        ));
        assert!(
            m.contains("sweep.trials") && m.contains("need trials"),
            "{m}"
        );
        let m = err(plan(
            &GRID.replace("\"train.lr\"", "\"experiment.name\""),
            &[],
        ));
        assert!(m.contains("cannot be an axis"), "{m}");
        let m = err(plan(&GRID.replace("[\"rnn\", \"gru\"]", "[]"), &[]));
        assert!(m.contains("empty list"), "{m}");
        let m = err(plan(
            &GRID.replace("1e-3, 1e-2, 3e-2", "1e-3, 1e-2, 1e-3"),
            &[],
        ));
        assert!(
            m.contains(":9:1: sweep.axes.train.lr: lists 0.001 twice"),
            "{m}"
        );
        let m = err(plan(&GRID.replace("seeds = [0, 1]", "seeds = [0, 0]"), &[]));
        assert!(m.contains("sweep.seeds") && m.contains("twice"), "{m}");
        let m = err(plan(
            &GRID.replace("[sweep]", "[sweep]\nmethd = \"grid\""),
            &[],
        ));
        assert!(
            m.contains("sweep.methd") && m.contains("unknown field"),
            "{m}"
        );
        // The combination is checked too: nesterov needs momentum > 0 with sgd.
        let combo = "[train]\noptimizer = \"sgd\"\nmomentum = 0.9\n[sweep]\n[sweep.axes]\n\"train.nesterov\" = [false, true]\n\"train.momentum\" = [0.0, 0.9]\n";
        let m = err(plan(combo, &[]));
        assert!(
            m.starts_with("trial ") && m.contains("train.nesterov: needs"),
            "{m}"
        );
    }

    #[test]
    fn random_samples_are_seeded_in_range_and_extend_without_renumbering() {
        let text = "[train]\nepochs = 9\n[sweep]\nmethod = \"random\"\ntrials = 8\nseed = 7\n[sweep.axes]\n\"train.lr\" = { log_uniform = [1e-4, 1e-1] }\n\"model.hidden_size\" = { int_range = [8, 64] }\n\"model.dropout\" = { uniform = [0.0, 0.5] }\n\"model.cell\" = { choice = [\"lstm\", \"gru\"] }\n";
        let a = plan(text, &[]).unwrap();
        assert_eq!(a.trials.len(), 8);
        for t in &a.trials {
            let c = &a.config(t).unwrap();
            assert!((1e-4..=1e-1).contains(&c.train.lr), "{}", c.train.lr);
            assert!((8..=64).contains(&c.model.hidden_size));
            assert!((0.0..=0.5).contains(&c.model.dropout));
        }
        let again = plan(text, &[]).unwrap();
        let ids = |p: &Plan| p.trials.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&again));
        let more = plan(&text.replace("trials = 8", "trials = 12"), &[]).unwrap();
        assert_eq!(ids(&more)[..8], ids(&a)[..]);
        let other = plan(&text.replace("seed = 7", "seed = 8"), &[]).unwrap();
        assert_ne!(ids(&other), ids(&a));
    }

    #[test]
    fn tpe_and_prune_settings_are_checked_and_a_fresh_tpe_sweep_has_asked_nothing() {
        let text = "[train]\nepochs = 9\n[sweep]\nmethod = \"tpe\"\ntrials = 20\nseeds = [0, 1]\nprune = \"halving\"\nmin_epochs = 1\n[experiment]\nout_dir = \"/nonexistent/rnnlab\"\n[sweep.axes]\n\"train.lr\" = { log_uniform = [1e-4, 1e-1] }\n";
        let p = plan(text, &[]).unwrap();
        assert!(p.trials.is_empty() && p.sweep.prunes());
        assert_eq!(p.total(), 40);
        assert!(p
            .describe()
            .contains("40 trials (20 configurations x 2 seeds)"));
        let m = err(plan(&text.replace("trials = 20\n", ""), &[]));
        assert!(m.contains("sweep.trials") && m.contains("tpe"), "{m}");
        let m = err(plan(&text.replace("\"tpe\"", "\"halving\""), &[]));
        assert!(
            m.contains("sweep.prune") && m.contains("prunes already"),
            "{m}"
        );
        let m = err(plan(&text.replace("min_epochs = 1", "min_epochs = 9"), &[]));
        assert!(m.contains("sweep.min_epochs"), "{m}");
        let m = err(plan(
            &text.replace("\"halving\"\nmin", "\"median\"\nmin"),
            &[],
        ));
        assert!(
            m.contains("sweep.prune") && m.contains("unknown variant"),
            "{m}"
        );
        assert!(plan(
            &text.replace("trials = 20", "trials = 20\nmultivariate = true"),
            &[]
        )
        .is_ok());
        let m = err(plan(
            &text.replace(
                "\"tpe\"\ntrials = 20",
                "\"random\"\ntrials = 20\nmultivariate = true",
            ),
            &[],
        ));
        assert!(m.contains("sweep.multivariate") && m.contains("tpe"), "{m}");
    }

    /// A `--trial` process builds only its own trial's config (the driver checked them all):
    /// a bad combination elsewhere in the grid is the driver's error, not every trial's.
    #[test]
    fn a_trial_process_builds_only_its_own_config() {
        let combo = "[train]\noptimizer = \"sgd\"\nmomentum = 0.9\n[sweep]\n[sweep.axes]\n\"train.nesterov\" = [false, true]\n\"train.momentum\" = [0.0, 0.9]\n";
        assert!(plan(combo, &[]).is_err());
        let path = std::env::temp_dir().join(format!("rnnlab-only-{}.toml", std::process::id()));
        std::fs::write(&path, combo).unwrap();
        let values = vec![
            ("train.nesterov".to_string(), toml::Value::Boolean(false)),
            ("train.momentum".into(), toml::Value::Float(0.9)),
        ];
        let id = trial_id(&values, 0);
        let p = Plan::load(&path, &[], Check::Only(&id)).unwrap();
        assert_eq!(p.trials.len(), 4);
        assert!(!p.config(p.trial(&id).unwrap()).unwrap().train.nesterov);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn overrides_reach_any_depth_as_typed_values() {
        let text = "[sweep]\n[sweep.axes]\n\"train.betas\" = [[0.9, 0.98], [0.8, 0.9]]\n\"train.clip_norm\" = [1, 2.5]\n";
        let p = plan(text, &[]).unwrap();
        assert_eq!(p.trials.len(), 4);
        assert!(p
            .trials
            .iter()
            .map(|t| p.config(t).unwrap())
            .any(|c| c.train.betas == [0.8, 0.9] && c.train.clip_norm == Some(1.0)));
        // --set reaches the sweep table itself.
        let p = plan(GRID, &["sweep.seeds=[5]"]).unwrap();
        assert!(p.trials.iter().all(|t| t.seed == 5));
    }
}
