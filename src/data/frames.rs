//! `source = "frames"`: clips stored as folders of frame images (PNG or JPEG, in name order),
//! the layout of UCF101 / HMDB frame dumps made with ffmpeg. A split is either a folder tree
//! `<split>/<class>/<clip>/<frames>` (classes in name order) or a list file of
//! `clip_dir num_frames label` lines (mmaction's rawframes format; relative clip folders are
//! found next to the list file). Each frame is resized to `height` x `width`, grey or RGB
//! (`channels`); with `frames_per_clip`, evaluation splits decode only their centred frames
//! (training keeps every frame and picks per batch). Each split is decoded once, on every core,
//! a window of clips at a time, into a uint8 cache file under `data.cache_dir` named by a hash
//! of its frame files (paths, sizes, modification times), the frame size and the frame order;
//! batches then read clips from that file, so memory holds a window of clips, never the
//! folder, and a second run over the same files decodes nothing.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use std::io::Write;

use super::clips::Cached;
use super::selection;
use super::splits::{self, Parts, Which};
use super::{Clips, Dataset, FrameShape, Inputs, Split};
use crate::config::Data;
use crate::error::{Error, Result};

/// One clip to decode: its folder, its frame files in order, its class id.
#[derive(Clone)]
struct ClipRef {
    dir: PathBuf,
    frames: Vec<PathBuf>,
    label: u32,
    /// Where its label was given: a list file and line, or the clip folder (line 0).
    at: (PathBuf, usize),
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

/// The clips of a split and, for a folder tree, its class names (its folders'; a list file's
/// numeric labels are class ids and name none).
fn list(path: &Path, classes: Option<&[String]>) -> Result<(Vec<ClipRef>, Option<Vec<String>>)> {
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
                    at: (c.clone(), 0),
                    dir: c,
                    frames,
                    label: label as u32,
                });
            }
        }
        return Ok((clips, Some(names)));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut clips = Vec::new();
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
        clips.push(ClipRef {
            dir,
            frames,
            label,
            at: (path.to_path_buf(), i + 1),
        });
    }
    if clips.is_empty() {
        return Err(bad(path, "lists no clips"));
    }
    Ok((clips, None))
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
    for &i in &super::selection::chosen(frames.len(), keep) {
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

/// Clips decoded per window (per core): what memory holds while a split is decoded.
const WINDOW_PER_THREAD: usize = 8;

/// A split's cache file: FNV-1a over the frame size and every clip's frame files in order
/// (path, size, modification time), so edited or re-extracted frames miss the cache.
fn cache_key(clips: &[ClipRef], shape: FrameShape) -> Result<u64> {
    let mut fnv = crate::fsutil::Fnv1a::new();
    fnv.eat(b"rnnlab-frames-v1");
    for v in [shape.channels, shape.height, shape.width, clips.len()] {
        fnv.eat(&(v as u64).to_le_bytes());
    }
    for c in clips {
        fnv.eat(&(c.frames.len() as u64).to_le_bytes());
        for f in &c.frames {
            let meta = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            fnv.eat(f.as_os_str().as_encoded_bytes());
            fnv.eat(&meta.len().to_le_bytes());
            fnv.eat(&mtime.to_le_bytes());
        }
    }
    Ok(fnv.0)
}

/// Decodes a split's clips (each clip's `frames`, in order) into its cache file in `dir`, or
/// finds it there. Returns the split and whether it was decoded now.
fn decode_cached(clips: &[ClipRef], shape: FrameShape, dir: &Path) -> Result<(Split, bool)> {
    let lengths: Vec<usize> = clips
        .iter()
        .map(|c| c.frames.len() * shape.pixels())
        .collect();
    let labels = clips.iter().map(|c| c.label).collect();
    let path = dir.join(format!("frames-{:016x}.u8", cache_key(clips, shape)?));
    let split = |cached| Split {
        inputs: Inputs::Frames {
            shape,
            clips: Clips::Disk(cached),
        },
        labels,
    };
    if let Ok(cached) = Cached::open(&path, &lengths) {
        return Ok((split(cached), false));
    }
    // The folders this creates, outermost last: a failed decode (bad input) removes them again
    // if they are still empty, so an exit 2 leaves no empty results/.cache behind.
    let created: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = crate::fsutil::temp_sibling(&path);
    let written = write_decoded(clips, shape, &tmp)
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        for d in created {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
        }
        return Err(e);
    }
    Ok((split(Cached::open(&path, &lengths)?), true))
}

