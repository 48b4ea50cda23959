//! `run-exp CONFIG [--set a.b=v]... [--dry-run] [--resume RUN_DIR]`: train one experiment, or
//! run a sweep (a file with a `[sweep]` table): locally, one trial (`--trial ID`), or as a
//! Slurm array (`--slurm`). `run-exp summarize results/<name>`: a sweep's tables.
//! `run-exp bench [--cells lstm,gru,rnn] [--batch 64] ...`: throughput, as torch_peer.py.
//! `run-exp predict RUN_DIR --text "..."`, `run-exp eval RUN_DIR --data other.toml`.
//! Exit codes: 0 completed, 1 failed while running, 2 bad input (config, data, paths, a
//! resume that may not go ahead: nothing written), 3 diverged (non-finite loss, gradient norm,
//! validation loss or weights; recorded in summary.json), 130 / 143 interrupted by SIGINT /
//! SIGTERM (checkpointed; `--resume` continues).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rnnlab::bench::{bench_cell, BenchArgs};
use rnnlab::config::CellKind;
use rnnlab::device::DeviceSpec;
use rnnlab::stop::Stop;
use rnnlab::summary::Status;
use rnnlab::sweep::{self, record::TrialStatus};
use rnnlab::{checkpoint, Config};
use rnnlab::{prepare, train};

#[derive(Parser)]
#[command(
    name = "run-exp",
    version,
    about = "Train an RNN/LSTM/GRU sequence classifier from a TOML config"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The experiment config (TOML). With --resume, defaults to RUN_DIR/config.toml.
    config: Option<PathBuf>,
    /// Override a config key, e.g. --set model.cell=gru --set train.lr=3e-3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the resolved config and exit without training.
    #[arg(long)]
    dry_run: bool,
    /// Continue a run folder from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Sweep files: run only this trial (its id from --dry-run), in this process.
    #[arg(long, value_name = "ID")]
    trial: Option<String>,
    #[command(flatten)]
    slurm: SlurmCli,
}

/// Sweep files: submit the trials as a Slurm job array instead of running them here.
#[derive(clap::Args)]
struct SlurmCli {
    /// Write results/<name>/sweep.sbatch (one array task per trial not final yet) and sbatch it.
    #[arg(long)]
    slurm: bool,
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// Time limit per trial, e.g. 2:00:00.
    #[arg(long, requires = "slurm")]
    time: Option<String>,
    /// CPUs per trial (also its experiment.threads unless the config sets it).
    #[arg(long, requires = "slurm")]
    cpus_per_task: Option<usize>,
    /// Memory per trial, e.g. 8G.
    #[arg(long, requires = "slurm")]
    mem: Option<String>,
    /// GPUs per trial, e.g. 1.
    #[arg(long, requires = "slurm")]
    gpus: Option<String>,
    /// At most this many trials at once.
    #[arg(long, requires = "slurm")]
    max_parallel: Option<usize>,
    /// Write the script, do not submit it.
    #[arg(long, requires = "slurm")]
    no_submit: bool,
}

