//! Layers and directions of recurrent cells over a padded batch (PyTorch's nn.RNN / nn.LSTM /
//! nn.GRU with batch_first = true), with per-sequence lengths, dropout between layers,
//! truncated BPTT, and optional gradient probes for the gradient-flow diagnostics.
//!
//! Padding semantics follow packed sequences: the forward direction's state stops changing
//! after a sequence's last valid step, the backward direction starts at that step, and
//! outputs at padded steps are zero.

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;
use std::sync::{Arc, Mutex};

use super::cell::{Cell, State};
use super::fused::{self, FlowSink, GateSink, Recurrence};
pub use super::steps::window_cut;
use super::steps::StepMasks;
use super::Params;
use crate::config::{CellKind, Nonlinearity};
use crate::error::Result;

pub struct Stack {
    pub kind: CellKind,
    pub hidden: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    /// Dropout probability on each layer's output except the last (as PyTorch).
    pub dropout: f64,
    /// cells[layer][direction]
    pub cells: Vec<Vec<Cell>>,
}

/// The first layer's input: the rows themselves ([batch, seq, input]), or an embedding table
/// ([vocab, input]) and the token ids ([batch, seq], u32) to look up in it. In inference the
/// fused op reads a lookup straight from the table; everywhere else the rows are gathered first.
#[derive(Clone, Copy)]
pub enum StackInput<'a> {
    Rows(&'a Tensor),
    Lookup { table: &'a Tensor, ids: &'a Tensor },
}

impl<'a> From<&'a Tensor> for StackInput<'a> {
    fn from(rows: &'a Tensor) -> StackInput<'a> {
        StackInput::Rows(rows)
    }
}

/// The rows of `table` ([vocab, dim]) named by `ids` ([batch, seq]): [batch, seq, dim].
pub fn lookup(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    Ok(table
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((b, t, ()))?)
}

/// What one forward pass needs beyond the input.
#[derive(Default)]
pub struct RunOpts<'a> {
    /// Valid steps per sequence; None = every sequence fills the whole length.
    pub lengths: Option<&'a [usize]>,
    /// Truncated BPTT window (steps); 0 = full BPTT.
    pub tbptt: usize,
    /// Some = training mode: dropout masks drawn from this generator.
    pub dropout_rng: Option<&'a mut crate::EpochRng>,
    /// Measure ∂L/∂h_t for every step of every layer and direction (gradient flow), read
    /// after backward with `instruments::flow::by_timestep`.
    pub probe: bool,
    /// Use the composed-candle-ops reference implementation instead of the fused CPU op.
    pub reference: bool,
    /// Evaluation / inference: no backward will follow, so the fused op keeps no gate
    /// activations for it (less memory traffic) and the graph is not recorded.
    pub no_grad: bool,
    /// The caller reads only the final states (`StackOut::h_n`, `c_n`), not the top layer's
    /// per-step output: the fused op then hands just those to the graph, so backward builds
    /// no [batch, seq, hidden] gradients for the steps nothing reads.
    pub final_only: bool,
    /// The token id behind each row and step of the input ([batch, seq] u32 on the CPU) when
    /// it is an embedding lookup: the fused op then projects each distinct token once.
    pub tokens: Option<&'a Tensor>,
    /// Inference on the fused path (forward direction): each layer's state before the first
    /// step (a long input streamed a chunk of steps at a time). None = zeros.
    pub init: Option<&'a [State]>,
}

/// Where the per-step gradient norms come from after backward.
pub enum Flow {
    /// Reference path: a zero variable added to h_t at each step, whose gradient is ∂L/∂h_t,
    /// and (lstm) one added to c_t inside the step, whose gradient is ∂L/∂c_t; `shift[row]`
    /// right-aligns each row as the fused op does (seq - length forward, 0 reverse).
    Probes {
        h: Vec<Var>,
        c: Vec<Var>,
        shift: Vec<usize>,
    },
    /// Fused path: backward writes the per-step norms here; a truncated run's window (see
    /// `forward_truncated`) starts this many steps in, and the steps before it read 0 (no
    /// gradient reaches them).
    Sink(FlowSink, usize),
}

