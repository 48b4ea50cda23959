//! A frozen encoder's features, computed once. Each split's clips run through the pretrained
//! ResNet in chunks of [`CHUNK`] clips; each chunk is saved (whole or not at all) under
//! `<data.cache_dir>/features-<key>/`, the key a hash of the encoder, its weights file, the
//! frame size and the split's clips (which already reflect the frames kept), so later epochs,
//! runs and sweep trials train only the recurrent head. A run, a rerun, or `run-exp features
//! --shard i/n` (one Slurm array task) computes only the chunks that are missing; a killed
//! extraction loses at most the chunk in flight. `run-exp features` then writes the whole as
//! a `tensors` dataset: `features` [N, T, D], `labels`, `lengths`, and the class names in the
//! safetensors metadata (`classes`, a JSON list).

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::config::Config;
use crate::data::{Dataset, FrameShape, Inputs, Split};
use crate::error::{Error, Result};
use crate::model::provenance::Provenance;
use crate::model::resnet::{Depth, ResNet};

/// Clips per cache file.
pub const CHUNK: usize = 64;

/// Frames per forward pass of the encoder.
const FRAMES_PER_PASS: usize = 32;

/// One cache file's worth of work: clips `clips` of split `split`.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub split: &'static str,
    pub clips: Range<usize>,
    pub path: PathBuf,
}

/// The chunks of a dataset's splits and where their files go.
pub struct Extraction {
    pub chunks: Vec<Chunk>,
    pub depth: Depth,
    pub provenance: Provenance,
}

/// A dataset's splits by name, in order: train, valid, test.
pub fn splits(data: &Dataset) -> Vec<(&'static str, &Split)> {
    let mut out = vec![("train", &data.train), ("valid", &data.valid)];
    out.extend(data.test.as_ref().map(|t| ("test", t)));
    out
}

impl Extraction {
    /// The chunks of every split of `data` under `cache`, for the encoder `depth` with the
    /// weights `provenance` names.
    pub fn plan(
        data: &Dataset,
        cache: &Path,
        depth: Depth,
        provenance: Provenance,
    ) -> Result<Extraction> {
        let mut chunks = Vec::new();
        for (name, split) in splits(data) {
            let Inputs::Frames { shape, clips } = &split.inputs else {
                return Err(Error::Config {
                    location: "config".into(),
                    key: "model.frame_encoder".into(),
                    msg: format!(
                        "{} encodes frames; the {name} split holds features",
                        depth.name()
                    ),
                });
            };
            let mut fnv = crate::fsutil::Fnv1a::new();
            fnv.eat(b"rnnlab-features-v1");
            fnv.eat(depth.name().as_bytes());
            fnv.eat(provenance.fnv1a.as_bytes());
            for v in [shape.channels, shape.height, shape.width, clips.len()] {
                fnv.eat(&(v as u64).to_le_bytes());
            }
            fnv.eat(&clips.identity().to_le_bytes());
            let dir = cache.join(format!("features-{:016x}", fnv.0));
            for (k, start) in (0..clips.len()).step_by(CHUNK).enumerate() {
                chunks.push(Chunk {
                    split: name,
                    clips: start..(start + CHUNK).min(clips.len()),
                    path: dir.join(format!("chunk-{k:05}.safetensors")),
                });
            }
        }
        Ok(Extraction {
            chunks,
            depth,
            provenance,
        })
    }

    /// Shard `i` of `n`: a contiguous run of the chunks, the shards together covering all.
    pub fn shard(&self, i: usize, n: usize) -> &[Chunk] {
        let total = self.chunks.len();
        &self.chunks[i * total / n..(i + 1) * total / n]
    }

