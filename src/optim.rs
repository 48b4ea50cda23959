//! Optimizers with PyTorch's update rules (sgd with momentum/nesterov, adam, adamw, rmsprop),
//! gradient clipping by global L2 norm (`clip_grad_norm_` semantics) and by value, and
//! learning-rate schedules (constant, step, cosine, linear warmup).

use std::collections::HashMap;

use std::sync::Mutex;

use candle_core::{CpuStorage, InplaceOp2, Layout, Storage, Tensor, Var};

use crate::config::{OptimizerKind, Schedule, Train};
use crate::error::Result;
use crate::grads::{global_norm, Grads};
use crate::model::Params;

/// PyTorch `clip_grad_norm_`: scales every gradient by min(1, max_norm / (norm + 1e-6)).
/// Returns the norm before clipping and whether it exceeded `max_norm`.
pub fn clip_norm(grads: &mut Grads, max_norm: f64) -> Result<(f64, bool)> {
    let norm = global_norm(grads)?;
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    for (_, g) in grads.iter_mut() {
        *g = g.affine(coef, 0.0)?;
    }
    Ok((norm, norm > max_norm))
}

/// Clamps every gradient element to [-v, v] (PyTorch `clip_grad_value_`).
pub fn clip_value(grads: &mut Grads, v: f64) -> Result<()> {
    for (_, g) in grads.iter_mut() {
        *g = g.clamp(-v, v)?;
    }
    Ok(())
}

/// Learning rate at optimizer step `step` (0-based) of `total` steps in `epoch` (0-based).
pub fn lr_at(cfg: &Train, step: usize, epoch: usize, total: usize) -> f64 {
    let base = match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Step => cfg.lr * cfg.gamma.powi((epoch / cfg.step_every) as i32),
        Schedule::Cosine => {
            let span = total.saturating_sub(cfg.warmup_steps).max(1) as f64;
            let p = (step.saturating_sub(cfg.warmup_steps) as f64 / span).min(1.0);
            cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + (std::f64::consts::PI * p).cos())
        }
    };
    if step < cfg.warmup_steps {
        base * (step + 1) as f64 / cfg.warmup_steps as f64
    } else {
        base
    }
}

/// Per-parameter state: first and second moments or momentum buffer, as tensors (the
/// tensor-ops path, other devices) or host vectors (the fused CPU path).
#[derive(Default)]
struct Slot {
    m: Option<Tensor>,
    v: Option<Tensor>,
    host_m: Vec<f32>,
    host_v: Vec<f32>,
}

pub struct Optimizer {
    kind: OptimizerKind,
    weight_decay: f64,
    momentum: f64,
    nesterov: bool,
    betas: [f64; 2],
    eps: f64,
    alpha: f64,
    /// Optimizer steps taken (Adam's bias correction uses it).
    pub steps: usize,
    slots: HashMap<String, Slot>,
    /// Update CPU parameters in one fused pass per tensor (default); false = candle tensor
    /// ops, which is what other devices use.
    pub host: bool,
}

/// One step's constants, resolved from the optimizer and the step count.
struct Rule {
    kind: OptimizerKind,
    lr: f32,
    wd: f32,
    momentum: f32,
    nesterov: bool,
    b1: f32,
    b2: f32,
    eps: f32,
    alpha: f32,
    /// Adam's bias corrections 1 - beta^t.
    bc1: f32,
    bc2_sqrt: f32,
}

impl Rule {
    fn of(o: &Optimizer, lr: f64) -> Rule {
        let t = o.steps as i32;
        Rule {
            kind: o.kind,
            lr: lr as f32,
            wd: o.weight_decay as f32,
            momentum: o.momentum as f32,
            nesterov: o.nesterov,
            b1: o.betas[0] as f32,
            b2: o.betas[1] as f32,
            eps: o.eps as f32,
            alpha: o.alpha as f32,
            bc1: (1.0 - o.betas[0].powi(t)) as f32,
            bc2_sqrt: (1.0 - o.betas[1].powi(t)).sqrt() as f32,
        }
    }
}