pub struct StackOut {
    /// out: [batch, seq, directions * hidden], top layer, zero at padded steps; None when
    /// `RunOpts::final_only` let the fused op skip it.
    pub out: Option<Tensor>,
    /// h_n: [layers * directions, batch, hidden] at each sequence's last valid step.
    pub h_n: Tensor,
    /// c_n: same shape as h_n, LSTM only.
    pub c_n: Option<Tensor>,
    /// Gradient-flow handles when `RunOpts::probe`, one per layer and direction, labelled as
    /// PyTorch suffixes their parameters ("l0", "l0_reverse", "l1", ...), bottom layer first.
    pub flow: Vec<(String, Flow)>,
    /// Gate statistics when `RunOpts::probe`, labelled as `flow`.
    pub gates: Vec<(String, GateSink)>,
}

impl StackOut {
    /// The stack's output from its top layer's steps and each layer and direction's final
    /// states (c: the LSTM's, else none).
    fn gather(
        out: Option<Tensor>,
        h_n: &[Tensor],
        c_n: &[Tensor],
        flow: Vec<(String, Flow)>,
        gates: Vec<(String, GateSink)>,
    ) -> Result<StackOut> {
        Ok(StackOut {
            out,
            h_n: Tensor::stack(h_n, 0)?,
            c_n: if c_n.is_empty() {
                None
            } else {
                Some(Tensor::stack(c_n, 0)?)
            },
            flow,
            gates,
        })
    }
}