    /// Computes those of `chunks` whose files do not exist yet; returns how many it computed.
    pub fn compute(
        &self,
        data: &Dataset,
        chunks: &[Chunk],
        net: &ResNet,
        progress: bool,
    ) -> Result<usize> {
        let todo: Vec<&Chunk> = chunks.iter().filter(|c| !c.path.is_file()).collect();
        if todo.is_empty() {
            return Ok(0);
        }
        let by_name: HashMap<&str, &Split> = splits(data).into_iter().collect();
        let clips: usize = todo.iter().map(|c| c.clips.len()).sum();
        let bar = crate::log::progress::count_bar(
            progress,
            &format!("{} features", self.depth.name()),
            clips,
        );
        let started = std::time::Instant::now();
        let mut frames = 0usize;
        for chunk in &todo {
            let split = by_name[chunk.split];
            frames += encode_chunk(split, chunk, net)?;
            bar.inc(chunk.clips.len() as u64);
        }
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        crate::say!(
            "{}: {clips} clips ({frames} frames) encoded in {secs:.1} s, {:.1} frames/s",
            self.depth.name(),
            frames as f64 / secs
        );
        Ok(todo.len())
    }

    /// Split `name` as features, from its chunk files (all must exist).
    pub fn assemble(&self, name: &str, split: &Split) -> Result<Split> {
        let mut seqs = Vec::with_capacity(split.len());
        let mut dim = self.depth.features();
        for chunk in self.chunks.iter().filter(|c| c.split == name) {
            let t = candle_core::safetensors::load(&chunk.path, &Device::Cpu).map_err(|e| {
                Error::data(&chunk.path, 0, format!("cannot read cached features: {e}"))
            })?;
            let (Some(f), Some(l)) = (t.get("features"), t.get("lengths")) else {
                return Err(Error::data(
                    &chunk.path,
                    0,
                    "not a features chunk (no \"features\" or \"lengths\")",
                ));
            };
            dim = f.dim(1)?;
            let values = f.flatten_all()?.to_vec1::<f32>()?;
            let mut at = 0;
            for n in l.to_vec1::<u32>()? {
                let n = n as usize * dim;
                seqs.push(values[at..at + n].to_vec());
                at += n;
            }
        }
        if seqs.len() != split.len() {
            return Err(Error::data(
                self.chunks.first().map_or(Path::new(""), |c| &c.path),
                0,
                format!(
                    "the cached features hold {} clips of {name}, the split {}",
                    seqs.len(),
                    split.len()
                ),
            ));
        }
        Ok(Split {
            inputs: Inputs::Features { dim, seqs },
            labels: split.labels.clone(),
        })
    }
}

/// Encodes one chunk's clips and saves them; returns the frames encoded.
fn encode_chunk(split: &Split, chunk: &Chunk, net: &ResNet) -> Result<usize> {
    let Inputs::Frames { shape, clips } = &split.inputs else {
        return Ok(0);
    };
    let px = shape.pixels();
    let mut lengths = Vec::with_capacity(chunk.clips.len());
    let mut pixels: Vec<f32> = Vec::new();
    for i in chunk.clips.clone() {
        let clip = clips.get(i)?;
        lengths.push((clip.len() / px.max(1)) as u32);
        pixels.extend(clip.iter().map(|&p| p as f32 * (1.0 / 255.0)));
    }
    let frames = pixels.len() / px.max(1);
    let features = encode_frames(&pixels, *shape, net)?;
    if let Some(dir) = chunk.path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let n = lengths.len();
    let map = HashMap::from([
        ("features".to_string(), features),
        (
            "lengths".to_string(),
            Tensor::from_vec(lengths, n, &Device::Cpu)?,
        ),
    ]);
    crate::model::save_tensors(&map, &chunk.path)?;
    Ok(frames)
}

