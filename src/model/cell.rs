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
use rand::Rng;

use super::Params;
use crate::config::{CellKind, GateBiasInit, HhInit, Nonlinearity};
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

/// PyTorch's suffix of layer `layer`, direction `direction` (0 forward, 1 reverse): "l0",
/// "l1_reverse", ...
pub fn suffix(layer: usize, direction: usize) -> String {
    if direction == 0 {
        format!("l{layer}")
    } else {
        format!("l{layer}_reverse")
    }
}

/// A cell's parameters by name and shape, in PyTorch's order: `{prefix}weight_ih_{suffix}`
/// [gates * hidden, input], `weight_hh_` [gates * hidden, hidden], `bias_ih_`, `bias_hh_`
/// [gates * hidden].
pub fn shapes(
    prefix: &str,
    suffix: &str,
    kind: CellKind,
    input: usize,
    hidden: usize,
) -> [(String, Vec<usize>); 4] {
    let g = kind.gates() * hidden;
    [
        (format!("{prefix}weight_ih_{suffix}"), vec![g, input]),
        (format!("{prefix}weight_hh_{suffix}"), vec![g, hidden]),
        (format!("{prefix}bias_ih_{suffix}"), vec![g]),
        (format!("{prefix}bias_hh_{suffix}"), vec![g]),
    ]
}

impl Cell {
    /// Registers `{prefix}weight_ih_{suffix}` etc. (suffix "l0", "l1_reverse", ...) with
    /// PyTorch's init U(-1/sqrt(hidden), 1/sqrt(hidden)), then `init`'s changes.
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
        init: &Init,
        device: &Device,
    ) -> Result<Cell> {
        let g = kind.gates() * hidden;
        let k = 1.0 / (hidden as f64).sqrt();
        let [(wih_name, wih), (hh_name, whh), (ih_name, bih), (bhh_name, bhh)] =
            shapes(prefix, suffix, kind, input, hidden);
        let weight_ih = params.uniform(rng, &wih_name, &wih, k, device)?;
        let mut weight_hh = params.uniform(rng, &hh_name, &whh, k, device)?;
        let mut bias_ih = params.uniform(rng, &ih_name, &bih, k, device)?;
        let mut bias_hh = params.uniform(rng, &bhh_name, &bhh, k, device)?;
        // The default draws above happen whatever `init` says, so the parameters after these
        // (and every other run's) are drawn alike.
        let blocks = kind.gates();
        let mut set = |name: &str, v: Vec<f32>, shape: &[usize]| {
            params.add(name, Tensor::from_vec(v, shape, device)?)
        };
        match init.hh {
            HhInit::Default => {}
            HhInit::Orthogonal => {
                let w: Vec<f32> = (0..blocks).flat_map(|_| orthogonal(hidden, rng)).collect();
                weight_hh = set(&hh_name, w, &[g, hidden])?;
            }
            HhInit::Identity => {
                let mut w = vec![0f32; g * hidden];
                for q in 0..blocks {
                    for j in 0..hidden {
                        w[(q * hidden + j) * hidden + j] = 1.0;
                    }
                }
                weight_hh = set(&hh_name, w, &[g, hidden])?;
                bias_ih = set(&ih_name, vec![0.0; g], &[g])?;
                bias_hh = set(&bhh_name, vec![0.0; g], &[g])?;
            }
        }
        let chrono = init.gate_bias == GateBiasInit::Chrono && kind != CellKind::Rnn;
        let forget = kind == CellKind::Lstm && init.forget_bias != 0.0;
        let mut b_ih = bias_ih.to_vec1::<f32>()?;
        let mut b_hh = bias_hh.to_vec1::<f32>()?;
        if chrono {
            // PyTorch's gate order: lstm i, f, g, o; gru r, z, n.
            let (keep, negated) = match kind {
                CellKind::Lstm => (hidden..2 * hidden, Some(0..hidden)),
                CellKind::Gru => (hidden..2 * hidden, None),
                CellKind::Rnn => (0..0, None),
            };
            let hi = (init.chrono_t_max - 1.0).max(1.0);
            for j in keep.clone() {
                let b = rng.random_range(1.0..=hi).ln() as f32;
                b_ih[j] = b;
                b_hh[j] = 0.0;
                if let Some(neg) = &negated {
                    let i = neg.start + (j - keep.start);
                    b_ih[i] = -b;
                    b_hh[i] = 0.0;
                }
            }
        }
        if forget {
            for b in &mut b_ih[hidden..2 * hidden] {
                *b += init.forget_bias as f32;
            }
        }
        if chrono || forget {
            bias_ih = set(&ih_name, b_ih, &[g])?;
            bias_hh = set(&bhh_name, b_hh, &[g])?;
        }
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
        Ok(self.step_full(xp, state, None)?.0)
    }

    /// `step` with `c_add` (lstm) added to the new cell state before h is formed from it (a
    /// zero there leaves the step unchanged, and its gradient is the total ∂L/∂c_t), also
    /// returning the step's activations the gate statistics read: lstm i, f, g, o; gru r, z,
    /// n; rnn h.
    pub fn step_full(
        &self,
        xp: &Tensor,
        state: &State,
        c_add: Option<&Tensor>,
    ) -> Result<(State, Vec<Tensor>)> {
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
                (
                    State {
                        h: h.clone(),
                        c: None,
                    },
                    vec![h],
                )
            }
            CellKind::Lstm => {
                let g = (xp + hh)?;
                let i = sigmoid(&gate(&g, 0)?)?;
                let f = sigmoid(&gate(&g, 1)?)?;
                let cand = gate(&g, 2)?.tanh()?;
                let o = sigmoid(&gate(&g, 3)?)?;
                let c_prev = state.c.as_ref().unwrap_or(&state.h);
                let mut c = ((&f * c_prev)? + (&i * &cand)?)?;
                if let Some(add) = c_add {
                    c = (c + add)?;
                }
                let h = (&o * c.tanh()?)?;
                (State { h, c: Some(c) }, vec![i, f, cand, o])
            }
            CellKind::Gru => {
                let hh = hh.broadcast_add(&self.bias_hh)?;
                let r = sigmoid(&(gate(xp, 0)? + gate(&hh, 0)?)?)?;
                let z = sigmoid(&(gate(xp, 1)? + gate(&hh, 1)?)?)?;
                let cand = (gate(xp, 2)? + (&r * gate(&hh, 2)?)?)?.tanh()?;
                // (1 - z) n + z h  ==  n + z (h - n)
                let h = (&cand + (&z * (&state.h - &cand)?)?)?;
                (State { h, c: None }, vec![r, z, cand])
            }
        })
    }
}

