//! The CNN frame encoder (LRCN's front end): per conv width, Conv2d 3x3 with padding 1 ->
//! [BatchNorm2d] -> ReLU -> 2x2 max-pool, then global average pooling, applied to every frame
//! with time folded into the batch. Parameter names as an `nn.Sequential` of those layers would
//! give them: `encoder.0.weight`, `encoder.0.bias`, then `encoder.3.*` (without batch norm) or
//! `encoder.1.weight`, `.bias`, `.running_mean`, `.running_var` and `encoder.4.*` (with it).
//! Batch norm normalizes with the batch's statistics in training and its running statistics
//! (momentum 0.1, unbiased variance, eps 1e-5, as PyTorch) otherwise; they are buffers, saved
//! in every checkpoint.

use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;

use super::Params;
use crate::error::Result;

pub struct FrameEncoder {
    /// (weight [out, in, 3, 3], bias [out]) per block.
    convs: Vec<(Tensor, Tensor)>,
    /// Per block, with `model.batch_norm`.
    norms: Vec<BatchNorm>,
}

struct BatchNorm {
    /// weight, bias: [channels]; running mean and variance: [channels] buffers.
    weight: Tensor,
    bias: Tensor,
    mean: Var,
    var: Var,
}

use super::fused::conv::{BatchStats, ConvStack, BN_EPS};

