//! TensorBoard's HParams tab: the plugin's protos (tensorboard/plugins/hparams/api.proto and
//! plugin_data.proto, the fields we write) and the three summaries it reads. The experiment
//! (every axis with its domain, and the metrics) goes into the sweep's root folder, the logdir's
//! empty run; each trial's run folder gets a session start (its axis values and seed, grouped by
//! configuration) and, once final, a session end. The plugin keeps the first value it sees of
//! each, so a session end is written only for a final status.

use std::path::Path;

use prost::Message;

use super::tensorboard::{EventWriter, PluginData, SummaryMetadata, Value};
use crate::error::Result;

#[derive(Clone, PartialEq, Message)]
pub struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(message, optional, tag = "2")]
    pub experiment: Option<Experiment>,
    #[prost(message, optional, tag = "3")]
    pub session_start_info: Option<SessionStartInfo>,
    #[prost(message, optional, tag = "4")]
    pub session_end_info: Option<SessionEndInfo>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Experiment {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(double, tag = "3")]
    pub time_created_secs: f64,
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
    #[prost(string, tag = "6")]
    pub name: String,
}

/// DataType: 1 string, 2 bool, 3 float64.
#[derive(Clone, PartialEq, Message)]
pub struct HParamInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(int32, tag = "4")]
    pub r#type: i32,
    #[prost(message, optional, tag = "5")]
    pub domain_discrete: Option<ListValue>,
    #[prost(message, optional, tag = "6")]
    pub domain_interval: Option<Interval>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Interval {
    #[prost(double, tag = "1")]
    pub min_value: f64,
    #[prost(double, tag = "2")]
    pub max_value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricName {
    #[prost(string, tag = "1")]
    pub group: String,
    #[prost(string, tag = "2")]
    pub tag: String,
}

/// DatasetType: 1 training, 2 validation.
#[derive(Clone, PartialEq, Message)]
pub struct MetricInfo {
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
    #[prost(string, tag = "3")]
    pub display_name: String,
    #[prost(int32, tag = "5")]
    pub dataset_type: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct SessionStartInfo {
    #[prost(map = "string, message", tag = "1")]
    pub hparams: std::collections::HashMap<String, ProtoValue>,
    #[prost(string, tag = "2")]
    pub model_uri: String,
    #[prost(string, tag = "4")]
    pub group_name: String,
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// Status: 1 success, 2 failure, 0 unknown.
#[derive(Clone, PartialEq, Message)]
pub struct SessionEndInfo {
    #[prost(int32, tag = "1")]
    pub status: i32,
    #[prost(double, tag = "2")]
    pub end_time_secs: f64,
}

/// google.protobuf.Value, the kinds an hparam can hold.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoValue {
    #[prost(double, optional, tag = "2")]
    pub number_value: Option<f64>,
    #[prost(string, optional, tag = "3")]
    pub string_value: Option<String>,
    #[prost(bool, optional, tag = "4")]
    pub bool_value: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ListValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<ProtoValue>,
}

/// An hparam value as the plugin holds it: numbers as doubles, booleans, everything else
/// (strings, lists) as text.
pub fn value_of(v: &toml::Value) -> ProtoValue {
    match v {
        toml::Value::Integer(i) => ProtoValue {
            number_value: Some(*i as f64),
            ..Default::default()
        },
        toml::Value::Float(f) => ProtoValue {
            number_value: Some(*f),
            ..Default::default()
        },
        toml::Value::Boolean(b) => ProtoValue {
            bool_value: Some(*b),
            ..Default::default()
        },
        toml::Value::String(s) => ProtoValue {
            string_value: Some(s.clone()),
            ..Default::default()
        },
        other => ProtoValue {
            string_value: Some(other.to_string()),
            ..Default::default()
        },
    }
}

/// The HParamInfo type of a set of values: float64 if all are numbers, bool if all are
/// booleans, else string.
pub fn type_of(values: &[toml::Value]) -> i32 {
    if values
        .iter()
        .all(|v| matches!(v, toml::Value::Integer(_) | toml::Value::Float(_)))
    {
        3
    } else if values.iter().all(|v| matches!(v, toml::Value::Boolean(_))) {
        2
    } else {
        1
    }
}

pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
pub const SESSION_START_TAG: &str = "_hparams_/session_start_info";
pub const SESSION_END_TAG: &str = "_hparams_/session_end_info";

fn write(dir: &Path, tag: &str, data: HParamsPluginData) -> Result<()> {
    let mut tb = EventWriter::create(dir)?;
    tb.value(
        0,
        Value {
            tag: tag.into(),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "hparams".into(),
                    content: data.encode_to_vec(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    )?;
    tb.flush()
}

/// The experiment, in the sweep's root folder (its older experiment files replaced: the
/// plugin would keep the first it read).
pub fn write_experiment(root: &Path, experiment: Experiment) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    write(
        root,
        EXPERIMENT_TAG,
        HParamsPluginData {
            experiment: Some(experiment),
            ..Default::default()
        },
    )
}

pub fn write_session_start(run: &Path, start: SessionStartInfo) -> Result<()> {
    write(
        run,
        SESSION_START_TAG,
        HParamsPluginData {
            session_start_info: Some(start),
            ..Default::default()
        },
    )
}

pub fn write_session_end(run: &Path, status: i32) -> Result<()> {
    let end_time_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    write(
        run,
        SESSION_END_TAG,
        HParamsPluginData {
            session_end_info: Some(SessionEndInfo {
                status,
                end_time_secs,
            }),
            ..Default::default()
        },
    )
}
