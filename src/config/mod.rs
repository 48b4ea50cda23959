//! The experiment config: plain serde data, strict (unknown keys are errors), one place for
//! defaults, then each section's `check` for ranges. Loading goes defaults < file < overrides (`--set
//! a.b=v` and a sweep trial's axis values: one mechanism, typed TOML values at any dotted
//! depth), each override type-checked by deserializing again, and every error names file or
//! override, key, line, column.

//!
//! Files: one per section (`experiment`, `data`, `model`, `train`, `log`, `eval`, `sweep`: the struct,
//! its defaults and its checks), `overrides` (`--set`, presets), `position` (where a key is
//! written), `resume` (what a resume may change).

mod data;
mod eval;
mod experiment;
mod log;
mod model;
mod overrides;
mod position;
mod resume;
mod sweep;
mod train;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use self::data::*;
pub use self::eval::*;
pub use self::experiment::*;
pub use self::log::*;
pub use self::model::*;
pub use self::overrides::Override;
use self::overrides::{data_keys_in, set_path, with_preset};
use self::position::{key_at, key_written_at, without_data_keys, Origin};
pub use self::position::{line_col, locate_parts};
pub use self::resume::{flatten, RESUMABLE_KEYS};
pub use self::sweep::*;
pub use self::train::*;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub experiment: Experiment,
    pub data: Data,
    pub model: Model,
    pub train: Train,
    pub log: Log,
    pub eval: Eval,
    /// Present in a sweep file: the rest of the file is the base config of every trial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
}

/// How a config file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// For a run: data.train is required.
    Training,
    /// For `eval`'s `--data`: only the splits to score.
    Scoring,
    /// A run folder's own config.toml (see `load_saved`).
    Saved,
}

/// What a section's check returns: the offending key and what is wrong with it.
type Checked = std::result::Result<(), (String, String)>;

fn bad(key: &str, msg: impl Into<String>) -> Checked {
    Err((key.to_string(), msg.into()))
}