const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm {
    /// x: [n, c, h, w]. `training`: the batch's statistics, and the running ones updated.
    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        let shape = (1, c, 1, 1);
        let (mean, var) = if training {
            let mean = x.mean_keepdim((0, 2, 3))?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
            self.update(
                &mean.detach().flatten_all()?,
                &var.detach().flatten_all()?,
                x.elem_count() / c,
            )?;
            (mean, var)
        } else {
            (
                self.mean.as_tensor().reshape(shape)?,
                self.var.as_tensor().reshape(shape)?,
            )
        };
        let xhat = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + BN_EPS)?.sqrt()?)?;
        Ok(xhat
            .broadcast_mul(&self.weight.reshape(shape)?)?
            .broadcast_add(&self.bias.reshape(shape)?)?)
    }

    /// Running statistics += momentum * (the batch's - running), with the batch's variance
    /// (biased, over `n` values a channel) made unbiased, as PyTorch.
    fn update(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let n = n as f64;
        let unbiased = (var * (n / (n - 1.0).max(1.0)))?;
        let m = BN_MOMENTUM;
        self.mean
            .set(&((self.mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
        self.var
            .set(&((self.var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
        Ok(())
    }
}

impl FrameEncoder {
    /// PyTorch's Conv2d init: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    pub fn new(
        params: &mut Params,
        rng: &mut StdRng,
        channels: usize,
        widths: &[usize],
        batch_norm: bool,
        device: &Device,
    ) -> Result<FrameEncoder> {
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut c = channels;
        let per_block = if batch_norm { 4 } else { 3 };
        for (k, &w) in widths.iter().enumerate() {
            let bound = 1.0 / ((c * 9) as f64).sqrt();
            let i = per_block * k;
            let weight = params.uniform(
                rng,
                &format!("encoder.{i}.weight"),
                &[w, c, 3, 3],
                bound,
                device,
            )?;
            let bias = params.uniform(rng, &format!("encoder.{i}.bias"), &[w], bound, device)?;
            convs.push((weight, bias));
            if batch_norm {
                let j = i + 1;
                norms.push(BatchNorm {
                    weight: params.add(
                        &format!("encoder.{j}.weight"),
                        Tensor::ones(w, candle_core::DType::F32, device)?,
                    )?,
                    bias: params.add(
                        &format!("encoder.{j}.bias"),
                        Tensor::zeros(w, candle_core::DType::F32, device)?,
                    )?,
                    mean: params.add_buffer(
                        &format!("encoder.{j}.running_mean"),
                        Tensor::zeros(w, candle_core::DType::F32, device)?,
                    )?,
                    var: params.add_buffer(
                        &format!("encoder.{j}.running_var"),
                        Tensor::ones(w, candle_core::DType::F32, device)?,
                    )?,
                });
            }
            c = w;
        }
        Ok(FrameEncoder { convs, norms })
    }

    /// The width of a frame's vector (the last conv's channels).
    pub fn output_size(&self) -> usize {
        self.convs.last().map_or(0, |(w, _)| w.dims()[0])
    }

    /// frames: [batch, seq, channels, height, width] -> [batch, seq, output_size]. `training`:
    /// batch norm uses (and updates) the batch's statistics. On the CPU the whole stack runs as
    /// one fused op (`fused::conv`); `reference` (or another device) composes candle ops.
    /// With `model.batch_norm`: in training each frame's features depend on the batch's.
    pub fn batch_norm(&self) -> bool {
        !self.norms.is_empty()
    }

    pub fn forward(
        &self,
        frames: &Tensor,
        training: bool,
        no_grad: bool,
        reference: bool,
    ) -> Result<Tensor> {
        if reference || !super::fused::available(frames) {
            return self.forward_composed(frames, training);
        }
        let (b, t, c, h, w) = frames.dims5()?;
        let x = frames
            .reshape((b * t, c, h, w))?
            .to_dtype(candle_core::DType::F32)?
            .contiguous()?
            .detach();
        let mut parts = Vec::new();
        for (k, (weight, bias)) in self.convs.iter().enumerate() {
            parts.push(weight.flatten_all()?);
            parts.push(bias.clone());
            if let Some(bn) = self.norms.get(k) {
                parts.push(bn.weight.clone());
                parts.push(bn.bias.clone());
            }
        }
        let mut packed = Tensor::cat(&parts, 0)?;
        if no_grad {
            packed = packed.detach();
        }
        let running = if training {
            None
        } else {
            let mut run = Vec::new();
            for bn in &self.norms {
                run.push((
                    bn.mean.as_tensor().to_vec1::<f32>()?,
                    bn.var.as_tensor().to_vec1::<f32>()?,
                ));
            }
            Some(run)
        };
        let stats = BatchStats::default();
        let widths = self.convs.iter().map(|(w, _)| w.dims()[0]).collect();
        let op = ConvStack::new(
            widths,
            !self.norms.is_empty(),
            running,
            !no_grad,
            stats.clone(),
        );
        let out = x.apply_op2_arc(&packed, std::sync::Arc::new(Box::new(op)))?;
        if training {
            let stats = match stats.lock() {
                Ok(mut s) => std::mem::take(&mut *s),
                Err(_) => Vec::new(),
            };
            let device = frames.device();
            for (m, bn) in stats.into_iter().zip(&self.norms) {
                let c = m.mean.len();
                bn.update(
                    &Tensor::from_vec(m.mean, c, device)?,
                    &Tensor::from_vec(m.var, c, device)?,
                    m.count,
                )?;
            }
        }
        Ok(out.reshape((b, t, ()))?)
    }

    /// forward with candle's conv2d, batch norm and max-pool: the reference the fused op is
    /// tested against, and the path on other devices.
    fn forward_composed(&self, frames: &Tensor, training: bool) -> Result<Tensor> {
        let (b, t, c, h, w) = frames.dims5()?;
        let mut x = frames.reshape((b * t, c, h, w))?;
        for (k, (weight, bias)) in self.convs.iter().enumerate() {
            let out = weight.dim(0)?;
            x = x
                .conv2d(weight, 1, 1, 1, 1)?
                .broadcast_add(&bias.reshape((1, out, 1, 1))?)?;
            if let Some(bn) = self.norms.get(k) {
                x = bn.forward(&x, training)?;
            }
            // Pooled before the ReLU (the two commute), so that a window of zeros after the ReLU
            // has no tie to split.
            x = max_pool(&x)?.relu()?;
        }
        let (n, d, _, _) = x.dims4()?;
        Ok(x.mean((2, 3))?.reshape((n / t.max(1), t, d))?)
    }
}

/// 2x2 max-pool, stride 2, dropping an odd last row or column (none below 2x2), as each
/// window's maximum over a reshape. Not candle's `max_pool2d`: its backward (0.11) multiplies
/// a window's gradient by (maxima in the window) / 4 where PyTorch passes it whole to the
/// first maximum, and maps odd sizes to the wrong rows.
fn max_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        return Ok(x.clone());
    }
    let (oh, ow) = (h / 2, w / 2);
    Ok(x.narrow(2, 0, 2 * oh)?
        .narrow(3, 0, 2 * ow)?
        .contiguous()?
        .reshape((n, c, oh, 2, ow, 2))?
        .max(5)?
        .max(3)?)
}
