//! TensorBoard event files, written directly: hand-written prost messages (the subset of
//! tensorflow's event.proto / summary.proto that scalars, histograms and images need) in
//! TFRecord framing with masked CRC32C. Each writer owns a new, uniquely named file (never
//! another writer's), writes through a buffer, and reports every I/O error to its caller.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::error::{Error, Result};

#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
    #[prost(message, optional, tag = "7")]
    pub session_log: Option<SessionLog>,
}

/// tensorflow's SessionLog: status 1 = START (a restart: purge later steps).
#[derive(Clone, PartialEq, Message)]
pub struct SessionLog {
    #[prost(int32, tag = "1")]
    pub status: i32,
    #[prost(string, tag = "2")]
    pub checkpoint_path: String,
    #[prost(string, tag = "3")]
    pub msg: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    #[prost(message, optional, tag = "4")]
    pub image: Option<Image>,
    #[prost(message, optional, tag = "5")]
    pub histo: Option<HistogramProto>,
    #[prost(message, optional, tag = "8")]
    pub tensor: Option<TensorProto>,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Image {
    #[prost(int32, tag = "1")]
    pub height: i32,
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 1 grayscale, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    /// PNG bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct HistogramProto {
    #[prost(double, tag = "1")]
    pub min: f64,
    #[prost(double, tag = "2")]
    pub max: f64,
    #[prost(double, tag = "3")]
    pub num: f64,
    #[prost(double, tag = "4")]
    pub sum: f64,
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    /// Right edge of each bucket.
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
    #[prost(string, tag = "2")]
    pub display_name: String,
    #[prost(string, tag = "3")]
    pub summary_description: String,
    /// 1 scalar, 2 tensor, 3 blob sequence.
    #[prost(int32, tag = "4")]
    pub data_class: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeDim {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<TensorShapeDim>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// tensorflow DataType: 1 = DT_FLOAT, 7 = DT_STRING.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

static WRITERS: AtomicUsize = AtomicUsize::new(0);

pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<secs>.<host>.<pid>.<n>`; fails rather than truncate.
    /// TensorBoard reads a folder's event files in name order (and never goes back), so the
    /// name must sort after every file already there: `<secs>` is the later of now and one
    /// past the newest existing file's (a resumed run may start within the second, or under a
    /// smaller pid, than the process it continues).
    pub fn create(dir: &Path) -> Result<EventWriter> {
        let host = crate::fsutil::hostname();
        let newest = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("events.out.tfevents.")?
                    .split('.')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .max();
        let secs = newest.map_or(now() as u64, |n| (now() as u64).max(n + 1));
        let n = WRITERS.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "events.out.tfevents.{secs:010}.{host}.{}.{n}",
            std::process::id()
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut w = EventWriter {
            out: BufWriter::new(file),
            path,
        };
        w.write(&Event {
            wall_time: now(),
            step: 0,
            file_version: Some("brain.Event:2".into()),
            ..Default::default()
        })?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One TFRecord; an error (a full disk, say) names the event file.
    pub fn write(&mut self, event: &Event) -> Result<()> {
        let data = event.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.out
            .write_all(&record)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// A `SessionLog(START)` at `step`: TensorBoard's event loader then drops every point at
    /// `step` or later that it read before (what a process killed after its last checkpoint
    /// left behind), so a resumed run shows one curve, not two.
    pub fn session_start(&mut self, step: usize) -> Result<()> {
        self.write(&Event {
            wall_time: now(),
            step: step as i64,
            session_log: Some(SessionLog {
                status: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// One summary value at `step`.
    pub fn value(&mut self, step: usize, value: Value) -> Result<()> {
        self.summary(step, value)
    }

    fn summary(&mut self, step: usize, value: Value) -> Result<()> {
        self.write(&Event {
            wall_time: now(),
            step: step as i64,
            summary: Some(Summary { value: vec![value] }),
            ..Default::default()
        })
    }

    pub fn scalar(&mut self, tag: &str, step: usize, v: f64) -> Result<()> {
        self.summary(
            step,
            Value {
                tag: tag.into(),
                simple_value: Some(v as f32),
                // TensorBoard 2.20 shows a bare simple_value as blank in the HParams tab's
                // metric columns; with the scalars plugin named (as PyTorch writes) it reads it.
                metadata: Some(SummaryMetadata {
                    plugin_data: Some(PluginData {
                        plugin_name: "scalars".into(),
                        content: Vec::new(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    /// A histogram of `values` in 30 equal-width buckets between their min and max.
    pub fn histogram(&mut self, tag: &str, step: usize, values: &[f32]) -> Result<()> {
        let finite: Vec<f64> = values
            .iter()
            .map(|&v| v as f64)
            .filter(|v| v.is_finite())
            .collect();
        if finite.is_empty() {
            return Ok(());
        }
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let k = 30;
        let width = ((max - min) / k as f64).max(1e-12);
        let mut bucket = vec![0f64; k];
        for v in &finite {
            let i = (((v - min) / width) as usize).min(k - 1);
            bucket[i] += 1.0;
        }
        let bucket_limit = (1..=k).map(|i| min + width * i as f64).collect();
        self.summary(
            step,
            Value {
                tag: tag.into(),
                histo: Some(HistogramProto {
                    min,
                    max,
                    num: finite.len() as f64,
                    sum: finite.iter().sum(),
                    sum_squares: finite.iter().map(|v| v * v).sum(),
                    bucket_limit,
                    bucket,
                }),
                ..Default::default()
            },
        )
    }

    /// A curve drawn as a histogram: bucket i spans [i, i+1) and holds `heights[i]` (used for
    /// the per-timestep gradient flow, so TensorBoard's histogram view shows norm vs. step).
    pub fn curve(&mut self, tag: &str, step: usize, heights: &[f64]) -> Result<()> {
        if heights.is_empty() {
            return Ok(());
        }
        self.summary(
            step,
            Value {
                tag: tag.into(),
                histo: Some(HistogramProto {
                    min: 0.0,
                    max: heights.len() as f64,
                    num: heights.iter().sum(),
                    sum: heights
                        .iter()
                        .enumerate()
                        .map(|(i, h)| (i as f64 + 0.5) * h)
                        .sum(),
                    sum_squares: heights
                        .iter()
                        .enumerate()
                        .map(|(i, h)| (i as f64 + 0.5).powi(2) * h)
                        .sum(),
                    bucket_limit: (1..=heights.len()).map(|i| i as f64).collect(),
                    bucket: heights.to_vec(),
                }),
                ..Default::default()
            },
        )
    }

    /// A PNG image (TensorBoard's Images tab).
    pub fn image(
        &mut self,
        tag: &str,
        step: usize,
        png: &[u8],
        width: u32,
        height: u32,
    ) -> Result<()> {
        self.summary(
            step,
            Value {
                tag: tag.into(),
                image: Some(Image {
                    height: height as i32,
                    width: width as i32,
                    colorspace: 3,
                    encoded_image_string: png.to_vec(),
                }),
                ..Default::default()
            },
        )
    }

    /// Markdown text (TensorBoard's Text tab: the `text` plugin reads a string tensor).
    pub fn text(&mut self, tag: &str, step: usize, markdown: &str) -> Result<()> {
        self.summary(
            step,
            Value {
                tag: tag.into(),
                tensor: Some(TensorProto {
                    dtype: 7,
                    tensor_shape: Some(TensorShapeProto { dim: Vec::new() }),
                    string_val: vec![markdown.as_bytes().to_vec()],
                    ..Default::default()
                }),
                metadata: Some(SummaryMetadata {
                    plugin_data: Some(PluginData {
                        plugin_name: "text".into(),
                        content: Vec::new(),
                    }),
                    data_class: 2,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

/// Reads back an event file, checking both CRCs of every record.
pub fn read_events(path: &Path) -> io::Result<Vec<Event>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let bad = |m: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {m}", path.display()),
        )
    };
    let mut events = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if at + 12 > bytes.len() {
            return Err(bad("truncated record header"));
        }
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| bad("header"))?) as usize;
        let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().map_err(|_| bad("crc"))?);
        if crc != masked_crc(len_bytes) {
            return Err(bad("length CRC mismatch"));
        }
        let start = at + 12;
        if start + len + 4 > bytes.len() {
            return Err(bad("truncated record"));
        }
        let data = &bytes[start..start + len];
        let crc = u32::from_le_bytes(
            bytes[start + len..start + len + 4]
                .try_into()
                .map_err(|_| bad("crc"))?,
        );
        if crc != masked_crc(data) {
            return Err(bad("data CRC mismatch"));
        }
        events.push(Event::decode(data).map_err(|e| bad(&e.to_string()))?);
        at = start + len + 4;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorflow() {
        // TFRecord's masked CRC of an empty payload (tensorflow/core/lib/hash/crc32c.h).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(
            masked_crc(b""),
            0u32.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn round_trip_and_unique_names() {
        let dir = std::env::temp_dir().join(format!("rnnlab-tb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut a = EventWriter::create(&dir).unwrap();
        let b = EventWriter::create(&dir).unwrap();
        assert_ne!(a.path(), b.path());
        a.scalar("train/loss", 3, 0.25).unwrap();
        a.histogram("w", 1, &[1.0, 2.0, 3.0]).unwrap();
        a.flush().unwrap();
        let ev = read_events(a.path()).unwrap();
        assert_eq!(ev[0].file_version.as_deref(), Some("brain.Event:2"));
        let v = &ev[1].summary.as_ref().unwrap().value[0];
        assert_eq!(
            (v.tag.as_str(), v.simple_value, ev[1].step),
            ("train/loss", Some(0.25), 3)
        );
        let h = ev[2].summary.as_ref().unwrap().value[0]
            .histo
            .clone()
            .unwrap();
        assert_eq!(h.num, 3.0);
        assert_eq!(h.bucket.iter().sum::<f64>(), 3.0);
    }
}
