//! torchvision's ResNet as a frame encoder: resnet18 and resnet34 (basic blocks), resnet50
//! (bottleneck blocks), with torchvision's parameter names (`conv1.weight`, `bn1.*`,
//! `layer1.0.conv1.weight`, ..., `layer2.0.downsample.{0,1}.*`; `fc` dropped), ImageNet
//! normalisation of frames in [0, 1], and global average pooling to 512 (basic) or 2048
//! (bottleneck) features per frame. Batch norm always uses its running statistics (eval mode),
//! as a pretrained backbone under a recurrent head is used; the stages named trainable get
//! gradients, the others are detached.
//!
//! frames: [n, 3, height, width] in [0, 1] -> features [n, Depth::features()].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Tensor, Var, D};

use crate::error::{Error, Result};

/// ImageNet's per-channel mean and standard deviation (torchvision's pretrained weights).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// torchvision's BatchNorm2d epsilon.
const BN_EPS: f64 = 1e-5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    R18,
    R34,
    R50,
}

impl Depth {
    /// Blocks per stage (layer1..layer4).
    fn blocks(self) -> [usize; 4] {
        match self {
            Depth::R18 => [2, 2, 2, 2],
            Depth::R34 | Depth::R50 => [3, 4, 6, 3],
        }
    }

    fn bottleneck(self) -> bool {
        self == Depth::R50
    }

    /// Features per frame after pooling.
    pub fn features(self) -> usize {
        if self.bottleneck() {
            2048
        } else {
            512
        }
    }

    /// Every parameter and batch-norm statistic by torchvision's name and shape, in its order.
    pub fn shapes(self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let bn = |out: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize| {
            for p in ["weight", "bias", "running_mean", "running_var"] {
                out.push((format!("{name}.{p}"), vec![c]));
            }
        };
        out.push(("conv1.weight".into(), vec![64, 3, 7, 7]));
        bn(&mut out, "bn1", 64);
        let expansion = if self.bottleneck() { 4 } else { 1 };
        let mut inplanes = 64;
        for (stage, &n) in self.blocks().iter().enumerate() {
            let planes = 64 << stage;
            for b in 0..n {
                let at = format!("layer{}.{b}", stage + 1);
                let convs: Vec<(usize, usize, usize)> = if self.bottleneck() {
                    vec![
                        (planes, inplanes, 1),
                        (planes, planes, 3),
                        (planes * expansion, planes, 1),
                    ]
                } else {
                    vec![(planes, inplanes, 3), (planes, planes, 3)]
                };
                for (i, (o, c, k)) in convs.into_iter().enumerate() {
                    out.push((format!("{at}.conv{}.weight", i + 1), vec![o, c, k, k]));
                    bn(&mut out, &format!("{at}.bn{}", i + 1), o);
                }
                if b == 0 && (stage > 0 || inplanes != planes * expansion) {
                    out.push((
                        format!("{at}.downsample.0.weight"),
                        vec![planes * expansion, inplanes, 1, 1],
                    ));
                    bn(&mut out, &format!("{at}.downsample.1"), planes * expansion);
                }
                inplanes = planes * expansion;
            }
        }
        out
    }
}

/// A convolution (no bias) followed by batch norm in eval mode.
struct ConvBn {
    /// torchvision's names of the conv and its batch norm (`layer1.0.conv1`, `layer1.0.bn1`).
    names: (String, String),
    weight: Var,
    /// Batch norm: weight, bias, running mean, running var.
    bn: [Var; 4],
    stride: usize,
    padding: usize,
    /// Gets gradients (its stage trains).
    trains: bool,
}

impl ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let t = |v: &Var| {
            if self.trains {
                v.as_tensor().clone()
            } else {
                v.as_tensor().detach()
            }
        };
        let y = x.conv2d(&t(&self.weight), self.padding, self.stride, 1, 1)?;
        let [w, b, mean, var] = &self.bn;
        // y * scale + shift, scale = w / sqrt(var + eps), shift = b - mean * scale, per channel.
        let scale = t(w).broadcast_div(&(var.as_tensor().detach() + BN_EPS)?.sqrt()?)?;
        let shift = (t(b) - mean.as_tensor().detach().mul(&scale)?)?;
        let c = scale.dim(0)?;
        Ok(y.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?)?)
    }
}

struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, c) in self.convs.iter().enumerate() {
            y = c.forward(&y)?;
            if i < last {
                y = y.relu()?;
            }
        }
        let skip = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        Ok((y + skip)?.relu()?)
    }
}

/// A state dict being taken apart into the encoder's modules.
struct Weights<'a> {
    tensors: HashMap<String, Tensor>,
    /// Where it came from, for errors.
    file: &'a Path,
}

