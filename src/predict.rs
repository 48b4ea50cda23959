//! Using a trained run: `run-exp predict` (class probabilities for new texts) and `run-exp eval`
//! (scores on another dataset), both with the run's own tokenizer settings, vocabulary and
//! class names.

use std::path::Path;

use serde::Serialize;

use crate::checkpoint::LoadedRun;
use crate::config::{Column, Data, Eval};
use crate::data::selection::views;
use crate::data::tables::load_for_run;
use crate::data::{table, Inputs, Split};
use crate::error::{Error, Result};
use crate::eval::{evaluate, Scores};
use crate::model::architecture::Input;

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
    /// The prediction for `text` from its class probabilities: the most probable class (the
    /// first of equals).
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
        if run.classes.len() >= crate::eval::TOP_K_FROM {
            line["top5"] = serde_json::json!(self.top(5, run));
        }
        line
    }

    /// The `k` most probable classes, most probable first, as `[name, probability]` pairs.
    pub fn top(&self, k: usize, run: &LoadedRun) -> Vec<(String, f32)> {
        let mut order: Vec<usize> = (0..self.probs.len()).collect();
        order.sort_by(|&a, &b| self.probs[b].total_cmp(&self.probs[a]));
        order
            .into_iter()
            .take(k)
            .map(|c| {
                (
                    run.classes.get(c).cloned().unwrap_or_default(),
                    self.probs[c],
                )
            })
            .collect()
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
    let mut preds = predict_split(run, &split, texts, None)?;
    for (p, u) in preds.iter_mut().zip(shares) {
        p.unknown_share = Some(u);
    }
    Ok(preds)
}

/// Predictions for every sequence of `split` (its labels unused), named by `names`, in batches
/// of 256 padded as training's were; with `view`, a clip holding several views of `view`
/// frames gets their mean probabilities.
fn predict_split(
    run: &LoadedRun,
    split: &Split,
    names: &[String],
    view: Option<usize>,
) -> Result<Vec<Prediction>> {
    let device = run.model.params.device();
    let probs = crate::eval::view_probabilities(&run.model, split, 256, &device, view)?;
    Ok(names
        .iter()
        .zip(probs)
        .map(|(name, p)| Prediction::new(run, name.clone(), p))
        .collect())
}

/// Class probabilities for clip folders (frames in name order, `videos` false) or video files
/// (decoded by ffmpeg at the run's `data.fps`), decoded and resized as the run's training data
/// was, and scored as its test split: `frames_per_clip` frames, or `[eval] clips` views of
/// them averaged; `text` holds the path.
pub fn predict_clips(
    run: &LoadedRun,
    paths: &[std::path::PathBuf],
    videos: bool,
) -> Result<Vec<Prediction>> {
    let Input::Frames {
        channels,
        height,
        width,
    } = run.input
    else {
        return Err(Error::Checkpoint {
            path: run.dir.clone(),
            msg: format!(
                "this run takes {}, not video frames: --clip and --video need a video run",
                run.input
            ),
        });
    };
    let shape = crate::data::FrameShape {
        channels,
        height,
        width,
    };
    let data = &run.config.data;
    let pick = |t: usize| views(t, data.frames_per_clip, run.config.eval.clips);
    if videos {
        crate::data::videos::check_ffmpeg()?;
    }
    let mut clips = Vec::new();
    for p in paths {
        clips.push(if videos {
            let all = crate::data::videos::decode(p, shape, data.fps)?;
            let px = shape.pixels();
            pick(all.len() / px)
                .into_iter()
                .flat_map(|f| all[f * px..(f + 1) * px].iter().copied())
                .collect()
        } else {
            let frames = crate::data::frames::clip_frames(p)?;
            let chosen: Vec<_> = pick(frames.len())
                .into_iter()
                .map(|i| frames[i].clone())
                .collect();
            crate::data::frames::decode_clip(p, &chosen, shape)?
        });
    }
    let split = Split {
        labels: vec![0; clips.len()],
        inputs: Inputs::Frames {
            shape,
            clips: clips.into(),
        },
    };
    let names: Vec<String> = paths.iter().map(|d| d.display().to_string()).collect();
    predict_split(run, &split, &names, run.config.eval.test_view(data))
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

/// `origin` names where `data` came from (`--data FILE`), for its errors; a video test split
/// is scored by `eval.clips` views of each clip.
pub fn score(run: &LoadedRun, data: &Data, origin: &str, eval: &Eval) -> Result<Vec<Scored>> {
    let (splits, notes) = match run.input {
        Input::Tokens { .. } => {
            load_for_run(data, origin, &run.config.data, &run.vocab, &run.classes)?
        }
        _ => video_splits(run, data, origin, eval.clips)?,
    };
    let test_view = eval.test_view(data);
    for n in notes {
        crate::say!("{n}");
    }
    let device = run.model.params.device();
    splits
        .into_iter()
        .map(|(name, split)| {
            let view = if name == "test" { test_view } else { None };
            let scores = evaluate(
                &run.model,
                &split,
                run.classes.len(),
                64,
                &device,
                None,
                view,
            )?;
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
fn video_splits(run: &LoadedRun, data: &Data, origin: &str, clips: usize) -> Result<VideoSplits> {
    let mut data = data.clone();
    if data.cache_dir.is_none() {
        data.cache_dir = run.config.data_to_load().cache_dir;
    }
    let ds = crate::data::load(&data, run.config.experiment.seed, clips)?;
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
