//! The many-to-one classifier: front end (token embedding; a dense projection of per-step
//! features or flattened frames; a CNN frame encoder; or features as they are) -> recurrent
//! stack -> readout over valid steps -> dropout -> linear head. Parameter names: `emb.weight` |
//! `proj.weight`, `proj.bias` | `encoder.*`; `rnn.*` as PyTorch; `head.weight`, `head.bias`.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var, D};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::architecture::Input;
use super::architecture::{Architecture, Front};
use super::cell::State;
use super::encoder::FrameEncoder as Cnn;
use super::provenance::Provenance;
use super::resnet::ResNet;
use super::stack::{dropout, lookup, window_cut, Flow, RunOpts, Stack, StackInput, StackOut};

use super::Params;
use crate::config::{Model, Readout};
use crate::error::Result;

/// Truncated BPTT over frames: how many frames the steps before the windows are encoded at a
/// time (without a graph).
const EARLY_FRAMES: usize = 64;

/// Inference on inputs longer than this (mean / max readout) runs this many steps at a time.
pub const STREAM_STEPS: usize = 4096;

enum FrontEnd {
    /// weight: [vocab, embedding_dim]
    Embedding(Tensor),
    /// weight: [embedding_dim, dim], bias: [embedding_dim]; frames are flattened first.
    Dense(Tensor, Tensor),
    /// Conv stack + global average pooling per frame.
    Cnn(Cnn),
    /// A pretrained ResNet per frame; features it computed beforehand (`[batch, seq, dim]`)
    /// pass straight through.
    ResNet(Box<ResNet>),
    /// Features go to the stack as they are.
    Identity,
}

pub struct Classifier {
    pub params: Params,
    front: FrontEnd,
    pub rnn: Stack,
    readout: Readout,
    dropout: f64,
    /// head_weight: [classes, directions * hidden]
    head_weight: Tensor,
    head_bias: Tensor,
    /// `model.freeze_embeddings`: `emb.weight` gets no gradient and no update.
    pub frozen_embedding: bool,
    /// A pretrained encoder's weights file (resolved) and its hash.
    pub encoder_weights: Option<Provenance>,
}

/// Forward-pass output: logits [batch, classes], when asked the gradient-flow handle, and
/// for token inputs the looked-up embeddings as a gradient leaf (see `embedding_grad`).
pub struct Forward {
    pub logits: Tensor,
    pub flow: Vec<(String, Flow)>,
    /// Gate statistics per layer and direction (`RunOpts::probe`; the fused op from its saved
    /// activations, the composed path step by step).
    pub gates: Vec<(String, super::fused::GateSink)>,
    pub tokens: Option<Looked>,
}

/// Embedding rows looked up for a batch: `rows` [batch, seq, emb] is a leaf of the graph
/// (backward stops there), `ids` [batch * seq] the rows they came from. Backward through
/// candle's index_select would build the dense [vocab, emb] gradient four times over (zeros,
/// copy, zeros in the gradient store, add); `embedding_grad` builds it once.
pub struct Looked {
    pub rows: Var,
    pub ids: Tensor,
}

