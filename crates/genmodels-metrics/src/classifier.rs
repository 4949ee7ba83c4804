//! A small convolutional classifier trained here on the real data (e.g. Fashion-MNIST): its
//! penultimate layer is a domain feature space for FID-like distances, its logits give a domain
//! Inception Score and the class histogram of generated samples, and training it on generated
//! labelled samples gives the Classification Accuracy Score (Ravuri & Vinyals 2019).
//!
//! A domain Inception Score is not the ImageNet Inception Score and is not comparable with
//! published numbers; it says how confidently and how evenly the domain classifier recognises
//! the generated classes.

use crate::inception::FeatureExtractor;
use crate::{Error, Result};
use genmodels_core::checkpoint::{Checkpoint, TrainState};
use genmodels_core::data::{BatchSource, DataLoader, Dataset, DynDataset};
use genmodels_core::optim::{Adam, AdamConfig, StepCtx};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::nn::{self, ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

/// Shape of the classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub channels: i64,
    pub image_size: i64,
    pub classes: i64,
    /// Width of the penultimate (feature) layer.
    pub feature_dim: i64,
}

/// conv(32)-pool-conv(64)-pool-fc(feature_dim)-dropout-fc(classes).
pub struct DomainClassifier {
    pub cfg: ClassifierConfig,
    pub vs: VarStore,
    body: nn::SequentialT,
    head: nn::Linear,
    device: Device,
}

impl DomainClassifier {
    pub fn new(cfg: ClassifierConfig, device: Device) -> Result<Self> {
        if cfg.image_size % 4 != 0 || cfg.classes < 2 {
            return Err(Error::invalid(format!(
                "classifier needs an image side divisible by 4 and at least 2 classes, got {cfg:?}"
            )));
        }
        let vs = VarStore::new(device);
        let p = vs.root();
        let side = cfg.image_size / 4;
        let conv = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let body = nn::seq_t()
            .add(nn::conv2d(&p / "conv1", cfg.channels, 32, 3, conv))
            .add_fn(|x| x.relu().max_pool2d_default(2))
            .add(nn::conv2d(&p / "conv2", 32, 64, 3, conv))
            .add_fn(|x| x.relu().max_pool2d_default(2).flatten(1, -1))
            .add(nn::linear(
                &p / "fc1",
                64 * side * side,
                cfg.feature_dim,
                Default::default(),
            ))
            .add_fn(|x| x.relu());
        let head = nn::linear(&p / "fc2", cfg.feature_dim, cfg.classes, Default::default());
        Ok(DomainClassifier {
            cfg,
            vs,
            body,
            head,
            device,
        })
    }

    /// Penultimate features of images in [-1, 1].
    pub fn embed(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| {
            self.body
                .forward_t(&x.to_device(self.device).to_kind(Kind::Float), false)
        })
    }

    /// Logits of images in [-1, 1].
    pub fn logits(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| {
            self.body
                .forward_t(&x.to_device(self.device).to_kind(Kind::Float), false)
                .apply(&self.head)
        })
    }

    /// Trains on a labelled dataset for `epochs` with Adam(1e-3), batch 128 (or the whole set
    /// when smaller), dropout 0.3.
    pub fn fit(
        &mut self,
        train: DynDataset,
        epochs: usize,
        seed: u64,
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<()> {
        let batch = 128.min(train.len().max(1));
        let mut dl = DataLoader::new(train, batch, true, seed, self.device)?;
        let mut opt = Adam::new(&self.vs, AdamConfig::default());
        let steps = dl.batches_per_epoch() * epochs as u64;
        for step in 0..steps {
            let b = dl.batch_at(step)?;
            let y =
                b.y.ok_or_else(|| Error::invalid("classifier training data has no labels"))?;
            let h = self.body.forward_t(&b.x, true).dropout(0.3, true);
            let loss = h.apply(&self.head).cross_entropy_for_logits(&y);
            opt.backward_step(&loss, &StepCtx::default());
            progress(step as usize + 1, steps as usize, loss.double_value(&[]));
        }
        Ok(())
    }

    /// Accuracy on a labelled dataset.
    pub fn accuracy(&self, ds: &dyn Dataset) -> Result<f64> {
        let mut correct = 0i64;
        DataLoader::for_each_in_order(ds, 500, self.device, |b| {
            let y =
                b.y.ok_or_else(|| Error::invalid("evaluation data has no labels"))?;
            correct += self
                .logits(&b.x)
                .argmax(1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[]);
            Ok(())
        })?;
        Ok(correct as f64 / ds.len() as f64)
    }

    /// Saves weights and config (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut ck = Checkpoint::new(
            "domain-classifier",
            serde_json::to_value(&self.cfg)?,
            TrainState::default(),
        );
        ck.add_var_store("model", &self.vs);
        ck.save(path)
    }

    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let ck = Checkpoint::load(path)?;
        if ck.meta.model != "domain-classifier" {
            return Err(Error::bad_data(
                path,
                format!("holds a `{}`, not a domain classifier", ck.meta.model),
            ));
        }
        let cfg: ClassifierConfig = serde_json::from_value(ck.meta.config.clone())?;
        let me = DomainClassifier::new(cfg, device)?;
        ck.load_var_store("model", &me.vs, path)?;
        Ok(me)
    }
}

