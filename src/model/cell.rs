//! One recurrent cell (vanilla RNN, LSTM, GRU) with PyTorch's gate order, equations and
//! parameter names. The input projection for all steps is one matmul (`project`); each step
//! is then one `h @ W_hh^T` plus the gate arithmetic (`step`).
//!
//! PyTorch equations (gates stacked in W along dim 0):
//! - rnn:  h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)
//! - lstm: i,f,g,o = split(x W_ih^T + b_ih + h W_hh^T + b_hh); c' = σ(f) c + σ(i) tanh(g);
//!   h' = σ(o) tanh(c')
//! - gru:  r,z = σ(x W_{ir,iz}^T + b + h W_{hr,hz}^T + b); n = tanh(x W_in^T + b_in +
//!   r * (h W_hn^T + b_hn)); h' = (1 - z) n + z h

use candle_core::{Device, Tensor, D};
use candle_nn::ops::sigmoid;
use rand::rngs::StdRng;

use super::Params;
use crate::config::{CellKind, Nonlinearity};
use crate::error::Result;

/// Recurrent state: `h` [batch, hidden], and `c` [batch, hidden] for the LSTM.
#[derive(Clone)]
pub struct State {
    pub h: Tensor,
    pub c: Option<Tensor>,
}

impl State {
    pub fn zeros(kind: CellKind, batch: usize, hidden: usize, device: &Device) -> Result<State> {
        let h = Tensor::zeros((batch, hidden), candle_core::DType::F32, device)?;
        let c = (kind == CellKind::Lstm).then(|| h.clone());
        Ok(State { h, c })
    }

    pub fn detach(&self) -> State {
        State {
            h: self.h.detach(),
            c: self.c.as_ref().map(Tensor::detach),
        }
    }

    /// Per row: `keep` (1.0) takes `self`, 0.0 takes `other`. keep: [batch, 1].
    pub fn blend(&self, other: &State, keep: &Tensor) -> Result<State> {
        let mix = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
            Ok((b + keep.broadcast_mul(&(a - b)?)?)?)
        };
        Ok(State {
            h: mix(&self.h, &other.h)?,
            c: match (&self.c, &other.c) {
                (Some(a), Some(b)) => Some(mix(a, b)?),
                _ => None,
            },
        })
    }
}

#[derive(Clone)]
pub struct Cell {
    pub kind: CellKind,
    pub nonlinearity: Nonlinearity,
    pub hidden: usize,
    /// weight_ih: [gates * hidden, input]
    pub weight_ih: Tensor,
    /// weight_hh: [gates * hidden, hidden]
    pub weight_hh: Tensor,
    /// bias_ih, bias_hh: [gates * hidden]
    pub bias_ih: Tensor,
    pub bias_hh: Tensor,
}

impl Cell {
    /// Registers `{prefix}weight_ih_{suffix}` etc. (suffix "l0", "l1_reverse", ...) with
    /// PyTorch's init U(-1/sqrt(hidden), 1/sqrt(hidden)); `forget_bias` is added to the LSTM's
    /// forget-gate slice of bias_ih.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        params: &mut Params,
        rng: &mut StdRng,
        prefix: &str,
        suffix: &str,
        kind: CellKind,
        nonlinearity: Nonlinearity,
        input: usize,
        hidden: usize,
        forget_bias: f64,
        device: &Device,
    ) -> Result<Cell> {
        let g = kind.gates() * hidden;
        let k = 1.0 / (hidden as f64).sqrt();
        let weight_ih = params.uniform(
            rng,
            &format!("{prefix}weight_ih_{suffix}"),
            &[g, input],
            k,
            device,
        )?;
        let weight_hh = params.uniform(
            rng,
            &format!("{prefix}weight_hh_{suffix}"),
            &[g, hidden],
            k,
            device,
        )?;
        let name = format!("{prefix}bias_ih_{suffix}");
        let mut bias_ih = params.uniform(rng, &name, &[g], k, device)?;
        if kind == CellKind::Lstm && forget_bias != 0.0 {
            let mut shift = vec![0f32; g];
            shift[hidden..2 * hidden].fill(forget_bias as f32);
            let shifted = (&bias_ih + Tensor::from_vec(shift, g, device)?)?;
            bias_ih = params.add(&name, shifted)?;
        }
        let bias_hh = params.uniform(rng, &format!("{prefix}bias_hh_{suffix}"), &[g], k, device)?;
        Ok(Cell {
            kind,
            nonlinearity,
            hidden,
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
        })
    }

    /// The same cell cut from the autograd graph (truncated BPTT's detached steps).
    pub fn detached(&self) -> Cell {
        Cell {
            weight_ih: self.weight_ih.detach(),
            weight_hh: self.weight_hh.detach(),
            bias_ih: self.bias_ih.detach(),
            bias_hh: self.bias_hh.detach(),
            ..self.clone()
        }
    }

    /// All input projections in one matmul. xs: [batch, seq, input] -> [batch, seq, gates*hidden].
    /// RNN and LSTM fold both biases in here; the GRU keeps b_hh for the step (r multiplies it).
    pub fn project(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, i) = xs.dims3()?;
        let xp = xs.reshape((b * t, i))?.matmul(&self.weight_ih.t()?)?;
        let bias = match self.kind {
            CellKind::Gru => self.bias_ih.clone(),
            _ => (&self.bias_ih + &self.bias_hh)?,
        };
        Ok(xp.broadcast_add(&bias)?.reshape((b, t, ()))?)
    }

    /// One step. xp: [batch, gates*hidden] (this step's slice of `project`).
    pub fn step(&self, xp: &Tensor, state: &State) -> Result<State> {
        let hh = state.h.matmul(&self.weight_hh.t()?)?;
        let n = self.hidden;
        let gate = |t: &Tensor, k: usize| t.narrow(D::Minus1, k * n, n);
        Ok(match self.kind {
            CellKind::Rnn => {
                let pre = (xp + hh)?;
                let h = match self.nonlinearity {
                    Nonlinearity::Tanh => pre.tanh()?,
                    Nonlinearity::Relu => pre.relu()?,
                };
                State { h, c: None }
            }
            CellKind::Lstm => {
                let g = (xp + hh)?;
                let i = sigmoid(&gate(&g, 0)?)?;
                let f = sigmoid(&gate(&g, 1)?)?;
                let cand = gate(&g, 2)?.tanh()?;
                let o = sigmoid(&gate(&g, 3)?)?;
                let c_prev = state.c.as_ref().unwrap_or(&state.h);
                let c = ((f * c_prev)? + (i * cand)?)?;
                let h = (o * c.tanh()?)?;
                State { h, c: Some(c) }
            }
            CellKind::Gru => {
                let hh = hh.broadcast_add(&self.bias_hh)?;
                let r = sigmoid(&(gate(xp, 0)? + gate(&hh, 0)?)?)?;
                let z = sigmoid(&(gate(xp, 1)? + gate(&hh, 1)?)?)?;
                let cand = (gate(xp, 2)? + (r * gate(&hh, 2)?)?)?.tanh()?;
                // (1 - z) n + z h  ==  n + z (h - n)
                let h = (&cand + (z * (&state.h - &cand)?)?)?;
                State { h, c: None }
            }
        })
    }
}