impl Weights<'_> {
    fn take(&mut self, name: &str) -> Result<Var> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| Error::data(self.file, 0, format!("missing weights: {name}")))?;
        Ok(Var::from_tensor(&t.to_dtype(candle_core::DType::F32)?)?)
    }

    fn conv_bn(
        &mut self,
        conv: &str,
        bn: &str,
        stride: usize,
        padding: usize,
        trains: bool,
    ) -> Result<ConvBn> {
        Ok(ConvBn {
            names: (conv.to_string(), bn.to_string()),
            weight: self.take(&format!("{conv}.weight"))?,
            bn: [
                self.take(&format!("{bn}.weight"))?,
                self.take(&format!("{bn}.bias"))?,
                self.take(&format!("{bn}.running_mean"))?,
                self.take(&format!("{bn}.running_var"))?,
            ],
            stride,
            padding,
            trains,
        })
    }

    /// Block `at` (`layer2.0`): basic or bottleneck, `stride` on its first 3x3 conv
    /// (torchvision: a basic block's conv1, a bottleneck's conv2) and on the downsample branch,
    /// which it has when the state dict does.
    fn block(&mut self, at: &str, bottleneck: bool, stride: usize, trains: bool) -> Result<Block> {
        let (pads, strided): (&[usize], usize) = if bottleneck {
            (&[0, 1, 0], 1)
        } else {
            (&[1, 1], 0)
        };
        let mut convs = Vec::new();
        for (i, &pad) in pads.iter().enumerate() {
            let st = if i == strided { stride } else { 1 };
            let (conv, bn) = (format!("{at}.conv{}", i + 1), format!("{at}.bn{}", i + 1));
            convs.push(self.conv_bn(&conv, &bn, st, pad, trains)?);
        }
        let downsample = if self
            .tensors
            .contains_key(&format!("{at}.downsample.0.weight"))
        {
            let (conv, bn) = (format!("{at}.downsample.0"), format!("{at}.downsample.1"));
            Some(self.conv_bn(&conv, &bn, stride, 0, trains)?)
        } else {
            None
        };
        Ok(Block { convs, downsample })
    }
}

pub struct ResNet {
    pub depth: Depth,
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
}

impl ResNet {
    /// The encoder from a state dict in torchvision's names (`fc.*` and `num_batches_tracked`
    /// ignored); `train_stages` ("conv1", "layer1".."layer4") get gradients. A missing,
    /// unexpected or mis-shaped key is an error naming the first few, against `file`.
    pub fn from_tensors(
        depth: Depth,
        mut tensors: HashMap<String, Tensor>,
        train_stages: &[&str],
        file: &Path,
    ) -> Result<ResNet> {
        tensors.retain(|k, _| !k.starts_with("fc.") && !k.ends_with("num_batches_tracked"));
        let shapes = depth.shapes();
        let first = |names: Vec<String>, what: &str| -> Result<()> {
            if names.is_empty() {
                return Ok(());
            }
            let more = if names.len() > 5 {
                format!(" (and {} more)", names.len() - 5)
            } else {
                String::new()
            };
            Err(Error::data(
                file,
                0,
                format!(
                    "{what} for {depth:?}: {}{more}",
                    names.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                ),
            ))
        };
        first(
            shapes
                .iter()
                .filter(|(n, _)| !tensors.contains_key(n))
                .map(|(n, _)| n.clone())
                .collect(),
            "missing weights",
        )?;
        let mut unexpected: Vec<String> = tensors
            .keys()
            .filter(|k| !shapes.iter().any(|(n, _)| n == *k))
            .cloned()
            .collect();
        unexpected.sort();
        first(unexpected, "unexpected weights")?;
        first(
            shapes
                .iter()
                .filter(|(n, s)| tensors[n].dims() != s.as_slice())
                .map(|(n, s)| format!("{n} is {:?}, expected {s:?}", tensors[n].dims()))
                .collect(),
            "mis-shaped weights",
        )?;
        let mut weights = Weights { tensors, file };
        let stem = weights.conv_bn("conv1", "bn1", 2, 3, train_stages.contains(&"conv1"))?;
        let mut stages = Vec::new();
        for (s, &n) in depth.blocks().iter().enumerate() {
            let stage = format!("layer{}", s + 1);
            let trains = train_stages.contains(&stage.as_str());
            let mut blocks = Vec::new();
            for b in 0..n {
                // The first block of layer2..4 halves the resolution.
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                let at = format!("{stage}.{b}");
                blocks.push(weights.block(&at, depth.bottleneck(), stride, trains)?);
            }
            stages.push(blocks);
        }
        Ok(ResNet {
            depth,
            stem,
            stages,
        })
    }