impl SlurmCli {
    fn options(&self) -> sweep::slurm::SlurmOptions {
        sweep::slurm::SlurmOptions {
            partition: self.partition.clone(),
            time: self.time.clone(),
            cpus_per_task: self.cpus_per_task,
            mem: self.mem.clone(),
            gpus: self.gpus.clone(),
            max_parallel: self.max_parallel,
            no_submit: self.no_submit,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Training and inference throughput on torch_peer.py's workload (same flags, same JSON keys).
    Bench(BenchCli),
    /// Class probabilities for new texts from a run's best checkpoint (one JSON line per text).
    Predict(PredictCli),
    /// Score a trained run on another dataset: the labeled splits a config's [data] names.
    Eval(EvalCli),
    /// A sweep's results table (rewrites summary.csv/.parquet, summary_by_config.csv,
    /// best.toml, curves.png from the folder as it is: while a sweep runs, or after Slurm).
    Summarize(SummarizeCli),
    /// A frozen pretrained encoder's per-frame features, computed once (cached chunk by chunk,
    /// so a rerun or a killed extraction computes only what is missing) and written as a
    /// `tensors` dataset (<out_dir>/<name>/features/{train,valid,test}.safetensors).
    Features(FeaturesCli),
    /// Redraw a run's pictures from its metrics.jsonl: loss.png, accuracy.png and the
    /// gradient-flow heatmaps (after the renderer changed, or for a run from an older version).
    Plots(PlotsCli),
}

#[derive(clap::Args)]
struct FeaturesCli {
    /// The experiment config (a resnet frame encoder, frozen).
    config: PathBuf,
    /// Override a config key (repeatable), as for training.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Compute only shard I of N (I from 0): one Slurm array task's part. The tensors files
    /// are written by a run without --shard, which computes whatever is still missing.
    #[arg(long, value_name = "I/N", conflicts_with = "slurm")]
    shard: Option<String>,
    /// Where the tensors dataset goes. Default <out_dir>/<experiment.name>/features.
    #[arg(long)]
    out: Option<PathBuf>,
    /// With --slurm: the number of shards (array tasks).
    #[arg(long, requires = "slurm", default_value_t = 8)]
    shards: usize,
    #[command(flatten)]
    slurm: SlurmCli,
}

fn features(a: FeaturesCli) -> ExitCode {
    let config = match Config::load(&a.config, &a.set) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let out = a.out.clone().unwrap_or_else(|| {
        config
            .experiment
            .out_dir
            .join(&config.experiment.name)
            .join("features")
    });
    if a.slurm.slurm {
        if a.shards == 0 {
            rnnlab::say!("error: --shards must be at least 1");
            return ExitCode::from(BAD_INPUT);
        }
        return match rnnlab::features::submit(
            &a.config,
            &a.set,
            &config,
            a.shards,
            &out,
            &a.slurm.options(),
        ) {
            Ok((script, id)) => {
                match id {
                    Some(id) => {
                        rnnlab::say!(
                            "submitted job array {id}: {} shards ({})",
                            a.shards,
                            script.display()
                        );
                        if let Err(code) = emit(id) {
                            return code;
                        }
                    }
                    None => rnnlab::say!("wrote {} (not submitted)", script.display()),
                }
                rnnlab::say!(
                    "when the array is done: run-exp features {} (writes the tensors files; computes any shard that failed)",
                    a.config.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    let shard = match a
        .shard
        .as_deref()
        .map(rnnlab::features::parse_shard)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match rnnlab::features::extract(&config, shard, &out) {
        Ok(done) => {
            let what = match shard {
                Some((i, n)) => format!("shard {i}/{n}"),
                None => "all splits".into(),
            };
            rnnlab::say!(
                "{what}: {} of {} chunks computed now, {} were cached",
                done.computed,
                done.chunks,
                done.chunks - done.computed
            );
            for (split, path) in &done.files {
                if let Err(code) = emit(format!("{split}\t{}", path.display())) {
                    return code;
                }
            }
            if !done.files.is_empty() {
                rnnlab::say!(
                    "train heads on them: [data] source = \"tensors\", train/valid/test = these files; [model] frame_encoder = \"none\" (or \"linear\")"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

#[derive(clap::Args)]
struct PlotsCli {
    /// Run folders, results/<name>/run-NNN.
    #[arg(required = true)]
    run_dirs: Vec<PathBuf>,
}

fn plots(a: PlotsCli) -> ExitCode {
    for dir in &a.run_dirs {
        match rnnlab::log::plots::redraw(dir) {
            Ok(files) => {
                for f in files {
                    if let Err(code) = emit(f.display()) {
                        return code;
                    }
                }
            }
            Err(e) => return fail(e),
        }
    }
    ExitCode::SUCCESS
}

#[derive(clap::Args)]
struct SummarizeCli {
    /// The sweep's folder, results/<name>.
    sweep_dir: PathBuf,
}

fn summarize(a: SummarizeCli) -> ExitCode {
    let written = sweep::results::Results::read(&a.sweep_dir).and_then(|mut r| {
        r.write(true)
            .map(|best| sweep::report::render(&r, best.as_ref()))
    });
    match written {
        Ok(text) => emit(text.trim_end()).err().unwrap_or(ExitCode::SUCCESS),
        Err(e) => fail(e),
    }
}

/// Runs a sweep file: the dry run, one trial, a Slurm submission, or the whole sweep here.
fn run_sweep(cli: &Cli, file: &std::path::Path, stop: &Stop) -> ExitCode {
    // A trial process builds its own trial's config only (the driver checked them all).
    let check = match &cli.trial {
        Some(id) => sweep::Check::Only(id),
        None => sweep::Check::All,
    };
    let plan = match sweep::Plan::load(file, &cli.set, check) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if cli.dry_run {
        return emit(plan.describe().trim_end())
            .err()
            .unwrap_or(ExitCode::SUCCESS);
    }
    if let Some(id) = &cli.trial {
        return match sweep::trial::run(&plan, id, stop) {
            Ok(sweep::trial::Outcome::Ran(status)) => {
                rnnlab::say!("trial {id}: {}", status.name());
                trial_exit(status, stop)
            }
            Ok(sweep::trial::Outcome::AlreadyFinal(status)) => {
                rnnlab::say!("trial {id} is {} already: nothing to do", status.name());
                ExitCode::SUCCESS
            }
            Ok(sweep::trial::Outcome::Busy(holder)) => {
                rnnlab::say!("trial {id} is being run by another process ({holder})");
                ExitCode::from(sweep::driver::EXIT_BUSY)
            }
            Err(e) => fail(e),
        };
    }
    if cli.slurm.slurm {
        let opts = cli.slurm.options();
        return match sweep::slurm::submit(&plan, &opts) {
            Ok(None) => {
                rnnlab::say!(
                    "every trial of {} is final: nothing to submit",
                    plan.root.display()
                );
                ExitCode::SUCCESS
            }
            Ok(Some((path, n, job))) => {
                match job {
                    Some(id) => {
                        rnnlab::say!("submitted {path} as job array {id} ({n} tasks); results: run-exp summarize {}", plan.root.display(), path = path.display());
                        let _ = emit(&id);
                    }
                    None => rnnlab::say!(
                        "wrote {} ({n} tasks); submit it with sbatch",
                        path.display()
                    ),
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    match sweep::driver::run(&plan, stop) {
        Ok(out) => {
            // The tables are on disk too: a closed stdout does not change the exit code.
            let _ = emit(out.text.trim_end());
            let counts: Vec<String> = out
                .counts
                .iter()
                .map(|(s, n)| format!("{n} {}", s.name()))
                .collect();
            let tables = match out.table_secs.len() {
                0 => String::new(),
                n => format!(
                    "; tables rewritten after each of {n} trials in {:.3} s on average",
                    out.table_secs.iter().sum::<f64>() / n as f64
                ),
            };
            rnnlab::say!(
                "sweep {}: {}{tables}",
                plan.root.display(),
                counts.join(", ")
            );
            if let Some(sig) = out.interrupted {
                return ExitCode::from(Stop::exit_code(sig));
            }
            if out.counts.get(&TrialStatus::Failed).copied().unwrap_or(0) > 0 {
                rnnlab::say!("error: some trials failed (their error is in summary.csv and <trial>/trial.log); rerun the same command to retry them");
                return ExitCode::from(FAILED);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

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
struct EvalCli {
    #[command(flatten)]
    run: RunCli,
    /// A config whose [data] section names the dataset (other sections are ignored): a table
    /// (source "file" or "hub") for a text run, read with the run's own tokenizer and
    /// vocabulary; a video source ("frames", "tensors", "synthetic-video") for a video run,
    /// scored on its validation and test splits.
    #[arg(long)]
    data: PathBuf,
    /// Override a key of that config, e.g. --set data.test=other.tsv (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn eval(a: EvalCli) -> ExitCode {
    let other = match Config::load_for_scoring(&a.data, &a.set) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let run = match a.run.load() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let origin = format!("--data {}", a.data.display());
    let scored = rnnlab::predict::score(&run, &other.data, &origin);
    match scored {
        Ok(scored) => {
            for sc in scored {
                let s = &sc.scores;
                rnnlab::say!(
                    "{} ({} examples): loss {:.4} acc {:.4} macro-F1 {:.4}{}\n{}",
                    sc.split,
                    sc.examples,
                    s.loss,
                    s.acc,
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

/// Exit codes (README "Exit codes"): 0 completed, 1 failed while running, 2 bad input, 3
/// diverged, 128 + the signal when interrupted; 75 (`sweep::driver::EXIT_BUSY`) for a trial
/// another process holds.
const FAILED: u8 = 1;
const BAD_INPUT: u8 = 2;
const DIVERGED: u8 = 3;

/// The exit code for how a run ended.
fn exit_for(status: Status, stop: &Stop) -> ExitCode {
    match status {
        Status::Completed => ExitCode::SUCCESS,
        Status::Diverged => ExitCode::from(DIVERGED),
        Status::Interrupted => ExitCode::from(Stop::exit_code(stop.requested().unwrap_or(15))),
        Status::Failed => ExitCode::from(FAILED),
    }
}

/// A trial's status as the run status it ends its process with.
fn trial_exit(status: TrialStatus, stop: &Stop) -> ExitCode {
    exit_for(
        match status {
            TrialStatus::Completed | TrialStatus::Pruned => Status::Completed,
            TrialStatus::Diverged => Status::Diverged,
            TrialStatus::Pending => Status::Interrupted,
            TrialStatus::Failed | TrialStatus::Running => Status::Failed,
        },
        stop,
    )
}

/// Prints one result on stdout. A reader that went away (`| head -1`) ends the command quietly
/// with success, as Unix tools do; any other failed write is an error (exit 1).
fn emit(text: impl std::fmt::Display) -> Result<(), ExitCode> {
    match rnnlab::out!("{text}") {
        Ok(()) => Ok(()),
        Err(e) if rnnlab::output::reader_gone(&e) => Err(ExitCode::SUCCESS),
        Err(e) => {
            rnnlab::say!("error: writing to stdout: {e}");
            Err(ExitCode::from(FAILED))
        }
    }
}

/// Reports an error; exit 2 for bad input, 1 otherwise.
fn fail(e: rnnlab::Error) -> ExitCode {
    rnnlab::say!("error: {e:#}");
    ExitCode::from(if e.is_bad_input() { BAD_INPUT } else { FAILED })
}

#[derive(clap::Args)]
struct PredictCli {
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
}

fn predict(p: PredictCli) -> ExitCode {
    let run = match p.run.load() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if !p.clip.is_empty() {
        return match rnnlab::predict::predict_clips(&run, &p.clip) {
            Ok(preds) => {
                for pr in preds {
                    if let Err(code) = emit(pr.json(&run, "clip")) {
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
        rnnlab::say!("error: nothing to predict: give --text \"...\", --file FILE or --clip DIR");
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

#[derive(clap::Args)]
struct BenchCli {
    /// Cells to time, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lstm,gru,rnn"
    )]
    cells: Vec<CellArg>,
    /// Sequences (clips with --video) per step. Default 64 (16 with --video).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, default_value_t = 64)]
    seq: usize,
    #[arg(long, default_value_t = 128)]
    emb: usize,
    /// Hidden units. Default 256 (128 with --video).
    #[arg(long)]
    hidden: Option<usize>,
    #[arg(long, default_value_t = 20000)]
    vocab: usize,
    /// Classes. Default 2 (6 with --video).
    #[arg(long)]
    classes: Option<usize>,
    /// Timed steps (after the warmup). Default 30 (10 with --video).
    #[arg(long)]
    steps: Option<usize>,
    /// Untimed steps first. Default 5 (2 with --video).
    #[arg(long)]
    warmup: Option<usize>,
    /// CPU threads (sets RAYON_NUM_THREADS); 0 = candle's default.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// "cpu", "cuda", "cuda:N" or "auto".
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Time the composed-ops reference implementation instead of the fused op.
    #[arg(long)]
    reference: bool,
    /// Skip training: time inference only (for profiling it).
    #[arg(long)]
    infer_only: bool,
    /// The video workload of torch_video_peer.py: clips -> CNN frame encoder -> cell.
    #[arg(long)]
    video: bool,
    /// --video: frames per clip (default 16; 8 with --encoder).
    #[arg(long, requires = "video")]
    frames: Option<usize>,
    /// --video: frame height and width (default 64; 112 with --encoder).
    #[arg(long, requires = "video")]
    size: Option<usize>,
    /// --video: colour channels.
    #[arg(long, default_value_t = 3, requires = "video")]
    channels: usize,
    /// --video: conv widths, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "32,64,128,128",
        requires = "video"
    )]
    conv: Vec<usize>,
    /// --video: batch norm after each conv.
    #[arg(long, requires = "video")]
    bn: bool,
    /// --video: a ResNet encoder instead of the CNN, torch_resnet_peer.py's workload (its
    /// --arch); defaults then --batch 4 --frames 8 --size 112 --hidden 256 --classes 101
    /// --steps 5 --warmup 1.
    #[arg(long, requires = "video", value_parser = ["resnet18", "resnet34", "resnet50"])]
    encoder: Option<String>,
}

/// `--cells` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CellArg {
    Lstm,
    Gru,
    Rnn,
}

fn bench(b: BenchCli) -> ExitCode {
    let cells: Vec<CellKind> = b
        .cells
        .iter()
        .map(|c| match c {
            CellArg::Lstm => CellKind::Lstm,
            CellArg::Gru => CellKind::Gru,
            CellArg::Rnn => CellKind::Rnn,
        })
        .collect();
    let v = b.video;
    let encoder = b.encoder.as_deref().map(|e| match e {
        "resnet34" => rnnlab::config::FrameEncoder::Resnet34,
        "resnet50" => rnnlab::config::FrameEncoder::Resnet50,
        _ => rnnlab::config::FrameEncoder::Resnet18,
    });
    let r = encoder.is_some();
    let pick = |x: Option<usize>, text: usize, video: usize, resnet: usize| {
        x.unwrap_or(match (v, r) {
            (_, true) => resnet,
            (true, false) => video,
            (false, false) => text,
        })
    };
    let (batch, hidden, classes, steps, warmup) = (
        pick(b.batch, 64, 16, 4),
        pick(b.hidden, 256, 128, 256),
        pick(b.classes, 2, 6, 101),
        pick(b.steps, 30, 10, 5),
        pick(b.warmup, 5, 2, 1),
    );
    let (frames, size) = match (r, b.frames, b.size) {
        (true, None, None) => (8, 112),
        (true, f, s) => (f.unwrap_or(8), s.unwrap_or(112)),
        (false, f, s) => (f.unwrap_or(16), s.unwrap_or(64)),
    };
    let conv = b.conv.clone();
    let zero = [
        ("--batch", batch),
        ("--seq", b.seq),
        ("--emb", b.emb),
        ("--hidden", hidden),
        ("--vocab", b.vocab),
        ("--classes", classes),
        ("--steps", steps),
        ("--frames", frames),
        ("--size", size),
        ("--channels", b.channels),
        ("--conv", conv.iter().copied().min().unwrap_or(0)),
    ];
    if let Some((flag, _)) = zero.iter().find(|(_, v)| *v == 0) {
        rnnlab::say!("error: {flag} must be at least 1");
        return ExitCode::from(BAD_INPUT);
    }
    let device = match DeviceSpec::parse(&b.device)
        .map_err(rnnlab::Error::Device)
        .and_then(|d| d.open())
    {
        Ok(d) => d,
        Err(e) => {
            rnnlab::say!("error: --device: {e}");
            return ExitCode::from(BAD_INPUT);
        }
    };
    let args = BenchArgs {
        cells,
        batch,
        seq: b.seq,
        emb: b.emb,
        hidden,
        vocab: b.vocab,
        classes,
        steps,
        warmup,
        reference: b.reference,
        infer_only: b.infer_only,
        encoder,
        video: v.then_some(rnnlab::bench::VideoArgs {
            frames,
            size,
            channels: b.channels,
            conv,
            bn: b.bn,
        }),
    };
    for &cell in &args.cells {
        let line = match encoder {
            Some(e) => rnnlab::bench::bench_encoder(&args, e, cell, &device),
            None => bench_cell(&args, cell, &device),
        };
        match line {
            Ok(line) => {
                if let Err(code) = emit(line) {
                    return code;
                }
            }
            Err(e) => {
                rnnlab::say!("error: {e:#}");
                return ExitCode::from(FAILED);
            }
        }
    }
    ExitCode::SUCCESS
}

/// Keep freed memory in the process instead of returning it to the kernel: training frees
/// and reallocates the same multi-megabyte buffers every step, and with glibc's defaults each
/// one came back as fresh zeroed pages (page faults were ~12% of GRU training time).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes glibc's allocation thresholds; called before any
        // other thread exists.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}

/// Fixes candle's CPU thread count for the whole process: without RAYON_NUM_THREADS candle
/// reads the CPU list from /proc on every parallel op (and our gemms asked per step), which
/// took a third of LSTM inference time at hidden 512.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // Called before any other thread exists.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

fn main() -> ExitCode {
    // A write past `ulimit -f` fails with EFBIG (and names its file) instead of killing the
    // process with SIGXFSZ and leaving a cut events file and no summary.
    // SAFETY: setting a signal's disposition to SIG_IGN before any other thread exists.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    keep_freed_memory();
    let cli = Cli::parse();
    if let Some(Command::Bench(b)) = &cli.command {
        if b.threads > 0 {
            std::env::set_var("RAYON_NUM_THREADS", b.threads.to_string());
        }
    }
    pin_thread_count();
    match cli.command {
        Some(Command::Bench(b)) => return bench(b),
        Some(Command::Predict(p)) => return predict(p),
        Some(Command::Eval(a)) => return eval(a),
        Some(Command::Plots(a)) => return plots(a),
        Some(Command::Features(a)) => return features(a),
        Some(Command::Summarize(a)) => return summarize(a),
        None => {}
    }
    if cli.config.is_none() && cli.resume.is_none() {
        rnnlab::say!("error: give a config file, e.g. run-exp configs/lstm.toml (see --help)");
        return ExitCode::from(BAD_INPUT);
    }
    let stop = match Stop::install() {
        Ok(s) => s,
        Err(e) => {
            rnnlab::say!("error: cannot install the SIGINT/SIGTERM handlers: {e}");
            return ExitCode::from(FAILED);
        }
    };
    // A config file given without --resume: loaded once, a sweep or a run.
    let config = match (&cli.config, &cli.resume) {
        (Some(file), None) => match Config::load(file, &cli.set) {
            Ok(c) if c.sweep.is_some() => return run_sweep(&cli, file, &stop),
            Ok(c) => Some(c),
            Err(e) => return fail(e),
        },
        _ => None,
    };
    if cli.trial.is_some() || cli.slurm.slurm {
        rnnlab::say!("error: --trial and --slurm need a sweep file (one with a [sweep] table)");
        return ExitCode::from(BAD_INPUT);
    }
    // Everything that bad input can break happens here, before any file is written (a new
    // run's folder is created last, a resume's files are written only once all is checked).
    let ready = match &cli.resume {
        Some(dir) => rnnlab::run_folder::resume_config(dir, cli.config.as_deref(), &cli.set)
            .and_then(|resume| {
                if cli.dry_run {
                    let _ = emit(resume.config.to_toml().trim_end());
                    return Ok(None);
                }
                let prep = prepare::prepare(resume.config.clone())?;
                rnnlab::run_folder::open_resume(prep, resume).map(Some)
            }),
        None => {
            let Some(config) = config else {
                return ExitCode::from(BAD_INPUT);
            };
            if cli.dry_run {
                let _ = emit(config.to_toml().trim_end());
                return ExitCode::SUCCESS;
            }
            prepare::prepare(config).and_then(|prep| {
                if let Some(sig) = stop.requested() {
                    return Err(rnnlab::Error::Interrupted(sig));
                }
                rnnlab::run_folder::open_new(prep).map(Some)
            })
        }
    };
    let ready = match ready {
        Ok(Some(r)) => r,
        Ok(None) => return ExitCode::SUCCESS,
        Err(rnnlab::Error::Interrupted(sig)) => return ExitCode::from(Stop::exit_code(sig)),
        Err(e) => return fail(e),
    };
    match train::run(ready, &stop) {
        Ok(s) => {
            let test = s
                .test_acc
                .map(|a| format!(", test acc {a:.4}"))
                .unwrap_or_default();
            let best = match s.best_epoch {
                Some(e) => format!("best val acc {:.4} (epoch {e})", s.best_val_acc),
                None => "no epoch validated".into(),
            };
            rnnlab::say!(
                "{}: {} — {best}{test}, {:.1}s, {:.0} train samples/s",
                s.run_dir.display(),
                serde_json::to_string(&s.status)
                    .unwrap_or_default()
                    .trim_matches('"'),
                s.elapsed_s,
                s.train_samples_per_s,
            );
            if s.status == Status::Diverged {
                rnnlab::say!(
                    "error: diverged: {}",
                    s.reason.as_deref().unwrap_or_default()
                );
            }
            exit_for(s.status, &stop)
        }
        Err(e) => {
            rnnlab::say!("error: {e:#}");
            ExitCode::from(FAILED)
        }
    }
}
