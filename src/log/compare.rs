//! `run-exp plots --compare RUN... --tag TAG`: several runs' series of one TensorBoard scalar
//! in one PNG, for READMEs, papers and anyone without TensorBoard at hand. The series are read
//! from the runs' event files (every scalar a run logged, under the names TensorBoard shows);
//! each line is labelled by the config keys that differ between the runs, and runs that differ
//! only in `experiment.seed` share a colour, so seeds read as one band.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::plots::{curves, Axes, Curve};
use super::tensorboard::read_events;
use crate::error::{Error, Result};

/// Keys that name a run rather than configure it: never a label.
const NAMING_KEYS: [&str; 3] = ["experiment.name", "experiment.out_dir", "experiment.seed"];

/// One run's series of `tag`: (step, value) in step order, a later write of a step (a resumed
/// run's replay) replacing an earlier one. Every `events.out.tfevents.*` file in `dir` is
/// read, in name order (a run writes one per process).
pub fn series(dir: &Path, tag: &str) -> Result<Vec<(f64, f64)>> {
    let mut by_step = BTreeMap::new();
    let mut tags = BTreeSet::new();
    for file in event_files(dir)? {
        let events = read_events(&file).map_err(|e| Error::io(&file, e))?;
        for ev in events {
            for v in ev.summary.iter().flat_map(|s| s.value.iter()) {
                let Some(x) = v.simple_value else { continue };
                if v.tag == tag {
                    by_step.insert(ev.step, x as f64);
                } else {
                    tags.insert(v.tag.clone());
                }
            }
        }
    }
    if by_step.is_empty() {
        let shown: Vec<&str> = tags.iter().map(String::as_str).collect();
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            msg: format!(
                "this run logged no scalar {tag:?}; its scalars: {}",
                shown.join(", ")
            ),
        });
    }
    Ok(by_step.into_iter().map(|(s, v)| (s as f64, v)).collect())
}

fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents."))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            msg: "no TensorBoard event files here: not a run folder (results/<name>/run-NNN)"
                .into(),
        });
    }
    Ok(files)
}

/// A run's config.toml as dotted keys and their values (TOML text: strings quoted).
fn config_keys(dir: &Path) -> Result<BTreeMap<String, String>> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let value: toml::Value = toml::from_str(&text).map_err(|e| Error::Checkpoint {
        path: path.clone(),
        msg: format!("not a TOML config: {e}"),
    })?;
    let mut out = BTreeMap::new();
    crate::config::flatten("", &value, &mut out);
    Ok(out)
}

/// Each run's (colour group, line label): the config keys whose values differ between the
/// runs as `key=value` (the value as `--set` takes it), the seed left out of the group. Runs whose configs do not differ are
/// told apart by their folders.
pub fn labels(configs: &[BTreeMap<String, String>], dirs: &[PathBuf]) -> Vec<(String, String)> {
    let keys: BTreeSet<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    let differ = |k: &&String| {
        let first = configs[0].get(*k);
        configs.iter().any(|c| c.get(*k) != first)
    };
    let varying: Vec<&String> = keys.into_iter().filter(differ).collect();
    let text = |c: &BTreeMap<String, String>, keys: &[&&String]| -> String {
        keys.iter()
            .map(|k| format!("{k}={}", c.get(**k).map_or("(unset)", String::as_str)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let grouping: Vec<&&String> = varying
        .iter()
        .filter(|k| !NAMING_KEYS.contains(&k.as_str()))
        .collect();
    let seeded: Vec<&&String> = varying
        .iter()
        .filter(|k| k.as_str() == "experiment.seed")
        .collect();
    configs
        .iter()
        .zip(dirs)
        .map(|(c, dir)| {
            let group = text(c, &grouping);
            let seed = text(c, &seeded);
            match (group.is_empty(), seed.is_empty()) {
                (true, true) => (dir.display().to_string(), dir.display().to_string()),
                (true, false) => (seed.clone(), seed),
                (false, true) => (group.clone(), group),
                (false, false) => (group.clone(), format!("{group}, {seed}")),
            }
        })
        .collect()
}

/// Draws `tag` of every run in `dirs` into `out` (PNG): x the training step, y the value
/// (`log10` of it with `log_y`; a value <= 0 then leaves a gap). Returns the legend's labels.
pub fn compare(dirs: &[PathBuf], tag: &str, out: &Path, log_y: bool) -> Result<Vec<String>> {
    for dir in dirs {
        event_files(dir)?;
    }
    let configs = dirs
        .iter()
        .map(|d| config_keys(d))
        .collect::<Result<Vec<_>>>()?;
    let labels = labels(&configs, dirs);
    let mut lines = Vec::new();
    for (dir, (group, _)) in dirs.iter().zip(&labels) {
        // log10 of a value <= 0 is NaN: a gap in the line.
        let points = series(dir, tag)?
            .into_iter()
            .map(|(x, y)| (x, if log_y { y.log10() } else { y }))
            .collect();
        lines.push(Curve {
            group: group.clone(),
            points,
        });
    }
    let y_label = if log_y {
        format!("log10 {tag}")
    } else {
        tag.to_string()
    };
    let title = format!("{tag} by training step, {} runs", dirs.len());
    curves(
        out,
        &title,
        Axes {
            x: "training step",
            y: &y_label,
        },
        &lines,
    )?;
    let mut groups: Vec<String> = Vec::new();
    for (g, _) in labels {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn runs_are_labelled_by_the_keys_that_differ_and_seeds_share_a_colour() {
        let configs = [
            cfg(&[
                ("model.cell", "lstm"),
                ("experiment.seed", "0"),
                ("train.lr", "0.01"),
            ]),
            cfg(&[
                ("model.cell", "lstm"),
                ("experiment.seed", "1"),
                ("train.lr", "0.01"),
            ]),
            cfg(&[
                ("model.cell", "gru"),
                ("experiment.seed", "0"),
                ("train.lr", "0.01"),
            ]),
        ];
        let dirs: Vec<PathBuf> = ["a", "b", "c"].iter().map(PathBuf::from).collect();
        let l = labels(&configs, &dirs);
        assert_eq!(
            l[0],
            (
                "model.cell=lstm".into(),
                "model.cell=lstm, experiment.seed=0".into()
            )
        );
        assert_eq!(l[1].0, l[0].0);
        assert_eq!(l[2].0, "model.cell=gru");
        // Only the seed differs: it is the label; nothing differs: the folders.
        let l = labels(&configs[..2], &dirs[..2]);
        assert_eq!(l[0].0, "experiment.seed=0");
        let same = [configs[0].clone(), configs[0].clone()];
        assert_eq!(labels(&same, &dirs[..2])[1].0, "b");
        // A key one run lacks differs too.
        let l = labels(
            &[configs[0].clone(), cfg(&[("model.cell", "lstm")])],
            &dirs[..2],
        );
        assert!(l[1].0.contains("train.lr=(unset)"), "{l:?}");
    }
}
