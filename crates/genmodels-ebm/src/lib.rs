//! # genmodels-ebm
//!
//! Energy-based models on the genmodels core: an energy `E(x)` low on data, trained by
//! contrastive divergence against short-run Langevin samples.
//!
//! - [`sgld`]: stochastic gradient Langevin dynamics with step and noise set separately (as
//!   the reference codes do), gradient clipping, clamping.
//! - [`buffer`]: the replay buffer of persistent chains (5 % fresh restarts), checkpointed.
//! - [`net`]: energy networks on images and 2-D points (Swish / LeakyReLU, spectral norm).
//! - [`model`]: IGEBM (Du & Mordatch 2019; unconditional and class-conditional), JEM
//!   (Grathwohl et al. 2020), and an energy on 2-D mixtures; registered as `igebm`, `jem`,
//!   `ebm2d`, each with the `energy` capability.

pub mod buffer;
pub mod model;
pub mod net;
pub mod sgld;

use genmodels_core::model::ModelEntry;

/// The models of this family, for the `genmodels` command line.
pub fn entries() -> Vec<ModelEntry> {
    vec![
        model::igebm_entry(),
        model::jem_entry(),
        model::points_entry(),
    ]
}

/// libtorch's random generator is process-wide: the crate's tests that seed it take turns.
#[cfg(test)]
pub(crate) fn test_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::model::*;
    use super::*;
    use genmodels_core::checkpoint::{Checkpoint, TrainState};
    use genmodels_core::data::{Batch, DataLoader, Dataset, Mixture2d, MixtureKind};
    use genmodels_core::model::ClassConditional;
    use genmodels_core::model::{load_model_state, DataInfo, Model};
    use genmodels_core::optim::StepCtx;
    use tch::{Device, Kind, Tensor};

    fn info(shape: Vec<i64>, classes: Option<usize>) -> DataInfo {
        DataInfo {
            example_shape: shape,
            num_classes: classes,
            vocab_size: None,
            vocab: None,
        }
    }

    fn build(entry: &ModelEntry, info: &DataInfo, set: &[&str]) -> Box<dyn Model> {
        let mut json = (entry.default_config)(info).unwrap();
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        genmodels_core::model::apply_overrides(&mut json, &set).unwrap();
        (entry.build)(&json, Device::Cpu).unwrap()
    }

    fn tiny_image_batch(n: i64, seed: i64) -> Batch {
        tch::manual_seed(seed);
        let x = Tensor::rand([n, 1, 12, 12], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let y = Tensor::randint(3, [n], (Kind::Int64, Device::Cpu));
        Batch { x, y: Some(y) }
    }

    #[test]
    fn data_gets_lower_energy_than_noise_after_a_short_training_on_a_mixture() {
        let _rng = test_lock();
        tch::manual_seed(0);
        let mix = Mixture2d::new(MixtureKind::Ring8, 4096, 1).unwrap();
        let info = info(vec![2], Some(8));
        let mut m = build(&points_entry(), &info, &["width=32", "buffer_size=512"]);
        let idx: Vec<usize> = (0..mix.len()).collect();
        for step in 0..300u64 {
            tch::manual_seed(step as i64);
            let s = (step as usize * 64) % 4096;
            let b = DataLoader::collate(&mix, &idx[s..s + 64], Device::Cpu).unwrap();
            let ctx = StepCtx {
                step,
                ..Default::default()
            };
            m.train_step(&b, &ctx).unwrap();
        }
        let data = DataLoader::collate(&mix, &idx[..512], Device::Cpu)
            .unwrap()
            .x;
        // Noise in [-3, 3]^2 away from the modes (more than 0.5 from every centre).
        let noise = (Tensor::rand([2048, 2], (Kind::Float, Device::Cpu)) * 2.0 - 1.0) * 3.0;
        let c: Vec<f32> = MixtureKind::Ring8.centers().concat();
        let c = Tensor::from_slice(&c).reshape([8, 2]);
        let far = Tensor::cdist(&noise, &c, 2.0, None)
            .amin([1i64].as_slice(), false)
            .gt(0.5);
        let noise = noise.index_select(0, &far.nonzero().squeeze_dim(1));
        let e = m.as_energy().unwrap();
        let (ed, en) = (e.energy(&data).unwrap(), e.energy(&noise).unwrap());
        // The share of (data, noise) pairs ordered right: the AUROC of -E as a data detector.
        let ordered = en
            .unsqueeze(0)
            .gt_tensor(&ed.unsqueeze(1))
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(ordered > 0.9, "data below noise in {ordered} of the pairs");
    }

    #[test]
    fn jem_energy_is_minus_the_logsumexp_of_its_logits() {
        let _rng = test_lock();
        tch::manual_seed(1);
        let info = info(vec![1, 12, 12], Some(3));
        let mut m = build(
            &jem_entry(),
            &info,
            &["width=4", "buffer_size=16", "sgld.steps=2"],
        );
        let b = tiny_image_batch(5, 2);
        m.train_step(&b, &StepCtx::default()).unwrap();
        let e = m.as_energy().unwrap();
        let logits = e.class_logits(&b.x).unwrap().unwrap();
        assert_eq!(logits.size(), vec![5, 3]);
        let want = -logits.logsumexp([1i64].as_slice(), false);
        let got = e.energy(&b.x).unwrap();
        assert!(got.allclose(&want, 1e-6, 1e-6, false));
        // Conditional energies pick the label's logit.
        let y = b.y.as_ref().unwrap();
        let cond = energy_from(&logits, Some(y));
        let pick = -logits.gather(1, &y.unsqueeze(1), false).squeeze_dim(1);
        assert!(cond.equal(&pick));
        // Unlabelled data is refused with a clear error.
        let err = m.train_step(
            &Batch {
                x: b.x.shallow_clone(),
                y: None,
            },
            &StepCtx::default(),
        );
        assert!(err.unwrap_err().to_string().contains("needs labelled data"));
    }

    #[test]
    fn class_conditional_chains_descend_their_labels_energy() {
        let _rng = test_lock();
        tch::manual_seed(4);
        let info = info(vec![1, 12, 12], Some(3));
        let cfg = EbmConfig {
            shape: vec![1, 12, 12],
            width: 4,
            buffer_size: 64,
            class_sample_steps: 30,
            sgld: crate::sgld::SgldConfig {
                noise: 0.0,
                step_size: 200.0,
                ..EbmConfig::jem(3).sgld
            },
            ..EbmConfig::jem(3)
        };
        let mut m = Ebm::new("jem", cfg, Device::Cpu).unwrap();
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
        // The chains start from the buffer slots the same seed picks.
        tch::manual_seed(11);
        let idx = Tensor::randint(m.buffer.len(), [8], (Kind::Int64, Device::Cpu));
        let x0 = m.buffer.x.index_select(0, &idx);
        tch::manual_seed(11);
        let x = m.sample_classes(&y, 0.0).unwrap();
        assert_eq!(x.size(), vec![8, 1, 12, 12]);
        let e = |x: &Tensor, y: &Tensor| {
            tch::no_grad(|| m.energy_t(x, Some(y), false))
                .mean(Kind::Float)
                .double_value(&[])
        };
        let (before, after) = (e(&x0, &y), e(&x, &y));
        assert!(after < before, "E(x, y) {before} -> {after}");
        // The energy of the asked-for label falls more than that of another label.
        let other = (&y + 1).remainder(3);
        let drop_other = e(&x0, &other) - e(&x, &other);
        assert!(
            before - after > drop_other,
            "{} vs {drop_other}",
            before - after
        );
        let bad = Tensor::from_slice(&[3i64]);
        assert!(m.sample_classes(&bad, 0.0).is_err());
        // An unconditional energy has no classes to sample.
        let mut u = build(&igebm_entry(), &info, &["width=4", "buffer_size=8"]);
        assert!(u.as_class_conditional().is_none());
    }

    #[test]
    fn resume_with_the_buffer_is_bit_for_bit() {
        let _rng = test_lock();
        let info = info(vec![1, 12, 12], Some(3));
        let set = [
            "width=4",
            "buffer_size=32",
            "sgld.steps=3",
            "conditional=true",
        ];
        let steps = |m: &mut Box<dyn Model>, range: std::ops::Range<u64>| {
            for step in range {
                let b = tiny_image_batch(8, step as i64 + 100);
                tch::manual_seed(step as i64);
                let ctx = StepCtx {
                    step,
                    ..Default::default()
                };
                m.train_step(&b, &ctx).unwrap();
            }
        };
        tch::manual_seed(9);
        let mut a = build(&igebm_entry(), &info, &set);
        steps(&mut a, 0..3);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let mut ck = Checkpoint::new("igebm", a.config_json(), TrainState::default());
        for (name, vs) in a.var_stores() {
            ck.add_var_store(&format!("model/{name}"), vs);
        }
        a.save_optimizers(&mut ck);
        ck.save(&p).unwrap();
        steps(&mut a, 3..6);
        let back = Checkpoint::load(&p).unwrap();
        tch::manual_seed(1234); // a different initialisation, overwritten by the checkpoint
        let mut b = (igebm_entry().build)(&back.meta.config, Device::Cpu).unwrap();
        load_model_state(b.as_mut(), &back, &p, true).unwrap();
        steps(&mut b, 3..6);
        for ((na, va), (_, vb)) in a.var_stores().iter().zip(b.var_stores().iter()) {
            for (k, t) in va.variables() {
                assert!(
                    t.equal(&vb.variables()[&k]),
                    "{na}/{k} differs after resume"
                );
            }
        }
    }

    #[test]
    fn bad_settings_are_one_line_errors_naming_the_key() {
        use serde_json::json;
        let img = info(vec![1, 28, 28], Some(10));
        genmodels_core::model::check::assert_rejects(
            &igebm_entry(),
            &img,
            &[
                ("width", json!(0)),
                ("reinit", json!(1.5)),
                ("buffer_size", json!(0)),
                ("sgld", json!({"steps": -1})),
                ("max_energy", json!(0.0)),
                ("lr", json!(-1.0)),
            ],
        );
        let unlabelled = info(vec![1, 28, 28], None);
        let err = (jem_entry().default_config)(&unlabelled)
            .unwrap_err()
            .to_string();
        assert!(err.contains("classes"), "{err}");
        let err = (points_entry().default_config)(&img)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2-D points"), "{err}");
    }

    #[test]
    fn samples_have_the_datas_shape() {
        let _rng = test_lock();
        tch::manual_seed(3);
        let img = info(vec![1, 12, 12], None);
        let mut m = build(
            &igebm_entry(),
            &img,
            &["width=4", "buffer_size=8", "sgld.steps=2"],
        );
        let genmodels_core::model::Samples::Images(x) = tch::no_grad(|| m.sample(5)).unwrap()
        else {
            panic!("images expected")
        };
        assert_eq!(x.size(), vec![5, 1, 12, 12]);
        assert!(x.abs().max().double_value(&[]) <= 1.0);
        let pts = info(vec![2], Some(8));
        let mut m = build(
            &points_entry(),
            &pts,
            &["width=8", "buffer_size=8", "sample_from=\"noise\""],
        );
        let genmodels_core::model::Samples::Points(p) = m.sample(7).unwrap() else {
            panic!("points expected")
        };
        assert_eq!(p.size(), vec![7, 2]);
    }
}