/// Decodes `clips` window by window on every core, appending each clip's bytes to `path`.
fn write_decoded(clips: &[ClipRef], shape: FrameShape, path: &Path) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    for window in clips.chunks(threads * WINDOW_PER_THREAD) {
        let chunk = window.len().div_ceil(threads).max(1);
        let decoded: Vec<Result<Vec<Vec<u8>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = window
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|c| decode_clip(&c.dir, &c.frames, shape, None))
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(bad(Path::new("frames"), "a decoding thread panicked"))
                    })
                })
                .collect()
        });
        for part in decoded {
            for clip in part? {
                out.write_all(&clip).map_err(|e| Error::io(path, e))?;
            }
        }
    }
    let file = out
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// Room for `bytes` of decoded clips under `dir` (or its nearest existing parent), else an
/// error naming `data.cache_dir`. Space already taken by this data's cache files counts as
/// free: they are reused.
fn check_space(dir: &Path, bytes: u64) -> Result<()> {
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => {
                probe = Path::new(".");
                break;
            }
        }
    }
    let Ok(c) = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()) else {
        return Ok(());
    };
    // SAFETY: statvfs writes into the zeroed struct it is given; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(());
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    let cached: u64 = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("frames-"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    if bytes > free + cached {
        return Err(Error::Config {
            location: "config".into(),
            key: "data.cache_dir".into(),
            msg: format!(
                "the decoded clips need {:.1} GiB in {}, which has {:.1} GiB free: \
                 point data.cache_dir at a larger disk, or keep fewer frames (frames_per_clip, \
                 height, width)",
                bytes as f64 / (1u64 << 30) as f64,
                dir.display(),
                free as f64 / (1u64 << 30) as f64
            ),
        });
    }
    Ok(())
}

/// Each clip keeps the frames `order` gives it (`frames_per_clip`, `shuffle_frames`), in that
/// order.
fn select(clips: Vec<ClipRef>, order: &mut selection::FrameOrder) -> Vec<ClipRef> {
    clips
        .into_iter()
        .map(|c| {
            let idx = order.next(c.frames.len());
            ClipRef {
                frames: idx.iter().map(|&i| c.frames[i].clone()).collect(),
                ..c
            }
        })
        .collect()
}

/// A split's clips and declared class names from `train` / `valid` / `test` (folder trees or
/// list files), validation carved from train by clip where `valid` is absent.
#[allow(clippy::type_complexity)]
fn listed_clips(
    cfg: &Data,
    seed: u64,
    notes: &mut Vec<String>,
) -> Result<(
    Vec<ClipRef>,
    Vec<ClipRef>,
    Option<Vec<ClipRef>>,
    Option<Vec<String>>,
)> {
    // Declared classes: data.class_names, else a folder tree's class folders. Other splits'
    // folders are mapped by these names (a list file's ids, named "0", "1", ...).
    let (mut declared, mut known) = (None, Vec::new());
    // Validation carved from train by clip, before decoding.
    let Parts {
        train: train_clips,
        valid: valid_clips,
        test: test_clips,
    } = splits::read(
        cfg,
        seed,
        "clip",
        |which, p| {
            if which != Which::Train {
                return Ok(list(p, Some(&known))?.0);
            }
            let (clips, tree) = list(p, cfg.class_names.as_deref())?;
            declared = cfg.class_names.clone().or(tree);
            known = declared.clone().unwrap_or_else(|| {
                let top = clips.iter().map(|c: &ClipRef| c.label).max().unwrap_or(0);
                (0..=top).map(|c| c.to_string()).collect()
            });
            Ok(clips)
        },
        Vec::len,
        |clips, keep, moved| {
            let pick =
                |idx: &[usize]| -> Vec<ClipRef> { idx.iter().map(|&i| clips[i].clone()).collect() };
            (pick(keep), pick(moved))
        },
        notes,
    )?;
    Ok((train_clips, valid_clips, test_clips, declared))
}

/// The clips of a dataset's official split (`data.protocol`): its split files under
/// `annotations`, each video's frames folder under `root` (its path without the extension).
#[allow(clippy::type_complexity)]
fn protocol_clips(
    cfg: &Data,
    protocol: crate::config::Protocol,
    seed: u64,
    notes: &mut Vec<String>,
) -> Result<(Vec<ClipRef>, Vec<ClipRef>, Vec<ClipRef>, Vec<String>)> {
    let (Some(root), Some(annotations)) = (&cfg.root, &cfg.annotations) else {
        return Err(Error::Config {
            location: "[data]".into(),
            key: "data.root".into(),
            msg: "a protocol needs root and annotations".into(),
        });
    };
    let listed = super::protocol::read(protocol, annotations, cfg.split, cfg.val_fraction, seed)?;
    let clips = |entries: &[super::protocol::Entry]| -> Result<Vec<ClipRef>> {
        entries
            .iter()
            .map(|e| {
                let dir = root.join(&e.path).with_extension("");
                if !dir.is_dir() {
                    return Err(Error::data(
                        &e.at.0,
                        e.at.1,
                        format!(
                            "lists {}: no frames folder {} (each video's frames in a folder named as the video without its extension)",
                            e.path.display(),
                            dir.display()
                        ),
                    ));
                }
                Ok(ClipRef {
                    frames: clip_frames(&dir)?,
                    dir,
                    label: e.label,
                    at: e.at.clone(),
                })
            })
            .collect()
    };
    let (train, valid, test) = (
        clips(&listed.train)?,
        clips(&listed.valid)?,
        clips(&listed.test)?,
    );
    let name = format!("{protocol:?}").to_lowercase();
    notes.push(format!(
        "{name} split {}: {} training, {} validation ({} of training by {}), {} test videos, {} classes",
        cfg.split,
        train.len(),
        valid.len(),
        cfg.val_fraction,
        if name == "ucf101" { "whole groups of each class" } else { "videos of each class" },
        test.len(),
        listed.classes.len()
    ));
    Ok((train, valid, test, listed.classes))
}

