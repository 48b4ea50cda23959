//! `run-exp bench`: throughput on the PyTorch peers' workloads, with their flags and JSON keys.

use std::process::ExitCode;

use rnnlab::bench::{bench_cell, BenchArgs};
use rnnlab::config::CellKind;
use rnnlab::device::DeviceSpec;

use crate::{emit, BAD_INPUT, FAILED};

#[derive(clap::Args)]
pub struct BenchCli {
    /// Cells to time, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lstm,gru,rnn"
    )]
    cells: Vec<CellArg>,
    /// Sequences (clips with --video) per step. Default 64 (16 with --video).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, default_value_t = 64)]
    seq: usize,
    #[arg(long, default_value_t = 128)]
    emb: usize,
    /// Hidden units. Default 256 (128 with --video).
    #[arg(long)]
    hidden: Option<usize>,
    #[arg(long, default_value_t = 20000)]
    vocab: usize,
    /// Classes. Default 2 (6 with --video).
    #[arg(long)]
    classes: Option<usize>,
    /// Timed steps (after the warmup). Default 30 (10 with --video).
    #[arg(long)]
    steps: Option<usize>,
    /// Untimed steps first. Default 5 (2 with --video).
    #[arg(long)]
    warmup: Option<usize>,
    /// CPU threads (sets RAYON_NUM_THREADS); 0 = candle's default.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// "cpu", "cuda", "cuda:N" or "auto".
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Truncated BPTT in training: backpropagate through each sequence's last K steps only
    /// (0: full BPTT), as ../shared/bench/torch_tbptt_peer.py's --tbptt. With --video the
    /// frames before the windows are encoded without a graph too (encoders without batch norm).
    #[arg(long, default_value_t = 0)]
    tbptt: usize,
    /// Time the composed-ops reference implementation instead of the fused op.
    #[arg(long)]
    reference: bool,
    /// Skip training: time inference only (for profiling it).
    #[arg(long)]
    infer_only: bool,
    /// The video workload of torch_video_peer.py: clips -> CNN frame encoder -> cell.
    #[arg(long)]
    video: bool,
    /// --video: frames per clip (default 16; 8 with --encoder).
    #[arg(long, requires = "video")]
    frames: Option<usize>,
    /// --video: frame height and width (default 64; 112 with --encoder).
    #[arg(long, requires = "video")]
    size: Option<usize>,
    /// --video: colour channels.
    #[arg(long, default_value_t = 3, requires = "video")]
    channels: usize,
    /// --video: conv widths, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "32,64,128,128",
        requires = "video"
    )]
    conv: Vec<usize>,
    /// --video: batch norm after each conv.
    #[arg(long, requires = "video")]
    bn: bool,
    /// --video: a ResNet encoder instead of the CNN, torch_resnet_peer.py's workload (its
    /// --arch); defaults then --batch 4 --frames 8 --size 112 --hidden 256 --classes 101
    /// --steps 5 --warmup 1.
    #[arg(long, requires = "video", value_parser = ["resnet18", "resnet34", "resnet50"])]
    encoder: Option<String>,
}

/// `--cells` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CellArg {
    Lstm,
    Gru,
    Rnn,
}

pub fn bench(b: BenchCli) -> ExitCode {
    let cells: Vec<CellKind> = b
        .cells
        .iter()
        .map(|c| match c {
            CellArg::Lstm => CellKind::Lstm,
            CellArg::Gru => CellKind::Gru,
            CellArg::Rnn => CellKind::Rnn,
        })
        .collect();
    let v = b.video;
    let encoder = b.encoder.as_deref().map(|e| match e {
        "resnet34" => rnnlab::config::FrameEncoder::Resnet34,
        "resnet50" => rnnlab::config::FrameEncoder::Resnet50,
        _ => rnnlab::config::FrameEncoder::Resnet18,
    });
    let r = encoder.is_some();
    let pick = |x: Option<usize>, text: usize, video: usize, resnet: usize| {
        x.unwrap_or(match (v, r) {
            (_, true) => resnet,
            (true, false) => video,
            (false, false) => text,
        })
    };
    let (batch, hidden, classes, steps, warmup) = (
        pick(b.batch, 64, 16, 4),
        pick(b.hidden, 256, 128, 256),
        pick(b.classes, 2, 6, 101),
        pick(b.steps, 30, 10, 5),
        pick(b.warmup, 5, 2, 1),
    );
    let (frames, size) = match (r, b.frames, b.size) {
        (true, None, None) => (8, 112),
        (true, f, s) => (f.unwrap_or(8), s.unwrap_or(112)),
        (false, f, s) => (f.unwrap_or(16), s.unwrap_or(64)),
    };
    let conv = b.conv.clone();
    let zero = [
        ("--batch", batch),
        ("--seq", b.seq),
        ("--emb", b.emb),
        ("--hidden", hidden),
        ("--vocab", b.vocab),
        ("--classes", classes),
        ("--steps", steps),
        ("--frames", frames),
        ("--size", size),
        ("--channels", b.channels),
        ("--conv", conv.iter().copied().min().unwrap_or(0)),
    ];
    if let Some((flag, _)) = zero.iter().find(|(_, v)| *v == 0) {
        rnnlab::say!("error: {flag} must be at least 1");
        return ExitCode::from(BAD_INPUT);
    }
    let device = match DeviceSpec::parse(&b.device)
        .map_err(rnnlab::Error::Device)
        .and_then(|d| d.open())
    {
        Ok(d) => d,
        Err(e) => {
            rnnlab::say!("error: --device: {e}");
            return ExitCode::from(BAD_INPUT);
        }
    };
    let args = BenchArgs {
        cells,
        batch,
        seq: b.seq,
        emb: b.emb,
        hidden,
        vocab: b.vocab,
        classes,
        steps,
        warmup,
        tbptt: b.tbptt,
        reference: b.reference,
        infer_only: b.infer_only,
        encoder,
        video: v.then_some(rnnlab::bench::VideoArgs {
            frames,
            size,
            channels: b.channels,
            conv,
            bn: b.bn,
        }),
    };
    for &cell in &args.cells {
        let line = match encoder {
            Some(e) => rnnlab::bench::bench_encoder(&args, e, cell, &device),
            None => bench_cell(&args, cell, &device),
        };
        match line {
            Ok(line) => {
                if let Err(code) = emit(line) {
                    return code;
                }
            }
            Err(e) => {
                rnnlab::say!("error: {e:#}");
                return ExitCode::from(FAILED);
            }
        }
    }
    ExitCode::SUCCESS
}
