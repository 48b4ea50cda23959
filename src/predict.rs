//! Using a trained run: `run-exp predict` (class probabilities for new texts) and `run-exp eval`
//! (scores on another dataset), both with the run's own tokenizer settings, vocabulary and
//! class names.

use std::path::Path;

use serde::Serialize;

use crate::checkpoint::LoadedRun;
use crate::config::{Column, Data};
use crate::data::tables::load_for_run;
use crate::data::{table, Inputs, Split};
use crate::error::{Error, Result};
use crate::eval::{evaluate, Scores};
use crate::model::architecture::Input;
use crate::model::classifier::probabilities;
use crate::model::stack::RunOpts;

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub text: String,
    /// The most probable class name.
    pub label: String,
    /// Probability per class, in class-id order (`LoadedRun::classes`).
    pub probs: Vec<f32>,
    /// Texts: the fraction of its tokens the run's vocabulary did not know (`<unk>`): a
    /// confident answer on a text it could not read says little.
    pub unknown_share: Option<f64>,
}

impl Prediction {
    /// The prediction for `text` from its class probabilities: the most probable class.
    fn new(run: &LoadedRun, text: String, probs: Vec<f32>) -> Prediction {
        let best = probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        Prediction {
            text,
            label: run.classes.get(best).cloned().unwrap_or_default(),
            probs,
            unknown_share: None,
        }
    }

    /// One JSON line: `key` (\"text\" or \"clip\") names the input, probabilities by class name.
    pub fn json(&self, run: &LoadedRun, key: &str) -> serde_json::Value {
        let probs: serde_json::Map<String, serde_json::Value> = run
            .classes
            .iter()
            .zip(&self.probs)
            .map(|(c, &v)| (c.clone(), serde_json::json!(v)))
            .collect();
        let mut line = serde_json::json!({ key: self.text, "label": self.label, "probs": probs });
        if let Some(u) = self.unknown_share {
            line["unknown_share"] = serde_json::json!(u);
        }
        line
    }
}

/// Token ids as training saw them: same tokenizer settings, vocabulary and max_len.
pub fn encode(run: &LoadedRun, text: &str) -> Vec<u32> {
    run.vocab.encode_text(text, &run.config.data)
}

pub fn predict(run: &LoadedRun, texts: &[String]) -> Result<Vec<Prediction>> {
    if !matches!(run.input, Input::Tokens { .. }) {
        return Err(Error::Checkpoint {
            path: run.dir.clone(),
            msg: format!(
                "this run classifies {}, not text: texts cannot be predicted with it",
                run.input
            ),
        });
    }
    if let Some(i) = texts
        .iter()
        .position(|t| crate::data::text::tokens(t, &run.config.data).is_empty())
    {
        return Err(Error::Config {
            location: "--text / --file".into(),
            key: format!("text {}", i + 1),
            msg: "is empty (no tokens): there is nothing to classify".into(),
        });
    }
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| encode(run, t)).collect();
    let shares: Vec<f64> = ids
        .iter()
        .map(|s| crate::data::text::unknown_share([s.as_slice()]))
        .collect();
    let split = Split {
        labels: vec![0; texts.len()],
        inputs: Inputs::Tokens(ids),
    };
    let mut preds = predict_split(run, &split, texts)?;
    for (p, u) in preds.iter_mut().zip(shares) {
        p.unknown_share = Some(u);
    }
    Ok(preds)
}

/// Predictions for every sequence of `split` (its labels unused), named by `names`, in batches
/// of 256 padded as training's were.
fn predict_split(run: &LoadedRun, split: &Split, names: &[String]) -> Result<Vec<Prediction>> {
    let device = run.model.params.device();
    let all: Vec<usize> = (0..split.len()).collect();
    let mut out = Vec::with_capacity(split.len());
    for idx in all.chunks(256) {
        let b = crate::data::batch::make(split, idx, &device)?;
        let logits = run
            .model
            .forward(
                &b.x,
                RunOpts {
                    lengths: Some(&b.lengths),
                    no_grad: true,
                    ..Default::default()
                },
            )?
            .logits;
        let probs: Vec<Vec<f32>> = probabilities(&logits)?.to_vec2()?;
        for (&i, p) in idx.iter().zip(probs) {
            out.push(Prediction::new(run, names[i].clone(), p));
        }
    }
    Ok(out)
}

