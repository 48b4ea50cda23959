//! torchvision's resnet18 against PyTorch: ../shared/fixtures/torchvision_resnet18 (torchvision
//! 0.29, batch norm randomised so it is not the identity; README there). Features within 1e-4 of
//! the features' largest magnitude; with layer4 trainable, the gradients of `sum(features @
//! probe)` within 1e-4 relative per tensor (by norm). Skipped, saying so, where ../shared is
//! absent (it exists in CI).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use rnnlab::model::resnet::{Depth, ResNet};

fn fixture() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/torchvision_resnet18");
    if dir.join("weights.safetensors").exists() {
        return Some(dir);
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED resnet18 parity: {} is absent (it exists in CI)",
        dir.display()
    );
    None
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn norm(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
}

#[test]
fn resnet18_features_and_layer4_gradients_match_torchvision() {
    let Some(dir) = fixture() else { return };
    let io = candle_core::safetensors::load(dir.join("io.safetensors"), &Device::Cpu).unwrap();
    let net = ResNet::load(Depth::R18, &dir.join("weights.safetensors"), &["layer4"]).unwrap();
    let feats = net.forward(&io["input"]).unwrap();
    assert_eq!(feats.dims(), &[8, 512]);
    let want = &io["features"];
    let err = max_abs(&(&feats - want).unwrap());
    let scale = max_abs(want);
    assert!(
        err <= 1e-4 * scale,
        "features: max error {err}, largest {scale}"
    );

    let loss = feats
        .matmul(&io["probe"].unsqueeze(1).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let trainable = net.trainable();
    assert!(trainable.iter().all(|(n, _)| n.starts_with("layer4.")));
    let mut checked = 0;
    for (name, var) in &trainable {
        let ours = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient: {name}"));
        let theirs = &io[&format!("grad.layer4.{}", name.trim_start_matches("layer4."))];
        let rel = norm(&(ours - theirs).unwrap()) / norm(theirs).max(1e-30);
        assert!(rel <= 1e-4, "{name}: relative error {rel}");
        checked += 1;
    }
    let in_fixture = io.keys().filter(|k| k.starts_with("grad.layer4.")).count();
    assert_eq!(checked, in_fixture);
}

/// Every stage frozen: the folded channels-last path (batch norm in the weights) and the
/// composed candle ops both give torchvision's features.
#[test]
fn frozen_resnet18_features_match_torchvision_on_both_paths() {
    let Some(dir) = fixture() else { return };
    let io = candle_core::safetensors::load(dir.join("io.safetensors"), &Device::Cpu).unwrap();
    let net = ResNet::load(Depth::R18, &dir.join("weights.safetensors"), &[]).unwrap();
    let want = &io["features"];
    let scale = max_abs(want);
    for (path, feats) in [
        ("folded", net.forward(&io["input"]).unwrap()),
        ("composed", net.forward_composed(&io["input"]).unwrap()),
    ] {
        let err = max_abs(&(&feats - want).unwrap());
        assert!(
            err <= 1e-4 * scale,
            "{path}: max error {err}, largest {scale}"
        );
    }
}

#[test]
fn a_wrong_state_dict_names_the_keys() {
    let Some(dir) = fixture() else { return };
    let mut t =
        candle_core::safetensors::load(dir.join("weights.safetensors"), &Device::Cpu).unwrap();
    t.remove("layer3.1.bn2.running_var");
    let path = dir.join("weights.safetensors");
    let e = ResNet::from_tensors(Depth::R18, t.clone(), &[], &path)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("missing weights") && e.contains("layer3.1.bn2.running_var"),
        "{e}"
    );
    // The same file read as resnet34 misses whole blocks.
    let e = ResNet::from_tensors(Depth::R34, t, &[], &path)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("missing weights for R34") && e.contains("and"),
        "{e}"
    );
}
