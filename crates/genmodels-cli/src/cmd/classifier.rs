//! `genmodels classifier`: the domain classifier behind `metrics --classifier` and `cas`.

use crate::common::{bar, device};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_core::data::DataSpec;
use genmodels_core::device::seed_everything;
use genmodels_metrics::classifier::{ClassifierConfig, DomainClassifier};
use std::path::PathBuf;

#[derive(Args)]
pub struct ClassifierArgs {
    /// Labelled training images.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Labelled test images.
    #[arg(long, default_value = "fashion-mnist:test")]
    test: String,
    /// Where to write the classifier.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
}

pub fn classifier(a: ClassifierArgs) -> Result<()> {
    let device = device(a.device.as_deref())?;
    let train = DataSpec::parse(&a.data)?.dataset()?;
    let test = DataSpec::parse(&a.test)?.dataset()?;
    let shape = train.example_shape();
    let (&[c, h, w], Some(k)) = (shape.as_slice(), train.num_classes()) else {
        bail!("the classifier needs labelled images, got examples of shape {shape:?}");
    };
    if h != w {
        bail!("the classifier needs square images, got {h}x{w}");
    }
    seed_everything(a.seed);
    let mut clf = DomainClassifier::new(
        ClassifierConfig {
            channels: c,
            image_size: h,
            classes: k as i64,
            feature_dim: 128,
        },
        device,
    )?;
    let b = bar(0, "training classifier");
    let t0 = std::time::Instant::now();
    clf.fit(train, a.epochs, a.seed, &mut |s, total, loss| {
        b.set_length(total as u64);
        b.set_position(s as u64);
        if s % 50 == 0 {
            b.set_message(format!("loss {loss:.3}"));
        }
    })?;
    b.finish();
    let acc = clf.accuracy(test.as_ref())?;
    clf.save(&a.out)?;
    println!(
        "classifier: test accuracy {:.4} after {} epochs ({:.0}s); written to {}",
        acc,
        a.epochs,
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
