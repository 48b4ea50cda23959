//! `source = "videos"`: video files (.mp4, .avi, .mkv, .webm, .mov) decoded by the `ffmpeg`
//! program, the decoder every video toolkit wraps (`RNNLAB_FFMPEG` names another binary). A
//! split is a folder tree `<split>/<class>/<video>` (classes in name order), a list file of
//! `path label` lines (paths relative to the list file), or a protocol's split files. Each video
//! is decoded at `data.fps` frames per second (ffmpeg's fps filter), or every frame, and scaled
//! to `height` x `width`, grey or RGB; the frames each split keeps and the cache: `decode`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::listing::{self, ClipRef, Listing, Media};
use super::FrameShape;
use crate::error::{Error, Result};

/// The file extensions read as videos.
const EXTENSIONS: &[&str] = &["mp4", "avi", "mkv", "webm", "mov"];

fn is_video(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
}

/// The decoder: `RNNLAB_FFMPEG`, else `ffmpeg` on the PATH.
fn ffmpeg() -> PathBuf {
    std::env::var_os("RNNLAB_FFMPEG").map_or_else(|| PathBuf::from("ffmpeg"), PathBuf::from)
}

/// Bad input (exit 2) unless the ffmpeg program runs, saying how to install it.
pub fn check_ffmpeg() -> Result<()> {
    let program = ffmpeg();
    let ran = Command::new(&program)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match ran {
        Ok(s) if s.success() => Ok(()),
        _ => Err(Error::Config {
            location: "[data]".into(),
            key: "data.source".into(),
            msg: format!(
                "source = \"videos\" decodes with the ffmpeg program, and `{} -version` did not run: \
                 install it (Debian/Ubuntu: sudo apt-get install ffmpeg; Fedora: sudo dnf install \
                 ffmpeg; macOS: brew install ffmpeg; conda: conda install -c conda-forge ffmpeg), or \
                 point RNNLAB_FFMPEG at the binary",
                program.display()
            ),
        }),
    }
}

/// The videos of a split and, for a folder tree, its class names (a list file's numeric
/// labels are class ids and name none).
pub(super) fn list(path: &Path, classes: Option<&[String]>) -> Result<Listing> {
    let video = |path: PathBuf, label: u32, at: (PathBuf, usize)| ClipRef {
        path,
        media: Media::Video,
        label,
        at,
    };
    if path.is_dir() {
        let layout = "<split>/<class>/<video>.mp4|.avi|.mkv|.webm|.mov";
        let (clips, names) = listing::tree(path, classes, layout, is_video)?;
        let clips = clips
            .into_iter()
            .map(|(p, label)| video(p.clone(), label, (p, 0)))
            .collect();
        return Ok((clips, Some(names)));
    }
    let (base, lines) = listing::list_lines(path)?;
    let mut clips = Vec::new();
    for (n, fields) in lines {
        let [file, label] = &fields[..] else {
            return Err(Error::data(path, n, "expected `path label`"));
        };
        let label: u32 = label
            .parse()
            .map_err(|_| Error::data(path, n, format!("label \"{label}\" is not a class id")))?;
        let file = base.join(file);
        if !file.is_file() {
            return Err(Error::data(
                path,
                n,
                format!("no such video file: {}", file.display()),
            ));
        }
        clips.push(video(file, label, (path.to_path_buf(), n)));
    }
    if clips.is_empty() {
        return Err(Error::data(path, 0, "lists no videos"));
    }
    Ok((clips, None))
}

/// Decodes a video: every frame, or `fps` frames a second, scaled to `shape`, as CHW bytes
/// frame after frame. A file ffmpeg cannot read, or that yields no frames, is bad input
/// naming it and ffmpeg's own words.
pub fn decode(path: &Path, shape: FrameShape, fps: Option<f64>) -> Result<Vec<u8>> {
    let scale = format!("scale={}:{}:flags=bilinear", shape.width, shape.height);
    let filter = match fps {
        Some(f) => format!("fps={f},{scale}"),
        None => scale,
    };
    let out = Command::new(ffmpeg())
        .args([
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-threads",
            "1",
            "-i",
        ])
        .arg(path)
        .args(["-map", "0:v:0", "-vf", &filter, "-filter_threads", "1"])
        .args([
            "-pix_fmt",
            if shape.channels == 1 { "gray" } else { "rgb24" },
        ])
        .args(["-f", "rawvideo", "pipe:1"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(ffmpeg(), e))?;
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if !out.status.success() {
        return Err(Error::data(
            path,
            0,
            format!("ffmpeg cannot decode this video: {}", said.trim()),
        ));
    }
    let px = shape.pixels();
    if out.stdout.is_empty() || out.stdout.len() % px != 0 {
        return Err(Error::data(
            path,
            0,
            format!(
                "ffmpeg decoded {} bytes of frames from it (frames of {px}): it holds no video frames{}",
                out.stdout.len(),
                if said.is_empty() { String::new() } else { format!(" ({})", said.trim()) }
            ),
        ));
    }
    if shape.channels == 1 {
        return Ok(out.stdout);
    }
    // ffmpeg's rgb24 is HWC; frames are CHW.
    let hw = shape.height * shape.width;
    let mut chw = vec![0u8; out.stdout.len()];
    for (src, dst) in out.stdout.chunks(px).zip(chw.chunks_mut(px)) {
        for (i, p) in src.chunks(3).enumerate() {
            dst[i] = p[0];
            dst[hw + i] = p[1];
            dst[2 * hw + i] = p[2];
        }
    }
    Ok(chw)
}