impl Stack {
    /// Registers `{prefix}weight_ih_l{k}[_reverse]` etc. in PyTorch's order.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        params: &mut Params,
        rng: &mut StdRng,
        prefix: &str,
        kind: CellKind,
        nonlinearity: Nonlinearity,
        input: usize,
        hidden: usize,
        num_layers: usize,
        bidirectional: bool,
        dropout: f64,
        init: &super::cell::Init,
        device: &Device,
    ) -> Result<Stack> {
        let dirs = if bidirectional { 2 } else { 1 };
        let mut cells = Vec::new();
        for l in 0..num_layers {
            let in_l = if l == 0 { input } else { hidden * dirs };
            let mut layer = Vec::new();
            for d in 0..dirs {
                let suffix = super::cell::suffix(l, d);
                layer.push(Cell::new(
                    params,
                    rng,
                    prefix,
                    &suffix,
                    kind,
                    nonlinearity,
                    in_l,
                    hidden,
                    init,
                    device,
                )?);
            }
            cells.push(layer);
        }
        Ok(Stack {
            kind,
            hidden,
            num_layers,
            bidirectional,
            dropout,
            cells,
        })
    }

    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    pub fn output_size(&self) -> usize {
        self.hidden * self.directions()
    }

    /// The input's rows (`&Tensor`, [batch, seq, input]) or where to look them up.
    pub fn forward<'x>(
        &self,
        input: impl Into<StackInput<'x>>,
        mut opts: RunOpts,
    ) -> Result<StackOut> {
        let input = input.into();
        let (b, t, device) = match input {
            StackInput::Rows(x) => (x.dim(0)?, x.dim(1)?, x.device().clone()),
            StackInput::Lookup { ids, .. } => (ids.dim(0)?, ids.dim(1)?, ids.device().clone()),
        };
        let lengths: Vec<usize> = match opts.lengths {
            Some(l) => l.iter().map(|&n| n.clamp(1, t)).collect(),
            None => vec![t; b],
        };
        let fused = !opts.reference
            && match input {
                StackInput::Rows(x) => fused::available(x),
                StackInput::Lookup { table, .. } => fused::available(table),
            };
        let masks = StepMasks::new(&lengths, t, opts.tbptt, !fused, &device)?;
        // Truncated BPTT on the fused path: what comes before every row's window runs
        // without a graph (see `forward_truncated`).
        if fused && masks.cut > 0 && !opts.no_grad && !self.bidirectional {
            return self.forward_truncated(input, &masks, opts);
        }
        // A lookup the fused op reads itself (inference with the ids at hand): `input` is
        // then the table for the first layer.
        let from_table = matches!(input, StackInput::Lookup { .. })
            && fused
            && opts.no_grad
            && opts.tokens.is_some();
        let mut input = match input {
            StackInput::Rows(x) => x.clone(),
            StackInput::Lookup { table, .. } if from_table => table.clone(),
            StackInput::Lookup { table, ids } => lookup(table, ids)?,
        };
        let (mut h_n, mut c_n, mut flow, mut gates) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut top_out = None;
        for (l, layer) in self.cells.iter().enumerate() {
            let top = l + 1 == self.num_layers;
            let mut outs = Vec::new();
            for (d, cell) in layer.iter().enumerate() {
                let run = if fused {
                    let final_only = opts.final_only && top;
                    run_fused(
                        cell,
                        &input,
                        &masks,
                        d == 1,
                        opts.probe,
                        opts.no_grad,
                        final_only,
                        if l == 0 { opts.tokens } else { None },
                        l == 0 && from_table,
                        opts.init.and_then(|s| s.get(l)).filter(|_| d == 0),
                    )?
                } else {
                    run_direction(cell, &input, &masks, d == 1, opts.probe, &device)?
                };
                h_n.push(run.last.h);
                if let Some(c) = run.last.c {
                    c_n.push(c);
                }
                let label = super::cell::suffix(l, d);
                if let Some(g) = run.gates {
                    gates.push((label.clone(), g));
                }
                if let Some(f) = run.flow {
                    flow.push((label, f));
                }
                outs.push(run.out);
            }
            let Some(outs) = outs.into_iter().collect::<Option<Vec<_>>>() else {
                // Final states only (top layer).
                top_out = None;
                continue;
            };
            input = if outs.len() == 1 {
                outs[0].clone()
            } else {
                Tensor::cat(&outs, 2)?
            };
            if !top && self.dropout > 0.0 {
                if let Some(rng) = opts.dropout_rng.as_deref_mut() {
                    input = dropout(&input, self.dropout, rng)?;
                }
            }
            top_out = Some(input.clone());
        }
        StackOut::gather(top_out, &h_n, &c_n, flow, gates)
    }

    /// Truncated BPTT that keeps only what its gradient needs (fused CPU path, forward
    /// direction): the steps before the batch's earliest window (`masks.cut`) run the
    /// inference op — no activations kept, no backward through them — and the rest runs from
    /// the state they leave, with each row's own window inside it as before. The gradients are
    /// those of the whole-sequence op with the same windows; memory and backward follow the
    /// windows, not the sequence. Layer by layer: a lower layer's early outputs (values only)
    /// feed the next layer's early steps. An embedding lookup (`StackInput::Lookup`, training
    /// with truncation) is made for the late steps only: the op reads the early steps' rows
    /// from the table itself, so no [batch, seq, embedding] rows exist. A probed step measures
    /// the gradient flow of the window (0 before it, as in the whole-sequence op) and the gate
    /// statistics of the steps from `masks.cut` on.
    fn forward_truncated(
        &self,
        input: StackInput,
        masks: &StepMasks,
        mut opts: RunOpts,
    ) -> Result<StackOut> {
        let (b, t, cut) = (masks.lengths.len(), masks.t, masks.cut);
        let device = match input {
            StackInput::Rows(x) => x.device().clone(),
            StackInput::Lookup { table, .. } => table.device().clone(),
        };
        let early = StepMasks::new(&vec![cut; b], cut, 0, false, &device)?;
        let rest: Vec<usize> = masks.lengths.iter().map(|&n| n - cut).collect();
        let late = StepMasks::new(&rest, t - cut, opts.tbptt, false, &device)?;
        // The first layer's token ids, cut the same way (views: the ids are not copied).
        let ids = match (opts.tokens, &input) {
            (Some(ids), _) => Some(ids),
            (None, StackInput::Lookup { ids, .. }) => Some(*ids),
            _ => None,
        };
        let (mut tokens_early, mut tokens_late) = match ids {
            Some(ids) => (
                Some(ids.narrow(1, 0, cut)?),
                Some(ids.narrow(1, cut, t - cut)?),
            ),
            None => (None, None),
        };
        let (mut x_early, mut x_late, mut from_table) = match input {
            StackInput::Rows(x) => (
                x.narrow(1, 0, cut)?.detach(),
                x.narrow(1, cut, t - cut)?,
                false,
            ),
            StackInput::Lookup { table, ids } => (
                table.detach(),
                lookup(table, &ids.narrow(1, cut, t - cut)?)?,
                true,
            ),
        };
        let (mut h_n, mut c_n, mut flow, mut gates) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut top_out = None;
        for (l, layer) in self.cells.iter().enumerate() {
            let cell = &layer[0];
            let top = l + 1 == self.num_layers;
            let final_only = opts.final_only && top;
            let before = run_fused(
                cell,
                &x_early,
                &early,
                false,
                false,
                true,
                final_only,
                tokens_early.take().as_ref(),
                from_table,
                None,
            )?;
            from_table = false;
            let after = run_fused(
                cell,
                &x_late,
                &late,
                false,
                opts.probe,
                false,
                final_only,
                tokens_late.take().as_ref(),
                false,
                Some(&before.last),
            )?;
            h_n.push(after.last.h);
            if let Some(c) = after.last.c {
                c_n.push(c);
            }
            let label = super::cell::suffix(l, 0);
            if let Some(g) = after.gates {
                gates.push((label.clone(), g));
            }
            if let Some(Flow::Sink(sink, _)) = after.flow {
                flow.push((label, Flow::Sink(sink, cut)));
            }
            let (Some(e), Some(a)) = (before.out, after.out) else {
                top_out = None;
                continue;
            };
            let (mut e, mut a) = (e.detach(), a);
            if !top && self.dropout > 0.0 {
                if let Some(rng) = opts.dropout_rng.as_deref_mut() {
                    // One mask over the whole sequence, drawn as the uncut stack draws it.
                    let all = dropout(&Tensor::cat(&[&e, &a], 1)?, self.dropout, rng)?;
                    (e, a) = (
                        all.narrow(1, 0, cut)?.detach(),
                        all.narrow(1, cut, t - cut)?,
                    );
                }
            }
            if top {
                top_out = Some(Tensor::cat(&[&e, &a], 1)?);
            }
            (x_early, x_late) = (e, a);
        }
        StackOut::gather(top_out, &h_n, &c_n, flow, gates)
    }
}

