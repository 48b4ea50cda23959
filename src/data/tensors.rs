//! `source = "tensors"`: safetensors files (or NumPy `.npz` bundles, or folders of `.npy` files
//! named after the tensors: `frames.npy`, `labels.npy`, ...) holding a split's clips as `frames`
//! [N, T, C, H, W] (u8 0..=255, or f32 in [0, 1], kept as 8 bits) or precomputed per-frame
//! features `features` [N, T, D] (f32, f16 or bf16: the common research shortcut), with
//! `labels` [N] (integers) and optionally `lengths` [N] (valid steps per sequence, the rest
//! padding). Class names come from `data.class_names`, else from the train file's safetensors
//! metadata (`classes`, a JSON list: what `run-exp features` writes), else "0", "1", ....
//! Every mismatch is an error naming the file and the tensor.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::selection;
use super::splits::{self, Parts, Which};
use super::{FrameShape, Inputs, Split};
use crate::error::{Error, Result};

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::data(path, 0, msg)
}

fn ints(path: &Path, name: &str, t: &Tensor) -> Result<Vec<i64>> {
    let n = match t.dims() {
        [n] => *n,
        d => {
            return Err(bad(
                path,
                format!("tensor \"{name}\" has shape {d:?}; expected [N]"),
            ))
        }
    };
    let v = match t.dtype() {
        DType::U8 | DType::U32 | DType::I64 => t.to_dtype(DType::I64)?.to_vec1::<i64>()?,
        other => {
            return Err(bad(
                path,
                format!("tensor \"{name}\" is {other:?}; expected integers (u8, u32 or i64)"),
            ))
        }
    };
    debug_assert_eq!(v.len(), n);
    Ok(v)
}

/// Reads one split.
pub fn read(path: &Path) -> Result<Split> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let npz = path.extension().and_then(|e| e.to_str()) == Some("npz");
    let map: HashMap<String, Tensor> = if path.is_dir() {
        read_npy_folder(path)?
    } else if npz {
        Tensor::read_npz(path)
            .map_err(|e| bad(path, format!("not a NumPy .npz file: {e}")))?
            .into_iter()
            .collect()
    } else {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?
    };
    let labels = map.get("labels").ok_or_else(|| {
        bad(
            path,
            format!("has no \"labels\" tensor (it has {:?})", keys(&map)),
        )
    })?;
    let labels = ints(path, "labels", labels)?;
    if let Some(l) = labels.iter().find(|&&l| l < 0 || l > u32::MAX as i64) {
        return Err(bad(
            path,
            format!("labels: {l} is not a class id (0, 1, ...)"),
        ));
    }
    let n = labels.len();
    let (data, name) = match (map.get("frames"), map.get("features")) {
        (Some(f), None) => (f, "frames"),
        (None, Some(f)) => (f, "features"),
        (Some(_), Some(_)) => {
            return Err(bad(
                path,
                "holds both \"frames\" and \"features\"; keep one",
            ))
        }
        (None, None) => {
            return Err(bad(
                path,
                format!(
                    "has neither \"frames\" [N,T,C,H,W] nor \"features\" [N,T,D] (it has {:?})",
                    keys(&map)
                ),
            ))
        }
    };
    let dims = data.dims().to_vec();
    let want_rank = if name == "frames" { 5 } else { 3 };
    if dims.len() != want_rank {
        return Err(bad(
            path,
            format!(
                "tensor \"{name}\" has shape {dims:?}; expected {}",
                if name == "frames" {
                    "[N, T, C, H, W]"
                } else {
                    "[N, T, D]"
                }
            ),
        ));
    }
    if dims[0] != n {
        return Err(bad(
            path,
            format!("\"{name}\" holds {} sequences but \"labels\" {n}", dims[0]),
        ));
    }
    let t = dims[1];
    let lengths: Vec<usize> = match map.get("lengths") {
        None => vec![t; n],
        Some(l) => {
            let l = ints(path, "lengths", l)?;
            if l.len() != n {
                return Err(bad(
                    path,
                    format!("\"lengths\" has {} entries but \"labels\" {n}", l.len()),
                ));
            }
            if let Some((i, v)) = l.iter().enumerate().find(|(_, &v)| v < 1 || v as usize > t) {
                return Err(bad(
                    path,
                    format!("lengths[{i}] = {v}; each must be in 1..={t}"),
                ));
            }
            l.into_iter().map(|v| v as usize).collect()
        }
    };
    let inputs = if name == "frames" {
        let shape = FrameShape {
            channels: dims[2],
            height: dims[3],
            width: dims[4],
        };
        let bytes: Vec<u8> = match data.dtype() {
            DType::U8 => data.flatten_all()?.to_vec1::<u8>()?,
            DType::F32 | DType::F16 | DType::BF16 => {
                let v = data.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                if let Some(x) = v.iter().find(|x| !(0.0..=1.0).contains(*x)) {
                    return Err(bad(
                        path,
                        format!("\"frames\" holds {x}; float frames must be in [0, 1]"),
                    ));
                }
                v.iter().map(|x| (x * 255.0).round() as u8).collect()
            }
            other => {
                return Err(bad(
                    path,
                    format!("\"frames\" is {other:?}; expected u8 or f32"),
                ))
            }
        };
        let per = t * shape.pixels();
        let clips = bytes
            .chunks(per.max(1))
            .zip(&lengths)
            .map(|(c, &len)| c[..len * shape.pixels()].to_vec())
            .collect::<Vec<_>>();
        Inputs::Frames {
            shape,
            clips: clips.into(),
        }
    } else {
        let dim = dims[2];
        let v = match data.dtype() {
            DType::F32 | DType::F16 | DType::BF16 | DType::F64 => {
                data.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?
            }
            other => {
                return Err(bad(
                    path,
                    format!("\"features\" is {other:?}; expected floats"),
                ))
            }
        };
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(bad(path, format!("\"features\" holds {x}")));
        }
        let seqs = v
            .chunks((t * dim).max(1))
            .zip(&lengths)
            .map(|(c, &len)| c[..len * dim].to_vec())
            .collect();
        Inputs::Features { dim, seqs }
    };
    Ok(Split {
        inputs,
        labels: labels.into_iter().map(|l| l as u32).collect(),
    })
}