/// Class probabilities for clip folders (frames in name order), decoded and resized as the
/// run's training data was (its frame shape and `frames_per_clip`); `text` holds the folder.
pub fn predict_clips(run: &LoadedRun, dirs: &[std::path::PathBuf]) -> Result<Vec<Prediction>> {
    let Input::Frames {
        channels,
        height,
        width,
    } = run.input
    else {
        return Err(Error::Checkpoint {
            path: run.dir.clone(),
            msg: format!(
                "this run takes {}, not video frames: --clip needs a video run",
                run.input
            ),
        });
    };
    let shape = crate::data::FrameShape {
        channels,
        height,
        width,
    };
    let mut clips = Vec::new();
    for d in dirs {
        let frames = crate::data::frames::clip_frames(d)?;
        clips.push(crate::data::frames::decode_clip(
            d,
            &frames,
            shape,
            run.config.data.frames_per_clip,
        )?);
    }
    let split = Split {
        labels: vec![0; clips.len()],
        inputs: Inputs::Frames {
            shape,
            clips: clips.into(),
        },
    };
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    predict_split(run, &split, &names)
}

/// Scores of the run on each labeled split `data` names, as (split, examples, scores).
/// One split's scores: its name, examples, scores and, for text, the share of its tokens the
/// run's vocabulary did not know.
pub struct Scored {
    pub split: &'static str,
    pub examples: usize,
    pub scores: Scores,
    pub unknown_share: Option<f64>,
}

/// `origin` names where `data` came from (`--data FILE`), for its errors.
pub fn score(run: &LoadedRun, data: &Data, origin: &str) -> Result<Vec<Scored>> {
    let (splits, notes) = match run.input {
        Input::Tokens { .. } => {
            load_for_run(data, origin, &run.config.data, &run.vocab, &run.classes)?
        }
        _ => video_splits(run, data, origin)?,
    };
    for n in notes {
        crate::say!("{n}");
    }
    let device = run.model.params.device();
    splits
        .into_iter()
        .map(|(name, split)| {
            let scores = evaluate(&run.model, &split, run.classes.len(), 64, &device, None)?;
            let unknown_share = match &split.inputs {
                Inputs::Tokens(seqs) => Some(crate::data::text::unknown_share(
                    seqs.iter().map(Vec::as_slice),
                )),
                _ => None,
            };
            Ok(Scored {
                split: name,
                examples: split.len(),
                scores,
                unknown_share,
            })
        })
        .collect()
}

/// A video run's labeled splits by name, and its class names.
type VideoSplits = (Vec<(&'static str, crate::data::Split)>, Vec<String>);

/// The labeled splits (valid, test) of a video or feature dataset, checked against the run's
/// input and classes.
fn video_splits(run: &LoadedRun, data: &Data, origin: &str) -> Result<VideoSplits> {
    let mut data = data.clone();
    if data.cache_dir.is_none() {
        data.cache_dir = run.config.data_to_load().cache_dir;
    }
    let ds = crate::data::load(&data, run.config.experiment.seed)?;
    let input = crate::prepare::input_of(&ds);
    if input != run.input || ds.classes != run.classes {
        return Err(Error::Config {
            location: origin.into(),
            key: "data".into(),
            msg: format!(
                "gives {input} with classes {:?}; the run takes {} with classes {:?}",
                ds.classes, run.input, run.classes
            ),
        });
    }
    let mut out = vec![("valid", ds.valid)];
    out.extend(ds.test.map(|t| ("test", t)));
    Ok((out, ds.notes))
}

/// Texts of `file`: a table's text column (`column`, else the run's `data.text_column`; the run's
/// `header` setting for TSV/CSV), or one text per line for any other file.
pub fn texts_in(file: &Path, column: Option<&str>, data: &Data) -> Result<Vec<String>> {
    let Ok(format) = table::format_of(file, None) else {
        let s = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        return Ok(s
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect());
    };
    let column = match column {
        Some(c) => match c.parse::<usize>() {
            Ok(i) => Column::Index(i),
            Err(_) => Column::Name(c.to_string()),
        },
        None => data.text_column.clone(),
    };
    let t = table::read_table(
        file,
        table::Spec {
            format: Some(format),
            header: data.header,
            text_column: &column,
            label_column: None,
            skip_bad_rows: false,
        },
    )?;
    Ok(t.rows.into_iter().map(|r| r.text).collect())
}
