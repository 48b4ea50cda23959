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

use super::fused::resnet::{Folded, FoldedBlock, FoldedNet};
use super::provenance::Provenance;
use crate::config::{FrameEncoder, Model};
use crate::error::{Error, Result};

/// The stage a parameter belongs to: "conv1" for the stem (conv1, bn1), "layerN" otherwise.
fn stage_of(name: &str) -> &str {
    match name.split('.').next() {
        Some("conv1" | "bn1") | None => "conv1",
        Some(layer) => layer,
    }
}

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
    /// The depth `model.frame_encoder` names (resnet18 for a non-resnet, never asked).
    pub fn of(e: FrameEncoder) -> Depth {
        match e {
            FrameEncoder::Resnet34 => Depth::R34,
            FrameEncoder::Resnet50 => Depth::R50,
            _ => Depth::R18,
        }
    }

    /// As the config writes it: "resnet18".
    pub fn name(self) -> &'static str {
        match self {
            Depth::R18 => "resnet18",
            Depth::R34 => "resnet34",
            Depth::R50 => "resnet50",
        }
    }

    /// The parameters (not the running statistics) of the stages in `trains`, by
    /// torchvision's name: "conv1" is the stem (conv1, bn1), "layerN" its blocks.
    pub fn trainable(self, trains: &[String]) -> Vec<(String, Vec<usize>)> {
        self.shapes()
            .into_iter()
            .filter(|(n, _)| !n.contains(".running_"))
            .filter(|(n, _)| trains.iter().any(|s| stage_of(n) == s))
            .collect()
    }

    /// Values one frame's forward pass writes (every conv's output, the stem's pooled map):
    /// what the memory estimate sizes a frame's activations by.
    pub fn activations(self, height: usize, width: usize) -> usize {
        let out = |n: usize, k: usize| n.div_ceil(k);
        let (mut h, mut w) = (out(height, 2), out(width, 2));
        let mut total = 64 * h * w;
        (h, w) = (out(h, 2), out(w, 2));
        total += 64 * h * w;
        let expansion = if self.bottleneck() { 4 } else { 1 };
        for (stage, &n) in self.blocks().iter().enumerate() {
            let planes = 64 << stage;
            if stage > 0 {
                (h, w) = (out(h, 2), out(w, 2));
            }
            let per_block = if self.bottleneck() {
                2 * planes + planes * expansion
            } else {
                2 * planes
            };
            // Each block's convs, plus its sum with the skip.
            total += n * (per_block + planes * expansion) * h * w;
        }
        total
    }

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
    /// This convolution with its batch norm folded in (for the frozen fast path).
    fn folded(&self) -> Result<Folded> {
        let v =
            |x: &Var| -> Result<Vec<f32>> { Ok(x.as_tensor().flatten_all()?.to_vec1::<f32>()?) };
        let (cout, cin, k, _) = self.weight.as_tensor().dims4()?;
        let [g, b, m, var] = [
            v(&self.bn[0])?,
            v(&self.bn[1])?,
            v(&self.bn[2])?,
            v(&self.bn[3])?,
        ];
        Ok(Folded::new(
            &v(&self.weight)?,
            (cout, cin, k),
            [&g, &b, &m, &var],
            BN_EPS,
            self.stride,
            self.padding,
        ))
    }

    /// The affine batch norm applies in eval mode, [2, cout]: scale = w / sqrt(var + eps),
    /// shift = b - mean * scale (differentiable in w and b where the stage trains).
    fn affine(&self) -> Result<(Tensor, Tensor)> {
        let t = |v: &Var| {
            if self.trains {
                v.as_tensor().clone()
            } else {
                v.as_tensor().detach()
            }
        };
        let [w, b, mean, var] = &self.bn;
        let scale = t(w).broadcast_div(&(var.as_tensor().detach() + BN_EPS)?.sqrt()?)?;
        let shift = (t(b) - mean.as_tensor().detach().mul(&scale)?)?;
        Ok((scale, shift))
    }

    /// Whether this convolution runs as the fused CPU op: where a gradient is wanted (its
    /// weights train, or its input carries one through it).
    fn fused(&self, x: &Tensor) -> bool {
        x.device().is_cpu() && (self.trains || x.track_op())
    }

    /// conv -> batch norm (-> ReLU).
    fn forward(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let (scale, shift) = self.affine()?;
        let weight = if self.trains {
            self.weight.as_tensor().clone()
        } else {
            self.weight.as_tensor().detach()
        };
        if self.fused(x) {
            let op = super::fused::conv2d::Conv2d::new(self.stride, self.padding, relu);
            let affine = Tensor::stack(&[&scale, &shift], 0)?;
            return Ok(x.contiguous()?.apply_op3_arc(
                &weight.contiguous()?,
                &affine,
                std::sync::Arc::new(Box::new(op)),
            )?);
        }
        let y = x.conv2d(&weight, self.padding, self.stride, 1, 1)?;
        let c = scale.dim(0)?;
        let y = y
            .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?)?;
        Ok(if relu { y.relu()? } else { y })
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
            y = c.forward(&y, i < last)?;
        }
        let skip = match &self.downsample {
            Some(d) => d.forward(x, false)?,
            None => x.clone(),
        };
        if y.device().is_cpu() && (y.track_op() || skip.track_op()) {
            let skip = skip.contiguous()?;
            return Ok(y.apply_op2(&skip, super::fused::conv2d::AddRelu)?);
        }
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
    /// The frozen stages up to the first that trains (in blocks, stem excluded), folded for
    /// the CPU's fast path (`fused::resnet`); None when the stem trains or off the CPU.
    folded: Option<(FoldedNet, usize)>,
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
        let mut net = ResNet {
            depth,
            stem,
            stages,
            folded: None,
        };
        net.folded = net.fold()?;
        Ok(net)
    }

    /// The stem and the blocks before the first that trains, folded (None when the stem
    /// trains).
    fn fold(&self) -> Result<Option<(FoldedNet, usize)>> {
        if self.stem.trains {
            return Ok(None);
        }
        let mut blocks = Vec::new();
        for b in self.stages.iter().flatten() {
            if b.convs.iter().any(|c| c.trains) {
                break;
            }
            blocks.push(FoldedBlock {
                convs: b.convs.iter().map(ConvBn::folded).collect::<Result<_>>()?,
                downsample: b.downsample.as_ref().map(ConvBn::folded).transpose()?,
            });
        }
        let n = blocks.len();
        let net = FoldedNet {
            stem: self.stem.folded()?,
            blocks,
            mean: MEAN,
            std: STD,
        };
        Ok(Some((net, n)))
    }

    /// The encoder from a `.safetensors` state dict (see `from_tensors`).
    pub fn load(depth: Depth, file: &Path, train_stages: &[&str]) -> Result<ResNet> {
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        ResNet::from_bytes(depth, &bytes, train_stages, file)
    }

    /// [`ResNet::load`] from the file's bytes, on `device`.
    pub fn from_bytes(
        depth: Depth,
        bytes: &[u8],
        train_stages: &[&str],
        file: &Path,
    ) -> Result<ResNet> {
        let tensors = candle_core::safetensors::load_buffer(bytes, &candle_core::Device::Cpu)
            .map_err(|e| Error::data(file, 0, format!("cannot read weights: {e}")))?;
        ResNet::from_tensors(depth, tensors, train_stages, file)
    }

    /// The encoder a config asks for, with the stages `trains` names trainable, and where its
    /// weights came from.
    pub fn open(cfg: &Model, depth: Depth, trains: &[String]) -> Result<(ResNet, Provenance)> {
        let (bytes, prov) = Provenance::read(cfg, depth.name())?;
        let stages: Vec<&str> = trains.iter().map(String::as_str).collect();
        let net = ResNet::from_bytes(depth, &bytes, &stages, &prov.file)?;
        Ok((net, prov))
    }

    /// Moves every weight to `device`.
    pub fn to_device(self, device: &candle_core::Device) -> Result<ResNet> {
        if device.is_cpu() {
            return Ok(self);
        }
        let mv = |c: ConvBn| -> Result<ConvBn> {
            let v = |x: &Var| -> Result<Var> {
                Ok(Var::from_tensor(&x.as_tensor().to_device(device)?)?)
            };
            Ok(ConvBn {
                weight: v(&c.weight)?,
                bn: [v(&c.bn[0])?, v(&c.bn[1])?, v(&c.bn[2])?, v(&c.bn[3])?],
                ..c
            })
        };
        let mut stages = Vec::new();
        for stage in self.stages {
            let mut blocks = Vec::new();
            for b in stage {
                blocks.push(Block {
                    convs: b.convs.into_iter().map(mv).collect::<Result<_>>()?,
                    downsample: b.downsample.map(mv).transpose()?,
                });
            }
            stages.push(blocks);
        }
        Ok(ResNet {
            depth: self.depth,
            stem: mv(self.stem)?,
            stages,
            folded: None,
        })
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

    /// frames: [n, 3, h, w] in [0, 1] -> [n, features]. On the CPU the frozen stages run
    /// folded and channels-last (`fused::resnet`), the stages that train as candle ops.
    pub fn forward(&self, frames: &Tensor) -> Result<Tensor> {
        let Some((folded, covered)) = &self.folded else {
            return self.forward_composed(frames);
        };
        if !frames.device().is_cpu() {
            return self.forward_composed(frames);
        }
        let (n, _, h, w) = frames.dims4()?;
        let x = frames
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let rest: Vec<&Block> = self.stages.iter().flatten().skip(*covered).collect();
        let (out, (mh, mw, c)) = folded.forward(&x, (n, h, w), rest.is_empty());
        if rest.is_empty() {
            return Ok(Tensor::from_vec(out, (n, c), frames.device())?);
        }
        let mut x = Tensor::from_vec(out, (n, mh, mw, c), frames.device())?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        for block in rest {
            x = block.forward(&x)?;
        }
        Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
    }

    /// [`ResNet::forward`] with candle ops throughout: the reference the folded path is
    /// tested against, and the path off the CPU.
    pub fn forward_composed(&self, frames: &Tensor) -> Result<Tensor> {
        let dev = frames.device();
        let mean = Tensor::new(&MEAN, dev)?.reshape((1, 3, 1, 1))?;
        let std = Tensor::new(&STD, dev)?.reshape((1, 3, 1, 1))?;
        let x = frames.broadcast_sub(&mean)?.broadcast_div(&std)?;
        // A trained stem pools before its ReLU (see max_pool_3x3_s2); a frozen one after.
        let x = self.stem.forward(&x, !self.stem.trains)?;
        let mut x = if self.stem.trains {
            max_pool_3x3_s2(&x)?.relu()?
        } else {
            // Max-pool 3x3, stride 2, padding 1: after the ReLU every value is >= 0, so
            // padding with zeros picks the same maxima as PyTorch's -inf padding.
            x.pad_with_zeros(2, 1, 1)?
                .pad_with_zeros(3, 1, 1)?
                .max_pool2d_with_stride(3, 2)?
        };
        for block in self.stages.iter().flatten() {
            x = block.forward(&x)?;
        }
        Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
    }
}

