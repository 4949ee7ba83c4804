//! Parity of the native `UNet2D` with diffusers' `UNet2DModel` on fixtures it computed
//! (scripts/make_unet_fixtures.py, diffusers 0.42.1, float32): each fixture folder is what
//! `save_pretrained` wrote, loaded here by name with `UNet2D::from_diffusers_folder`, run on
//! the stored inputs and compared with diffusers' output to 1e-4 x max(1, max |output|).
//!
//! `odd7_upsample_to_skip` is where genmodels deliberately goes further than diffusers: its
//! UNet2DModel raises on a side that does not halve evenly (the fixture records the error), and
//! the reference is diffusers' modules with each upsampler given the skip's size.
//!
//! Also: broken folders (a tensor removed, a wrong shape, an extra tensor, an unsupported block
//! type, another model class) are one-line errors naming the problem; old attention names load;
//! a saved folder loads back to the same outputs.

use genmodels_diffusion::unet::{UNet2D, UNet2DConfig, CONFIG_FILE, WEIGHTS_FILE};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

#[derive(Deserialize)]
struct Index {
    diffusers_version: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    folder: String,
    reference: String,
    diffusers_error: Option<String>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn index() -> Index {
    let text = std::fs::read_to_string(fixtures().join("unet_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn io(folder: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(folder.join("parity_io.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn run(unet: &UNet2D, io: &HashMap<String, Tensor>, train: bool) -> Tensor {
    tch::no_grad(|| {
        unet.forward(
            &io["sample"],
            &io["timesteps"],
            io.get("class_labels"),
            train,
        )
    })
    .unwrap()
}

/// `(max |ours - theirs|, max |theirs|)`.
fn diff(ours: &Tensor, theirs: &Tensor) -> (f64, f64) {
    assert_eq!(ours.size(), theirs.size());
    let d = (ours - theirs).abs().max().double_value(&[]);
    (d, theirs.abs().max().double_value(&[]))
}

/// A scratch folder of its own under cargo's temporary directory for integration tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("unet_parity_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_case_matches_diffusers() {
    let index = index();
    assert_eq!(index.diffusers_version, "0.42.1");
    assert!(index.cases.len() >= 8);
    for case in &index.cases {
        let folder = fixtures().join(&case.folder);
        let (unet, _vs) = UNet2D::from_diffusers_folder(&folder, Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let io = io(&folder);
        let out = run(&unet, &io, false);
        let (d, scale) = diff(&out, &io["output"]);
        println!(
            "{:<28} max |diff| {d:.2e}  (max |output| {scale:.3}, reference: {})",
            case.name, case.reference
        );
        assert!(d <= TOL * scale.max(1.0), "{}: max |diff| {d:e}", case.name);
        if case.name == "odd7_upsample_to_skip" {
            let e = case.diffusers_error.as_deref().unwrap_or("");
            assert!(e.contains("Sizes of tensors must match"), "{e}");
        }
    }
}

#[test]
fn train_mode_without_dropout_is_eval_mode_and_a_saved_folder_loads_back() {
    let folder = fixtures().join("unet_uncond_attn");
    let (unet, vs) = UNet2D::from_diffusers_folder(&folder, Device::Cpu).unwrap();
    let io = io(&folder);
    let eval = run(&unet, &io, false);
    assert_eq!(diff(&run(&unet, &io, true), &eval).0, 0.0);
    // A scalar timestep broadcasts over the batch, as diffusers' does.
    let t0 = io["timesteps"].get(0);
    let one = tch::no_grad(|| unet.forward(&io["sample"], &t0, None, false)).unwrap();
    let both = tch::no_grad(|| unet.forward(&io["sample"], &t0.repeat([2]), None, false)).unwrap();
    assert_eq!(diff(&one, &both).0, 0.0);

    let dir = scratch("saved");
    unet.save_diffusers_folder(&vs, &dir).unwrap();
    let (again, _vs2) = UNet2D::from_diffusers_folder(&dir, Device::Cpu).unwrap();
    assert_eq!(again.config(), unet.config());
    assert_eq!(diff(&run(&again, &io, false), &eval).0, 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Copies the `uncond_attn` fixture into a scratch folder with its weights and config changed.
fn broken(
    name: &str,
    edit_weights: impl FnOnce(&mut Vec<(String, Tensor)>),
    edit_config: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let good = fixtures().join("unet_uncond_attn");
    let dir = scratch(name);
    let mut weights = Tensor::read_safetensors(good.join(WEIGHTS_FILE)).unwrap();
    edit_weights(&mut weights);
    Tensor::write_safetensors(&weights, dir.join(WEIGHTS_FILE)).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(good.join(CONFIG_FILE)).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(dir.join(CONFIG_FILE), config.to_string()).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    let e = UNet2D::from_diffusers_folder(dir, Device::Cpu)
        .expect_err("the broken folder loaded")
        .to_string();
    let _ = std::fs::remove_dir_all(dir);
    println!("{e}");
    assert!(!e.contains('\n'), "not one line: {e}");
    e
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = broken(
        "missing",
        |w| w.retain(|(k, _)| k != "mid_block.attentions.0.to_q.weight"),
        |_| {},
    );
    let e = load_error(&dir);
    assert!(
        e.contains("tensor `mid_block.attentions.0.to_q.weight` of shape [16, 16] is missing"),
        "{e}"
    );
}

#[test]
fn a_wrong_shape_is_named_with_both_shapes() {
    let dir = broken(
        "shape",
        |w| {
            for (k, t) in w.iter_mut() {
                if k == "down_blocks.1.resnets.0.conv1.weight" {
                    *t = Tensor::zeros([16, 8, 1, 1], (Kind::Float, Device::Cpu));
                }
            }
        },
        |_| {},
    );
    let e = load_error(&dir);
    assert!(
        e.contains("tensor `down_blocks.1.resnets.0.conv1.weight` has shape [16, 8, 1, 1], the config expects [16, 8, 3, 3]"),
        "{e}"
    );
}

#[test]
fn an_unexpected_tensor_is_named() {
    let dir = broken(
        "extra",
        |w| {
            w.push((
                "class_embedding.weight".into(),
                Tensor::zeros([10, 32], (Kind::Float, Device::Cpu)),
            ))
        },
        |_| {},
    );
    let e = load_error(&dir);
    assert!(
        e.contains("unexpected tensor `class_embedding.weight` of shape [10, 32]"),
        "{e}"
    );
}

#[test]
fn an_unsupported_block_type_or_class_is_named_with_the_supported_ones() {
    let dir = broken(
        "block",
        |_| {},
        |c| c["down_block_types"][1] = "CrossAttnDownBlock2D".into(),
    );
    let e = load_error(&dir);
    assert!(
        e.contains("`down_block_types`")
            && e.contains("CrossAttnDownBlock2D")
            && e.contains("DownBlock2D")
            && e.contains("AttnDownBlock2D"),
        "{e}"
    );
    let dir = broken(
        "class",
        |_| {},
        |c| c["_class_name"] = "UNet2DConditionModel".into(),
    );
    let e = load_error(&dir);
    assert!(
        e.contains("UNet2DConditionModel") && e.contains("expected \"UNet2DModel\""),
        "{e}"
    );
    let dir = broken("groups", |_| {}, |c| c["norm_num_groups"] = 3.into());
    let e = load_error(&dir);
    assert!(
        e.contains("`norm_num_groups` = 3, expected a divisor of 8"),
        "{e}"
    );
}

#[test]
fn pre_0_14_attention_names_load() {
    let folder = fixtures().join("unet_uncond_attn");
    let dir = broken(
        "legacy",
        |w| {
            for (k, _) in w.iter_mut() {
                for (new, old) in [
                    ("to_q", "query"),
                    ("to_k", "key"),
                    ("to_v", "value"),
                    ("to_out.0", "proj_attn"),
                ] {
                    if k.contains(".attentions.") && k.contains(&format!(".{new}.")) {
                        *k = k.replace(&format!(".{new}."), &format!(".{old}."));
                    }
                }
            }
        },
        |_| {},
    );
    let (unet, _vs) = UNet2D::from_diffusers_folder(&dir, Device::Cpu).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let io = io(&folder);
    let (d, scale) = diff(&run(&unet, &io, false), &io["output"]);
    assert!(d <= TOL * scale.max(1.0), "{d}");
}

#[test]
fn the_small_preset_builds_from_its_stored_config() {
    let cfg = UNet2DConfig::small(1, 28, None);
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(UNet2DConfig::from_json(&json).unwrap(), cfg);
}
