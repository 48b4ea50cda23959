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
use rnnlab::stop::Stop;
use rnnlab::summary::Status;
use rnnlab::sweep::{self, record::TrialStatus};
use rnnlab::Config;
use rnnlab::{prepare, train};

mod bench;
mod features;
mod score;
mod sweeps;

use bench::{bench, BenchCli};
use features::{features, FeaturesCli};
use score::{eval, predict, EvalCli, PredictCli};
use sweeps::run_sweep;

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
    /// Sweep files: run only this trial (its id from --dry-run), in this process; `next`: run
    /// the trials not final and not held elsewhere, then (TPE) newly asked ones, one after
    /// another until none is left (what a Slurm task of a TPE sweep runs).
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
    /// With --compare --tag TAG: several runs' TAG series in one PNG, labelled by the config
    /// keys that differ between them.
    Plots(PlotsCli),
}

#[derive(clap::Args)]
struct PlotsCli {
    /// Run folders, results/<name>/run-NNN.
    #[arg(required = true)]
    run_dirs: Vec<PathBuf>,
    /// Draw the runs' series of one scalar (--tag) in one PNG instead of redrawing each run.
    #[arg(long, requires = "tag")]
    compare: bool,
    /// The scalar, as TensorBoard names it: train/loss, grad/global_norm, val/acc, ...
    #[arg(long, requires = "compare")]
    tag: Option<String>,
    /// Where the comparison goes (default: compare-<tag>.png here, "/" as "_").
    #[arg(long, requires = "compare")]
    out: Option<PathBuf>,
    /// Plot log10 of the values (norms that span orders of magnitude).
    #[arg(long, requires = "compare")]
    log_y: bool,
}

fn plots(a: PlotsCli) -> ExitCode {
    if let (true, Some(tag)) = (a.compare, &a.tag) {
        let out = a
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("compare-{}.png", tag.replace('/', "_"))));
        return match rnnlab::log::compare::compare(&a.run_dirs, tag, &out, a.log_y) {
            Ok(groups) => {
                let text = format!(
                    "{}: {} lines ({})",
                    out.display(),
                    a.run_dirs.len(),
                    groups.join("; ")
                );
                emit(text).err().unwrap_or(ExitCode::SUCCESS)
            }
            Err(e) => fail(e),
        };
    }
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
    /// Also list the configurations no other beats on both the metric and a cost (training
    /// time, the default, or parameters), and draw pareto.png.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "time")]
    pareto: Option<sweep::pareto::Cost>,
}

fn summarize(a: SummarizeCli) -> ExitCode {
    let written = sweep::results::Results::read(&a.sweep_dir).and_then(|mut r| {
        let best = r.write(true)?;
        let mut text = sweep::report::render(&r, best.as_ref());
        if let Some(cost) = a.pareto {
            text += &sweep::report::pareto(&r, cost)?;
        }
        Ok(text)
    });
    match written {
        Ok(text) => emit(text.trim_end()).err().unwrap_or(ExitCode::SUCCESS),
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
