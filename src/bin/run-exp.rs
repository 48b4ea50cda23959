//! `run-exp CONFIG [--set a.b=v]... [--dry-run] [--resume RUN_DIR]`: train one experiment.
//! Exit codes: 0 completed, 1 failed while running, 2 bad input (config, data, paths: nothing
//! written), 3 diverged (NaN/Inf loss; recorded in summary.json).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rnnlab::train::{self, Status};
use rnnlab::{checkpoint, Config};

#[derive(Parser)]
#[command(
    name = "run-exp",
    version,
    about = "Train an RNN/LSTM/GRU sequence classifier from a TOML config"
)]
struct Cli {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = match (&cli.config, &cli.resume) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => dir.join(checkpoint::CONFIG),
        (None, None) => {
            eprintln!("error: give a config file, e.g. run-exp configs/lstm.toml (see --help)");
            return ExitCode::from(2);
        }
    };
    // Everything that bad input can break happens here, before any file is written.
    let prepared = Config::load(&config_path, &cli.set).and_then(|config| {
        if cli.dry_run {
            print!("{}", config.to_toml());
            return Ok(None);
        }
        if let Some(dir) = &cli.resume {
            checkpoint::State::load(dir)?;
        }
        train::prepare(config).map(Some)
    });
    let prepared = match prepared {
        Ok(Some(p)) => p,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(if e.is_bad_input() { 2 } else { 1 });
        }
    };
    match train::run(prepared, cli.resume.as_deref()) {
        Ok(s) => {
            let test = s
                .test_acc
                .map(|a| format!(", test acc {a:.4}"))
                .unwrap_or_default();
            eprintln!(
                "{}: {} — best val acc {:.4} (epoch {}){test}, {:.1}s, {:.0} train samples/s",
                s.run_dir.display(),
                serde_json::to_string(&s.status)
                    .unwrap_or_default()
                    .trim_matches('"'),
                s.best_val_acc,
                s.best_epoch
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.elapsed_s,
                s.train_samples_per_s,
            );
            match s.status {
                Status::Completed => ExitCode::SUCCESS,
                Status::Diverged => {
                    eprintln!("error: diverged: {}", s.reason.unwrap_or_default());
                    ExitCode::from(3)
                }
                Status::Failed => ExitCode::from(1),
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
