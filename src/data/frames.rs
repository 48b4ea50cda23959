//! `source = "frames"`: clips stored as folders of frame images (PNG or JPEG, in name order),
//! the layout of UCF101 / HMDB frame dumps made with ffmpeg. A split is either a folder tree
//! `<split>/<class>/<clip>/<frames>` (classes in name order) or a list file of
//! `clip_dir num_frames label` lines (mmaction's rawframes format; relative clip folders are
//! found next to the list file). Each frame is resized to `height` x `width`, grey or RGB
//! (`channels`); with `frames_per_clip`, evaluation splits decode only their centred frames
//! (training keeps every frame and picks per batch). Clips are decoded up front, on every core,
//! after a memory check.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use super::{Dataset, FrameShape, Inputs, Split};
use crate::config::Data;
use crate::error::{Error, Result};

/// One clip to decode: its folder, its frame files in order, its class id.
struct ClipRef {
    dir: PathBuf,
    frames: Vec<PathBuf>,
    label: u32,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::data(path, 0, msg)
}

fn is_frame(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// A clip folder's frame files, in name order; a folder without any is an error.
pub fn clip_frames(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such clip folder"),
        ));
    }
    let frames: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| is_frame(p))
        .collect();
    if frames.is_empty() {
        return Err(bad(dir, "clip folder holds no frames (.png, .jpg, .jpeg)"));
    }
    Ok(frames)
}

/// The clips of a split and, for a folder tree, its class names.
fn list(path: &Path, classes: Option<&[String]>) -> Result<(Vec<ClipRef>, Vec<String>)> {
    if path.is_dir() {
        let class_dirs: Vec<PathBuf> = sorted_entries(path)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        if class_dirs.is_empty() {
            return Err(bad(
                path,
                "holds no class folders (expected <split>/<class>/<clip>/<frames>)",
            ));
        }
        let names: Vec<String> = class_dirs
            .iter()
            .map(|d| {
                d.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let mut clips = Vec::new();
        for (dir, name) in class_dirs.iter().zip(&names) {
            let label = match classes {
                Some(known) => known.iter().position(|c| c == name).ok_or_else(|| {
                    bad(
                        dir,
                        format!("class \"{name}\" is not among the training classes {known:?}"),
                    )
                })?,
                None => names.iter().position(|c| c == name).unwrap_or(0),
            };
            let clip_dirs: Vec<PathBuf> = sorted_entries(dir)?
                .into_iter()
                .filter(|p| p.is_dir())
                .collect();
            if clip_dirs.is_empty() {
                return Err(bad(dir, "class folder holds no clip folders"));
            }
            for c in clip_dirs {
                let frames = clip_frames(&c)?;
                clips.push(ClipRef {
                    dir: c,
                    frames,
                    label: label as u32,
                });
            }
        }
        return Ok((clips, names));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut clips = Vec::new();
    let mut top = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [dir, n, label] = parts[..] else {
            return Err(Error::data(
                path,
                i + 1,
                "expected `clip_dir num_frames label`",
            ));
        };
        let n: usize = n
            .parse()
            .map_err(|_| Error::data(path, i + 1, format!("num_frames \"{n}\" is not a count")))?;
        let label: u32 = label.parse().map_err(|_| {
            Error::data(path, i + 1, format!("label \"{label}\" is not a class id"))
        })?;
        let dir = base.join(dir);
        let frames = clip_frames(&dir)?;
        if frames.len() != n {
            return Err(Error::data(
                path,
                i + 1,
                format!(
                    "{} holds {} frames, the list says {n}",
                    dir.display(),
                    frames.len()
                ),
            ));
        }
        top = top.max(label as usize);
        clips.push(ClipRef { dir, frames, label });
    }
    if clips.is_empty() {
        return Err(bad(path, "lists no clips"));
    }
    let names = match classes {
        Some(c) => c.to_vec(),
        None => (0..=top.max(1)).map(|c| c.to_string()).collect(),
    };
    Ok((clips, names))
}

/// The frame indices `frames_per_clip` keeps of `t` (evenly spaced, centred), or all.
pub fn chosen(t: usize, keep: Option<usize>) -> Vec<usize> {
    match keep {
        Some(k) if k < t => (0..k).map(|i| ((2 * i + 1) * t) / (2 * k)).collect(),
        _ => (0..t).collect(),
    }
}

/// Decodes and resizes one frame to `shape`, CHW bytes.
pub fn decode(path: &Path, shape: FrameShape) -> Result<(Vec<u8>, (u32, u32))> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| bad(path, format!("cannot decode the image: {e}")))?;
    let size = (img.width(), img.height());
    let (w, h) = (shape.width as u32, shape.height as u32);
    let mut out = Vec::with_capacity(shape.pixels());
    if shape.channels == 1 {
        let g = image::imageops::resize(&img.to_luma8(), w, h, FilterType::Triangle);
        out.extend_from_slice(g.as_raw());
    } else {
        let rgb = image::imageops::resize(&img.to_rgb8(), w, h, FilterType::Triangle);
        for c in 0..3 {
            out.extend(rgb.as_raw().iter().skip(c).step_by(3));
        }
    }
    Ok((out, size))
}

