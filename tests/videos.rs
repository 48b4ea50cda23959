//! `source = "videos"`: video files decoded by ffmpeg. The tests encode their own clips with
//! ffmpeg (lossless FFV1 where pixels are compared, MPEG-4 / VP9 / H.264 elsewhere): frame
//! counts at a rate, sizes, pixels grey and RGB, corrupt and empty files, a run over a folder
//! tree and a UCF101 layout, `skip_bad`, a missing ffmpeg, and `predict --video`. Without
//! ffmpeg on the PATH (`.ci/run` installs it with apt-get) they say so and are skipped.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{run_exp, run_exp_env, stderr, temp_dir};
use rnnlab::data::{videos, FrameShape};

fn have_ffmpeg(test: &str) -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED {test}: the ffmpeg program is not installed (.ci/run installs it: apt-get install ffmpeg)"
        );
    }
    ok
}

/// Encodes `frames` (each w x h, grey, or RGB interleaved) at `rate` frames a second into
/// `path` with the encoder arguments `codec`.
fn encode(
    path: &Path,
    frames: &[Vec<u8>],
    (w, h): (usize, usize),
    rgb: bool,
    rate: u32,
    codec: &[&str],
) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let size = format!("{w}x{h}");
    let rate = rate.to_string();
    let mut child = Command::new("ffmpeg")
        .args(["-y", "-v", "error", "-f", "rawvideo", "-pix_fmt"])
        .arg(if rgb { "rgb24" } else { "gray" })
        .args(["-s", &size, "-r", &rate, "-i", "-"])
        .args(codec)
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for f in frames {
        stdin.write_all(f).unwrap();
    }
    drop(stdin);
    assert!(
        child.wait().unwrap().success(),
        "encoding {}",
        path.display()
    );
}

const FFV1: &[&str] = &["-c:v", "ffv1"];
const MPEG4: &[&str] = &["-c:v", "mpeg4", "-q:v", "2", "-pix_fmt", "yuv420p"];

/// Grey frames whose every pixel is frame i's value.
fn flat(values: &[u8], (w, h): (usize, usize)) -> Vec<Vec<u8>> {
    values.iter().map(|&v| vec![v; w * h]).collect()
}

#[test]
fn decoding_gives_the_frames_at_the_rate_and_size_asked() {
    if !have_ffmpeg("decoding_gives_the_frames_at_the_rate_and_size_asked") {
        return;
    }
    let dir = temp_dir("decode");
    // 20 grey frames at 10 frames a second: 2 s; each pixel (x + 3y + 7i) mod 256.
    let (w, h) = (16, 12);
    let frames: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            (0..h)
                .flat_map(|y| (0..w).map(move |x| ((x + 3 * y + 7 * i) % 256) as u8))
                .collect()
        })
        .collect();
    let mkv = dir.join("grey.mkv");
    encode(&mkv, &frames, (w, h), false, 10, FFV1);
    let grey = FrameShape {
        channels: 1,
        height: h,
        width: w,
    };
    // Every frame, pixel for pixel (FFV1 is lossless, the size unchanged).
    assert_eq!(videos::decode(&mkv, grey, None).unwrap(), frames.concat());
    // 5 frames a second of a 2 s video: 10 frames; 2.5 a second: 5.
    let n = |fps: f64, shape: FrameShape| {
        videos::decode(&mkv, shape, Some(fps)).unwrap().len() / shape.pixels()
    };
    assert_eq!(n(5.0, grey), 10);
    assert_eq!(n(2.5, grey), 5);
    // Scaled to 8 x 6: 48 bytes a frame.
    let small = FrameShape {
        channels: 1,
        height: 6,
        width: 8,
    };
    assert_eq!(videos::decode(&mkv, small, None).unwrap().len(), 20 * 48);

    // RGB: channel-major (CHW) frames, as PyTorch's.
    let rgb: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            (0..w * h)
                .flat_map(|p| [(p % 200) as u8, 50 + 60 * i, (255 - p % 100) as u8])
                .collect()
        })
        .collect();
    let path = dir.join("rgb.mkv");
    encode(
        &path,
        &rgb,
        (w, h),
        true,
        10,
        &["-c:v", "ffv1", "-pix_fmt", "bgr0"],
    );
    let shape = FrameShape {
        channels: 3,
        height: h,
        width: w,
    };
    let got = videos::decode(&path, shape, None).unwrap();
    let want: Vec<u8> = rgb
        .iter()
        .flat_map(|f| (0..3).flat_map(move |c| f.iter().skip(c).step_by(3).copied()))
        .collect();
    assert_eq!(got, want);

    // A corrupt file and an empty one: errors naming them and what ffmpeg said.
    let corrupt = dir.join("corrupt.mp4");
    std::fs::write(&corrupt, b"not a video at all, just some bytes").unwrap();
    let empty = dir.join("empty.avi");
    std::fs::write(&empty, b"").unwrap();
    for bad in [&corrupt, &empty] {
        let e = videos::decode(bad, grey, None).unwrap_err().to_string();
        assert!(
            e.starts_with(&bad.display().to_string()) && e.contains("ffmpeg"),
            "{e}"
        );
    }
    // A file cut in half: either an error or fewer frames, never the whole video.
    let bytes = std::fs::read(&mkv).unwrap();
    let cut = dir.join("cut.mkv");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    if let Ok(px) = videos::decode(&cut, grey, None) {
        assert!(px.len() < frames.concat().len());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Class "brighten" ramps up through the clip, "darken" down; each clip its own level offset.
fn ramp(class: usize, clip: usize, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            let t = if class == 0 { i } else { n - 1 - i };
            (30 + 20 * t + 3 * (clip % 5)) as u8
        })
        .collect()
}

