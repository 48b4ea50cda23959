//! Writing results so that no half-written file survives: write to a temporary sibling with a
//! name no other process or thread uses, sync it, then rename it over the target. Every error
//! names the file it was about.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

static TEMPS: AtomicUsize = AtomicUsize::new(0);

/// A sibling of `path` that no other writer picks: `.<name>.<pid>.<n>.tmp`.
/// FNV-1a, 64 bits: a stable hash of bytes on any machine (trial ids, cache keys).
pub struct Fnv1a(pub u64);

impl Fnv1a {
    pub fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    pub fn eat(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a::new()
    }
}

pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TEMPS.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via_temp(path, |tmp| std::fs::File::create(tmp)?.write_all(bytes))
}

/// `write` fills a temporary sibling of `path`, which is then synced and renamed over it: the
/// file is whole or absent, never half-written; a failure removes the temporary file and
/// names `path`.
pub fn write_via_temp(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let tmp = temp_sibling(path);
    let written = write(&tmp)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Makes a directory's entries (new names, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Points `link` at `target`'s contents: a hard link (a copy where the file system has none),
/// swapped in by rename so `link` is never missing or half-written.
pub fn replace_with_link(target: &Path, link: &Path) -> Result<()> {
    let tmp = temp_sibling(link);
    let made = std::fs::hard_link(target, &tmp)
        .or_else(|_| std::fs::copy(target, &tmp).map(|_| ()))
        .and_then(|()| std::fs::rename(&tmp, link));
    made.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(link, e)
    })
}

/// This machine's name (event file names, the lock's stamp), "localhost" where unknown.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// An exclusive lock on `path` (created if missing), held until the returned file is dropped
/// or the process dies however it dies, and stamped "pid N on HOST". `Ok(Err(stamp))`: another
/// process holds it (its stamp).
pub fn lock_stamped(path: &Path) -> Result<std::result::Result<std::fs::File, String>> {
    use std::io::{Read, Seek};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Ok(Err(if holder.is_empty() {
                "pid unknown".to_string()
            } else {
                holder.to_string()
            }));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
    }
    let stamp = format!("pid {} on {}", std::process::id(), hostname());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(stamp.as_bytes()))
        .map_err(|e| Error::io(path, e))?;
    Ok(Ok(file))
}
