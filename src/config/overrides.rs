//! Overrides on top of the file: `--set a.b=v` and a sweep trial's axis values (one
//! mechanism: typed TOML values at any dotted depth, checked by deserializing again), and the
//! data presets that fill in what neither gave.

use serde::Deserialize;

use super::{Config, Data};
use crate::error::{Error, Result};

/// One config change on top of the file: a typed value at a dotted key (`--set a.b=v`, or a
/// sweep trial's axis value), and what to call it in an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub key: String,
    pub value: toml::Value,
    /// Where it came from, e.g. `--set train.lr=3e-3` or `sweep.axes."train.lr" = 0.01`.
    pub origin: String,
}

impl Override {
    /// `--set key=value`: the value is TOML (`3e-3`, `true`, `"x"`, `[1, 2]`); a bare word is a
    /// string.
    pub fn parse_set(raw: &str) -> Result<Override> {
        let Some((k, v)) = raw.split_once('=') else {
            return Err(Error::Config {
                location: format!("--set {raw}"),
                key: raw.to_string(),
                msg: "expected key=value, e.g. --set train.lr=3e-3".into(),
            });
        };
        let (k, v) = (k.trim(), v.trim());
        Ok(Override {
            key: k.to_string(),
            value: parse_value(v),
            origin: format!("--set {k}={v}"),
        })
    }

    pub fn parse_sets(raw: &[String]) -> Result<Vec<Override>> {
        raw.iter().map(|s| Override::parse_set(s)).collect()
    }
}

/// Fills the preset's data keys that neither the file nor `--set` gave.
pub(super) fn with_preset(
    mut cfg: Config,
    in_file: &[(String, toml::Value)],
    overrides: &[Override],
) -> std::result::Result<Config, String> {
    let Some(preset) = cfg.data.preset else {
        return Ok(cfg);
    };
    let given = |key: &str| {
        in_file.iter().any(|(k, _)| k == key)
            || overrides
                .iter()
                .any(|o| o.key.strip_prefix("data.") == Some(key))
    };
    let mut table = toml::Table::try_from(&cfg.data).map_err(|e| e.to_string())?;
    for (key, value) in preset.values(cfg.data.source) {
        if !given(key) {
            table.insert(key.to_string(), value);
        }
    }
    cfg.data = Data::deserialize(toml::Value::Table(table)).map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// The keys a config file's `[data]` table sets, with their values.
pub(super) fn data_keys_in(text: &str) -> Vec<(String, toml::Value)> {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("data").and_then(|d| d.as_table()).cloned())
        .map(|d| d.into_iter().collect())
        .unwrap_or_default()
}

/// `--set` values are TOML (`3e-3`, `true`, `"x"`, `[1, 2]`); a bare word is a string.
fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Sets `a.b.c = value` at any depth, making the tables on the way; deserializing afterwards
/// decides whether the key exists. The key is a TOML dotted key, so a part may be quoted:
/// `sweep.axes."train.lr"`.
pub(super) fn set_path(
    table: &mut toml::Table,
    key: &str,
    value: toml::Value,
) -> std::result::Result<(), String> {
    let parts = key_parts(key)?;
    if parts.len() < 2 {
        return Err("keys are dotted paths, section first, e.g. train.lr".into());
    }
    let (last, path) = parts.split_last().unwrap_or((&parts[0], &[]));
    let mut t = table;
    for (i, part) in path.iter().enumerate() {
        let next = t
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match next {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("{} is not a table", parts[..=i].join("."))),
        };
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// The parts of a TOML dotted key (`a.b`, `a."b.c"`), as TOML itself reads them.
fn key_parts(key: &str) -> std::result::Result<Vec<String>, String> {
    let bad =
        || format!("\"{key}\" is not a dotted key (e.g. train.lr, or sweep.axes.\"train.lr\")");
    let doc: toml::Table = toml::from_str(&format!("{key} = 0")).map_err(|_| bad())?;
    let mut parts = Vec::new();
    let mut t = &doc;
    loop {
        let mut it = t.iter();
        let (k, v) = it.next().ok_or_else(bad)?;
        parts.push(k.clone());
        match v {
            toml::Value::Table(inner) => t = inner,
            _ => return Ok(parts),
        }
    }
}
