//! The sweep's tables as polars frames: one row per trial (`summary.csv` / `.parquet`, each
//! axis a typed column) and one per configuration (mean, std and n over seeds).

use std::path::Path;

use polars::prelude::*;

use super::summary::{rank, Group, Row, Study, BY_CONFIG_CSV, SUMMARY_CSV};
use crate::error::{Error, Result};

/// A typed column for one axis: integers, floats, booleans or strings (anything else, or a
/// mix, as TOML text).
fn axis_column(name: &str, values: &[Option<&toml::Value>]) -> Column {
    let name: PlSmallStr = name.into();
    let present: Vec<&toml::Value> = values.iter().flatten().copied().collect();
    if present.iter().all(|v| v.is_integer()) {
        Column::new(
            name,
            values
                .iter()
                .map(|v| v.and_then(|v| v.as_integer()))
                .collect::<Vec<_>>(),
        )
    } else if present.iter().all(|v| v.is_integer() || v.is_float()) {
        Column::new(
            name,
            values
                .iter()
                .map(|v| v.and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64))))
                .collect::<Vec<_>>(),
        )
    } else if present.iter().all(|v| v.is_bool()) {
        Column::new(
            name,
            values
                .iter()
                .map(|v| v.and_then(|v| v.as_bool()))
                .collect::<Vec<_>>(),
        )
    } else {
        Column::new(
            name,
            values
                .iter()
                .map(|v| {
                    v.map(|v| match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                })
                .collect::<Vec<_>>(),
        )
    }
}

pub fn polars_err(path: &Path, e: PolarsError) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("writing the table: {e}"),
    }
}

/// The per-trial table, best first.
pub fn trials_frame(study: &Study, rows: &[Row]) -> Result<DataFrame> {
    let mut rows: Vec<&Row> = rows.iter().collect();
    rows.sort_by(|a, b| rank(study, a.key(study), b.key(study)));
    let mut cols = vec![
        Column::new(
            "trial".into(),
            rows.iter().map(|r| r.trial.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "status".into(),
            rows.iter().map(|r| r.status.name()).collect::<Vec<_>>(),
        ),
    ];
    for key in &study.axes {
        let vals: Vec<Option<&toml::Value>> = rows
            .iter()
            .map(|r| r.values.iter().find(|(k, _)| k == key).map(|(_, v)| v))
            .collect();
        cols.push(axis_column(key, &vals));
    }
    let f = |name: &str, get: fn(&Row) -> Option<f64>| {
        Column::new(name.into(), rows.iter().map(|r| get(r)).collect::<Vec<_>>())
    };
    let u = |name: &str, get: fn(&Row) -> Option<u64>| {
        Column::new(name.into(), rows.iter().map(|r| get(r)).collect::<Vec<_>>())
    };
    cols.push(Column::new(
        "seed".into(),
        rows.iter().map(|r| r.seed).collect::<Vec<_>>(),
    ));
    cols.push(u("epochs", |r| r.budget.map(|b| b.epochs as u64)));
    cols.push(u("max_steps", |r| {
        r.budget.and_then(|b| b.max_steps).map(|m| m as u64)
    }));
    cols.push(f("best_val_acc", |r| r.best_val_acc));
    cols.push(f("best_val_loss", |r| r.best_val_loss));
    cols.push(u("best_epoch", |r| r.best_epoch));
    cols.push(u("epochs_done", |r| r.epochs_done));
    cols.push(f("test_acc", |r| r.test_acc));
    cols.push(f("test_macro_f1", |r| r.test_macro_f1));
    cols.push(f("test_mean_class_acc", |r| r.test_mean_class_acc));
    cols.push(f("test_top5", |r| r.test_top5));
    cols.push(f("elapsed_s", |r| r.elapsed_s));
    cols.push(u("parameters", |r| r.parameters));
    cols.push(Column::new(
        "error".into(),
        rows.iter().map(|r| r.error.clone()).collect::<Vec<_>>(),
    ));
    DataFrame::new_infer_height(cols).map_err(|e| polars_err(Path::new(SUMMARY_CSV), e))
}

/// The by-configuration table: axis values, trials, completed n, then mean and std of each
/// metric over the completed seeds.
pub fn groups_frame(study: &Study, groups: &[Group]) -> Result<DataFrame> {
    let mut cols = Vec::new();
    for key in &study.axes {
        let vals: Vec<Option<&toml::Value>> = groups
            .iter()
            .map(|g| {
                g.rows
                    .first()
                    .and_then(|r| r.values.iter().find(|(k, _)| k == key).map(|(_, v)| v))
            })
            .collect();
        cols.push(axis_column(key, &vals));
    }
    // The budget the means are at (the plan's; an axis may set it).
    let planned = |g: &Group| g.rows.first().and_then(|r| r.planned.or(r.budget));
    cols.push(Column::new(
        "epochs".into(),
        groups
            .iter()
            .map(|g| planned(g).map(|b| b.epochs as u64))
            .collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "max_steps".into(),
        groups
            .iter()
            .map(|g| planned(g).and_then(|b| b.max_steps).map(|m| m as u64))
            .collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "trials".into(),
        groups
            .iter()
            .map(|g| g.rows.len() as u64)
            .collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "n".into(),
        groups
            .iter()
            .map(|g| g.done().len() as u64)
            .collect::<Vec<_>>(),
    ));
    type Metric = (&'static str, fn(&Row) -> Option<f64>);
    let metrics: [Metric; 8] = [
        ("best_val_acc", |r| r.best_val_acc),
        ("best_val_loss", |r| r.best_val_loss),
        ("test_acc", |r| r.test_acc),
        ("test_macro_f1", |r| r.test_macro_f1),
        ("test_mean_class_acc", |r| r.test_mean_class_acc),
        ("test_top5", |r| r.test_top5),
        ("epochs_done", |r| r.epochs_done.map(|e| e as f64)),
        ("elapsed_s", |r| r.elapsed_s),
    ];
    for (name, get) in metrics {
        let stats: Vec<_> = groups.iter().map(|g| g.stats(get)).collect();
        cols.push(Column::new(
            format!("{name}_mean").into(),
            stats.iter().map(|s| s.0).collect::<Vec<_>>(),
        ));
        cols.push(Column::new(
            format!("{name}_std").into(),
            stats.iter().map(|s| s.1).collect::<Vec<_>>(),
        ));
    }
    DataFrame::new_infer_height(cols).map_err(|e| polars_err(Path::new(BY_CONFIG_CSV), e))
}

pub fn csv_bytes(path: &Path, df: &mut DataFrame) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf)
        .include_header(true)
        .finish(df)
        .map_err(|e| polars_err(path, e))?;
    Ok(buf)
}