/// The `frames` dataset: train (required), valid (or carved from train), test.
pub fn dataset(cfg: &Data, seed: u64) -> Result<Dataset> {
    let shape = FrameShape {
        channels: cfg.channels,
        height: cfg.height,
        width: cfg.width,
    };
    let mut notes = Vec::new();
    let (train_clips, valid_clips, test_clips, declared) = match cfg.protocol {
        Some(p) => {
            let (train, valid, test, classes) = protocol_clips(cfg, p, seed, &mut notes)?;
            (train, valid, Some(test), Some(classes))
        }
        None => listed_clips(cfg, seed, &mut notes)?,
    };
    let train_path = cfg.train.as_deref().unwrap_or(Path::new(""));
    let ids = |c: &[ClipRef]| -> Vec<u32> { c.iter().map(|c| c.label).collect() };
    let (train_ids, valid_ids) = (ids(&train_clips), ids(&valid_clips));
    let test_ids = test_clips.as_deref().map(ids);
    let at_train = |i: usize| train_clips[i].at.clone();
    let at_valid = |i: usize| valid_clips[i].at.clone();
    let at_test = |i: usize| {
        test_clips
            .as_ref()
            .map_or((train_path.to_path_buf(), 0), |t| t[i].at.clone())
    };
    let classes = super::labels::classes(
        super::labels::Labeled::new("train", &train_ids, &at_train),
        super::labels::Labeled::new("valid", &valid_ids, &at_valid),
        test_ids
            .as_ref()
            .map(|t| super::labels::Labeled::new("test", t, &at_test)),
        declared.as_deref(),
        cfg.valid.is_none().then_some(cfg.val_fraction),
        &mut notes,
    )?;
    let select = |clips, which| select(clips, &mut selection::order(cfg, seed, which));
    let train_clips = select(train_clips, Which::Train);
    let valid_clips = select(valid_clips, Which::Valid);
    let test_clips = test_clips.map(|c| select(c, Which::Test));
    let dir = match &cfg.cache_dir {
        Some(d) => d.clone(),
        None => PathBuf::from("results/.cache"),
    };
    let splits = [Some(&train_clips), Some(&valid_clips), test_clips.as_ref()];
    let frames: usize = splits
        .iter()
        .flatten()
        .flat_map(|s| s.iter())
        .map(|c| c.frames.len())
        .sum();
    check_space(&dir, (frames * shape.pixels()) as u64)?;
    let started = std::time::Instant::now();
    // Clips and frames decoded now (not found in the cache).
    let (mut decoded, mut decoded_frames) = (0, 0);
    let mut load = |clips: &[ClipRef]| -> Result<Split> {
        let (split, fresh) = decode_cached(clips, shape, &dir)?;
        if fresh {
            decoded += clips.len();
            decoded_frames += clips.iter().map(|c| c.frames.len()).sum::<usize>();
        }
        Ok(split)
    };
    let train = load(&train_clips)?;
    let valid = load(&valid_clips)?;
    let test = test_clips.as_deref().map(&mut load).transpose()?;
    let secs = started.elapsed().as_secs_f64();
    let clips = train.len() + valid.len() + test.as_ref().map_or(0, Split::len);
    notes.push(if decoded == 0 {
        format!(
            "{clips} clips ({frames} frames) read from the decoded cache in {}",
            dir.display()
        )
    } else {
        format!(
            "decoded {decoded} clips in {secs:.1} s ({:.0} clips/s, {:.0} frames/s) into {}; \
             later runs over the same frames read them from there",
            decoded as f64 / secs.max(1e-9),
            decoded_frames as f64 / secs.max(1e-9),
            dir.display()
        )
    });
    Ok(Dataset {
        train,
        valid,
        test,
        vocab: None,
        classes,
        notes,
    })
}
