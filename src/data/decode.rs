//! The decoded video sources, `frames` (folders of images: `frames.rs`) and `videos` (files
//! that ffmpeg decodes: `videos.rs`): their splits listed (folder trees, list files, or a
//! protocol's split files), the frames each split keeps chosen (`selection`), and every split
//! decoded once, on every core, a window of clips at a time, into a uint8 cache file under
//! `data.cache_dir` named by a hash of its inputs (paths, sizes, modification times), the frame
//! size and the frames chosen, beside an index of each clip's frame count. Batches then read
//! clips from that file, so memory holds a window of clips, never the dataset, and a second run
//! over the same files decodes nothing. Image folders are cut to their chosen frames before
//! decoding (only those files are read); a video's frames are chosen once it is decoded.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::clips::Cached;
use super::listing::{ClipRef, Listing, Media};
use super::selection::{self, FrameOrder};
use super::splits::{self, Parts, Which};
use super::{frames, videos, Clips, Dataset, FrameShape, Inputs, Split};
use crate::config::{Data, Protocol, Source};
use crate::error::{Error, Result};

/// Clips decoded per window (per core): what memory holds while a split is decoded.
const WINDOW_PER_THREAD: usize = 8;

/// A cache file's index: each clip's frame count (0: skipped), and the clips skipped with why.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    frames: Vec<usize>,
    skipped: Vec<(usize, String)>,
}

/// A split's cache file: FNV-1a over the frame size, the frames chosen, `data.fps` and every
/// clip's input files (path, size, modification time), so edited or re-extracted inputs miss
/// the cache.
fn cache_key(clips: &[ClipRef], shape: FrameShape, order: &FrameOrder, fps: f64) -> Result<u64> {
    let mut fnv = crate::fsutil::Fnv1a::new();
    fnv.eat(b"rnnlab-frames-v2");
    for v in [shape.channels, shape.height, shape.width, clips.len()] {
        fnv.eat(&(v as u64).to_le_bytes());
    }
    for v in order.fingerprint() {
        fnv.eat(&v.to_le_bytes());
    }
    fnv.eat(&fps.to_le_bytes());
    let file = |fnv: &mut crate::fsutil::Fnv1a, f: &Path| -> Result<()> {
        let meta = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        fnv.eat(f.as_os_str().as_encoded_bytes());
        fnv.eat(&meta.len().to_le_bytes());
        fnv.eat(&mtime.to_le_bytes());
        Ok(())
    };
    for c in clips {
        match &c.media {
            Media::Images(frames) => {
                fnv.eat(&(frames.len() as u64).to_le_bytes());
                for f in frames {
                    file(&mut fnv, f)?;
                }
            }
            Media::Video => file(&mut fnv, &c.path)?,
        }
    }
    Ok(fnv.0)
}

/// How a split is decoded: its frame size, the frames it keeps, ffmpeg's rate, whether a bad
/// video is skipped.
#[derive(Clone, Copy)]
struct Decoding {
    shape: FrameShape,
    fps: Option<f64>,
    skip_bad: bool,
}

/// One split decoded: the split (skipped clips left out), whether it was decoded now (not
/// found in the cache), and the clips skipped (`path: why`).
struct Decoded {
    split: Split,
    fresh: bool,
    skipped: Vec<String>,
}

