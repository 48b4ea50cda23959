//! What a resume may change: one table (`RESUMABLE_KEYS`), and the keys a resume asks to
//! change outside it.

use std::collections::{BTreeMap, BTreeSet};

use super::Config;

/// What a resume may change: how long to train, when to stop and checkpoint, logging, and
/// where and how fast to compute, and how the test split is scored. ("log." and "eval." are
/// whole sections.) Everything else (model,
/// data, optimizer, seed) would make the resumed run a different experiment.
pub const RESUMABLE_KEYS: &[&str] = &[
    "train.epochs",
    "train.max_steps",
    "train.patience",
    "train.checkpoint_every_steps",
    "experiment.threads",
    "experiment.device",
    "experiment.out_dir",
    "data.cache_dir",
    "log.",
    "eval.",
];

impl Config {
    /// Keys (of those each config's source reads) whose value differs between `self` (what a resume asks for) and `saved` (what the
    /// checkpoint was trained with) and that a resume may not change: anything but
    /// [`RESUMABLE_KEYS`]. Both are compared with absolute paths.
    pub fn unsafe_resume_changes(&self, saved: &Config) -> Vec<(String, String, String)> {
        let flat = |c: &Config| {
            let mut out = BTreeMap::new();
            let t = c.clone().with_absolute_paths().to_table();
            flatten("", &toml::Value::Table(t), &mut out);
            out
        };
        let (new, old) = (flat(self), flat(saved));
        let keys: BTreeSet<&String> = new.keys().chain(old.keys()).collect();
        keys.into_iter()
            .filter(|k| {
                !RESUMABLE_KEYS
                    .iter()
                    .any(|r| *k == r || (r.ends_with('.') && k.starts_with(r)))
            })
            .filter(|k| new.get(*k) != old.get(*k))
            .map(|k| {
                let show = |m: &BTreeMap<String, String>| {
                    m.get(k).cloned().unwrap_or_else(|| "(unset)".into())
                };
                (k.clone(), show(&old), show(&new))
            })
            .collect()
    }
}

/// Dotted keys of a TOML tree with their values as TOML text (as `--set` takes them).
pub fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}