/// Frames (CHW values in [0, 1], back to back) -> features [frames, D], a pass at a time.
pub fn encode_frames(pixels: &[f32], shape: FrameShape, net: &ResNet) -> Result<Tensor> {
    let px = shape.pixels();
    let frames = pixels.len() / px.max(1);
    let mut out = Vec::new();
    for start in (0..frames).step_by(FRAMES_PER_PASS) {
        let n = FRAMES_PER_PASS.min(frames - start);
        let x = Tensor::from_slice(
            &pixels[start * px..(start + n) * px],
            (n, shape.channels, shape.height, shape.width),
            &Device::Cpu,
        )?;
        out.push(net.forward(&x)?.detach());
    }
    if out.is_empty() {
        return Ok(Tensor::zeros(
            (0, net.depth.features()),
            DType::F32,
            &Device::Cpu,
        )?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Whether training can read cached features instead of running the encoder: a ResNet with
/// no stage training and no augmentation that changes pixels (frame sampling is fine: it picks
/// among cached frames).
pub fn cacheable(config: &Config, trains: &[String]) -> bool {
    let d = &config.data;
    trains.is_empty() && d.augment_shift == 0 && !d.augment_flip && d.augment_brightness == 0.0
}

/// Where features are cached: `data.cache_dir`, else `<out_dir>/.cache` (as decoded frames).
fn cache_dir(config: &Config) -> PathBuf {
    let d = config.data_to_load();
    d.cache_dir
        .unwrap_or_else(|| config.experiment.out_dir.join(".cache"))
}

/// Replaces every split's frames by the frozen encoder's features, computing the chunks that
/// are not cached yet.
pub fn encode_dataset(data: &mut Dataset, config: &Config, depth: Depth) -> Result<()> {
    let (net, provenance) = ResNet::open(&config.model, depth, &[])?;
    let cache = cache_dir(config);
    let ex = Extraction::plan(data, &cache, depth, provenance)?;
    let done = ex.chunks.iter().filter(|c| c.path.is_file()).count();
    if done < ex.chunks.len() {
        ex.compute(data, &ex.chunks, &net, config.log.progress)?;
    }
    let train = ex.assemble("train", &data.train)?;
    let valid = ex.assemble("valid", &data.valid)?;
    let test = match &data.test {
        Some(t) => Some(ex.assemble("test", t)?),
        None => None,
    };
    data.notes.push(format!(
        "frozen {}: every split's features from the cache under {} ({} of {} chunks computed now); training runs the recurrent head only",
        depth.name(),
        cache.display(),
        ex.chunks.len() - done,
        ex.chunks.len()
    ));
    data.train = train;
    data.valid = valid;
    data.test = test;
    Ok(())
}

/// `run-exp features CONFIG [--shard i/n]`: what it did.
pub struct Extracted {
    /// Chunks computed now, and in all (of the shard, or of the dataset).
    pub computed: usize,
    pub chunks: usize,
    /// The tensors dataset written (without a shard): one file per split.
    pub files: Vec<(&'static str, PathBuf)>,
}

/// The frozen encoder a config names, or a config error saying why features cannot be
/// extracted for it.
fn frozen_encoder(config: &Config) -> Result<Depth> {
    let refuse = |key: &str, msg: &str| {
        Err(Error::Config {
            location: "config".into(),
            key: key.into(),
            msg: msg.into(),
        })
    };
    match config.model.frame_encoder {
        Some(e) if e.is_resnet() => {}
        _ => {
            return refuse(
                "model.frame_encoder",
                "run-exp features needs a pretrained encoder: \"resnet18\", \"resnet34\" or \"resnet50\"",
            )
        }
    }
    if !config.model.trained_stages().is_empty() {
        return refuse(
            "model.train_encoder_stages",
            "run-exp features computes a frozen encoder's features; this config trains encoder stages (leave train_encoder_stages out, freeze_encoder = true)",
        );
    }
    Ok(Depth::of(
        config
            .model
            .frame_encoder
            .unwrap_or(crate::config::FrameEncoder::Resnet18),
    ))
}

/// Computes the features of shard `i` of `n` (or all), reusing every chunk already cached;
/// without a shard, writes the tensors dataset to `out`.
pub fn extract(config: &Config, shard: Option<(usize, usize)>, out: &Path) -> Result<Extracted> {
    let depth = frozen_encoder(config)?;
    crate::device::set_cpu_threads(config.experiment.threads);
    let data = crate::data::load(&config.data_to_load(), config.experiment.seed, 1)?;
    let (net, provenance) = ResNet::open(&config.model, depth, &[])?;
    let ex = Extraction::plan(&data, &cache_dir(config), depth, provenance)?;
    let chunks = match shard {
        Some((i, n)) => ex.shard(i, n),
        None => &ex.chunks[..],
    };
    let computed = ex.compute(&data, chunks, &net, config.log.progress)?;
    let mut files = Vec::new();
    if shard.is_none() {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        for (name, split) in splits(&data) {
            let feats = ex.assemble(name, split)?;
            let path = out.join(format!("{name}.safetensors"));
            write_split(&feats, &data.classes, &path)?;
            files.push((name, path));
        }
    }
    Ok(Extracted {
        computed,
        chunks: chunks.len(),
        files,
    })
}

/// A split of features as a `tensors` file: `features` [N, T, D] (zero after each length),
/// `labels` [N] u32, `lengths` [N] u32, the class names in the metadata. Written whole or not
/// at all.
pub fn write_split(split: &Split, classes: &[String], path: &Path) -> Result<()> {
    let Inputs::Features { dim, seqs } = &split.inputs else {
        return Ok(());
    };
    let d = (*dim).max(1);
    let lengths: Vec<u32> = seqs.iter().map(|s| (s.len() / d) as u32).collect();
    let t = lengths.iter().copied().max().unwrap_or(0) as usize;
    let n = seqs.len();
    let mut values = vec![0f32; n * t * d];
    for (i, s) in seqs.iter().enumerate() {
        values[i * t * d..i * t * d + s.len()].copy_from_slice(s);
    }
    let cpu = &Device::Cpu;
    let tensors = [
        ("features", Tensor::from_vec(values, (n, t, d), cpu)?),
        ("labels", Tensor::from_vec(split.labels.clone(), n, cpu)?),
        ("lengths", Tensor::from_vec(lengths, n, cpu)?),
    ];
    let meta = HashMap::from([(
        "classes".to_string(),
        serde_json::to_string(classes).unwrap_or_else(|_| "[]".into()),
    )]);
    crate::fsutil::write_via_temp(path, |tmp| {
        let named = tensors.iter().map(|(k, v)| (*k, v));
        safetensors::serialize_to_file(named, Some(meta), tmp)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })
}

/// `run-exp features CONFIG --slurm --shards N`: writes `<out>/features.sbatch`, a job array of
/// N tasks each running `run-exp features CONFIG [--set ...] --shard $SLURM_ARRAY_TASK_ID/N`
/// from this directory, and submits it (unless `no_submit`). Returns the script and job id.
pub fn submit(
    config_file: &Path,
    sets: &[String],
    config: &Config,
    shards: usize,
    out: &Path,
    opts: &crate::slurm::SlurmOptions,
) -> Result<(PathBuf, Option<String>)> {
    use crate::slurm::{header, quote, sbatch};
    frozen_encoder(config)?;
    let exe = std::env::current_exe().map_err(|e| Error::io("run-exp", e))?;
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let logs = out.join("slurm");
    let mut s = header(
        &format!("features of {} in {shards} shards", config_file.display()),
        &format!("{}-features", config.experiment.name),
        shards,
        &logs,
        opts,
    );
    s += &format!("cd {}\n", quote(&cwd.display().to_string()));
    let mut cmd = format!(
        "exec {} features {}",
        quote(&exe.display().to_string()),
        quote(&config_file.display().to_string())
    );
    for set in sets {
        cmd += &format!(" --set {}", quote(set));
    }
    if config.experiment.threads == 0 {
        let threads = opts
            .cpus_per_task
            .map_or("${SLURM_CPUS_PER_TASK:-1}".to_string(), |c| c.to_string());
        cmd += &format!(" --set experiment.threads={threads}");
    }
    cmd += &format!(" --shard \"$SLURM_ARRAY_TASK_ID/{shards}\"\n");
    s += &cmd;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let path = out.join("features.sbatch");
    let id = sbatch(&path, &s, &logs, opts.no_submit)?;
    Ok((path, id))
}

/// `--shard I/N` read: I in 0..N.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || Error::Config {
        location: "--shard".into(),
        key: "shard".into(),
        msg: format!("{s:?} is not I/N with 0 <= I < N (e.g. 0/8)"),
    };
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}