fn write_tree(root: &Path, split: &str, per_class: usize, ext: &str, codec: &[&str]) {
    for (c, class) in ["brighten", "darken"].iter().enumerate() {
        for k in 0..per_class {
            let path = root.join(split).join(class).join(format!("v{k:02}.{ext}"));
            encode(
                &path,
                &flat(&ramp(c, k, 10), (32, 32)),
                (32, 32),
                false,
                10,
                codec,
            );
        }
    }
}

fn config(dir: &Path, root: &Path) -> PathBuf {
    let text = format!(
        r#"[experiment]
name = "videos"
out_dir = "{out}"

[data]
source = "videos"
train = "{train}"
test = "{test}"
val_fraction = 0.25
frames_per_clip = 5
height = 16
width = 16

[model]
frame_encoder = "cnn"
conv_channels = [8]
cell = "gru"
hidden_size = 16

[train]
epochs = 3
batch_size = 4
lr = 1e-2

[log]
progress = false
histograms_every_epochs = 0
"#,
        out = dir.join("results").display(),
        train = root.join("train").display(),
        test = root.join("test").display(),
    );
    let path = dir.join("videos.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn summary(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn a_folder_of_videos_trains_predicts_and_names_bad_files() {
    if !have_ffmpeg("a_folder_of_videos_trains_predicts_and_names_bad_files") {
        return;
    }
    let dir = temp_dir("tree");
    let root = dir.join("videos");
    write_tree(&root, "train", 8, "avi", MPEG4);
    write_tree(&root, "test", 3, "mp4", MPEG4);
    // Other containers and codecs in the same tree.
    encode(
        &root.join("train/brighten/w.webm"),
        &flat(&ramp(0, 9, 10), (32, 32)),
        (32, 32),
        false,
        10,
        &["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p"],
    );
    encode(
        &root.join("train/darken/k.mkv"),
        &flat(&ramp(1, 9, 10), (32, 32)),
        (32, 32),
        false,
        10,
        FFV1,
    );
    let cfg = config(&dir, &root);
    let c = cfg.to_str().unwrap();
    let o = run_exp(&[c]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &stderr(&o);
    assert!(said.contains("decoded 24 clips"), "{said}");
    let run_dir = dir.join("results/videos/run-001");
    let s = summary(&run_dir);
    assert_eq!(s["classes"], serde_json::json!(["brighten", "darken"]));
    assert!(s["test_acc"].as_f64().is_some());
    assert!(s.get("skipped_inputs").is_none());
    // A second run decodes nothing.
    let again = run_exp(&[c, "--set", "experiment.name=again"]);
    let said = String::from_utf8_lossy(&again.stdout).to_string() + &stderr(&again);
    assert!(said.contains("read from the decoded cache"), "{said}");

    // predict --video: one JSON line per file, decoded as training's were.
    let file = root.join("test/darken/v01.mp4");
    let p = run_exp(&[
        "predict",
        run_dir.to_str().unwrap(),
        "--video",
        file.to_str().unwrap(),
    ]);
    assert!(p.status.success(), "{}", stderr(&p));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&p.stdout).trim()).unwrap();
    assert_eq!(line["video"], file.display().to_string());
    assert!(line["probs"]["darken"].as_f64().is_some());
    assert!(line.get("top5").is_none(), "two classes have no top-5");

    // A corrupt video: exit 2 naming it, no run folder; with skip_bad, skipped and counted.
    std::fs::write(root.join("train/darken/broken.avi"), b"RIFF garbage").unwrap();
    let bad = run_exp(&[c, "--set", "experiment.name=bad"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("broken.avi") && stderr(&bad).contains("ffmpeg cannot decode"),
        "{}",
        stderr(&bad)
    );
    assert!(!dir.join("results/bad").exists());
    let skip = run_exp(&[
        c,
        "--set",
        "experiment.name=skip",
        "--set",
        "data.skip_bad=true",
    ]);
    assert!(skip.status.success(), "{}", stderr(&skip));
    let said = String::from_utf8_lossy(&skip.stdout).to_string() + &stderr(&skip);
    assert!(said.contains("skipped 1 videos"), "{said}");
    let s = summary(&dir.join("results/skip/run-001"));
    let skipped = s["skipped_inputs"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].as_str().unwrap().contains("broken.avi"));
    // Skipped from the cache, too, and refused again without skip_bad.
    let bad = run_exp(&[c, "--set", "experiment.name=bad"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("broken.avi"), "{}", stderr(&bad));
    std::fs::remove_file(root.join("train/darken/broken.avi")).unwrap();

    // ffmpeg missing: exit 2, saying how to install it.
    let o = run_exp_env(
        &[c, "--set", "experiment.name=none"],
        &[("RNNLAB_FFMPEG", "/nonexistent/ffmpeg")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("apt-get install ffmpeg"),
        "{}",
        stderr(&o)
    );

    // A list file of `path label` lines, relative to it; a missing file named with its line.
    let mut list = String::new();
    for (label, class) in ["brighten", "darken"].iter().enumerate() {
        for k in 0..8 {
            list += &format!("train/{class}/v{k:02}.avi {label}\n");
        }
    }
    std::fs::write(root.join("train.txt"), &list).unwrap();
    let train = format!("data.train={}", root.join("train.txt").display());
    // Ids name no classes: the names the test tree's folders are mapped by.
    let names = "data.class_names=[\"brighten\", \"darken\"]";
    let o = run_exp(&[
        c,
        "--set",
        &train,
        "--set",
        names,
        "--set",
        "experiment.name=listed",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(root.join("train.txt"), list + "train/darken/gone.avi 1\n").unwrap();
    let o = run_exp(&[
        c,
        "--set",
        &train,
        "--set",
        names,
        "--set",
        "experiment.name=gone",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("train.txt:17") && stderr(&o).contains("gone.avi"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// UCF101's layout and split files (CRLF, as shipped) over video files: the official split,
/// validation by group, and multi-view testing.
#[test]
fn the_ucf101_protocol_reads_the_videos_themselves() {
    if !have_ffmpeg("the_ucf101_protocol_reads_the_videos_themselves") {
        return;
    }
    let dir = temp_dir("ucf");
    let root = dir.join("UCF-101");
    let notes = dir.join("ucfTrainTestlist");
    std::fs::create_dir_all(&notes).unwrap();
    let classes = ["Brighten", "Darken"];
    let (mut class_ind, mut train, mut test) = (String::new(), String::new(), String::new());
    for (c, class) in classes.iter().enumerate() {
        class_ind += &format!("{} {class}\r\n", c + 1);
        for g in 1..=6 {
            for k in 1..=2 {
                let name = format!("{class}/v_{class}_g{g:02}_c{k:02}.avi");
                encode(
                    &root.join(&name),
                    &flat(&ramp(c, g * 2 + k, 12), (32, 32)),
                    (32, 32),
                    false,
                    10,
                    MPEG4,
                );
                if g <= 4 {
                    train += &format!("{name} {}\r\n", c + 1);
                } else {
                    test += &format!("{name}\r\n");
                }
            }
        }
    }
    std::fs::write(notes.join("classInd.txt"), class_ind).unwrap();
    std::fs::write(notes.join("trainlist01.txt"), train).unwrap();
    std::fs::write(notes.join("testlist01.txt"), test).unwrap();
    let cfg = config(&dir, &root);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text
        .lines()
        .filter(|l| !l.starts_with("train =") && !l.starts_with("test ="))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            "source = \"videos\"",
            &format!(
                "source = \"videos\"\nprotocol = \"ucf101\"\nroot = \"{}\"\nannotations = \"{}\"\nfps = 5.0",
                root.display(),
                notes.display()
            ),
        )
        + "\n[eval]\nclips = 2\n";
    std::fs::write(&cfg, text).unwrap();
    let o = run_exp(&[cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &stderr(&o);
    assert!(
        said.contains("ucf101 split 1: 12 training, 4 validation")
            && said.contains("8 test videos, 2 classes"),
        "{said}"
    );
    let s = summary(&dir.join("results/videos/run-001"));
    assert_eq!(s["classes"], serde_json::json!(["Brighten", "Darken"]));
    let support: Vec<usize> = serde_json::from_value(s["test_scores"]["support"].clone()).unwrap();
    assert_eq!(support, [4, 4]);
    let _ = std::fs::remove_dir_all(&dir);
}
