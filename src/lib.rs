//! rnnlab: a research harness for many-to-one sequence classification with vanilla RNN, LSTM
//! and GRU classifiers on candle. One TOML file describes an experiment; [`train::run`] trains,
//! evaluates, checkpoints and logs it to TensorBoard.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod features;
pub mod fsutil;
pub mod grads;
pub mod hub;
pub mod instruments;
pub mod log;
pub mod memory;
pub mod model;
pub mod optim;
pub mod output;
pub mod predict;
pub mod prepare;
pub mod run_folder;
pub mod slurm;
pub mod stop;
pub mod summary;
pub mod sweep;
pub mod train;

pub use config::Config;
pub use error::{Error, Result};
pub use model::classifier::Classifier;

/// The generator of an epoch's shuffling and dropout: ChaCha12, the generator behind rand's
/// `StdRng` (same seed, same stream), used directly because its position can be read into a
/// checkpoint and restored, so a resume mid-epoch continues the exact stream.
pub type EpochRng = rand_chacha::ChaCha12Rng;
