//! The official splits of UCF101 and HMDB51 (`data.protocol`, `data.split`): which videos train
//! and which test, read from the split files the datasets ship, and a validation set carved from
//! training without leakage.
//!
//! - UCF101 (`ucfTrainTestlist/`): `classInd.txt` (`1 ApplyEyeMakeup`), `trainlist0N.txt`
//!   (`ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`), `testlist0N.txt` (the path alone; the
//!   class is its folder). Clips cut from one long video share a group (`_g08_`): validation
//!   takes whole groups of each class, so no video is on both sides.
//! - HMDB51 (`testTrainMulti_7030_splits/`): `<class>_test_splitN.txt`, lines `<video>.avi 1`
//!   (1 train, 2 test, 0 unused); classes in name order; validation carved at random per class.
//!
//! Paths are the datasets' own (`<class>/<video>.avi`), relative to `data.root`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::config::Protocol;
use crate::error::{Error, Result};

/// One video of a split: its path under the root (`ApplyEyeMakeup/v_..._g08_c01.avi`), its
/// class id, and the split file and line that listed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub path: PathBuf,
    pub label: u32,
    pub at: (PathBuf, usize),
}

/// A protocol's split: class names (ids in order), train, validation (carved from train), test.
#[derive(Debug)]
pub struct Listed {
    pub classes: Vec<String>,
    pub train: Vec<Entry>,
    pub valid: Vec<Entry>,
    pub test: Vec<Entry>,
}

/// Reads split `split` (1 to 3) of `protocol` from the folder of its split files and carves
/// `val_fraction` of training (seeded) for validation.
pub fn read(
    protocol: Protocol,
    annotations: &Path,
    split: usize,
    val_fraction: f64,
    seed: u64,
) -> Result<Listed> {
    let (classes, train, test) = match protocol {
        Protocol::Ucf101 => ucf101(annotations, split)?,
        Protocol::Hmdb51 => hmdb51(annotations, split)?,
    };
    let key = |e: &Entry| match protocol {
        // Whole groups per class: the group is the video clips were cut from.
        Protocol::Ucf101 => group(&e.path).unwrap_or_else(|| e.path.display().to_string()),
        Protocol::Hmdb51 => e.path.display().to_string(),
    };
    let (train, valid) = carve(train, val_fraction, seed, key);
    Ok(Listed {
        classes,
        train,
        valid,
        test,
    })
}

/// UCF101's group of a clip: `ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi` -> `ApplyEyeMakeup_g08`.
pub fn group(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let stem = stem.strip_prefix("v_").unwrap_or(stem);
    let at = stem.rfind("_g")?;
    let (class, rest) = (&stem[..at], &stem[at + 1..]);
    let number = rest.split('_').next()?;
    (number.len() > 1 && number[1..].chars().all(|c| c.is_ascii_digit()))
        .then(|| format!("{class}_{number}"))
}

fn read_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect())
}

/// The class folder of a dataset path (`ApplyEyeMakeup/v_...avi` -> `ApplyEyeMakeup`).
fn class_folder(path: &Path) -> Option<String> {
    let mut parts = path.components();
    let first = parts.next()?.as_os_str().to_str()?.to_string();
    parts.next().is_some().then_some(first)
}

type Splits = (Vec<String>, Vec<Entry>, Vec<Entry>);