    /// The encoder from a `.safetensors` state dict (see `from_tensors`).
    pub fn load(depth: Depth, file: &Path, train_stages: &[&str]) -> Result<ResNet> {
        let tensors = candle_core::safetensors::load(file, &candle_core::Device::Cpu)
            .map_err(|e| Error::data(file, 0, format!("cannot read weights: {e}")))?;
        ResNet::from_tensors(depth, tensors, train_stages, file)
    }

    /// The parameters that get gradients (conv weights, batch-norm weights and biases of the
    /// stages that train) by torchvision's name, stem first.
    pub fn trainable(&self) -> Vec<(String, &Var)> {
        let blocks = self.stages.iter().flatten();
        let convs = blocks.flat_map(|b| b.convs.iter().chain(b.downsample.as_ref()));
        std::iter::once(&self.stem)
            .chain(convs)
            .filter(|c| c.trains)
            .flat_map(|c| {
                let (conv, bn) = &c.names;
                [
                    (format!("{conv}.weight"), &c.weight),
                    (format!("{bn}.weight"), &c.bn[0]),
                    (format!("{bn}.bias"), &c.bn[1]),
                ]
            })
            .collect()
    }

    /// frames: [n, 3, h, w] in [0, 1] -> [n, features].
    pub fn forward(&self, frames: &Tensor) -> Result<Tensor> {
        let dev = frames.device();
        let mean = Tensor::new(&MEAN, dev)?.reshape((1, 3, 1, 1))?;
        let std = Tensor::new(&STD, dev)?.reshape((1, 3, 1, 1))?;
        let x = frames.broadcast_sub(&mean)?.broadcast_div(&std)?;
        let x = self.stem.forward(&x)?.relu()?;
        // Max-pool 3x3, stride 2, padding 1: after the ReLU every value is >= 0, so padding
        // with zeros picks the same maxima as PyTorch's -inf padding.
        let x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let mut x = x.max_pool2d_with_stride(3, 2)?;
        for block in self.stages.iter().flatten() {
            x = block.forward(&x)?;
        }
        Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_torchvisions() {
        let n = |d: Depth| -> usize {
            d.shapes()
                .iter()
                .filter(|(n, _)| !n.contains("running_"))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum()
        };
        // torchvision's parameter counts without fc (11,689,512 - 513,000; 21,797,672 -
        // 513,000; 25,557,032 - 2,049,000).
        assert_eq!(n(Depth::R18), 11_176_512);
        assert_eq!(n(Depth::R34), 21_284_672);
        assert_eq!(n(Depth::R50), 23_508_032);
    }

    /// torchvision's BasicBlock and Bottleneck, each with stride 2 and a downsample branch,
    /// batch norm randomised and in eval mode (tests/fixtures/resnet/make_blocks.py): outputs
    /// and every parameter's gradient of sum(output * probe).
    #[test]
    fn blocks_match_torchvision() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/resnet/blocks.safetensors");
        let all = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
        let max_abs = |t: &Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let norm = |t: &Tensor| {
            let s = t
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            s.sqrt()
        };
        for (kind, bottleneck) in [("basic", false), ("bottleneck", true)] {
            let mut w = Weights {
                tensors: all.clone(),
                file: &path,
            };
            let block = w.block(kind, bottleneck, 2, true).unwrap();
            let y = block.forward(&all[&format!("{kind}.input")]).unwrap();
            let want = &all[&format!("{kind}.output")];
            assert_eq!(y.dims(), want.dims(), "{kind}");
            let err = max_abs(&(&y - want).unwrap());
            assert!(err <= 1e-5 * max_abs(want), "{kind}: output error {err}");
            let loss = (&y * &all[&format!("{kind}.probe")])
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            let convs = block.convs.iter().chain(block.downsample.as_ref());
            let mut checked = 0;
            for c in convs {
                let (conv, bn) = &c.names;
                for (name, var) in [
                    (format!("{conv}.weight"), &c.weight),
                    (format!("{bn}.weight"), &c.bn[0]),
                    (format!("{bn}.bias"), &c.bn[1]),
                ] {
                    let ours = grads.get(var.as_tensor()).unwrap();
                    let key = format!("{kind}.grad.{}", &name[kind.len() + 1..]);
                    let theirs = &all[&key];
                    let rel = norm(&(ours - theirs).unwrap()) / norm(theirs);
                    assert!(rel <= 1e-4, "{name}: relative error {rel}");
                    checked += 1;
                }
            }
            let in_fixture = all
                .keys()
                .filter(|k| k.starts_with(&format!("{kind}.grad.")))
                .count();
            assert_eq!(checked, in_fixture, "{kind}");
        }
    }
}