/// A contiguous f32 CPU tensor's data, or None.
fn host_slice(st: &Storage, l: &Layout) -> Option<Vec<f32>> {
    match st {
        Storage::Cpu(CpuStorage::F32(v)) => l.contiguous_offsets().map(|(a, b)| v[a..b].to_vec()),
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct Flags {
    first_m: bool,
    first_v: bool,
    /// Weight decay as an L2 term added to the gradient (all but adamw).
    l2: bool,
}

/// One optimizer's rule over a slice; one loop per rule so that each vectorizes.
fn apply(r: &Rule, f: Flags, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let grad = |g: f32, p: f32| if f.l2 { g + p * r.wd } else { g };
    let it = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
    match r.kind {
        OptimizerKind::Sgd => {
            for (((p, &g), m), _) in it {
                let g = grad(g, *p);
                let d = if r.momentum != 0.0 {
                    *m = if f.first_m { g } else { *m * r.momentum + g };
                    if r.nesterov {
                        g + *m * r.momentum
                    } else {
                        *m
                    }
                } else {
                    g
                };
                *p -= d * r.lr;
            }
        }
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let decay = if r.kind == OptimizerKind::Adamw {
                1.0 - r.lr * r.wd
            } else {
                1.0
            };
            let step = r.lr / r.bc1;
            let inv_bc2 = 1.0 / r.bc2_sqrt;
            for (((p, &g), m), v) in it {
                let g = grad(g, *p);
                *p *= decay;
                *m = if f.first_m {
                    g * (1.0 - r.b1)
                } else {
                    *m * r.b1 + g * (1.0 - r.b1)
                };
                *v = if f.first_v {
                    g * g * (1.0 - r.b2)
                } else {
                    *v * r.b2 + g * g * (1.0 - r.b2)
                };
                let denom = v.sqrt() * inv_bc2 + r.eps;
                *p -= (*m / denom) * step;
            }
        }
        OptimizerKind::Rmsprop => {
            for (((p, &g), m), v) in it {
                let g = grad(g, *p);
                *v = if f.first_v {
                    g * g * (1.0 - r.alpha)
                } else {
                    *v * r.alpha + g * g * (1.0 - r.alpha)
                };
                let d = g / (v.sqrt() + r.eps);
                let d = if r.momentum != 0.0 {
                    *m = if f.first_m { d } else { *m * r.momentum + d };
                    *m
                } else {
                    d
                };
                *p -= d * r.lr;
            }
        }
    }
}

/// The update rule in one pass over CPU memory (PyTorch's formulas, as `tensor_update`),
/// moments kept as host vectors in the slot. Returns the new parameter values, or None when
/// a tensor is not contiguous f32 CPU data.
fn host_update(r: &Rule, p: &Tensor, g: &Tensor, slot: &mut Slot) -> Result<bool> {
    let read = |t: &Tensor| {
        let (st, l) = t.storage_and_layout();
        host_slice(&st, l)
    };
    let n = p.elem_count();
    if !matches!(&*p.storage_and_layout().0, Storage::Cpu(CpuStorage::F32(_)))
        || !p.is_contiguous()
        || !g.is_contiguous()
        || g.elem_count() != n
    {
        return Ok(false);
    }
    // Moments restored from a checkpoint arrive as tensors: move them to the host once.
    for (t, host) in [
        (&mut slot.m, &mut slot.host_m),
        (&mut slot.v, &mut slot.host_v),
    ] {
        if let Some(m) = t.take() {
            match read(&m) {
                Some(d) => *host = d,
                None => return Ok(false),
            }
        }
    }
    let first_m = slot.host_m.len() != n;
    let first_v = slot.host_v.len() != n;
    if first_m {
        slot.host_m = vec![0f32; n];
    }
    if first_v {
        slot.host_v = vec![0f32; n];
    }
    let flags = Flags {
        first_m,
        first_v,
        l2: r.wd != 0.0 && r.kind != OptimizerKind::Adamw,
    };
    let step = HostStep {
        rule: r,
        flags,
        moments: Mutex::new((&mut slot.host_m, &mut slot.host_v)),
    };
    // In place in the parameter's own storage: no copy of the parameter either way.
    p.inplace_op2(g, &step)?;
    Ok(true)
}

/// The update as a candle in-place op on the parameter, reading the gradient.
struct HostStep<'a> {
    rule: &'a Rule,
    flags: Flags,
    moments: Mutex<(&'a mut Vec<f32>, &'a mut Vec<f32>)>,
}

