//! What `fit` measures on a logged training step beyond the loss, each instrument one file:
//! gradient flow through time (`flow`), gate statistics (`gates`), the recurrent spectrum
//! (`spectrum`) and update/weight ratios (`update_ratio`). `[log]` selects them (`from_config`);
//! an instrument reads the step (`StepView`) and records named values through `StepLog`, the
//! one writer that puts each value in TensorBoard and in the step's metrics.jsonl row together.
//! A new instrument is a new file here and a line in `from_config`.

mod flow;
mod gates;
mod spectrum;
mod update_ratio;

use std::path::Path;

use candle_core::backprop::GradStore;
use serde_json::{Map, Value};

use crate::config::Log;
use crate::error::Result;
use crate::log::tensorboard::EventWriter;
use crate::model::classifier::{Classifier, Forward};

/// A logged training step as the instruments see it, after the optimizer's update.
pub struct StepView<'a> {
    pub model: &'a Classifier,
    pub fwd: &'a Forward,
    pub store: &'a GradStore,
}

/// The values of one logged step: each goes to TensorBoard under its tag and into the
/// step's metrics.jsonl row under its key, in one call.
pub struct StepLog<'a> {
    tb: &'a mut EventWriter,
    step: usize,
    row: Map<String, Value>,
}

impl<'a> StepLog<'a> {
    /// `row`: the row's fixed fields (a JSON object; anything else starts an empty row).
    pub fn new(tb: &'a mut EventWriter, step: usize, row: Value) -> StepLog<'a> {
        let row = match row {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        StepLog { tb, step, row }
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

pub trait Instrument {
    /// Whether the forward pass must measure per-step gradients and gate activations
    /// (`RunOpts::probe`) on a logged step.
    fn needs_probe(&self) -> bool {
        false
    }

    /// On a logged step, before the optimizer changes the weights.
    fn before_update(&mut self, _model: &Classifier) -> Result<()> {
        Ok(())
    }

    /// On a logged step, after the update: record this step's values.
    fn record(&mut self, at: &StepView, log: &mut StepLog) -> Result<()>;

    /// At the end of an epoch, with the run's metrics rows so far (a resumed run's too):
    /// pictures over the whole history, into TensorBoard at `step` and the run folder `dir`.
    fn epoch_end(
        &mut self,
        _history: &[Value],
        _dir: &Path,
        _tb: &mut EventWriter,
        _step: usize,
    ) -> Result<()> {
        Ok(())
    }
}

/// The instruments `[log]` turns on, in the order they record.
pub fn from_config(log: &Log) -> Vec<Box<dyn Instrument>> {
    let mut on: Vec<Box<dyn Instrument>> = Vec::new();
    if log.grad_flow {
        on.push(Box::new(flow::GradFlow));
        on.push(Box::new(gates::Gates));
    }
    if log.spectrum {
        on.push(Box::new(spectrum::Spectrum));
    }
    if log.update_ratio {
        on.push(Box::new(update_ratio::UpdateRatio::default()));
    }
    on
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
}
