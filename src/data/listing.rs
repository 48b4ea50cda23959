//! How the decoded sources (`frames`, `videos`) list a split: each clip's path, what it is made
//! of (frame images, or a video file) and its class id, and the `<split>/<class>/<clip>` folder
//! tree both read.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One clip to decode: where it is, what it is made of, its class id.
#[derive(Clone)]
pub(super) struct ClipRef {
    /// The clip folder, or the video file.
    pub path: PathBuf,
    pub media: Media,
    pub label: u32,
    /// Where its label was given: a list file and line, or the clip itself (line 0).
    pub at: (PathBuf, usize),
}

#[derive(Clone)]
pub(super) enum Media {
    /// A folder's frame files, in order.
    Images(Vec<PathBuf>),
    /// A video file, decoded by ffmpeg at `data.fps` (or every frame).
    Video,
}

/// The entries of `dir`, sorted by name.
pub(super) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// A `<split>/<class>/<clip>` tree: each clip (the entries `is_clip` accepts, in name order)
/// with its class id, and the class names (the folders', in name order). With `classes`
/// (training's), folders are mapped by name and an unknown one is an error. `layout` says
/// what was expected, for its errors.
#[allow(clippy::type_complexity)]
pub(super) fn tree(
    path: &Path,
    classes: Option<&[String]>,
    layout: &str,
    is_clip: impl Fn(&Path) -> bool,
) -> Result<(Vec<(PathBuf, u32)>, Vec<String>)> {
    let class_dirs: Vec<PathBuf> = sorted_entries(path)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if class_dirs.is_empty() {
        return Err(Error::data(
            path,
            0,
            format!("holds no class folders (expected {layout})"),
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
                Error::data(
                    dir,
                    0,
                    format!("class \"{name}\" is not among the training classes {known:?}"),
                )
            })?,
            None => names.iter().position(|c| c == name).unwrap_or(0),
        };
        let before = clips.len();
        for c in sorted_entries(dir)?.into_iter().filter(|p| is_clip(p)) {
            clips.push((c, label as u32));
        }
        if clips.len() == before {
            return Err(Error::data(
                dir,
                0,
                format!("class folder holds no clips (expected {layout})"),
            ));
        }
    }
    Ok((clips, names))
}

/// A split's clips: its list of clips and, for a folder tree, its class names.
pub(super) type Listing = (Vec<ClipRef>, Option<Vec<String>>);

/// A list file's lines as (1-based line number, whitespace-separated fields), blank lines and
/// `#` comments left out, and the folder its relative paths start from.
#[allow(clippy::type_complexity)]
pub(super) fn list_lines(path: &Path) -> Result<(PathBuf, Vec<(usize, Vec<String>)>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, l)| (n, l.split_whitespace().map(str::to_string).collect()))
        .collect();
    Ok((base, lines))
}