impl InplaceOp2 for HostStep<'_> {
    fn name(&self) -> &'static str {
        "rnnlab-optimizer-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (Some((pa, pb)), Some((ga, gb))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("optimizer step: tensors must be contiguous");
        };
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!("optimizer step: parameters must be f32");
        };
        let (p, g) = (&mut p[pa..pb], &g[ga..gb]);
        let Ok(mut moments) = self.moments.lock() else {
            candle_core::bail!("optimizer step: state unavailable");
        };
        let (m, v) = &mut *moments;
        let (r, flags) = (self.rule, self.flags);
        // Two or more threads for the large tensors (the embedding); the loop is memory-bound.
        let threads = crate::device::cpu_threads();
        let chunk = p.len().div_ceil(threads).max(1 << 16);
        std::thread::scope(|scope| {
            let parts = p
                .chunks_mut(chunk)
                .zip(g.chunks(chunk))
                .zip(m.chunks_mut(chunk))
                .zip(v.chunks_mut(chunk));
            for (((p, g), m), v) in parts {
                scope.spawn(move || apply(r, flags, p, g, m, v));
            }
        });
        Ok(())
    }
}

impl Optimizer {
    pub fn new(cfg: &Train) -> Optimizer {
        Optimizer {
            kind: cfg.optimizer,
            weight_decay: cfg.weight_decay,
            momentum: cfg.momentum,
            nesterov: cfg.nesterov,
            betas: cfg.betas,
            eps: cfg.eps,
            alpha: cfg.alpha,
            steps: 0,
            slots: HashMap::new(),
            host: true,
        }
    }

    /// One update of every parameter in `params` from `grads` at learning rate `lr`.
    pub fn step(&mut self, params: &Params, grads: &Grads, lr: f64) -> Result<()> {
        self.steps += 1;
        let rule = Rule::of(self, lr);
        for (name, g) in grads {
            let Some(var) = params.get(name) else {
                continue;
            };
            let slot = self.slots.entry(name.clone()).or_default();
            if self.host && host_update(&rule, var.as_tensor(), g, slot)? {
                continue;
            }
            self.tensor_update(name, var, g, lr)?;
        }
        Ok(())
    }