/// How a cell's parameters start, from `[model]`: PyTorch's init, then these changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Init {
    pub hh: HhInit,
    pub gate_bias: GateBiasInit,
    pub chrono_t_max: f64,
    /// lstm: added to the forget gate's slice of bias_ih.
    pub forget_bias: f64,
}

impl Init {
    pub fn of(m: &crate::config::Model) -> Init {
        Init {
            hh: m.init_hh,
            gate_bias: m.init_gate_bias,
            chrono_t_max: m.chrono_t_max,
            forget_bias: m.forget_bias,
        }
    }
}

/// A random n x n orthogonal matrix, row-major: Gram-Schmidt (modified, twice, in f64) on the
/// columns of a standard normal matrix, each column's sign that of R's diagonal (so the
/// result is uniform over the orthogonal group).
fn orthogonal(n: usize, rng: &mut StdRng) -> Vec<f32> {
    // cols[j]: column j.
    let mut cols: Vec<Vec<f64>> = (0..n)
        .map(|_| (0..n).map(|_| super::standard_normal(rng)).collect())
        .collect();
    for j in 0..n {
        for _ in 0..2 {
            let (done, rest) = cols.split_at_mut(j);
            let col = &mut rest[0];
            for prev in done.iter() {
                let dot: f64 = prev.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
                for (x, p) in col.iter_mut().zip(prev) {
                    *x -= dot * p;
                }
            }
        }
        let norm = cols[j]
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
            .max(1e-300);
        for v in &mut cols[j] {
            *v /= norm;
        }
    }
    let mut w = vec![0f32; n * n];
    for (j, col) in cols.iter().enumerate() {
        for (r, v) in col.iter().enumerate() {
            w[r * n + j] = *v as f32;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cell(kind: CellKind, hidden: usize, init: Init) -> (Cell, Cell) {
        let make = |init: &Init| {
            let mut params = Params::default();
            let mut rng = StdRng::seed_from_u64(7);
            Cell::new(
                &mut params,
                &mut rng,
                "",
                "l0",
                kind,
                Nonlinearity::Relu,
                3,
                hidden,
                init,
                &Device::Cpu,
            )
            .unwrap()
        };
        (make(&init), make(&Init::default()))
    }

    fn blocks(w: &Tensor, hidden: usize) -> Vec<Vec<f32>> {
        let v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.chunks(hidden * hidden).map(<[f32]>::to_vec).collect()
    }

    #[test]
    fn orthogonal_blocks_are_orthogonal_to_1e_5() {
        let h = 24;
        let (c, default) = cell(
            CellKind::Lstm,
            h,
            Init {
                hh: HhInit::Orthogonal,
                ..Init::default()
            },
        );
        let bs = blocks(&c.weight_hh, h);
        assert_eq!(bs.len(), 4);
        for b in &bs {
            for i in 0..h {
                for j in 0..h {
                    // (W^T W)_ij and (W W^T)_ij.
                    let col: f32 = (0..h).map(|r| b[r * h + i] * b[r * h + j]).sum();
                    let row: f32 = (0..h).map(|r| b[i * h + r] * b[j * h + r]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((col - want).abs() < 1e-5 && (row - want).abs() < 1e-5);
                }
            }
        }
        assert_ne!(bs[0], bs[1], "each gate draws its own block");
        // Everything else is PyTorch's default draw.
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&c.weight_ih), v(&default.weight_ih));
        assert_eq!(v(&c.bias_ih), v(&default.bias_ih));
    }

    #[test]
    fn identity_is_the_identity_with_zero_biases() {
        let h = 5;
        let (c, _) = cell(
            CellKind::Rnn,
            h,
            Init {
                hh: HhInit::Identity,
                ..Init::default()
            },
        );
        let w = c.weight_hh.to_vec2::<f32>().unwrap();
        for (i, row) in w.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                assert_eq!(x, if i == j { 1.0 } else { 0.0 });
            }
        }
        assert!(c
            .bias_ih
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|&b| b == 0.0));
        assert!(c
            .bias_hh
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|&b| b == 0.0));
    }

    #[test]
    fn chrono_biases_lie_in_log_range_with_input_gate_negated() {
        let (h, t_max) = (200, 50.0f64);
        let init = Init {
            gate_bias: GateBiasInit::Chrono,
            chrono_t_max: t_max,
            ..Init::default()
        };
        let top = (t_max - 1.0).ln() as f32;
        let v = |t: &Tensor| t.to_vec1::<f32>().unwrap();
        // LSTM: i, f, g, o.
        let (c, default) = cell(CellKind::Lstm, h, init);
        let (bi, bh) = (v(&c.bias_ih), v(&c.bias_hh));
        let f = &bi[h..2 * h];
        assert!(f.iter().all(|&b| (0.0..=top).contains(&b)), "{f:?}");
        assert!(f.iter().any(|&b| b > top / 2.0) && f.iter().any(|&b| b < top / 2.0));
        for j in 0..h {
            assert_eq!(bi[j], -bi[h + j]);
        }
        assert!(bh[..2 * h].iter().all(|&b| b == 0.0));
        assert_eq!(bi[2 * h..], v(&default.bias_ih)[2 * h..]);
        assert_eq!(bh[2 * h..], v(&default.bias_hh)[2 * h..]);
        // GRU: r, z, n; only z.
        let (c, default) = cell(CellKind::Gru, h, init);
        let (bi, bh) = (v(&c.bias_ih), v(&c.bias_hh));
        assert!(bi[h..2 * h].iter().all(|&b| (0.0..=top).contains(&b)));
        assert!(bh[h..2 * h].iter().all(|&b| b == 0.0));
        assert_eq!(bi[..h], v(&default.bias_ih)[..h]);
        assert_eq!(bh[2 * h..], v(&default.bias_hh)[2 * h..]);
    }
}
