//! The one writer of a run's logged values. Each value goes to TensorBoard under its tag and
//! into its row of metrics.jsonl under its key in one call (`StepLog`), whether a training
//! step's or an epoch end's; `RunLog` appends the finished rows and keeps them in memory as the
//! run's history (a resumed run's earlier rows included, read once when it opens), which the
//! epoch-end pictures draw from.

use std::path::Path;

use serde_json::{Map, Value};

use super::tensorboard::EventWriter;
use super::{plots, Metrics, METRICS};
use crate::error::Result;

/// A run's TensorBoard events, metrics.jsonl and the rows written so far.
pub struct RunLog {
    tb: EventWriter,
    metrics: Metrics,
    history: Vec<Value>,
}

impl RunLog {
    /// Opens the run folder `dir`'s log: new, or for a resume (`resume`: the metrics length
    /// and the step its checkpoint recorded) cut back to the checkpoint, with TensorBoard told
    /// that a new session starts after that step.
    pub fn open(dir: &Path, resume: Option<(u64, usize)>) -> Result<RunLog> {
        let path = dir.join(METRICS);
        let mut tb = EventWriter::create(dir)?;
        let metrics = Metrics::open(&path, resume.map(|(bytes, _)| bytes))?;
        let history = match resume {
            Some((_, step)) => {
                tb.session_start(step + 1)?;
                plots::metrics_rows(&path)?
            }
            None => Vec::new(),
        };
        Ok(RunLog {
            tb,
            metrics,
            history,
        })
    }

    /// The values logged at `step`, into a row that starts with `row`'s fields.
    pub fn at(&mut self, step: usize, row: Value) -> StepLog<'_> {
        let mut log = StepLog::new(&mut self.tb, step, row);
        log.history = &self.history;
        log
    }

    /// Appends a finished row (`StepLog::into_row`) to metrics.jsonl and the history.
    pub fn push(&mut self, row: Value) -> Result<()> {
        self.metrics.row(&row)?;
        self.history.push(row);
        Ok(())
    }

    /// Every row so far, oldest first.
    pub fn history(&self) -> &[Value] {
        &self.history
    }

    /// metrics.jsonl's length in bytes (what a checkpoint records).
    pub fn bytes(&self) -> u64 {
        self.metrics.bytes()
    }

    /// Puts everything written so far on disk.
    pub fn flush(&mut self) -> Result<()> {
        self.metrics.flush()?;
        self.tb.flush()
    }
}

/// The values of one logged step or epoch end: each goes to TensorBoard under its tag and
/// into the row under its key, in one call.
pub struct StepLog<'a> {
    tb: &'a mut EventWriter,
    step: usize,
    row: Map<String, Value>,
    history: &'a [Value],
}