impl FeatureExtractor for DomainClassifier {
    fn dim(&self) -> i64 {
        self.cfg.feature_dim
    }
    fn features(&self, images_0_255: &Tensor) -> Result<Tensor> {
        Ok(self.embed(&(images_0_255 / 127.5 - 1.0)))
    }
    fn name(&self) -> String {
        format!(
            "domain classifier penultimate layer ({}-d)",
            self.cfg.feature_dim
        )
    }
}

/// KL(class histogram of generated samples || class histogram of real labels), in nats, with
/// the generated histogram from the classifier's argmax.
pub fn class_histogram_kl(
    fake_logits: &Tensor,
    real_labels: &Tensor,
    classes: i64,
) -> Result<(f64, Vec<f64>)> {
    let pred = fake_logits.argmax(1, false).to_device(Device::Cpu);
    let hist =
        |t: &Tensor| t.bincount(None::<Tensor>, classes).to_kind(Kind::Double) / t.size()[0] as f64;
    let (p, q) = (hist(&pred), hist(&real_labels.to_device(Device::Cpu)));
    let kl = (&p * ((&p + 1e-12).log() - (&q + 1e-12).log()))
        .sum(Kind::Double)
        .double_value(&[]);
    Ok((kl, Vec::try_from(&p).map_err(Error::Torch)?))
}

/// Classification Accuracy Score: a fresh classifier trained on `train` (generated, or real plus
/// generated) and tested on real `test` data.
pub fn classification_accuracy_score(
    cfg: ClassifierConfig,
    train: DynDataset,
    test: &dyn Dataset,
    epochs: usize,
    seed: u64,
    device: Device,
) -> Result<f64> {
    tch::manual_seed(seed as i64);
    let mut c = DomainClassifier::new(cfg, device)?;
    c.fit(train, epochs, seed, &mut |_, _, _| {})?;
    c.accuracy(test)
}

#[cfg(test)]
mod tests {
    use super::*;
    use genmodels_core::data::Dataset;
    use std::sync::Arc;

    /// A dataset of 8x8 images whose class is which quadrant is bright.
    struct Quadrants(usize);
    impl Dataset for Quadrants {
        fn len(&self) -> usize {
            self.0
        }
        fn example_shape(&self) -> Vec<i64> {
            vec![1, 8, 8]
        }
        fn num_classes(&self) -> Option<usize> {
            Some(4)
        }
        fn get(&self, i: usize, out: &mut [f32]) -> genmodels_core::Result<Option<i64>> {
            let q = (i % 4) as i64;
            for (k, o) in out.iter_mut().enumerate() {
                let (r, c) = (k / 8, k % 8);
                let quad = (r / 4) * 2 + c / 4;
                *o = if quad as i64 == q { 1.0 } else { -1.0 } + ((i * 7 + k) % 5) as f32 * 0.05;
            }
            Ok(Some(q))
        }
        fn describe(&self) -> String {
            "quadrants".into()
        }
    }

    #[test]
    fn learns_a_separable_task_and_round_trips() {
        tch::manual_seed(0);
        let cfg = ClassifierConfig {
            channels: 1,
            image_size: 8,
            classes: 4,
            feature_dim: 16,
        };
        let ds: DynDataset = Arc::new(Quadrants(256));
        let mut c = DomainClassifier::new(cfg.clone(), Device::Cpu).unwrap();
        c.fit(ds.clone(), 4, 0, &mut |_, _, _| {}).unwrap();
        assert!(c.accuracy(ds.as_ref()).unwrap() > 0.95);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        c.save(&p).unwrap();
        let d = DomainClassifier::load(&p, Device::Cpu).unwrap();
        let x = Tensor::rand([3, 1, 8, 8], (Kind::Float, Device::Cpu));
        assert!(c.logits(&x).equal(&d.logits(&x)));
        assert!(
            classification_accuracy_score(cfg, ds.clone(), ds.as_ref(), 4, 0, Device::Cpu).unwrap()
                > 0.95
        );
    }

    #[test]
    fn class_histogram_kl_has_its_closed_form_value() {
        // Generated argmax histogram p = [1/2, 1/2, 0, 0] against real q = [1/4, 1/4, 1/4, 1/4]:
        // KL(p || q) = 2 * 1/2 * ln(2) = ln 2; the reverse order of the arguments would be
        // infinite (clamped), a histogram of logits instead of argmax would differ too.
        let logits = Tensor::from_slice(&[
            3.0f32, 0.0, 0.0, 0.0, //
            0.9, 1.0, 0.0, 0.0, //
            2.0, 0.0, 1.0, 0.0, //
            0.0, 5.0, 0.0, 4.0,
        ])
        .view([4, 4]);
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3]);
        let (kl, hist) = class_histogram_kl(&logits, &labels, 4).unwrap();
        assert!((kl - std::f64::consts::LN_2).abs() < 1e-9, "{kl}");
        assert_eq!(hist, vec![0.5, 0.5, 0.0, 0.0]);
        // The same histogram as the real one: zero.
        let same = Tensor::eye(4, (Kind::Float, Device::Cpu));
        assert!(class_histogram_kl(&same, &labels, 4).unwrap().0.abs() < 1e-9);
    }
}