    /// The same rules on candle tensor ops (any device; the reference for `host_update`).
    fn tensor_update(&mut self, name: &str, var: &Var, g: &Tensor, lr: f64) -> Result<()> {
        let t = self.steps as i32;
        let (b1, b2) = (self.betas[0], self.betas[1]);
        {
            let p = var.as_tensor().detach();
            let Some(slot) = self.slots.get_mut(name) else {
                return Ok(());
            };
            let wd = self.weight_decay;
            let g = if wd != 0.0 && self.kind != OptimizerKind::Adamw {
                (g + p.affine(wd, 0.0)?)?
            } else {
                g.clone()
            };
            let new_p = match self.kind {
                OptimizerKind::Sgd => {
                    let d = if self.momentum != 0.0 {
                        let buf = match &slot.m {
                            None => g.clone(),
                            Some(buf) => (buf.affine(self.momentum, 0.0)? + &g)?,
                        };
                        slot.m = Some(buf.clone());
                        if self.nesterov {
                            (&g + buf.affine(self.momentum, 0.0)?)?
                        } else {
                            buf
                        }
                    } else {
                        g
                    };
                    (&p - d.affine(lr, 0.0)?)?
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    let p = if self.kind == OptimizerKind::Adamw && wd != 0.0 {
                        p.affine(1.0 - lr * wd, 0.0)?
                    } else {
                        p
                    };
                    let m = lerp(slot.m.take(), &g, b1)?;
                    let v = lerp(slot.v.take(), &g.sqr()?, b2)?;
                    let bc1 = 1.0 - b1.powi(t);
                    let bc2 = 1.0 - b2.powi(t);
                    let denom = v.sqrt()?.affine(1.0 / bc2.sqrt(), self.eps)?;
                    let upd = m.div(&denom)?.affine(lr / bc1, 0.0)?;
                    slot.m = Some(m);
                    slot.v = Some(v);
                    (&p - upd)?
                }
                OptimizerKind::Rmsprop => {
                    let v = lerp(slot.v.take(), &g.sqr()?, self.alpha)?;
                    let avg = v.sqrt()?.affine(1.0, self.eps)?;
                    slot.v = Some(v);
                    let d = g.div(&avg)?;
                    let d = if self.momentum != 0.0 {
                        let buf = match slot.m.take() {
                            None => d,
                            Some(buf) => (buf.affine(self.momentum, 0.0)? + d)?,
                        };
                        slot.m = Some(buf.clone());
                        buf
                    } else {
                        d
                    };
                    (&p - d.affine(lr, 0.0)?)?
                }
            };
            var.set(&new_p)?;
        }
        Ok(())
    }

    /// Optimizer state as named tensors (`<param>.m`, `<param>.v`) for checkpoints.
    pub fn state(&self, params: &Params) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        let uses = match self.kind {
            OptimizerKind::Sgd => (self.momentum != 0.0, false),
            OptimizerKind::Adam | OptimizerKind::Adamw => (true, true),
            OptimizerKind::Rmsprop => (self.momentum != 0.0, true),
        };
        for (name, slot) in &self.slots {
            let Some(var) = params.get(name) else {
                continue;
            };
            let host = |v: &Vec<f32>| Tensor::from_slice(v, var.shape(), var.device()).ok();
            let m = slot.m.clone().or_else(|| {
                if uses.0 && !slot.host_m.is_empty() {
                    host(&slot.host_m)
                } else {
                    None
                }
            });
            let v = slot.v.clone().or_else(|| {
                if uses.1 && !slot.host_v.is_empty() {
                    host(&slot.host_v)
                } else {
                    None
                }
            });
            if let Some(m) = m {
                out.insert(format!("{name}.m"), m);
            }
            if let Some(v) = v {
                out.insert(format!("{name}.v"), v);
            }
        }
        out
    }

    /// Restores the moments saved by [`Optimizer::state`]; a moment whose shape is not its
    /// parameter's is a checkpoint error naming `path`.
    pub fn load_state(
        &mut self,
        steps: usize,
        mut state: HashMap<String, Tensor>,
        params: &Params,
        path: &std::path::Path,
    ) -> Result<()> {
        self.steps = steps;
        for (name, var) in params.iter() {
            let mut take = |key: String| -> Result<Option<Tensor>> {
                match state.remove(&key) {
                    Some(t) if t.dims() != var.dims() => Err(crate::Error::Checkpoint {
                        path: path.into(),
                        msg: format!(
                            "{key} has shape {:?}, the parameter has {:?}",
                            t.dims(),
                            var.dims()
                        ),
                    }),
                    t => Ok(t),
                }
            };
            let slot = Slot {
                m: take(format!("{name}.m"))?,
                v: take(format!("{name}.v"))?,
                ..Slot::default()
            };
            self.slots.insert(name.clone(), slot);
        }
        Ok(())
    }
}

/// beta * prev + (1 - beta) * x, with prev = 0 on the first step (PyTorch's zero init).
fn lerp(prev: Option<Tensor>, x: &Tensor, beta: f64) -> Result<Tensor> {
    Ok(match prev {
        None => x.affine(1.0 - beta, 0.0)?,
        Some(p) => (p.affine(beta, 0.0)? + x.affine(1.0 - beta, 0.0)?)?,
    })
}
