//! Models: recurrent cells on candle tensor ops (`cell`), layers and directions (`stack`), and
//! the many-to-one classifier around them (`classifier`). Parameters live in one [`Params`]
//! store under PyTorch's names, so checkpoints compare directly against torch.

pub mod architecture;
pub mod cell;
pub mod classifier;
pub mod encoder;
pub mod fused;
pub mod provenance;
pub mod resnet;
pub mod stack;
mod steps;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;

use crate::error::{Error, Result};

/// Named trainable parameters, in PyTorch naming (`rnn.weight_ih_l0`, `head.bias`, ...), and
/// buffers: state that is saved and loaded with them but not trained (batch norm's running
/// statistics), as PyTorch's state_dict keeps both.
#[derive(Default)]
pub struct Params {
    vars: BTreeMap<String, Var>,
    buffers: BTreeMap<String, Var>,
}

impl Params {
    /// Registers `t` as parameter `name` and returns a tensor sharing its storage.
    pub fn add(&mut self, name: &str, t: Tensor) -> Result<Tensor> {
        let var = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
        let view = var.as_tensor().clone();
        self.vars.insert(name.to_string(), var);
        Ok(view)
    }

    /// Registers an existing variable (a pretrained encoder's trainable weight) as `name`:
    /// the store and its owner share it.
    pub fn adopt(&mut self, name: &str, var: &Var) {
        self.vars.insert(name.to_string(), var.clone());
    }

    /// U(-bound, bound), PyTorch's init for RNN weights (bound = 1/sqrt(hidden)) and Linear.
    pub fn uniform(
        &mut self,
        rng: &mut StdRng,
        name: &str,
        shape: &[usize],
        bound: f64,
        device: &Device,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let b = bound as f32;
        let data: Vec<f32> = (0..n).map(|_| rng.random_range(-b..=b)).collect();
        self.add(name, Tensor::from_vec(data, shape, device)?)
    }

    /// N(0, 1), PyTorch's init for nn.Embedding.
    pub fn normal(
        &mut self,
        rng: &mut StdRng,
        name: &str,
        shape: &[usize],
        device: &Device,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| standard_normal(rng) as f32).collect();
        self.add(name, Tensor::from_vec(data, shape, device)?)
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// Registers a buffer `name` holding `t` (saved and loaded, never trained).
    pub fn add_buffer(&mut self, name: &str, t: Tensor) -> Result<Var> {
        let var = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
        self.buffers.insert(name.to_string(), var.clone());
        Ok(var)
    }

    /// Parameters in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    /// The device the parameters live on (CPU for an empty store).
    pub fn device(&self) -> candle_core::Device {
        self.iter()
            .next()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu)
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// The first parameter (by name) holding a NaN or an infinity.
    pub fn first_non_finite(&self) -> Result<Option<&str>> {
        for (name, var) in self.vars.iter().chain(&self.buffers) {
            let t = var.as_tensor();
            // x - x is 0 for every finite x and NaN otherwise; a sum cannot overflow.
            let s = t.sub(t)?.sum_all()?.to_scalar::<f32>()?;
            if !s.is_finite() {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> = self
            .vars
            .iter()
            .chain(&self.buffers)
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        save_tensors(&map, path)
    }

    /// Overwrites every parameter from a safetensors file with the same names and shapes.
    pub fn load(&self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        self.load_bytes(&bytes, path)
    }

    /// [`Params::load`] from a safetensors file already read (`path` names it in errors).
    pub fn load_bytes(&self, bytes: &[u8], path: &Path) -> Result<()> {
        let device = self
            .vars
            .values()
            .next()
            .map(|v| v.device().clone())
            .unwrap_or(Device::Cpu);
        let loaded = candle_core::safetensors::load_buffer(bytes, &device).map_err(|e| {
            Error::Checkpoint {
                path: path.into(),
                msg: format!("cannot read safetensors: {e}"),
            }
        })?;
        for (name, var) in self.vars.iter().chain(&self.buffers) {
            let t = loaded.get(name).ok_or_else(|| Error::Checkpoint {
                path: path.into(),
                msg: format!("missing parameter {name}"),
            })?;
            if t.dims() != var.dims() {
                return Err(Error::Checkpoint {
                    path: path.into(),
                    msg: format!(
                        "parameter {name} has shape {:?}, the model expects {:?}",
                        t.dims(),
                        var.dims()
                    ),
                });
            }
            var.set(&t.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }
}

/// One N(0, 1) draw (Box-Muller), for the inits that need normals.
pub(crate) fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Writes tensors as safetensors through a temporary file (no half-written checkpoint); an
/// error (a full disk, say) names the file.
pub fn save_tensors(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    crate::fsutil::write_via_temp(path, |tmp| {
        candle_core::safetensors::save(map, tmp).map_err(|e| std::io::Error::other(e.to_string()))
    })
}