/// Decodes one clip folder: the chosen frames, resized; frames of different sizes are an
/// error.
pub fn decode_clip(
    dir: &Path,
    frames: &[PathBuf],
    shape: FrameShape,
    keep: Option<usize>,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut first: Option<(u32, u32, &Path)> = None;
    for &i in &chosen(frames.len(), keep) {
        let (px, size) = decode(&frames[i], shape)?;
        match first {
            None => first = Some((size.0, size.1, &frames[i])),
            Some((w, h, p)) if (w, h) != size => {
                return Err(bad(
                    &frames[i],
                    format!(
                        "is {}x{}, but {} in the same clip ({}) is {w}x{h}",
                        size.0,
                        size.1,
                        p.display(),
                        dir.display()
                    ),
                ))
            }
            _ => {}
        }
        out.extend(px);
    }
    Ok(out)
}

fn decode_all(clips: &[ClipRef], shape: FrameShape, keep: Option<usize>) -> Result<Split> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = clips.len().div_ceil(threads).max(1);
    let decoded: Vec<Result<Vec<Vec<u8>>>> = std::thread::scope(|s| {
        let handles: Vec<_> = clips
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|c| decode_clip(&c.dir, &c.frames, shape, keep))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(bad(Path::new("frames"), "a decoding thread panicked")))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(clips.len());
    for d in decoded {
        out.extend(d?);
    }
    Ok(Split {
        inputs: Inputs::Frames { shape, clips: out },
        labels: clips.iter().map(|c| c.label).collect(),
    })
}

/// The `frames` dataset: train (required), valid (or carved from train), test.
pub fn dataset(cfg: &Data, seed: u64) -> Result<Dataset> {
    let train_path = cfg.train.as_deref().ok_or_else(|| Error::Config {
        location: "config".into(),
        key: "data.train".into(),
        msg: "source = \"frames\" needs train = a folder <class>/<clip>/<frames> or a list file"
            .into(),
    })?;
    let shape = FrameShape {
        channels: cfg.channels,
        height: cfg.height,
        width: cfg.width,
    };
    let (train_clips, mut classes) = list(train_path, cfg.class_names.as_deref())?;
    if let Some(names) = &cfg.class_names {
        classes = names.clone();
    }
    let known = Some(classes.as_slice());
    let valid_clips = cfg
        .valid
        .as_deref()
        .map(|p| list(p, known))
        .transpose()?
        .map(|v| v.0);
    let test_clips = cfg
        .test
        .as_deref()
        .map(|p| list(p, known))
        .transpose()?
        .map(|v| v.0);
    for c in [
        Some(&train_clips),
        valid_clips.as_ref(),
        test_clips.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(bad_label) = c.iter().find(|c| c.label as usize >= classes.len()) {
            return Err(bad(
                &bad_label.dir,
                format!("label {} has no class name ({classes:?})", bad_label.label),
            ));
        }
    }
    // Memory: every kept frame as bytes, checked before decoding anything.
    // Training keeps every frame (`frames_per_clip` picks them per batch, at a random offset);
    // evaluation splits only the centred ones.
    let frames: usize = train_clips.iter().map(|c| c.frames.len()).sum::<usize>()
        + [valid_clips.as_ref(), test_clips.as_ref()]
            .into_iter()
            .flatten()
            .flatten()
            .map(|c| chosen(c.frames.len(), cfg.frames_per_clip).len())
            .sum::<usize>();
    crate::memory::check(
        &[crate::memory::Part {
            bytes: (frames * shape.pixels()) as f64,
            what: format!(
                "{frames} decoded frames of {} x {} x {}",
                shape.channels, shape.height, shape.width
            ),
            key: "data.frames_per_clip",
        }],
        crate::memory::available(),
    )?;
    let mut notes = Vec::new();
    let started = std::time::Instant::now();
    let train = decode_all(&train_clips, shape, None)?;
    let (train, valid) = match valid_clips {
        Some(v) => (train, decode_all(&v, shape, cfg.frames_per_clip)?),
        None if train.len() < 2 => {
            return Err(bad(
                train_path,
                "one clip cannot be split into train and validation (give data.valid)",
            ))
        }
        None => {
            let (t, v) = super::tensors::carve(train, cfg.val_fraction, seed);
            // The carved validation clips get their centred frames like a valid split.
            let v = super::video::select_frames(
                v,
                &Data {
                    shuffle_frames: false,
                    ..cfg.clone()
                },
                seed,
            );
            notes.push(format!(
                "validation: {} clips carved from train (val_fraction {}, seed {seed})",
                v.len(),
                cfg.val_fraction
            ));
            (t, v)
        }
    };
    let test = test_clips
        .map(|c| decode_all(&c, shape, cfg.frames_per_clip))
        .transpose()?;
    let secs = started.elapsed().as_secs_f64();
    let clips = train.len() + valid.len() + test.as_ref().map_or(0, Split::len);
    notes.push(format!(
        "decoded {clips} clips ({frames} frames) in {secs:.1} s: {:.0} clips/s, {:.0} frames/s",
        clips as f64 / secs.max(1e-9),
        frames as f64 / secs.max(1e-9)
    ));
    let shuffle = |s: Split, k: u64| {
        let no_keep = Data {
            frames_per_clip: None,
            ..cfg.clone()
        };
        super::video::select_frames(s, &no_keep, seed.wrapping_mul(3) + k)
    };
    Ok(Dataset {
        train: shuffle(train, 1),
        valid: shuffle(valid, 2),
        test: test.map(|t| shuffle(t, 3)),
        vocab: super::text::Vocab::from_tokens(Vec::new()),
        classes,
        notes,
    })
}