fn ucf101(dir: &Path, split: usize) -> Result<Splits> {
    let ind = dir.join("classInd.txt");
    let mut classes = Vec::new();
    for (line, text) in read_lines(&ind)? {
        let mut f = text.split_whitespace();
        let (Some(id), Some(name), None) = (f.next(), f.next(), f.next()) else {
            return Err(Error::data(&ind, line, "expected `<id> <ClassName>`"));
        };
        if id.parse::<usize>().ok() != Some(classes.len() + 1) {
            return Err(Error::data(
                &ind,
                line,
                format!(
                    "class id {id}: expected {} (ids run 1, 2, ... in order)",
                    classes.len() + 1
                ),
            ));
        }
        classes.push(name.to_string());
    }
    if classes.len() < 2 {
        return Err(Error::data(&ind, 0, "lists fewer than 2 classes"));
    }
    let id_of = |file: &Path, line: usize, path: &Path| -> Result<u32> {
        let name = class_folder(path).ok_or_else(|| {
            Error::data(
                file,
                line,
                format!("{}: expected <Class>/<video>", path.display()),
            )
        })?;
        classes
            .iter()
            .position(|c| *c == name)
            .map(|i| i as u32)
            .ok_or_else(|| {
                Error::data(
                    file,
                    line,
                    format!("class \"{name}\" is not in {}", ind.display()),
                )
            })
    };
    let list = |name: String, labelled: bool| -> Result<Vec<Entry>> {
        let file = dir.join(name);
        let mut out = Vec::new();
        for (line, text) in read_lines(&file)? {
            let mut f = text.split_whitespace();
            let Some(path) = f.next().map(PathBuf::from) else {
                continue;
            };
            let label = id_of(&file, line, &path)?;
            if labelled {
                // The listed id (1-based) must agree with the folder.
                let given = f.next().and_then(|v| v.parse::<u32>().ok());
                if given != Some(label + 1) {
                    return Err(Error::data(
                        &file,
                        line,
                        format!(
                            "expected `<Class>/<video> <id>` with id {} ({}'s in classInd.txt)",
                            label + 1,
                            classes[label as usize]
                        ),
                    ));
                }
            }
            out.push(Entry {
                path,
                label,
                at: (file.clone(), line),
            });
        }
        if out.is_empty() {
            return Err(Error::data(&file, 0, "lists no videos"));
        }
        Ok(out)
    };
    let train = list(format!("trainlist{split:02}.txt"), true)?;
    let test = list(format!("testlist{split:02}.txt"), false)?;
    Ok((classes, train, test))
}

fn hmdb51(dir: &Path, split: usize) -> Result<Splits> {
    let suffix = format!("_test_split{split}.txt");
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_suffix(&suffix)?.to_string();
            Some((name, p))
        })
        .collect();
    files.sort();
    if files.len() < 2 {
        return Err(Error::data(
            dir,
            0,
            format!("holds fewer than 2 <class>{suffix} files (HMDB51's split files)"),
        ));
    }
    let classes: Vec<String> = files.iter().map(|(c, _)| c.clone()).collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (label, (class, file)) in files.iter().enumerate() {
        for (line, text) in read_lines(file)? {
            let mut f = text.split_whitespace();
            let (Some(video), Some(role), None) = (f.next(), f.next(), f.next()) else {
                return Err(Error::data(file, line, "expected `<video>.avi 0|1|2`"));
            };
            let entry = Entry {
                path: Path::new(class).join(video),
                label: label as u32,
                at: (file.clone(), line),
            };
            match role {
                "1" => train.push(entry),
                "2" => test.push(entry),
                "0" => {}
                _ => {
                    return Err(Error::data(
                        file,
                        line,
                        format!("\"{role}\": expected 1 (train), 2 (test) or 0 (unused)"),
                    ))
                }
            }
        }
    }
    if train.is_empty() || test.is_empty() {
        return Err(Error::data(
            dir,
            0,
            format!("split {split} lists no training or no test videos"),
        ));
    }
    Ok((classes, train, test))
}

/// Moves about `fraction` of each class's keys (groups, or videos) from train to validation
/// (seeded; at least one key of a class with two or more), keeping the listing order.
fn carve(
    train: Vec<Entry>,
    fraction: f64,
    seed: u64,
    key: impl Fn(&Entry) -> String,
) -> (Vec<Entry>, Vec<Entry>) {
    let mut keys: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for e in &train {
        keys.entry(e.label).or_default().insert(key(e));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut held = BTreeSet::new();
    for set in keys.values() {
        let mut v: Vec<&String> = set.iter().collect();
        if v.len() < 2 {
            continue;
        }
        v.shuffle(&mut rng);
        let n = ((fraction * v.len() as f64).round() as usize).clamp(1, v.len() - 1);
        held.extend(v.into_iter().take(n).cloned());
    }
    train.into_iter().partition(|e| !held.contains(&key(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ucf101_groups() {
        let g = |p: &str| group(Path::new(p));
        assert_eq!(
            g("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi").as_deref(),
            Some("ApplyEyeMakeup_g08")
        );
        assert_eq!(g("YoYo/v_YoYo_g25_c05.avi").as_deref(), Some("YoYo_g25"));
        assert_eq!(
            g("Some_Class/v_Some_Class_g01_c02").as_deref(),
            Some("Some_Class_g01")
        );
        assert_eq!(g("x/clip.avi"), None);
    }
}