impl<'a> StepLog<'a> {
    /// `row`: the row's fixed fields (a JSON object; anything else starts an empty row).
    pub fn new(tb: &'a mut EventWriter, step: usize, row: Value) -> StepLog<'a> {
        let row = match row {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        StepLog {
            tb,
            step,
            row,
            history: &[],
        }
    }

    /// The run's rows before this one (empty outside a run's log).
    pub fn history(&self) -> &[Value] {
        self.history
    }

    /// One value: TensorBoard `tag`, row `key`.
    pub fn scalar(&mut self, key: &str, tag: &str, v: f64) -> Result<()> {
        self.tb.scalar(tag, self.step, v)?;
        self.row.insert(key.to_string(), v.into());
        Ok(())
    }

    /// Named values: TensorBoard `<prefix>/<name>` each, row `path` = {name: value} (a path
    /// of two keys nests, e.g. gates → l0). Nothing when `values` is empty.
    pub fn group<N: AsRef<str>>(
        &mut self,
        path: &[&str],
        prefix: &str,
        values: &[(N, f64)],
    ) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let mut obj = Map::new();
        for (name, v) in values {
            self.tb
                .scalar(&format!("{prefix}/{}", name.as_ref()), self.step, *v)?;
            obj.insert(name.as_ref().to_string(), (*v).into());
        }
        self.put(path, Value::Object(obj));
        Ok(())
    }

    /// A value for TensorBoard alone (the row holds what it is derived from).
    pub fn tb_scalar(&mut self, tag: &str, v: f64) -> Result<()> {
        self.tb.scalar(tag, self.step, v)
    }

    /// A value per time step: a TensorBoard histogram-shaped curve `tag`, row `path` = [...].
    pub fn curve(&mut self, path: &[&str], tag: &str, values: &[f64]) -> Result<()> {
        self.tb.curve(tag, self.step, values)?;
        self.put(path, values.into());
        Ok(())
    }

    /// The distribution of `values` as a TensorBoard histogram (too large for the row).
    pub fn histogram(&mut self, tag: &str, values: &[f32]) -> Result<()> {
        self.tb.histogram(tag, self.step, values)
    }

    /// A PNG picture in TensorBoard's images.
    pub fn image(&mut self, tag: &str, png: &[u8], width: u32, height: u32) -> Result<()> {
        self.tb.image(tag, self.step, png, width, height)
    }

    /// A Markdown text in TensorBoard's text tab.
    pub fn text(&mut self, tag: &str, markdown: &str) -> Result<()> {
        self.tb.text(tag, self.step, markdown)
    }

    fn put(&mut self, path: &[&str], value: Value) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut at = &mut self.row;
        for key in parents {
            let entry = at
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            // An object now, by the two lines above.
            let Value::Object(next) = entry else { return };
            at = next;
        }
        at.insert(last.to_string(), value);
    }

    /// A row field with no TensorBoard counterpart (or one logged differently).
    pub fn field(&mut self, key: &str, value: Value) {
        self.row.insert(key.to_string(), value);
    }

    /// The metrics.jsonl row of this step.
    pub fn into_row(self) -> Value {
        Value::Object(self.row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_log_nests_groups_and_keeps_the_row() {
        let dir = std::env::temp_dir().join(format!("rnnlab-steplog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut tb = EventWriter::create(&dir).unwrap();
        let mut log = StepLog::new(&mut tb, 7, serde_json::json!({"step": 7}));
        log.scalar("loss", "train/loss", 0.5).unwrap();
        log.group(&["gates", "l0"], "gates/l0", &[("forget_mean", 0.25)])
            .unwrap();
        log.group(&["gates", "l1"], "gates/l1", &[("forget_mean", 0.75)])
            .unwrap();
        log.group::<&str>(&["spectrum"], "spectrum", &[]).unwrap();
        log.curve(
            &["grad_flow", "l0"],
            "grad_flow/l0/by_timestep",
            &[1.0, 2.0],
        )
        .unwrap();
        let row = log.into_row();
        assert_eq!(
            row,
            serde_json::json!({"step": 7, "loss": 0.5,
                "gates": {"l0": {"forget_mean": 0.25}, "l1": {"forget_mean": 0.75}},
                "grad_flow": {"l0": [1.0, 2.0]}})
        );
        tb.flush().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_resumed_log_holds_the_rows_up_to_its_checkpoint() {
        let dir = std::env::temp_dir().join(format!("rnnlab-runlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = RunLog::open(&dir, None).unwrap();
        log.push(serde_json::json!({"step": 1})).unwrap();
        let kept = log.bytes();
        log.push(serde_json::json!({"step": 2})).unwrap();
        log.flush().unwrap();
        drop(log);
        // As a resume from a checkpoint taken after step 1: step 2's row is cut away.
        let mut log = RunLog::open(&dir, Some((kept, 1))).unwrap();
        assert_eq!(log.history(), [serde_json::json!({"step": 1})]);
        log.push(serde_json::json!({"step": 2, "again": true}))
            .unwrap();
        let rows = plots::metrics_rows(&dir.join(METRICS)).unwrap();
        assert_eq!(rows, log.history());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