/// A folder of `.npy` files (`np.save` of each array), each tensor named by its file's stem.
fn read_npy_folder(dir: &Path) -> Result<HashMap<String, Tensor>> {
    let mut map = HashMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let file = entry.map_err(|e| Error::io(dir, e))?.path();
        if file.extension().and_then(|e| e.to_str()) != Some("npy") {
            continue;
        }
        let Some(name) = file.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let t = Tensor::read_npy(&file)
            .map_err(|e| bad(&file, format!("not a NumPy .npy file: {e}")))?;
        map.insert(name.to_string(), t);
    }
    if map.is_empty() {
        return Err(bad(
            dir,
            "is a folder without .npy files (expected labels.npy and frames.npy or features.npy)",
        ));
    }
    Ok(map)
}

/// The class names a safetensors file's metadata holds (`__metadata__`, key `classes`, a JSON
/// list of strings, as `run-exp features` writes), read from its header only.
pub fn classes_in(path: &Path) -> Result<Option<Vec<String>>> {
    use std::io::Read;
    if path.is_dir() || path.extension().and_then(|e| e.to_str()) == Some("npz") {
        return Ok(None);
    }
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut n = [0u8; 8];
    if f.read_exact(&mut n).is_err() {
        return Ok(None);
    }
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 {
        return Ok(None);
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&header) else {
        return Ok(None);
    };
    let Some(classes) = header
        .get("__metadata__")
        .and_then(|m| m.get("classes"))
        .and_then(|c| c.as_str())
    else {
        return Ok(None);
    };
    serde_json::from_str::<Vec<String>>(classes)
        .map(Some)
        .map_err(|e| {
            bad(
                path,
                format!("metadata \"classes\" is not a JSON list of names: {e}"),
            )
        })
}

fn keys(map: &HashMap<String, Tensor>) -> Vec<&String> {
    let mut k: Vec<&String> = map.keys().collect();
    k.sort();
    k
}