/// A state dict of random weights in torchvision's names (He-uniform convs, batch norm near
/// but not the identity), seeded: for benchmarks, whose speed does not depend on the values,
/// and tests.
pub fn random_state_dict(depth: Depth, seed: u64) -> Result<HashMap<String, Tensor>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut map = HashMap::new();
    for (name, shape) in depth.shapes() {
        let n: usize = shape.iter().product();
        let (lo, hi) = if name.ends_with("running_var") {
            (0.8, 1.2)
        } else if name.ends_with("running_mean") || name.ends_with("bias") {
            (-0.1, 0.1)
        } else if shape.len() == 1 {
            (0.9, 1.1)
        } else {
            let b = (6.0 / (shape[1] * shape[2] * shape[3]) as f32).sqrt();
            (-b, b)
        };
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
        map.insert(name, Tensor::from_vec(v, shape, &candle_core::Device::Cpu)?);
    }
    Ok(map)
}

/// Max-pool 3x3, stride 2, padding 1 (PyTorch's, -inf padding) as the elementwise maximum of
/// nine strided views, so that it has a gradient (candle's max_pool2d has none for a window
/// wider than its stride). Taken before the ReLU (they commute): ties, which `maximum` splits
/// where PyTorch gives the first, are then ties of real values, not of zeros.
fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    // Padded to 2*o + 2 so every offset's view of 2*o rows (columns) fits.
    let (ph, pw) = (2 * oh + 2, 2 * ow + 2);
    let dev = x.device();
    let low = |shape: (usize, usize, usize, usize)| Tensor::full(f32::MIN, shape, dev);
    let x = Tensor::cat(
        &[low((n, c, 1, w))?, x.clone(), low((n, c, ph - h - 1, w))?],
        2,
    )?;
    let x = Tensor::cat(&[low((n, c, ph, 1))?, x, low((n, c, ph, pw - w - 1))?], 3)?;
    let mut out: Option<Tensor> = None;
    for dy in 0..3 {
        let rows = x
            .narrow(2, dy, 2 * oh)?
            .reshape((n, c, oh, 2, pw))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for dx in 0..3 {
            let v = rows
                .narrow(3, dx, 2 * ow)?
                .reshape((n, c, oh, ow, 2))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            out = Some(match out {
                Some(m) => m.maximum(&v)?,
                None => v,
            });
        }
    }
    Ok(out.ok_or_else(|| candle_core::Error::Msg("max pool: no window".into()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool with a gradient equals candle's max_pool2d on -inf padding.
    #[test]
    fn the_differentiable_max_pool_equals_max_pool2d() {
        for (h, w) in [(7, 7), (8, 6), (1, 2)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &candle_core::Device::Cpu).unwrap();
            let ours = max_pool_3x3_s2(&x).unwrap();
            let low = |s: (usize, usize, usize, usize)| {
                Tensor::full(f32::MIN, s, &candle_core::Device::Cpu).unwrap()
            };
            let p = Tensor::cat(&[low((2, 3, 1, w)), x.clone(), low((2, 3, 1, w))], 2).unwrap();
            let p = Tensor::cat(&[low((2, 3, h + 2, 1)), p, low((2, 3, h + 2, 1))], 3).unwrap();
            let want = p.max_pool2d_with_stride(3, 2).unwrap();
            assert_eq!(ours.dims(), want.dims(), "{h}x{w}");
            let d = (ours - want).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        }
    }

    /// The folded channels-last path equals the composed candle ops, every stage frozen and
    /// with layer3..4 training (the folded prefix then feeds the composed rest), for basic
    /// and bottleneck blocks, at odd frame sizes.
    #[test]
    fn the_folded_frozen_path_equals_the_composed_one() {
        for (depth, hw) in [(Depth::R18, (37, 45)), (Depth::R50, (32, 33))] {
            let tensors = random_state_dict(depth, 3).unwrap();
            let x = Tensor::rand(0f32, 1.0, (3, 3, hw.0, hw.1), &candle_core::Device::Cpu).unwrap();
            for trains in [&[][..], &["layer3", "layer4"][..]] {
                let net =
                    ResNet::from_tensors(depth, tensors.clone(), trains, Path::new("w")).unwrap();
                assert!(net.folded.is_some());
                let fast = net.forward(&x).unwrap();
                let slow = net.forward_composed(&x).unwrap();
                assert_eq!(fast.dims(), slow.dims());
                let err = (&fast - &slow)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let scale = slow
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    err <= 1e-4 * scale,
                    "{depth:?} {trains:?}: {err} of {scale}"
                );
            }
        }
    }

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
