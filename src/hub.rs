//! `source = "hub"` (and `model.encoder_weights = "hub:..."`): files of a Hugging Face dataset
//! (or model) repo, resolved through hf-hub's cache
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; laid out as
//! `datasets--owner--name/{refs/<revision>, snapshots/<commit>/<file>}`). A cached file is used
//! as is; otherwise it is downloaded, unless `HF_HUB_OFFLINE=1`, which forbids the network.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

/// The hub cache folder hf-hub and the Python `huggingface_hub` share.
pub fn cache_dir() -> Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("HF_HUB_CACHE") {
        return Ok(p);
    }
    if let Some(home) = var("HF_HOME") {
        return Ok(home.join("hub"));
    }
    match var("HOME") {
        Some(home) => Ok(home.join(".cache").join("huggingface").join("hub")),
        None => Err(Error::Config {
            location: "environment".into(),
            key: "data.repo".into(),
            msg: "no hub cache folder: set HF_HUB_CACHE or HF_HOME".into(),
        }),
    }
}

pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// The local path of `file` in dataset `repo` at `revision`, downloading it if needed.
pub fn fetch(repo: &str, revision: &str, file: &Path) -> Result<PathBuf> {
    fetch_from(RepoType::Dataset, repo, revision, file)
}

/// [`fetch`] from a model repo (`models--owner--name` in the cache): pretrained weights.
pub fn fetch_model(repo: &str, revision: &str, file: &Path) -> Result<PathBuf> {
    fetch_from(RepoType::Model, repo, revision, file)
}

fn fetch_from(kind: RepoType, repo: &str, revision: &str, file: &Path) -> Result<PathBuf> {
    let cache_root = cache_dir()?;
    let cache = Cache::new(cache_root.clone());
    let spec = Repo::with_revision(repo.to_string(), kind, revision.to_string());
    let name = file.to_string_lossy().replace('\\', "/");
    let (url, folder) = match kind {
        RepoType::Dataset => ("datasets/", "datasets--"),
        _ => ("", "models--"),
    };
    let missing = |why: String| Error::Data {
        path: PathBuf::from(format!("hf://{url}{repo}@{revision}/{name}")),
        line: 0,
        msg: why,
    };
    if let Some(path) = cache.repo(spec.clone()).get(&name) {
        return Ok(path);
    }
    let folder = cache_root.join(format!("{folder}{}", repo.replace('/', "--")));
    if offline() {
        return Err(missing(format!(
            "not in the hub cache ({}) and HF_HUB_OFFLINE=1 forbids downloading it; \
             fill the cache on a machine with network (or unset HF_HUB_OFFLINE)",
            folder.display()
        )));
    }
    let api = ApiBuilder::from_cache(cache)
        .with_progress(false)
        .build()
        .map_err(|e| missing(format!("cannot start the hub client: {e}")))?;
    api.repo(spec).get(&name).map_err(|e| {
        missing(format!(
            "download failed ({e}); nothing cached under {}. Offline? Fill the cache elsewhere \
             and copy it, or use local files ({})",
            folder.display(),
            match kind {
                RepoType::Dataset => "data.source = \"file\"",
                _ => "model.encoder_weights = a .safetensors path",
            }
        ))
    })
}
