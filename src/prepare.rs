//! Before any file is written: `prepare` opens the device, checks that the data and the model
//! fit in memory, loads the data and the embeddings, and resolves the class weights, so that
//! every check bad input can fail runs first.

use candle_core::Device;

use crate::config::{ClassWeights, Config, WeightRule};
use crate::data::vectors::{self, Vectors};
use crate::data::{self, Dataset};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::memory;
use crate::model::architecture::Input;
use crate::model::architecture::{Architecture, Front};

/// A config with its device opened and its data loaded: nothing left that bad input can break.
pub struct Prepared {
    pub config: Config,
    pub device: Device,
    pub data: Dataset,
    /// What the model takes (frames, for a frozen encoder whose features `data` holds).
    pub input: Input,
    /// `model.embeddings`, read and checked against the vocabulary.
    pub vectors: Option<Vectors>,
    /// Per-class loss weights (`train.class_weights`), one per class.
    pub class_weights: Option<Vec<f64>>,
}

pub fn prepare(config: Config) -> Result<Prepared> {
    crate::device::set_cpu_threads(config.experiment.threads);
    let device = DeviceSpec::parse(&config.experiment.device)
        .map_err(Error::Device)?
        .open()?;
    let available = memory::available();
    let generated = memory::synthetic_data_part(&config);
    memory::check(generated.as_slice(), available)?;
    let mut data = data::load(
        &config.data_to_load(),
        config.experiment.seed,
        config.eval.clips,
    )?;
    let steps: Vec<usize> = (0..data.train.len())
        .map(|i| data.train.inputs.steps(i))
        .collect();
    data.notes.extend(cannot_act_as_written(&config, &steps));
    let longest = steps.iter().copied().max().unwrap_or(1);
    let input = input_of(&data);
    let arch = Architecture::of(&config.model, input, data.classes.len())?;
    let mut parts = memory::model_parts(&config, &arch, longest, device.is_cpu());
    parts.extend(generated);
    let cached = match &arch.front {
        Front::ResNet { depth, trains, .. } if crate::features::cacheable(&config, trains) => {
            let frames: usize = crate::features::splits(&data)
                .iter()
                .map(|(_, s)| (0..s.len()).map(|i| s.inputs.steps(i)).sum::<usize>())
                .sum();
            parts.push(memory::Part {
                bytes: (frames * depth.features() * 4) as f64,
                what: format!("{} features of {frames} frames", depth.name()),
                key: "data.frames_per_clip",
            });
            Some(*depth)
        }
        _ => None,
    };
    memory::check(&parts, available)?;
    if let Some(depth) = cached {
        crate::features::encode_dataset(&mut data, &config, depth)?;
    }
    let vectors = match &config.model.embeddings {
        Some(p) => {
            let Some(vocab) = &data.vocab else {
                return Err(Error::Config {
                    location: "config".into(),
                    key: "model.embeddings".into(),
                    msg: format!(
                        "pretrained word vectors need text; the data gives {}",
                        input_of(&data)
                    ),
                });
            };
            Some(vectors::load(p, vocab, config.model.embedding_dim)?)
        }
        None => None,
    };
    let class_weights = class_weights(&config, &data)?;
    Ok(Prepared {
        config,
        device,
        data,
        input,
        vectors,
        class_weights,
    })
}

/// One line for each setting that cannot act as written on this machine or this data:
/// `experiment.threads` above the cores, `data.frames_per_clip` above clips' frames (`steps`:
/// each training clip's).
fn cannot_act_as_written(config: &Config, steps: &[usize]) -> Vec<String> {
    let mut notes = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if config.experiment.threads > cores {
        notes.push(format!(
            "warning: experiment.threads = {} is above this machine's {cores} cores: the threads take turns, which is slower than {cores}",
            config.experiment.threads
        ));
    }
    if let Some(k) = config.data.frames_per_clip {
        let short: Vec<usize> = steps.iter().copied().filter(|&t| t < k).collect();
        if let Some(min) = short.iter().min() {
            notes.push(format!(
                "note: data.frames_per_clip = {k}, but {} of {} training clips have fewer frames (the shortest {min}): they keep all of theirs",
                short.len(),
                steps.len()
            ));
        }
    }
    notes
}

/// Training examples per class.
pub fn class_counts(data: &Dataset) -> Vec<usize> {
    data::label_counts(&data.train.labels, data.classes.len())
}

/// `train.class_weights` resolved: "balanced" is n / (k * count_c) (scikit-learn's rule).
fn class_weights(config: &Config, data: &Dataset) -> Result<Option<Vec<f64>>> {
    let k = data.classes.len();
    match &config.train.class_weights {
        ClassWeights::Rule(WeightRule::None) => Ok(None),
        ClassWeights::Rule(WeightRule::Balanced) => {
            let counts = class_counts(data);
            let n: usize = counts.iter().sum();
            Ok(Some(
                counts
                    .iter()
                    .map(|&c| {
                        if c == 0 {
                            0.0
                        } else {
                            n as f64 / (k * c) as f64
                        }
                    })
                    .collect(),
            ))
        }
        ClassWeights::Given(w) if w.len() == k => {
            let counts = class_counts(data);
            if w.iter().zip(&counts).all(|(&wc, &n)| wc == 0.0 || n == 0) {
                return Err(Error::Config {
                    location: "config".into(),
                    key: "train.class_weights".into(),
                    msg: format!(
                        "{w:?} gives weight 0 to every class with training examples (counts {counts:?}): the loss would be 0/0"
                    ),
                });
            }
            Ok(Some(w.clone()))
        }
        ClassWeights::Given(w) => Err(Error::Config {
            location: "config".into(),
            key: "train.class_weights".into(),
            msg: format!(
                "has {} weights but the data has {k} classes {:?}",
                w.len(),
                data.classes
            ),
        }),
    }
}

/// What the dataset's sequences hold, as the classifier's front end takes it.
pub fn input_of(data: &Dataset) -> Input {
    match &data.train.inputs {
        data::Inputs::Tokens(_) => Input::Tokens {
            vocab: data.vocab.as_ref().map_or(0, |v| v.len()),
        },
        data::Inputs::Features { dim, .. } => Input::Features { dim: *dim },
        data::Inputs::Frames { shape, .. } => Input::Frames {
            channels: shape.channels,
            height: shape.height,
            width: shape.width,
        },
    }
}