/// Inverted dropout with a mask from a seeded generator (candle's CPU RNG cannot be seeded).
pub fn dropout(xs: &Tensor, p: f64, rng: &mut crate::EpochRng) -> Result<Tensor> {
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let mask: Vec<f32> = (0..xs.elem_count())
        .map(|_| if rng.random_bool(keep) { scale } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?;
    Ok(xs.mul(&mask)?)
}

struct DirectionRun {
    /// [batch, seq, hidden]; None when only the final state was asked for.
    out: Option<Tensor>,
    last: State,
    flow: Option<Flow>,
    gates: Option<GateSink>,
}

/// One direction through the fused CPU op (see `fused/`).
#[allow(clippy::too_many_arguments)]
fn run_fused(
    cell: &Cell,
    xs: &Tensor,
    masks: &StepMasks,
    reverse: bool,
    probe: bool,
    no_grad: bool,
    final_only: bool,
    tokens: Option<&Tensor>,
    from_table: bool,
    init: Option<&State>,
) -> Result<DirectionRun> {
    // xs: [batch, seq, input], or with `from_table` the embedding table that `tokens` index.
    let (b, t) = (masks.lengths.len(), masks.t);
    let h = cell.hidden;
    let sink: Option<FlowSink> = probe.then(FlowSink::default);
    let gates: Option<GateSink> = (probe && !no_grad).then(|| Arc::new(Mutex::new(Vec::new())));
    let mut op = Recurrence::new(
        cell.kind,
        cell.nonlinearity,
        h,
        masks.lengths.clone(),
        reverse,
        if reverse {
            None
        } else {
            masks.window_start.clone()
        },
        sink.clone(),
    );
    op.final_only = final_only;
    op.gates = gates.clone();
    if let Some(init) = init {
        let state = match &init.c {
            Some(c) => Tensor::cat(&[&init.h, c], 1)?,
            None => init.h.clone(),
        };
        op.init = Some(state.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?);
    }
    op.tokens = tokens.cloned();
    let res = if from_table {
        fused::run_from_table(op, xs, cell)?
    } else {
        fused::run(op, xs, cell, no_grad)?
    };
    let state = |last: &Tensor| -> Result<State> {
        Ok(State {
            h: last.narrow(1, 0, h)?,
            c: match cell.kind {
                CellKind::Lstm => Some(last.narrow(1, h, h)?),
                _ => None,
            },
        })
    };
    if final_only {
        // res: [batch, slots * hidden], each row's final state.
        return Ok(DirectionRun {
            out: None,
            last: state(&res)?,
            flow: sink.map(|s| Flow::Sink(s, 0)),
            gates,
        });
    }
    let slots = Recurrence::slots(cell.kind) * h;
    // Final state: each row's last valid step (forward) or step 0 (backward).
    let rows: Vec<u32> = masks
        .lengths
        .iter()
        .enumerate()
        .map(|(r, &n)| (r * t + if reverse { 0 } else { n - 1 }) as u32)
        .collect();
    let last = res
        .reshape((b * t, slots))?
        .index_select(&Tensor::new(rows, res.device())?, 0)?;
    Ok(DirectionRun {
        out: Some(res.narrow(2, 0, h)?),
        last: state(&last)?,
        flow: sink.map(|s| Flow::Sink(s, 0)),
        gates,
    })
}

fn run_direction(
    cell: &Cell,
    xs: &Tensor,
    masks: &StepMasks,
    reverse: bool,
    probe: bool,
    device: &Device,
) -> Result<DirectionRun> {
    let b = xs.dim(0)?;
    let xp = cell.project(xs)?;
    // Truncated BPTT applies to the forward direction (bidirectional + tbptt is rejected).
    let cut = if reverse { 0 } else { masks.cut };
    let (xp_early, cell_early) = if cut > 0 {
        (xp.detach(), cell.detached())
    } else {
        (xp.clone(), cell.clone())
    };
    let mut state = State::zeros(cell.kind, b, cell.hidden, device)?;
    let mut outs: Vec<Option<Tensor>> = vec![None; masks.t];
    let (mut probes, mut c_probes) = (Vec::new(), Vec::new());
    let mut tally = probe.then(|| GateTally::new(cell));
    let order: Box<dyn Iterator<Item = usize>> = if reverse {
        Box::new((0..masks.t).rev())
    } else {
        Box::new(0..masks.t)
    };
    for s in order {
        let early = s < cut;
        let (c, x) = if early {
            (&cell_early, &xp_early)
        } else {
            (cell, &xp)
        };
        let x_s = x.narrow(1, s, 1)?.squeeze(1)?;
        let valid = masks.valid.as_ref().map(|v| &v[s]);
        // A probe: a zero variable whose gradient is ∂L/∂(what it is added to), through both
        // the output and the recurrence; masked to zero where no gradient may arrive (padding,
        // before a truncated-BPTT window).
        let plant = |dims: &[usize]| -> Result<(Var, Tensor)> {
            let z = Var::zeros(dims, DType::F32, device)?;
            let mut add = if early {
                z.as_tensor().zeros_like()?
            } else {
                z.as_tensor().clone()
            };
            if let Some(v) = valid {
                add = add.broadcast_mul(v)?;
            }
            if let Some(w) = masks.in_window[s].as_ref().filter(|_| !reverse) {
                add = add.broadcast_mul(w)?;
            }
            Ok((z, add))
        };
        let c_probe = match (probe, cell.kind) {
            (true, CellKind::Lstm) => Some(plant(state.h.dims())?),
            _ => None,
        };
        let (mut next, acts) = c.step_full(&x_s, &state, c_probe.as_ref().map(|(_, add)| add))?;
        if let Some(t) = tally.as_mut() {
            t.add(&acts, valid)?;
        }
        if !early && !reverse {
            if let Some(w) = &masks.in_window[s] {
                next = next.blend(&next.detach(), w)?;
            }
        }
        if probe {
            let (z, add) = plant(next.h.dims())?;
            next.h = (&next.h + add)?;
            probes.push(z);
        }
        c_probes.extend(c_probe.map(|(z, _)| z));
        let out = match valid {
            Some(v) => next.h.broadcast_mul(v)?,
            None => next.h.clone(),
        };
        state = match valid {
            Some(v) => next.blend(&state, v)?,
            None => next,
        };
        outs[s] = Some(out);
    }
    let outs: Vec<Tensor> = outs.into_iter().flatten().collect();
    // By position in the sequence, as the fused op reports them.
    if reverse {
        probes.reverse();
        c_probes.reverse();
    }
    Ok(DirectionRun {
        out: Some(Tensor::stack(&outs, 1)?),
        last: state,
        flow: probe.then(|| Flow::Probes {
            h: probes,
            c: c_probes,
            shift: masks
                .lengths
                .iter()
                .map(|&n| if reverse { 0 } else { masks.t - n })
                .collect(),
        }),
        gates: match tally {
            Some(t) => Some(Arc::new(Mutex::new(t.stats()?))),
            None => None,
        },
    })
}

/// Gate statistics on the reference path, summed step by step over the valid steps as the
/// fused op's `Recurrence::gate_stats` computes them from its saved activations (same names,
/// same definitions). The sums stay on the device until `stats` reads them once.
struct GateTally {
    kind: CellKind,
    nonlinearity: Nonlinearity,
    hidden: usize,
    /// Running sums: the two gate means' (lstm input, forget; gru reset, update), the
    /// saturated gate values, and the valid (row, step) pairs seen.
    sums: [Option<Tensor>; 2],
    saturated: Option<Tensor>,
    cells: Option<Tensor>,
}

/// `acc += t` (a scalar tensor), starting from `t`.
fn accumulate(acc: &mut Option<Tensor>, t: Tensor) -> Result<()> {
    *acc = Some(match acc.take() {
        Some(a) => (a + t)?,
        None => t,
    });
    Ok(())
}

impl GateTally {
    fn new(cell: &Cell) -> GateTally {
        GateTally {
            kind: cell.kind,
            nonlinearity: cell.nonlinearity,
            hidden: cell.hidden,
            sums: [None, None],
            saturated: None,
            cells: None,
        }
    }

    /// One step's activations (`Cell::step_full`), `valid` [batch, 1] or all rows.
    fn add(&mut self, acts: &[Tensor], valid: Option<&Tensor>) -> Result<()> {
        let total = |t: Tensor| -> Result<Tensor> {
            let t = t.to_dtype(DType::F32)?;
            let t = match valid {
                Some(v) => t.broadcast_mul(v)?,
                None => t,
            };
            // The step's sum in f32, the running sums in f64 (counts pass 2^24).
            Ok(t.sum_all()?.to_dtype(DType::F64)?)
        };
        let sig_sat = |v: &Tensor| -> Result<Tensor> {
            total((v.lt(0.01)?.to_dtype(DType::F32)? + v.gt(0.99)?.to_dtype(DType::F32)?)?)
        };
        let tanh_sat = |v: &Tensor| -> Result<Tensor> { total(v.abs()?.gt(0.99)?) };
        let Some(first) = acts.first() else {
            return Ok(());
        };
        let rows = match valid {
            Some(v) => v.sum_all()?.to_dtype(DType::F64)?,
            None => Tensor::new(first.dims()[0] as f64, first.device())?,
        };
        accumulate(&mut self.cells, rows)?;
        let acts: Vec<Tensor> = acts.iter().map(Tensor::detach).collect();
        let saturated = match (self.kind, &acts[..]) {
            (CellKind::Rnn, [h]) => match self.nonlinearity {
                Nonlinearity::Tanh => tanh_sat(h)?,
                Nonlinearity::Relu => total(h.eq(0.0)?)?,
            },
            (CellKind::Lstm, [i, f, g, o]) => {
                accumulate(&mut self.sums[0], total(i.clone())?)?;
                accumulate(&mut self.sums[1], total(f.clone())?)?;
                (((sig_sat(i)? + sig_sat(f)?)? + sig_sat(o)?)? + tanh_sat(g)?)?
            }
            (CellKind::Gru, [r, z, n]) => {
                accumulate(&mut self.sums[0], total(r.clone())?)?;
                accumulate(&mut self.sums[1], total(z.clone())?)?;
                ((sig_sat(r)? + sig_sat(z)?)? + tanh_sat(n)?)?
            }
            _ => return Ok(()),
        };
        accumulate(&mut self.saturated, saturated)
    }

    fn stats(&self) -> Result<Vec<(&'static str, f64)>> {
        let read = |t: &Option<Tensor>| -> Result<f64> {
            Ok(match t {
                Some(t) => t.to_scalar::<f64>()?,
                None => 0.0,
            })
        };
        let n = read(&self.cells)? * self.hidden as f64;
        if n == 0.0 {
            return Ok(Vec::new());
        }
        let (means, saturated) = (
            [read(&self.sums[0])? / n, read(&self.sums[1])? / n],
            read(&self.saturated)?,
        );
        Ok(match self.kind {
            CellKind::Rnn => vec![("saturated", saturated / n)],
            CellKind::Lstm => vec![
                ("input_mean", means[0]),
                ("forget_mean", means[1]),
                ("saturated", saturated / (4.0 * n)),
            ],
            CellKind::Gru => vec![
                ("reset_mean", means[0]),
                ("update_mean", means[1]),
                ("saturated", saturated / (3.0 * n)),
            ],
        })
    }
}