impl Config {
    /// Reads `path`, applies `--set` overrides (`a.b=value`, value parsed as TOML, else taken as
    /// a string) and validates. Every error names the file or override, key, line and column.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Config::from_toml(path, &text, overrides)
    }

    pub fn from_toml(path: &Path, text: &str, overrides: &[String]) -> Result<Config> {
        Config::parse(
            path,
            text,
            &Override::parse_sets(overrides)?,
            Reading::Training,
        )
    }

    /// The file's text with typed overrides on top (a sweep trial: `--set`s, then its axis
    /// values).
    pub fn from_toml_with(path: &Path, text: &str, overrides: &[Override]) -> Result<Config> {
        Config::parse(path, text, overrides, Reading::Training)
    }

    /// A config read only for its `[data]` tables (`run-exp eval`): no train split needed.
    pub fn load_for_scoring(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Config::parse(
            path,
            &text,
            &Override::parse_sets(overrides)?,
            Reading::Scoring,
        )
    }

    /// A run folder's config.toml, as `load`, except that `[data]` keys its source does not
    /// read are ignored: earlier versions wrote every key of every source there.
    pub fn load_saved(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Config::parse(
            path,
            &text,
            &Override::parse_sets(overrides)?,
            Reading::Saved,
        )
    }

    fn parse(path: &Path, text: &str, parsed: &[Override], reading: Reading) -> Result<Config> {
        let origin = Origin {
            file: path,
            text,
            overrides: parsed,
        };

        // The file alone first, so its errors carry the file's line and column.
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (location, key) = match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    let key = key_at(text, span.start)
                        .or_else(|| key_written_at(text, span.clone()))
                        .unwrap_or_default();
                    (format!("{}:{line}:{col}", path.display()), key)
                }
                None => (path.display().to_string(), String::new()),
            };
            Error::Config {
                location,
                key,
                msg: e.message().trim().to_string(),
            }
        })?;

        let file_source = cfg.data.source;
        // Then each override on top, deserializing again so it is checked the same way.
        let cfg = if parsed.is_empty() {
            cfg
        } else {
            let mut table = toml::Table::try_from(&cfg).map_err(|e| Error::Config {
                location: path.display().to_string(),
                key: String::new(),
                msg: e.to_string(),
            })?;
            let mut cfg = cfg;
            for o in parsed {
                let err = |msg: String| Error::Config {
                    location: o.origin.clone(),
                    key: o.key.clone(),
                    msg,
                };
                set_path(&mut table, &o.key, o.value.clone()).map_err(err)?;
                cfg = Config::deserialize(toml::Value::Table(table.clone()))
                    .map_err(|e| err(e.message().trim().to_string()))?;
            }
            cfg
        };
        // The file's [data] keys: the preset fills the others; each must be one its source reads.
        // The file's [data] keys: the preset fills only the others.
        let file_keys = data_keys_in(text);
        let cfg = with_preset(cfg, &file_keys, parsed).map_err(|msg| Error::Config {
            location: origin.locate("data.preset"),
            key: "data.preset".into(),
            msg,
        })?;
        cfg.validate(reading != Reading::Scoring)
            .map_err(|(key, msg)| Error::Config {
                location: origin.locate(&key),
                key,
                msg,
            })?;
        // Each source reads its own [data] keys: one set (to other than its default) for
        // another is a mistake to name (after the range checks, which every key gets). The
        // file's keys are checked against the file's source, an override's against the source
        // in effect (an override of `data.source` leaves the file's other source behind).
        let set_keys: Vec<(String, toml::Value)> = parsed
            .iter()
            .filter_map(|o| Some((o.key.strip_prefix("data.")?.to_string(), o.value.clone())))
            .collect();
        let file_keys = match reading {
            Reading::Saved => &[][..],
            Reading::Training | Reading::Scoring => &file_keys[..],
        };
        let refused = data::not_read_by(file_source, file_keys)
            .or_else(|| data::not_read_by(cfg.data.source, &set_keys));
        if let Some((key, msg)) = refused {
            return Err(Error::Config {
                location: origin.locate(&key),
                key,
                msg,
            });
        }
        Ok(cfg)
    }

    /// Range and consistency checks serde cannot express, section by section (each beside its
    /// struct). Returns the offending key.
    fn validate(&self, training: bool) -> Checked {
        self.experiment.check()?;
        self.data.check(training)?;
        self.model.check()?;
        self.train.check(&self.model)?;
        self.log.check()?;
        self.eval.check(&self.data)?;
        match &self.sweep {
            Some(sweep) => sweep.check(&self.train),
            None => Ok(()),
        }
    }

    /// Relative file paths made absolute (against the working directory), so the run folder's
    /// config works from anywhere (a `--resume` from another directory, a cluster job).
    /// The data section as the loaders read it: `data.cache_dir` defaulted to
    /// `<experiment.out_dir>/.cache`.
    pub fn data_to_load(&self) -> Data {
        let mut d = self.data.clone();
        if d.cache_dir.is_none() {
            d.cache_dir = Some(self.experiment.out_dir.join(".cache"));
        }
        d
    }

    pub fn with_absolute_paths(mut self) -> Config {
        let abs = |p: &mut PathBuf| {
            if let Ok(a) = std::path::absolute(&*p) {
                *p = a;
            }
        };
        if matches!(
            self.data.source,
            Source::File | Source::Tensors | Source::Frames | Source::Videos
        ) {
            for p in [
                &mut self.data.train,
                &mut self.data.valid,
                &mut self.data.test,
                &mut self.data.root,
                &mut self.data.annotations,
            ]
            .into_iter()
            .flatten()
            {
                abs(p);
            }
        }
        if let Some(p) = &mut self.model.embeddings {
            abs(p);
        }
        if let Some(w) = &mut self.model.encoder_weights {
            if !w.starts_with("hub:") {
                let mut p = PathBuf::from(&*w);
                abs(&mut p);
                *w = p.to_string_lossy().into_owned();
            }
        }
        if let Some(p) = &mut self.data.cache_dir {
            abs(p);
        }
        abs(&mut self.experiment.out_dir);
        self
    }

    /// The resolved config as TOML, as saved in the run folder: `[data]` holds only the keys
    /// its source reads.
    pub fn to_toml(&self) -> String {
        match toml::to_string_pretty(self) {
            Ok(text) => {
                let keys = self.data.source.keys();
                without_data_keys(&text, |k| k == "source" || keys.contains(&k))
            }
            Err(e) => format!("# could not serialize: {e}\n"),
        }
    }

    /// The config as a TOML table, `[data]` with only the keys its source reads.
    pub fn to_table(&self) -> toml::Table {
        let mut table = toml::Table::try_from(self).unwrap_or_default();
        let keys = self.data.source.keys();
        if let Some(toml::Value::Table(d)) = table.get_mut("data") {
            d.retain(|k, _| k == "source" || keys.contains(&k));
        }
        table
    }
}

/// The most classes `synthetic-video` has: the cyclic orders of four brightness levels
/// (data/video.rs builds them and checks that they are this many).
pub const SYNTHETIC_VIDEO_CLASSES: usize = 6;