/// What one step holds, to compare splits: features' width, or a frame's shape.
fn kind(s: &Split) -> String {
    match &s.inputs {
        Inputs::Tokens(_) => "token ids".into(),
        Inputs::Features { dim, .. } => format!("features of width {dim}"),
        Inputs::Frames { shape, .. } => format!(
            "frames of {} x {} x {}",
            shape.channels, shape.height, shape.width
        ),
    }
}

/// Images (a one-frame clip per example) as sequences of rows or pixels (`data.image_sequence`),
/// values in [0, 1]; `permute` visits the pixels in one order drawn from that seed, the same
/// for every image. `path` names the data in errors.
pub fn image_sequence(
    split: Split,
    how: crate::config::ImageSequence,
    permute: Option<u64>,
    path: &Path,
) -> Result<Split> {
    use crate::config::ImageSequence;
    let Inputs::Frames { shape, clips } = &split.inputs else {
        return Err(bad(
            path,
            "image_sequence reads images: the file holds features, not frames",
        ));
    };
    let (c, hw, w) = (shape.channels, shape.height * shape.width, shape.width);
    let (dim, order): (usize, Vec<usize>) = match how {
        // Step y: row y of every channel, side by side.
        ImageSequence::Rows => (c * w, (0..shape.height).collect()),
        ImageSequence::Pixels => {
            let mut order: Vec<usize> = (0..hw).collect();
            if let Some(seed) = permute {
                use rand::seq::SliceRandom;
                use rand::SeedableRng;
                order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            }
            (c, order)
        }
    };
    let mut seqs = Vec::with_capacity(split.len());
    for i in 0..split.len() {
        let px = clips.get(i)?;
        if px.len() != shape.pixels() {
            return Err(bad(
                path,
                format!(
                    "image_sequence reads one image per example; example {i} holds {} frames",
                    px.len() / shape.pixels().max(1)
                ),
            ));
        }
        let v = |ch: usize, at: usize| px[ch * hw + at] as f32 / 255.0;
        let seq: Vec<f32> = match how {
            ImageSequence::Rows => order
                .iter()
                .flat_map(|&y| (0..c).flat_map(move |ch| (0..w).map(move |x| (ch, y * w + x))))
                .map(|(ch, at)| v(ch, at))
                .collect(),
            ImageSequence::Pixels => order
                .iter()
                .flat_map(|&at| (0..c).map(move |ch| (ch, at)))
                .map(|(ch, at)| v(ch, at))
                .collect(),
        };
        seqs.push(seq);
    }
    Ok(Split {
        inputs: Inputs::Features { dim, seqs },
        labels: split.labels,
    })
}

/// The `tensors` dataset: train (required), valid (or carved from train), test.
pub fn dataset(cfg: &crate::config::Data, seed: u64, test_views: usize) -> Result<super::Dataset> {
    let mut notes = Vec::new();
    let Parts { train, valid, test } = splits::read(
        cfg,
        seed,
        "sequence",
        |which, p| {
            let split = read(p)?;
            if which == Which::Train && split.is_empty() {
                return Err(bad(p, "holds no sequences"));
            }
            Ok(split)
        },
        Split::len,
        |s, keep, moved| (s.subset(keep), s.subset(moved)),
        &mut notes,
    )?;
    let train_path = cfg.train.as_deref().unwrap_or(Path::new(""));
    let want = kind(&train);
    for (p, s) in [
        (cfg.valid.as_deref(), Some(&valid)),
        (cfg.test.as_deref(), test.as_ref()),
    ] {
        if let (Some(p), Some(s)) = (p, s) {
            if kind(s) != want {
                return Err(bad(
                    p,
                    format!("holds {}; the train file holds {want}", kind(s)),
                ));
            }
        }
    }
    let valid_path = cfg.valid.as_deref().unwrap_or(train_path);
    let test_path = cfg.test.as_deref().unwrap_or(train_path);
    let at_train = |_: usize| (train_path.to_path_buf(), 0);
    let at_valid = |_: usize| (valid_path.to_path_buf(), 0);
    let at_test = |_: usize| (test_path.to_path_buf(), 0);
    // Declared: data.class_names, else the names the train file's metadata holds.
    let in_file = match &cfg.class_names {
        Some(_) => None,
        None => classes_in(train_path)?,
    };
    let classes = super::labels::classes(
        super::labels::Labeled::new("train", &train.labels, &at_train),
        super::labels::Labeled::new("valid", &valid.labels, &at_valid),
        test.as_ref()
            .map(|t| super::labels::Labeled::new("test", &t.labels, &at_test)),
        cfg.class_names.as_deref().or(in_file.as_deref()),
        cfg.valid.is_none().then_some(cfg.val_fraction),
        &mut notes,
    )?;
    let (train, valid, test) = match cfg.image_sequence {
        Some(how) => {
            let path = cfg.train.as_deref().unwrap_or(Path::new(""));
            let order = |s| image_sequence(s, how, cfg.permute_seed, path);
            (order(train)?, order(valid)?, test.map(order).transpose()?)
        }
        None => (train, valid, test),
    };
    let select = |s: Split, which| selection::select(s, cfg, seed, which, test_views);
    Ok(super::Dataset {
        train: select(train, Which::Train),
        valid: select(valid, Which::Valid),
        test: test.map(|t| select(t, Which::Test)),
        vocab: None,
        classes,
        notes,
        skipped: Vec::new(),
    })
}