/// Decodes a split's clips (each keeping the frames `order` gives it) into its cache file in
/// `dir`, or finds it there.
fn decode_cached(
    clips: &[ClipRef],
    mut order: FrameOrder,
    how: Decoding,
    dir: &Path,
) -> Result<Decoded> {
    let key = cache_key(clips, how.shape, &order, how.fps.unwrap_or(0.0))?;
    let path = dir.join(format!("frames-{key:016x}.u8"));
    let index_path = path.with_extension("json");
    let px = how.shape.pixels();
    let split = |index: &Index| -> Result<Decoded> {
        let lengths: Vec<usize> = index.frames.iter().map(|n| n * px).collect();
        let cached = Cached::open(&path, &lengths)?;
        let kept: Vec<usize> = (0..clips.len()).filter(|&i| index.frames[i] > 0).collect();
        let mut all = Split {
            inputs: Inputs::Frames {
                shape: how.shape,
                clips: Clips::Disk(cached),
            },
            labels: clips.iter().map(|c| c.label).collect(),
        };
        if kept.len() < clips.len() {
            all = all.subset(&kept);
        }
        Ok(Decoded {
            split: all,
            fresh: false,
            skipped: index
                .skipped
                .iter()
                .map(|(i, why)| format!("{}: {why}", clips[*i].path.display()))
                .collect(),
        })
    };
    let found = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
        .filter(|index| index.frames.len() == clips.len());
    if let Some(index) = found {
        // A file the index records as unreadable is refused without skip_bad, as a fresh
        // decode would refuse it (a decode without skip_bad records none).
        if let (false, Some((i, why))) = (how.skip_bad, index.skipped.first()) {
            return Err(Error::data(&clips[*i].path, 0, why.clone()));
        }
        if let Ok(decoded) = split(&index) {
            return Ok(decoded);
        }
    }
    // The folders this creates, outermost last: a failed decode (bad input) removes them again
    // if they are still empty, so an exit 2 leaves no empty results/.cache behind.
    let created: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = crate::fsutil::temp_sibling(&path);
    let written = write_decoded(clips, &mut order, how, &tmp).and_then(|index| {
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        let json = serde_json::to_vec(&index).unwrap_or_default();
        crate::fsutil::write_atomic(&index_path, &json)?;
        Ok(index)
    });
    match written {
        Ok(index) => Ok(Decoded {
            fresh: true,
            ..split(&index)?
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            for d in created {
                if std::fs::remove_dir(d).is_err() {
                    break;
                }
            }
            Err(e)
        }
    }
}

/// One clip's frames, all of them, CHW bytes frame after frame.
fn decode_clip(c: &ClipRef, how: Decoding) -> Result<Vec<u8>> {
    match &c.media {
        Media::Images(frames) => frames::decode_clip(&c.path, frames, how.shape),
        Media::Video => videos::decode(&c.path, how.shape, how.fps),
    }
}

/// Decodes `clips` window by window on every core, appending the frames `order` keeps of each
/// to `path`; returns the index. A clip that fails stops the decode, or with `skip_bad` (videos)
/// is counted and left out.
fn write_decoded(
    clips: &[ClipRef],
    order: &mut FrameOrder,
    how: Decoding,
    path: &Path,
) -> Result<Index> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let px = how.shape.pixels();
    let bar = crate::log::progress::count_bar(true, "decoding clips", clips.len());
    let mut index = Index::default();
    for window in clips.chunks(threads * WINDOW_PER_THREAD) {
        let chunk = window.len().div_ceil(threads).max(1);
        let decoded: Vec<Vec<Result<Vec<u8>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = window
                .chunks(chunk)
                .map(|part| s.spawn(move || part.iter().map(|c| decode_clip(c, how)).collect()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(Error::data("frames", 0, "a decoding thread panicked"))]
                    })
                })
                .collect()
        });
        for (c, got) in window.iter().zip(decoded.into_iter().flatten()) {
            match got {
                Ok(bytes) => {
                    let idx = order.next(bytes.len() / px.max(1));
                    if idx.iter().copied().eq(0..bytes.len() / px.max(1)) {
                        out.write_all(&bytes)
                    } else {
                        idx.iter()
                            .try_for_each(|&f| out.write_all(&bytes[f * px..(f + 1) * px]))
                    }
                    .map_err(|e| Error::io(path, e))?;
                    index.frames.push(idx.len());
                }
                Err(e) if how.skip_bad && matches!(c.media, Media::Video) => {
                    let why = match e {
                        Error::Data { msg, .. } => msg,
                        other => other.to_string(),
                    };
                    index.skipped.push((index.frames.len(), why));
                    index.frames.push(0);
                }
                Err(e) => return Err(e),
            }
        }
        bar.inc(window.len() as u64);
    }
    bar.finish_and_clear();
    let file = out
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(index)
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

/// Image folders cut to the frames `order` gives them (`frames_per_clip`, `shuffle_frames`),
/// in that order, before decoding.
fn select(clips: Vec<ClipRef>, order: &mut FrameOrder) -> Vec<ClipRef> {
    clips
        .into_iter()
        .map(|c| match c.media {
            Media::Images(frames) => {
                let idx = order.next(frames.len());
                ClipRef {
                    media: Media::Images(idx.iter().map(|&i| frames[i].clone()).collect()),
                    ..c
                }
            }
            Media::Video => c,
        })
        .collect()
}

