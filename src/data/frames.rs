//! `source = "frames"`: clips stored as folders of frame images (PNG or JPEG, in name order),
//! the layout of UCF101 / HMDB frame dumps made with ffmpeg. A split is either a folder tree
//! `<split>/<class>/<clip>/<frames>` (classes in name order) or a list file of
//! `clip_dir num_frames label` lines (mmaction's rawframes format; relative clip folders are
//! found next to the list file). Each frame is resized to `height` x `width`, grey or RGB
//! (`channels`); with `frames_per_clip`, evaluation splits decode only the frames they score
//! (training keeps every frame and picks per batch). Decoding and its cache: `decode`.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use super::listing::{self, ClipRef, Listing, Media};
use super::FrameShape;
use crate::error::{Error, Result};

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

/// A clip folder's frame files, in name order; a folder without any is an error.
pub fn clip_frames(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such clip folder"),
        ));
    }
    let frames: Vec<PathBuf> = listing::sorted_entries(dir)?
        .into_iter()
        .filter(|p| is_frame(p))
        .collect();
    if frames.is_empty() {
        return Err(bad(dir, "clip folder holds no frames (.png, .jpg, .jpeg)"));
    }
    Ok(frames)
}

/// The clip folder at `dir`, labelled `label`, listed at `at`.
pub(super) fn clip(dir: PathBuf, label: u32, at: (PathBuf, usize)) -> Result<ClipRef> {
    Ok(ClipRef {
        media: Media::Images(clip_frames(&dir)?),
        path: dir,
        label,
        at,
    })
}

/// The clips of a split and, for a folder tree, its class names (its folders'; a list file's
/// numeric labels are class ids and name none).
pub(super) fn list(path: &Path, classes: Option<&[String]>) -> Result<Listing> {
    if path.is_dir() {
        let layout = "<split>/<class>/<clip>/<frames>";
        let (clips, names) = listing::tree(path, classes, layout, Path::is_dir)?;
        let clips = clips
            .into_iter()
            .map(|(dir, label)| clip(dir.clone(), label, (dir, 0)))
            .collect::<Result<_>>()?;
        return Ok((clips, Some(names)));
    }
    let (base, lines) = listing::list_lines(path)?;
    let mut clips = Vec::new();
    for (line, fields) in lines {
        let [dir, n, label] = &fields[..] else {
            return Err(Error::data(
                path,
                line,
                "expected `clip_dir num_frames label`",
            ));
        };
        let n: usize = n
            .parse()
            .map_err(|_| Error::data(path, line, format!("num_frames \"{n}\" is not a count")))?;
        let label: u32 = label
            .parse()
            .map_err(|_| Error::data(path, line, format!("label \"{label}\" is not a class id")))?;
        let dir = base.join(dir);
        let frames = clip_frames(&dir)?;
        if frames.len() != n {
            return Err(Error::data(
                path,
                line,
                format!(
                    "{} holds {} frames, the list says {n}",
                    dir.display(),
                    frames.len()
                ),
            ));
        }
        clips.push(ClipRef {
            path: dir,
            media: Media::Images(frames),
            label,
            at: (path.to_path_buf(), line),
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

/// Decodes frames `frames` of the clip folder `dir`, in that order, resized; frames of
/// different sizes are an error.
pub fn decode_clip(dir: &Path, frames: &[PathBuf], shape: FrameShape) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut first: Option<(u32, u32, &Path)> = None;
    for frame in frames {
        let (px, size) = decode(frame, shape)?;
        match first {
            None => first = Some((size.0, size.1, frame)),
            Some((w, h, p)) if (w, h) != size => {
                return Err(bad(
                    frame,
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