#[cfg(test)]
mod image_sequence_tests {
    use super::*;
    use crate::config::ImageSequence;

    /// Rows and pixels by hand on a 2 x 3 grey image and a 1 x 2 RGB one; a permutation is the
    /// same for every image and a permutation of the pixels; a clip of two frames is refused.
    #[test]
    fn images_become_rows_or_pixels_in_a_fixed_order() {
        let grey = |px: Vec<u8>, n: usize| Split {
            inputs: Inputs::Frames {
                shape: FrameShape {
                    channels: 1,
                    height: 2,
                    width: 3,
                },
                clips: vec![px; n].into(),
            },
            labels: vec![0; n],
        };
        let seqs = |s: Split| match s.inputs {
            Inputs::Features { dim, seqs } => (dim, seqs),
            _ => panic!("features expected"),
        };
        let img: Vec<u8> = vec![0, 51, 102, 153, 204, 255];
        let v = |k: u8| k as f32 / 255.0;
        let p = Path::new("x");
        let (dim, rows) =
            seqs(image_sequence(grey(img.clone(), 1), ImageSequence::Rows, None, p).unwrap());
        assert_eq!(dim, 3);
        assert_eq!(rows[0], img.iter().map(|&k| v(k)).collect::<Vec<_>>());
        let (dim, pixels) =
            seqs(image_sequence(grey(img.clone(), 1), ImageSequence::Pixels, None, p).unwrap());
        assert_eq!((dim, pixels[0].len()), (1, 6));
        assert_eq!(pixels[0], rows[0]);
        let (_, permuted) =
            seqs(image_sequence(grey(img.clone(), 2), ImageSequence::Pixels, Some(3), p).unwrap());
        assert_eq!(permuted[0], permuted[1], "one order for every image");
        assert_ne!(permuted[0], pixels[0]);
        let mut sorted = permuted[0].clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, pixels[0]);
        // RGB, 1 x 2: pixels carry their three channels; the row holds channel after channel.
        let rgb = Split {
            inputs: Inputs::Frames {
                shape: FrameShape {
                    channels: 3,
                    height: 1,
                    width: 2,
                },
                clips: vec![vec![10, 20, 30, 40, 50, 60]].into(),
            },
            labels: vec![1],
        };
        let (dim, px) = seqs(image_sequence(rgb.clone(), ImageSequence::Pixels, None, p).unwrap());
        assert_eq!(dim, 3);
        assert_eq!(px[0], [v(10), v(30), v(50), v(20), v(40), v(60)]);
        let (dim, row) = seqs(image_sequence(rgb, ImageSequence::Rows, None, p).unwrap());
        assert_eq!(
            (dim, row[0].clone()),
            (6, [10, 20, 30, 40, 50, 60].map(v).to_vec())
        );
        let clip = grey([img.clone(), img].concat(), 1);
        let e = image_sequence(clip, ImageSequence::Rows, None, p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("one image per example") && e.contains("2 frames"),
            "{e}"
        );
    }
}