impl Classifier {
    /// Parameters are drawn from a generator seeded by `seed` (PyTorch's init distributions).
    pub fn new(
        cfg: &Model,
        input: Input,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Classifier> {
        let arch = Architecture::of(cfg, input, classes)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = Params::default();
        let mut encoder_weights = None;
        let front = match &arch.front {
            Front::ResNet { depth, trains, .. } => {
                let (net, prov) = ResNet::open(cfg, *depth, trains)?;
                let net = net.to_device(device)?;
                for (name, var) in net.trainable() {
                    params.adopt(&format!("encoder.{name}"), var);
                }
                encoder_weights = Some(prov);
                FrontEnd::ResNet(Box::new(net))
            }
            Front::Embedding { vocab, dim } => FrontEnd::Embedding(params.normal(
                &mut rng,
                "emb.weight",
                &[*vocab, *dim],
                device,
            )?),
            Front::Dense { input, dim } => {
                let k = 1.0 / (*input as f64).sqrt();
                FrontEnd::Dense(
                    params.uniform(&mut rng, "proj.weight", &[*dim, *input], k, device)?,
                    params.uniform(&mut rng, "proj.bias", &[*dim], k, device)?,
                )
            }
            Front::Cnn {
                channels,
                widths,
                batch_norm,
                ..
            } => FrontEnd::Cnn(Cnn::new(
                &mut params,
                &mut rng,
                *channels,
                widths,
                *batch_norm,
                device,
            )?),
            Front::Identity { .. } => FrontEnd::Identity,
        };
        let input_size = arch.front.output_size();
        let rnn = Stack::new(
            &mut params,
            &mut rng,
            "rnn.",
            cfg.cell,
            cfg.nonlinearity,
            input_size,
            cfg.hidden_size,
            cfg.num_layers,
            cfg.bidirectional,
            cfg.dropout,
            &super::cell::Init::of(cfg),
            device,
        )?;
        let d = arch.output_size();
        let k = 1.0 / (d as f64).sqrt();
        let head_weight = params.uniform(&mut rng, "head.weight", &[classes, d], k, device)?;
        let head_bias = params.uniform(&mut rng, "head.bias", &[classes], k, device)?;
        Ok(Classifier {
            params,
            front,
            rnn,
            readout: cfg.readout,
            dropout: cfg.dropout,
            head_weight,
            head_bias,
            frozen_embedding: cfg.freeze_embeddings,
            encoder_weights,
        })
    }

    /// Overwrites embedding rows (pretrained vectors): `rows[i] = (token id, vector)`.
    pub fn set_embedding_rows(&self, rows: &[(u32, Vec<f32>)]) -> Result<()> {
        let Some(var) = self.params.get("emb.weight") else {
            return Ok(());
        };
        let (vocab, e) = var.as_tensor().dims2()?;
        let mut w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        for (id, v) in rows {
            let id = *id as usize;
            if id < vocab && v.len() == e {
                w[id * e..(id + 1) * e].copy_from_slice(v);
            }
        }
        var.set(&Tensor::from_vec(w, (vocab, e), var.device())?)?;
        Ok(())
    }

    /// inputs: ids [batch, seq] (u32), features [batch, seq, dim] or frames
    /// [batch, seq, channels, height, width] -> [batch, seq, stack input]. `training` switches
    /// batch norm to the batch's statistics; `no_grad` and `reference` as in [`RunOpts`].
    fn embed(
        &self,
        inputs: &Tensor,
        training: bool,
        no_grad: bool,
        reference: bool,
    ) -> Result<Tensor> {
        Ok(match &self.front {
            FrontEnd::Embedding(w) => lookup(w, inputs)?,
            FrontEnd::Dense(w, bias) => {
                let (b, t) = (inputs.dim(0)?, inputs.dim(1)?);
                inputs
                    .reshape((b * t, ()))?
                    .matmul(&w.t()?)?
                    .broadcast_add(bias)?
                    .reshape((b, t, ()))?
            }
            FrontEnd::Cnn(enc) => enc.forward(inputs, training, no_grad, reference)?,
            FrontEnd::ResNet(_) if inputs.rank() == 3 => inputs.clone(),
            FrontEnd::ResNet(net) => {
                let (b, t, c, h, w) = inputs.dims5()?;
                let x = inputs.reshape((b * t, c, h, w))?;
                let f = net.forward(&x)?;
                let f = if no_grad { f.detach() } else { f };
                f.reshape((b, t, ()))?
            }
            FrontEnd::Identity => inputs.clone(),
        })
    }

    /// Inference on a long input, `STREAM_STEPS` steps at a time: each chunk runs every layer
    /// from the state the previous chunk left, and the mean / max readout is accumulated over
    /// the chunks' valid steps, so no [batch, seq, hidden] output exists (memory independent
    /// of the length beyond the input). The last readout needs no streaming (the op keeps
    /// only final states); a bidirectional stack cannot stream (its reverse direction starts
    /// at the end).
    fn forward_streaming(&self, inputs: &Tensor, lengths: &[usize]) -> Result<Forward> {
        let (b, t) = (inputs.dim(0)?, inputs.dim(1)?);
        let device = inputs.device();
        let mut states: Option<Vec<State>> = None;
        let mut acc: Option<Tensor> = None;
        for s0 in (0..t).step_by(STREAM_STEPS) {
            let n = STREAM_STEPS.min(t - s0);
            let part = inputs.narrow(1, s0, n)?;
            // Valid steps of each row in this chunk (0 for a row that ended before it: the op
            // runs it one step, which nothing reads).
            let valid: Vec<usize> = lengths
                .iter()
                .map(|&l| l.saturating_sub(s0).min(n))
                .collect();
            let run_lengths: Vec<usize> = valid.iter().map(|&v| v.max(1)).collect();
            let (table, rows);
            let (input, tokens) = match &self.front {
                FrontEnd::Embedding(w) if part.dtype() == candle_core::DType::U32 => {
                    table = w.detach();
                    let input = StackInput::Lookup {
                        table: &table,
                        ids: &part,
                    };
                    (input, Some(&part))
                }
                FrontEnd::Cnn(_) | FrontEnd::ResNet(_) if part.rank() == 5 => {
                    rows = self.encode_early(&part)?;
                    (StackInput::Rows(&rows), None)
                }
                _ => {
                    rows = self.embed(&part, false, true, false)?;
                    (StackInput::Rows(&rows), None)
                }
            };
            let out = self.rnn.forward(
                input,
                RunOpts {
                    lengths: Some(&run_lengths),
                    no_grad: true,
                    tokens,
                    init: states.as_deref(),
                    ..Default::default()
                },
            )?;
            let top = out.out.as_ref().ok_or_else(|| {
                candle_core::Error::Msg("streaming: the stack kept no per-step output".into())
            })?;
            let part_acc = match self.readout {
                Readout::Mean => masked(top, &valid, 0.0)?.sum(1)?,
                _ => masked(top, &valid, f32::NEG_INFINITY)?.max(1)?,
            };
            acc = Some(match (acc, self.readout) {
                (None, _) => part_acc,
                (Some(a), Readout::Mean) => (a + part_acc)?,
                (Some(a), _) => a.maximum(&part_acc)?,
            });
            let layers = out.h_n.dim(0)?;
            states = Some(
                (0..layers)
                    .map(|l| {
                        Ok(State {
                            h: out.h_n.get(l)?,
                            c: out.c_n.as_ref().map(|c| c.get(l)).transpose()?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let acc = acc.ok_or_else(|| candle_core::Error::Msg("streaming: no steps".into()))?;
        let feat = match self.readout {
            Readout::Mean => {
                let n: Vec<f32> = lengths.iter().map(|&n| n as f32).collect();
                acc.broadcast_div(&Tensor::from_vec(n, (b, 1), device)?)?
            }
            _ => acc,
        };
        let logits = feat
            .matmul(&self.head_weight.t()?)?
            .broadcast_add(&self.head_bias)?;
        Ok(Forward {
            logits,
            flow: Vec::new(),
            gates: Vec::new(),
            tokens: None,
        })
    }

    /// True when a frame's features depend on the other frames of the batch: the CNN's
    /// batch norm in training mode (the ResNet's uses its running statistics).
    fn batch_statistics(&self) -> bool {
        matches!(&self.front, FrontEnd::Cnn(enc) if enc.batch_norm())
    }

    /// Features of frames [batch, seq, ...] without a graph, `EARLY_FRAMES` frames at a time
    /// (so neither the encoder's activations nor a contiguous copy of the frames exists for
    /// the whole span).
    fn encode_early(&self, frames: &Tensor) -> Result<Tensor> {
        let (b, t) = (frames.dim(0)?, frames.dim(1)?);
        let chunk = (EARLY_FRAMES / b.max(1)).max(1);
        let parts = (0..t)
            .step_by(chunk)
            .map(|s0| {
                let part = frames.narrow(1, s0, chunk.min(t - s0))?;
                Ok(self.embed(&part, false, true, false)?.detach())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// A pretrained encoder's features of frames [batch, seq, 3, h, w] -> [batch, seq, dim],
    /// without gradients (what the feature cache holds); other front ends as `forward` embeds.
    pub fn encode(&self, frames: &Tensor) -> Result<Tensor> {
        Ok(self.embed(frames, false, true, false)?.detach())
    }

    /// logits: [batch, classes]. `opts.dropout_rng` = Some switches on training-mode dropout.
    pub fn forward(&self, inputs: &Tensor, mut opts: RunOpts) -> Result<Forward> {
        let (b, t) = (inputs.dim(0)?, inputs.dim(1)?);
        let lengths: Vec<usize> = match opts.lengths {
            Some(l) => l.iter().map(|&n| n.clamp(1, t)).collect(),
            None => vec![t; b],
        };
        if opts.no_grad
            && !opts.reference
            && t > STREAM_STEPS
            && self.readout != Readout::Last
            && !self.rnn.bidirectional
            && inputs.device().is_cpu()
        {
            return self.forward_streaming(inputs, &lengths);
        }
        let cut = if opts.no_grad || opts.reference {
            0
        } else {
            window_cut(&lengths, opts.tbptt)
        };
        // Inference looks the rows up inside the stack (the fused op reads them straight from
        // the table); training keeps them as a variable for the embedding's gradient.
        let (table, rows);
        let (input, tokens) = match &self.front {
            FrontEnd::Embedding(w) if opts.no_grad => {
                table = w.detach();
                let input = StackInput::Lookup {
                    table: &table,
                    ids: inputs,
                };
                (input, None)
            }
            // Truncated BPTT on the CPU: the stack looks up only the rows its windows
            // backpropagate through (the embedding's gradient then comes from that lookup).
            FrontEnd::Embedding(w)
                if opts.tbptt > 0 && !self.rnn.bidirectional && inputs.device().is_cpu() =>
            {
                let input = StackInput::Lookup {
                    table: w,
                    ids: inputs,
                };
                (input, None)
            }
            FrontEnd::Embedding(_) => {
                let var =
                    Var::from_tensor(&self.embed(inputs, false, true, opts.reference)?.detach())?;
                rows = var.as_tensor().clone();
                let ids = inputs.flatten_all()?;
                (StackInput::Rows(&rows), Some(Looked { rows: var, ids }))
            }
            // Truncated BPTT over frames: the frames before every row's window are encoded
            // without a graph (no activations kept, no backward through the encoder), a chunk
            // of steps at a time. Exact where each frame's features depend on that frame alone
            // (no batch statistics); with batch norm in training mode every frame's features
            // depend on the whole batch of frames, and the clip is encoded whole.
            // Inference encodes every frame so, a chunk at a time (batch norm then uses its
            // running statistics).
            FrontEnd::Cnn(_) | FrontEnd::ResNet(_) if opts.no_grad && inputs.rank() == 5 => {
                rows = self.encode_early(inputs)?;
                (StackInput::Rows(&rows), None)
            }
            FrontEnd::Cnn(_) | FrontEnd::ResNet(_)
                if cut > 0 && inputs.rank() == 5 && !self.batch_statistics() =>
            {
                let early = self.encode_early(&inputs.narrow(1, 0, cut)?)?;
                let late = self.embed(
                    &inputs.narrow(1, cut, t - cut)?,
                    opts.dropout_rng.is_some(),
                    false,
                    false,
                )?;
                rows = Tensor::cat(&[&early, &late], 1)?;
                (StackInput::Rows(&rows), None)
            }
            FrontEnd::Dense(..) | FrontEnd::Cnn(_) | FrontEnd::ResNet(_) | FrontEnd::Identity => {
                rows = self.embed(
                    inputs,
                    opts.dropout_rng.is_some(),
                    opts.no_grad,
                    opts.reference,
                )?;
                (StackInput::Rows(&rows), None)
            }
        };
        // The ids behind the embedded rows (CPU only: the fused op is CPU-only).
        let ids = match &self.front {
            FrontEnd::Embedding(_)
                if inputs.device().is_cpu() && inputs.dtype() == candle_core::DType::U32 =>
            {
                Some(inputs)
            }
            _ => None,
        };
        let out = self.rnn.forward(
            input,
            RunOpts {
                lengths: Some(&lengths),
                tbptt: opts.tbptt,
                dropout_rng: opts.dropout_rng.as_deref_mut(),
                probe: opts.probe,
                reference: opts.reference,
                no_grad: opts.no_grad,
                final_only: self.readout == Readout::Last,
                tokens: ids,
                init: opts.init,
            },
        )?;
        let mut feat = readout(&out, &lengths, self.readout, self.rnn.bidirectional)?;
        if self.dropout > 0.0 {
            if let Some(rng) = opts.dropout_rng.as_deref_mut() {
                feat = dropout(&feat, self.dropout, rng)?;
            }
        }
        let logits = feat
            .matmul(&self.head_weight.t()?)?
            .broadcast_add(&self.head_bias)?;
        Ok(Forward {
            logits,
            flow: out.flow,
            gates: out.gates,
            tokens,
        })
    }

    /// The gradient of `emb.weight` after backward: the looked-up rows' gradients summed into
    /// a dense [vocab, emb] tensor (rows not in the batch are zero, as PyTorch's dense
    /// nn.Embedding gradient). None for the dense front end.
    pub fn embedding_grad(&self, fwd: &Forward, store: &GradStore) -> Result<Option<Tensor>> {
        let (FrontEnd::Embedding(w), Some(looked)) = (&self.front, &fwd.tokens) else {
            return Ok(None);
        };
        if self.frozen_embedding {
            return Ok(None);
        }
        let (vocab, e) = w.dims2()?;
        let Some(rows) = store.get(looked.rows.as_tensor()) else {
            return Ok(Some(w.zeros_like()?));
        };
        let rows = rows.reshape(((), e))?;
        if !w.device().is_cpu() {
            return Ok(Some(w.zeros_like()?.index_add(&looked.ids, &rows, 0)?));
        }
        let rows = rows.flatten_all()?.to_vec1::<f32>()?;
        let ids = looked.ids.to_vec1::<u32>()?;
        let mut dense = vec![0f32; vocab * e];
        for (id, row) in ids.iter().zip(rows.chunks_exact(e)) {
            let out = &mut dense[*id as usize * e..][..e];
            for (o, r) in out.iter_mut().zip(row) {
                *o += r;
            }
        }
        Ok(Some(Tensor::from_vec(dense, (vocab, e), w.device())?))
    }
}

/// Many-to-one readout over valid steps of the stack's output ([batch, seq, dirs*hidden],
/// zero at padding) -> [batch, dirs*hidden].
pub fn readout(
    out: &StackOut,
    lengths: &[usize],
    how: Readout,
    bidirectional: bool,
) -> Result<Tensor> {
    let seq = || {
        out.out.as_ref().ok_or_else(|| {
            candle_core::Error::Msg("readout: the stack kept no per-step output".into())
        })
    };
    let device = out.h_n.device();
    Ok(match how {
        Readout::Last => {
            // The top layer's final states: the forward direction at each sequence's last
            // valid step, the backward direction at step 0 (no copy of the whole output).
            let n = out.h_n.dim(0)?;
            let dirs = if bidirectional { 2 } else { 1 };
            let top = (n - dirs..n)
                .map(|i| out.h_n.get(i))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&top, 1)?
        }
        Readout::Mean => {
            let b = lengths.len();
            let n: Vec<f32> = lengths.iter().map(|&n| n as f32).collect();
            let n = Tensor::from_vec(n, (b, 1), device)?;
            seq()?.sum(1)?.broadcast_div(&n)?
        }
        Readout::Max => masked(seq()?, lengths, f32::NEG_INFINITY)?.max(1)?,
    })
}

/// `seq` [batch, steps, width] with every step at or after its row's `valid` count set to
/// `fill`.
fn masked(seq: &Tensor, valid: &[usize], fill: f32) -> Result<Tensor> {
    let (b, t, d) = seq.dims3()?;
    let mask: Vec<u8> = valid
        .iter()
        .flat_map(|&n| (0..t).map(move |s| (s < n) as u8))
        .collect();
    let mask = Tensor::from_vec(mask, (b, t, 1), seq.device())?.broadcast_as((b, t, d))?;
    let fill = Tensor::full(fill, (b, t, d), seq.device())?;
    Ok(mask.where_cond(seq, &fill)?)
}

/// Predicted class probabilities: softmax over logits [batch, classes].
pub fn probabilities(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(logits, D::Minus1)?)
}
