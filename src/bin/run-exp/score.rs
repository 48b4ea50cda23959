//! A trained run's commands: `eval RUN_DIR --data other.toml`, `predict RUN_DIR --text ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use rnnlab::{checkpoint, Config};

use crate::{emit, fail, BAD_INPUT};

/// A trained run and which of its checkpoints to load.
#[derive(clap::Args)]
struct RunCli {
    /// A run folder (results/<experiment>/run-NNN).
    run_dir: PathBuf,
    /// Which weights: the best epoch's or the last.
    #[arg(long, value_enum, default_value_t = Weights::Best)]
    weights: Weights,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Weights {
    Best,
    Last,
}

impl RunCli {
    fn load(&self) -> rnnlab::Result<checkpoint::LoadedRun> {
        let which = match self.weights {
            Weights::Best => checkpoint::Weights::Best,
            Weights::Last => checkpoint::Weights::Last,
        };
        checkpoint::load_run(&self.run_dir, which, &candle_core::Device::Cpu)
    }
}

#[derive(clap::Args)]
pub struct EvalCli {
    #[command(flatten)]
    run: RunCli,
    /// A config whose [data] section names the dataset (other sections are ignored): a table
    /// (source "file" or "hub") for a text run, read with the run's own tokenizer and
    /// vocabulary; a video source ("frames", "videos", "tensors", "synthetic-video") for a
    /// video run, scored on its validation and test splits (the test split by `[eval] clips`
    /// views of each video, from this config or --set eval.clips=10, else the run's).
    #[arg(long)]
    data: PathBuf,
    /// Override a key of that config, e.g. --set data.test=other.tsv (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

pub fn eval(a: EvalCli) -> ExitCode {
    let other = match Config::load_for_scoring(&a.data, &a.set) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let run = match a.run.load() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let origin = format!("--data {}", a.data.display());
    let eval = if other.eval == rnnlab::config::Eval::default() {
        run.config.eval.clone()
    } else {
        other.eval.clone()
    };
    let clips = eval.clips;
    let scored = rnnlab::predict::score(&run, &other.data, &origin, &eval);
    match scored {
        Ok(scored) => {
            for sc in scored {
                let s = &sc.scores;
                let views = if sc.split == "test" && clips > 1 {
                    format!(", {clips} views each")
                } else {
                    String::new()
                };
                rnnlab::say!(
                    "{} ({} examples{views}): loss {:.4} acc {:.4}{} mean class acc {:.4} macro-F1 {:.4}{}\n{}",
                    sc.split,
                    sc.examples,
                    s.loss,
                    s.acc,
                    s.top5.map(|t| format!(" top-5 {t:.4}")).unwrap_or_default(),
                    s.mean_class_acc,
                    s.macro_f1,
                    sc.unknown_share
                        .map(|u| format!(", {:.1}% of tokens unknown to the run", 100.0 * u))
                        .unwrap_or_default(),
                    s.confusion_markdown(&run.classes)
                );
                let mut line = serde_json::json!({
                    "run_dir": a.run.run_dir, "data": a.data, "split": sc.split,
                    "examples": sc.examples, "classes": run.classes, "scores": s,
                });
                if let Some(u) = sc.unknown_share {
                    line["unknown_share"] = serde_json::json!(u);
                }
                if let Err(code) = emit(line) {
                    return code;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

#[derive(clap::Args)]
pub struct PredictCli {
    #[command(flatten)]
    run: RunCli,
    /// A text to classify (repeatable).
    #[arg(long)]
    text: Vec<String>,
    /// A file of texts: one per line, or a table (.tsv, .csv, .parquet, .jsonl) whose text
    /// column is the run's `data.text_column` or `--column`.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The text column of a --file table, by name or 0-based index.
    #[arg(long)]
    column: Option<String>,
    /// Video runs: a clip folder of frame images (PNG/JPEG, in name order); repeatable.
    #[arg(long)]
    clip: Vec<PathBuf>,
    /// Video runs: a video file (.mp4, .avi, .mkv, .webm, .mov), decoded by ffmpeg as the
    /// run's training videos were; repeatable.
    #[arg(long)]
    video: Vec<PathBuf>,
}

pub fn predict(p: PredictCli) -> ExitCode {
    let run = match p.run.load() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    for (paths, videos, key) in [(&p.clip, false, "clip"), (&p.video, true, "video")] {
        if paths.is_empty() {
            continue;
        }
        return match rnnlab::predict::predict_clips(&run, paths, videos) {
            Ok(preds) => {
                for pr in preds {
                    if let Err(code) = emit(pr.json(&run, key)) {
                        return code;
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    let mut texts = p.text;
    if let Some(f) = &p.file {
        match rnnlab::predict::texts_in(f, p.column.as_deref(), &run.config.data) {
            Ok(t) => texts.extend(t),
            Err(e) => return fail(e),
        }
    }
    if texts.is_empty() {
        rnnlab::say!("error: nothing to predict: give --text \"...\", --file FILE, --clip DIR or --video FILE");
        return ExitCode::from(BAD_INPUT);
    }
    match rnnlab::predict::predict(&run, &texts) {
        Ok(preds) => {
            for pr in preds {
                if let Err(code) = emit(pr.json(&run, "text")) {
                    return code;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