/// A split's clips and declared class names from `train` / `valid` / `test` (folder trees or
/// list files, read by `list`), validation carved from train by clip where `valid` is absent.
#[allow(clippy::type_complexity)]
fn listed_clips(
    cfg: &Data,
    seed: u64,
    list: fn(&Path, Option<&[String]>) -> Result<Listing>,
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
    let Parts { train, valid, test } = splits::read(
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
    Ok((train, valid, test, declared))
}

/// The clips of a dataset's official split (`data.protocol`): its split files under
/// `annotations`; under `root`, each video (`videos`) or its frames folder (`frames`: the
/// video's path without the extension).
#[allow(clippy::type_complexity)]
fn protocol_clips(
    cfg: &Data,
    protocol: Protocol,
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
    let video = cfg.source == Source::Videos;
    let clips = |entries: &[super::protocol::Entry]| -> Result<Vec<ClipRef>> {
        entries
            .iter()
            .map(|e| {
                let path = root.join(&e.path);
                let (path, found, what) = if video {
                    let found = path.is_file();
                    (path, found, "no such video file")
                } else {
                    let dir = path.with_extension("");
                    let found = dir.is_dir();
                    (dir, found, "no frames folder (each video's frames in a folder named as the video without its extension)")
                };
                if !found {
                    return Err(Error::data(
                        &e.at.0,
                        e.at.1,
                        format!("lists {}: {what}: {}", e.path.display(), path.display()),
                    ));
                }
                if video {
                    return Ok(ClipRef {
                        path,
                        media: Media::Video,
                        label: e.label,
                        at: e.at.clone(),
                    });
                }
                frames::clip(path, e.label, e.at.clone())
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

/// The `frames` or `videos` dataset: train (required), valid (or carved from train), test
/// (with `test_views` views of each clip: `[eval] clips`).
pub fn dataset(cfg: &Data, seed: u64, test_views: usize) -> Result<Dataset> {
    let shape = FrameShape {
        channels: cfg.channels,
        height: cfg.height,
        width: cfg.width,
    };
    let video = cfg.source == Source::Videos;
    if video {
        videos::check_ffmpeg()?;
    }
    let mut notes = Vec::new();
    let (train_clips, valid_clips, test_clips, declared) = match cfg.protocol {
        Some(p) => {
            let (train, valid, test, classes) = protocol_clips(cfg, p, seed, &mut notes)?;
            (train, valid, Some(test), Some(classes))
        }
        None => {
            let list = if video { videos::list } else { frames::list };
            listed_clips(cfg, seed, list, &mut notes)?
        }
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
    // Each split's frames: image folders cut to them now (only those files are decoded),
    // videos once decoded. A video decoded without data.fps keeps frames_per_clip frames
    // spread over it in training too: the cache holds what every batch takes.
    let order = |which| {
        let order = selection::order(cfg, seed, which, test_views);
        match (which, cfg.fps) {
            (Which::Train, None) => order.keeping(cfg.frames_per_clip),
            _ => order,
        }
    };
    let prepare = |clips: Vec<ClipRef>, which| {
        if video {
            (clips, order(which))
        } else {
            (select(clips, &mut order(which)), FrameOrder::every())
        }
    };
    let train_clips = prepare(train_clips, Which::Train);
    let valid_clips = prepare(valid_clips, Which::Valid);
    let test_clips = test_clips.map(|c| prepare(c, Which::Test));
    let dir = match &cfg.cache_dir {
        Some(d) => d.clone(),
        None => PathBuf::from("results/.cache"),
    };
    let splits = [Some(&train_clips), Some(&valid_clips), test_clips.as_ref()];
    // Image folders: the frames to decode are known, and the room they need checked first.
    let listed_frames: usize = splits
        .iter()
        .flatten()
        .flat_map(|s| s.0.iter())
        .map(|c| match &c.media {
            Media::Images(f) => f.len(),
            Media::Video => 0,
        })
        .sum();
    if !video {
        check_space(&dir, (listed_frames * shape.pixels()) as u64)?;
    }
    let how = Decoding {
        shape,
        fps: cfg.fps,
        skip_bad: cfg.skip_bad,
    };
    let started = std::time::Instant::now();
    // Clips decoded now (not found in the cache), and the frames they keep.
    let (mut decoded, mut decoded_frames, mut skipped) = (0, 0, Vec::new());
    let mut load = |(clips, order): (Vec<ClipRef>, FrameOrder)| -> Result<Split> {
        let d = decode_cached(&clips, order, how, &dir)?;
        if d.fresh {
            decoded += clips.len();
            decoded_frames += (0..d.split.len())
                .map(|i| d.split.inputs.steps(i))
                .sum::<usize>();
        }
        skipped.extend(d.skipped);
        Ok(d.split)
    };
    let train = load(train_clips)?;
    let valid = load(valid_clips)?;
    let test = test_clips.map(&mut load).transpose()?;
    let secs = started.elapsed().as_secs_f64();
    let all = [Some(&train), Some(&valid), test.as_ref()];
    let clips: usize = all.iter().flatten().map(|s| s.len()).sum();
    let frames: usize = all
        .iter()
        .flatten()
        .map(|s| (0..s.len()).map(|i| s.inputs.steps(i)).sum::<usize>())
        .sum();
    notes.push(if decoded == 0 {
        format!(
            "{clips} clips ({frames} frames) read from the decoded cache in {}",
            dir.display()
        )
    } else {
        format!(
            "decoded {decoded} clips in {secs:.1} s ({:.1} clips/s, {:.0} frames/s kept) into {}; \
             later runs over the same {} read them from there",
            decoded as f64 / secs.max(1e-9),
            decoded_frames as f64 / secs.max(1e-9),
            dir.display(),
            if video { "videos" } else { "frames" }
        )
    });
    if !skipped.is_empty() {
        notes.push(format!(
            "skipped {} videos that could not be decoded (data.skip_bad; listed in summary.json): {}",
            skipped.len(),
            skipped
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok(Dataset {
        train,
        valid,
        test,
        vocab: None,
        classes,
        notes,
        skipped,
    })
}