/// Longest `experiment.name` (a folder name; file systems allow 255 bytes).
pub const MAX_NAME_BYTES: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, sets: &[&str]) -> Result<Config> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::from_toml(Path::new("x.toml"), text, &sets)
    }

    fn msg(r: Result<Config>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let c = load("[model]\ncell = \"gru\"\n", &[]).unwrap();
        assert_eq!(c.model.cell, CellKind::Gru);
        assert_eq!(c.train.lr, 1e-3);
        assert_eq!(c.data.max_len, 64);
    }

    #[test]
    fn temporal_order_checks_its_keys() {
        let c = load("[data]\nsource = \"temporal-order\"\nmax_len = 110\n", &[]).unwrap();
        assert_eq!((c.data.length, c.data.relevant), (100, 2));
        let m = msg(load("[data]\nsource = \"temporal-order\"\n", &[]));
        assert!(m.contains("data.max_len") && m.contains("110"), "{m}");
        let m = msg(load(
            "[data]\nsource = \"temporal-order\"\nmax_len = 110\nrelevant = 4\n",
            &[],
        ));
        assert!(m.starts_with("x.toml:4:1: data.relevant"), "{m}");
        let m = msg(load("[data]\nmax_len = 110\nlength = 50\n", &[]));
        assert!(m.contains("data.length: is not read by"), "{m}");
    }

    #[test]
    fn inits_parse_and_chrono_needs_gates() {
        let c = load(
            "[model]\ncell = \"rnn\"\nnonlinearity = \"relu\"\ninit_hh = \"identity\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.model.init_hh, HhInit::Identity);
        let m = msg(load(
            "[model]\ncell = \"rnn\"\ninit_gate_bias = \"chrono\"\n",
            &[],
        ));
        assert!(
            m.contains("model.init_gate_bias") && m.contains("no gates"),
            "{m}"
        );
        let m = msg(load(
            "[model]\ninit_gate_bias = \"chrono\"\nforget_bias = 1.0\n",
            &[],
        ));
        assert!(m.contains("model.forget_bias"), "{m}");
        let m = msg(load(
            "[model]\ninit_gate_bias = \"chrono\"\nchrono_t_max = 1\n",
            &[],
        ));
        assert!(m.contains("model.chrono_t_max"), "{m}");
        let m = msg(load("[model]\ninit_hh = \"orthogonl\"\n", &[]));
        assert!(
            m.contains("model.init_hh") && m.contains("orthogonal"),
            "{m}"
        );
    }

    #[test]
    fn unknown_key_names_line_and_valid_keys() {
        let m = msg(load("[model]\ncell = \"lstm\"\nhiden_size = 3\n", &[]));
        assert!(m.starts_with("x.toml:3:1: model.hiden_size:"), "{m}");
        assert!(m.contains("hidden_size"), "{m}");
    }

    #[test]
    fn wrong_type_names_key() {
        let m = msg(load("[train]\nlr = \"fast\"\n", &[]));
        assert!(m.starts_with("x.toml:2:"), "{m}");
        assert!(m.contains("train.lr"), "{m}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let m = msg(load("[train]\nepochs = 2\nlr = -1.0\n", &[]));
        assert_eq!(m, "x.toml:3:1: train.lr: must be > 0");
        let m = msg(load("[model]\ncell = \"lstmm\"\n", &[]));
        assert!(m.contains("x.toml:2:8") && m.contains("model.cell"), "{m}");
    }

    #[test]
    fn overrides_are_checked_and_named() {
        let c = load("", &["model.cell=gru", "train.lr=3e-3"]).unwrap();
        assert_eq!(c.model.cell, CellKind::Gru);
        assert_eq!(c.train.lr, 3e-3);
        let m = msg(load("", &["model.hidden_size=0"]));
        assert_eq!(
            m,
            "--set model.hidden_size=0: model.hidden_size: must be at least 1"
        );
        let m = msg(load("", &["model.sise=3"]));
        assert!(
            m.starts_with("--set model.sise=3: model.sise: unknown field"),
            "{m}"
        );
        let m = msg(load("", &["train.lr=abc"]));
        assert!(m.starts_with("--set train.lr=abc"), "{m}");
    }

    #[test]
    fn each_source_reads_its_own_keys() {
        let file = "[data]\nsource = \"file\"\ntrain = \"t.tsv\"\nlag = 3\n";
        let m = msg(load(file, &[]));
        assert!(
            m.starts_with("x.toml:4:1: data.lag: is not read by source = \"file\"; its keys are: source, train, valid,"),
            "{m}"
        );
        assert!(m.contains("tokenizer") && !m.contains("noise"), "{m}");
        let m = msg(load("", &["data.frames=8"]));
        assert!(
            m.starts_with(
                "--set data.frames=8: data.frames: is not read by source = \"synthetic-sentiment\""
            ),
            "{m}"
        );
        // The file's keys belong to the file's source: switching source with --set leaves them.
        let switched = load(
            "[data]\nnum_train = 5\n",
            &["data.source=file", "data.train=t.tsv"],
        );
        assert_eq!(switched.unwrap().data.source, Source::File);
        // The alias is its key's.
        let hub = "[data]\nsource = \"hub\"\nrepo = \"a/b\"\ntrain = \"t.parquet\"\nmax_size = 5\n";
        assert_eq!(load(hub, &[]).unwrap().data.max_vocab, Some(5));
        // A run folder's config.toml from before held every key: read, the others ignored.
        let every =
            toml::to_string_pretty(&load(file.replace("lag = 3\n", "").as_str(), &[]).unwrap())
                .unwrap();
        assert!(every.contains("lag = ") && load(&every, &[]).is_ok());
        let dir = std::env::temp_dir().join(format!("rnnlab-saved-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), &every).unwrap();
        let saved = Config::load_saved(&dir.join("config.toml"), &[]).unwrap();
        assert_eq!(saved.data.train, Some("t.tsv".into()));
        // Written back, [data] holds only what the source reads.
        let written = saved.to_toml();
        assert!(
            written.contains("train = ") && !written.contains("lag = "),
            "{written}"
        );
        assert_eq!(load(&written, &[]).unwrap(), saved);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
