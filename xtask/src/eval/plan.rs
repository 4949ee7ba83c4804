//! What eval measures for a recipe, derived from what its model declares it can do
//! (`genmodels list --json`), never from the model's name. [`plan`] is pure, so the choice is
//! tested without the binary; `measure` carries the steps out.

use super::recipes::Recipe;
use anyhow::{bail, Result};
use genmodels_contracts::capability::ModelList;
use genmodels_contracts::{Capability, ModelInfo, Output};

/// What drawing one sample (or scoring one image's likelihood) costs the model, from its
/// capabilities: it decides how many images the sampling steps draw and what `nll -k` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleCost {
    /// One network pass per sample (GANs, VAEs); `nll -k` counts importance samples.
    OnePass,
    /// A network pass per sampling step (models with `schedulers`): on a CPU the image scores
    /// draw fewer samples, and `nll`'s bound runs the network `k` times per image, so `k` is
    /// small and the sampled (EMA) weights are scored.
    Iterative,
}

impl SampleCost {
    /// The cost of sampling a model: iterative when it samples through a scheduler.
    pub fn of(info: &ModelInfo) -> SampleCost {
        if info.has(Capability::Schedulers) {
            SampleCost::Iterative
        } else {
            SampleCost::OnePass
        }
    }
}

/// One measurement of a trained run, in the order they run.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `sample RUN -n N --out DIR`: a grid of images. No caption: "samples at step S".
    SampleGrid { n: usize, caption: Option<String> },
    /// `interpolate RUN --out PNG --seed 1`.
    Interpolate { caption: String },
    /// `translate RUN --data SOURCE --out DIR -n N`: the set the next metrics step scores
    /// (PNGs of `size` x `size` with `channels` channels).
    Translate {
        source: String,
        size: usize,
        channels: usize,
    },
    /// `metrics --features classifier --classifier C` of the run's samples (or, after
    /// [`Step::Translate`], of the translations) against `real`; with `train`, the
    /// memorisation check against that training set.
    DomainMetrics {
        real: String,
        translated: bool,
        train: Option<String>,
        cost: SampleCost,
    },
    /// `metrics` in the FID Inception network's space (skipped when eval asks for no
    /// Inception samples).
    InceptionFid { real: String, cost: SampleCost },
    /// For each scheduler and a few step counts: `sample RUN -n N --out DIR --scheduler S
    /// --steps K` (timed), then `metrics --real REAL --fake folder:DIR --features classifier`:
    /// FID against sampling steps, a table and a plot with a line per scheduler.
    SchedulerSweep {
        real: String,
        schedulers: Vec<String>,
    },
    /// `reconstruct RUN -n N --out PNG --json F`; `codebook`: its codebook scores are shown.
    Reconstruct { codebook: bool },
    /// `nll RUN -n N -k K --json F`: the importance-sampled test NLL (an iterative sampler's
    /// variational bound, with `--ema`).
    Nll { cost: SampleCost },
    /// `metrics --real MIXTURE --fake RUN -n N --json F`: modes covered.
    ModeCoverage { real: String, n: usize },
    /// `sample RUN -n N --out DIR` and a scatter of the points over the mixture's modes.
    Scatter { n: usize },
    /// `energy RUN --out PNG --temperature T --json F` (points models with `energy`): the
    /// learned density exp(-E / T) as a heat map over the data, and the model's samples.
    EnergyMap { temperature: f64 },
    /// `langevin RUN -n 8 --steps K --frames 8 --out PNG --json F` (image models with
    /// `energy`): chains from noise over their steps, and the MCMC cost per step and image.
    Chains { steps: usize },
    /// For each corruption, `langevin RUN --data REAL --corrupt C -n 8 --steps K --frames 6
    /// --out PNG --json F`: denoising and inpainting by Langevin, PSNR and LPIPS to the clean
    /// images beside the corrupted input and a no-model fill; a table and the grids.
    Restore {
        real: String,
        corruptions: Vec<String>,
        steps: usize,
    },
    /// `ood RUN --in REAL --out-data S ... -n N --json F`: AUROC of each energy score against
    /// each out-of-distribution set, a table.
    Ood { real: String, out_sets: Vec<String> },
    /// `calibration RUN --data REAL -n N --out PNG --json F` (energies with class logits):
    /// test accuracy, ECE and the reliability diagram.
    Calibration { real: String },
    /// The last validation loss in the run's log.
    ValidationLoss,
    /// `perplexity RUN --json F`.
    Perplexity,
    /// `generate RUN --prompt P -n 400 --top-k 40 --seed 0 --no-stream`.
    Generate { prompt: String },
    /// Loss curves from the run's log.
    LossCurves,
}

impl Step {
    /// A few words for the progress line.
    pub fn label(&self) -> &'static str {
        match self {
            Step::SampleGrid { .. } => "sample grid",
            Step::Interpolate { .. } => "interpolation",
            Step::Translate { .. } => "translation",
            Step::DomainMetrics { .. } => "domain metrics",
            Step::InceptionFid { .. } => "Inception FID",
            Step::SchedulerSweep { .. } => "FID against sampling steps",
            Step::Reconstruct { .. } => "reconstructions",
            Step::Nll { .. } => "test NLL",
            Step::ModeCoverage { .. } => "mode coverage",
            Step::Scatter { .. } => "scatter",
            Step::EnergyMap { .. } => "energy heat map",
            Step::Chains { .. } => "Langevin chains",
            Step::Restore { .. } => "denoising and inpainting",
            Step::Ood { .. } => "out-of-distribution detection",
            Step::Calibration { .. } => "calibration",
            Step::ValidationLoss => "validation loss",
            Step::Perplexity => "perplexity",
            Step::Generate { .. } => "generated text",
            Step::LossCurves => "loss curves",
        }
    }

    /// Whether the step's work is a feature network's (translation included, as it feeds the
    /// metrics): it runs with eval's thread setting even for a small model, whose own steps
    /// run on one thread.
    pub fn runs_feature_network(&self) -> bool {
        matches!(
            self,
            Step::Translate { .. } | Step::DomainMetrics { .. } | Step::InceptionFid { .. }
        )
    }

    /// Whether the step needs the domain classifier.
    pub fn needs_classifier(&self) -> bool {
        matches!(
            self,
            Step::DomainMetrics { .. } | Step::SchedulerSweep { .. }
        )
    }
}

/// Langevin steps of the chains from noise shown for an image energy model.
pub const CHAIN_STEPS: usize = 200;
/// The corruptions an image energy model restores, and its chain length for them.
pub const RESTORE_CORRUPTIONS: [&str; 2] = ["mask:center", "noise:0.3"];
pub const RESTORE_STEPS: usize = 60;

/// The model a recipe names, as the binary lists it; an error when the binary does not list
/// it or puts it in another family than the recipe says.
pub fn model_for<'a>(list: &'a ModelList, r: &Recipe) -> Result<&'a ModelInfo> {
    let Some(info) = list.get(&r.model) else {
        let names: Vec<&str> = list.models.iter().map(|m| m.name.as_str()).collect();
        bail!(
            "recipe `{}` (xtask/recipes.toml) names the model `{}`, which `genmodels list --json` does not list; \
             models in this build: {}",
            r.id,
            r.model,
            names.join(", ")
        );
    };
    if info.family != r.family {
        bail!(
            "recipe `{}` (xtask/recipes.toml) puts `{}` in the {} family, but the binary lists it in {}",
            r.id,
            r.model,
            r.family,
            info.family
        );
    }
    Ok(info)
}

/// The measurements of a recipe's run, from the model's output and capabilities.
pub fn plan(r: &Recipe, info: &ModelInfo) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    match info.output {
        Output::Points => {
            steps.push(Step::ModeCoverage {
                real: r.real.clone(),
                n: r.points,
            });
            steps.push(Step::Scatter { n: r.points });
            if info.has(Capability::Energy) {
                // Sharp enough to show the modes, warm enough to show every one of them.
                steps.push(Step::EnergyMap { temperature: 0.05 });
            }
        }
        Output::Text => {
            steps.push(Step::ValidationLoss);
            if info.has(Capability::Likelihood) {
                steps.push(Step::Perplexity);
            }
            if info.has(Capability::TextGeneration) {
                let Some(prompt) = r.prompt.clone() else {
                    bail!(
                        "recipe `{}`: `{}` generates text, but the recipe has no `prompt`",
                        r.id,
                        r.model
                    );
                };
                steps.push(Step::Generate { prompt });
            }
        }
        Output::Images if info.has(Capability::Translation) => {
            let Some(t) = &r.translate else {
                bail!(
                    "recipe `{}`: `{}` translates images, but the recipe has no \
                     `translate = {{ source = ..., target = ... }}`",
                    r.id,
                    r.model
                );
            };
            steps.push(Step::SampleGrid {
                n: r.grid,
                caption: r.grid_caption.clone(),
            });
            steps.push(Step::Translate {
                source: t.source.clone(),
                size: t.size,
                channels: t.channels,
            });
            steps.push(Step::DomainMetrics {
                real: t.target.clone(),
                translated: true,
                train: None,
                cost: SampleCost::OnePass,
            });
        }
        Output::Images => {
            let cost = SampleCost::of(info);
            let caption = r.grid_caption.clone().or_else(|| {
                info.has(Capability::ClassConditional)
                    .then(|| "class x sample: column c is class c".to_string())
            });
            steps.push(Step::SampleGrid { n: r.grid, caption });
            if info.has(Capability::Interpolation) {
                steps.push(Step::Interpolate {
                    caption: interpolation_caption(info.interpolation.as_deref()),
                });
            }
            steps.push(Step::DomainMetrics {
                real: r.real.clone(),
                translated: false,
                train: Some(r.train_set.clone()),
                cost,
            });
            steps.push(Step::InceptionFid {
                real: r.real.clone(),
                cost,
            });
            if info.has(Capability::Schedulers) {
                steps.push(Step::SchedulerSweep {
                    real: r.real.clone(),
                    schedulers: r.schedulers.clone(),
                });
            }
            if info.has(Capability::Reconstruction) {
                steps.push(Step::Reconstruct {
                    codebook: info.has(Capability::Codebook),
                });
            }
            if info.has(Capability::Likelihood) {
                steps.push(Step::Nll { cost });
            }
            if info.has(Capability::Energy) {
                steps.push(Step::Chains { steps: CHAIN_STEPS });
                steps.push(Step::Restore {
                    real: r.real.clone(),
                    corruptions: RESTORE_CORRUPTIONS.map(String::from).to_vec(),
                    steps: RESTORE_STEPS,
                });
                // MNIST digits, noise, and the test set turned into something it is not.
                steps.push(Step::Ood {
                    real: r.real.clone(),
                    out_sets: vec![
                        "mnist-5k".into(),
                        "noise".into(),
                        format!("invert:{}", r.real),
                        format!("vflip:{}", r.real),
                    ],
                });
                if info.has(Capability::ClassConditional) {
                    steps.push(Step::Calibration {
                        real: r.real.clone(),
                    });
                }
            }
        }
    }
    steps.push(Step::LossCurves);
    Ok(steps)
}

/// "interpolation: rows walk ..." from the model's description of its walk: "linearly in W"
/// reads as it is, a noun phrase ("slerp in z") gets "along".
pub fn interpolation_caption(walk: Option<&str>) -> String {
    let walk = walk.map(str::trim).filter(|w| !w.is_empty());
    match walk {
        None => "interpolation: rows walk between two latents".into(),
        Some(w) => {
            let first = w.split_whitespace().next().unwrap_or("");
            let reads_as_is = first.ends_with("ly")
                || ["along", "between", "through", "in", "on", "across"].contains(&first);
            if reads_as_is {
                format!("interpolation: rows walk {w}")
            } else {
                format!("interpolation: rows walk along {w}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::recipes::RecipeBook;
    use crate::eval::testkit::list;

    fn recipe(id: &str) -> &'static Recipe {
        RecipeBook::embedded()
            .unwrap()
            .recipes
            .iter()
            .find(|r| r.id == id)
            .unwrap()
    }

    fn plan_of(id: &str) -> Vec<Step> {
        let l = list();
        let r = recipe(id);
        plan(r, model_for(&l, r).unwrap()).unwrap()
    }

    fn labels(steps: &[Step]) -> Vec<&'static str> {
        steps.iter().map(Step::label).collect()
    }

    #[test]
    fn an_image_sampler_is_sampled_walked_and_scored() {
        let p = plan_of("dcgan");
        assert_eq!(
            labels(&p),
            [
                "sample grid",
                "interpolation",
                "domain metrics",
                "Inception FID",
                "loss curves"
            ]
        );
        assert_eq!(
            p[0],
            Step::SampleGrid {
                n: 64,
                caption: None
            }
        );
        assert_eq!(
            p[1],
            Step::Interpolate {
                caption: "interpolation: rows walk along slerp in z".into()
            }
        );
        assert_eq!(
            p[2],
            Step::DomainMetrics {
                real: "fashion-mnist:test".into(),
                translated: false,
                train: Some("fashion-mnist".into()),
                cost: SampleCost::OnePass
            }
        );
        assert!(
            !p.iter().any(|s| matches!(s, Step::Nll { .. })),
            "no likelihood, no nll"
        );
        assert_eq!(
            plan_of("stylegan2")[1],
            Step::Interpolate {
                caption: "interpolation: rows walk linearly in W".into()
            }
        );
    }

    #[test]
    fn a_class_conditional_model_gets_the_class_grid() {
        assert_eq!(
            plan_of("biggan")[0],
            Step::SampleGrid {
                n: 100,
                caption: Some("class x sample: column c is class c".into())
            }
        );
    }

    #[test]
    fn likelihood_reconstruction_and_codebook_add_their_steps() {
        let vae = plan_of("vae");
        assert_eq!(
            labels(&vae),
            [
                "sample grid",
                "interpolation",
                "domain metrics",
                "Inception FID",
                "reconstructions",
                "test NLL",
                "loss curves"
            ]
        );
        assert!(vae.contains(&Step::Reconstruct { codebook: false }));
        // VAE-GAN reconstructs but has no likelihood; VQ-VAE has a codebook and no latent walk.
        let vaegan = plan_of("vaegan");
        assert!(vaegan.contains(&Step::Reconstruct { codebook: false }));
        assert!(!vaegan.iter().any(|s| matches!(s, Step::Nll { .. })));
        let vq = plan_of("vqvae");
        assert!(vq.contains(&Step::Reconstruct { codebook: true }));
        assert!(!vq.iter().any(|s| matches!(s, Step::Interpolate { .. })));
        assert!(!vq.iter().any(|s| matches!(s, Step::Nll { .. })));
        // The same recipe with a model that declares likelihood gets the NLL.
        let mut info = list().get("vqvae").unwrap().clone();
        info.capabilities.push(Capability::Likelihood);
        assert!(plan(recipe("vqvae"), &info).unwrap().contains(&Step::Nll {
            cost: SampleCost::OnePass
        }));
    }

    #[test]
    fn a_model_with_schedulers_gets_fid_against_sampling_steps() {
        let p = plan_of("ddpm");
        assert_eq!(
            labels(&p),
            [
                "sample grid",
                "domain metrics",
                "Inception FID",
                "FID against sampling steps",
                "test NLL",
                "loss curves"
            ]
        );
        // the main grid as for any image model
        assert_eq!(
            p[0],
            Step::SampleGrid {
                n: 64,
                caption: None
            }
        );
        assert_eq!(
            p[3],
            Step::SchedulerSweep {
                real: "fashion-mnist:test".into(),
                schedulers: vec!["ddim".into(), "dpm-solver++".into()]
            }
        );
        assert!(p[3].needs_classifier() && !p[3].runs_feature_network());
        // sampling and the likelihood bound cost a network pass per step: every sampling step
        // and the NLL know it
        assert_eq!(
            p[1],
            Step::DomainMetrics {
                real: "fashion-mnist:test".into(),
                translated: false,
                train: Some("fashion-mnist".into()),
                cost: SampleCost::Iterative
            }
        );
        assert_eq!(
            p[2],
            Step::InceptionFid {
                real: "fashion-mnist:test".into(),
                cost: SampleCost::Iterative
            }
        );
        assert_eq!(
            p[4],
            Step::Nll {
                cost: SampleCost::Iterative
            }
        );
        // the class-conditional one gets the class grid as well
        let c = plan_of("ddpm-cond");
        assert!(
            matches!(&c[0], Step::SampleGrid { n: 100, caption: Some(t) } if t.starts_with("class x sample"))
        );
        assert!(c.iter().any(|s| matches!(s, Step::SchedulerSweep { .. })));
        // The capability decides, not the name: without `schedulers` the same model gets no
        // sweep and one-pass counts; a GAN that declares it gets the sweep.
        let mut info = list().get("ddpm").unwrap().clone();
        info.capabilities.retain(|c| *c != Capability::Schedulers);
        let p = plan(recipe("ddpm"), &info).unwrap();
        assert!(!p.iter().any(|s| matches!(s, Step::SchedulerSweep { .. })));
        assert!(p.contains(&Step::Nll {
            cost: SampleCost::OnePass
        }));
        let mut info = list().get("dcgan").unwrap().clone();
        info.capabilities.push(Capability::Schedulers);
        let mut r = recipe("dcgan").clone();
        r.schedulers = vec!["euler".into()];
        assert!(plan(&r, &info).unwrap().contains(&Step::SchedulerSweep {
            real: "fashion-mnist:test".into(),
            schedulers: vec!["euler".into()]
        }));
        assert!(!plan_of("dcgan")
            .iter()
            .any(|s| matches!(s, Step::SchedulerSweep { .. })));
    }

    #[test]
    fn a_translation_model_is_translated_and_scored_against_the_target() {
        let p = plan_of("cyclegan");
        assert_eq!(
            p,
            [
                Step::SampleGrid {
                    n: 64,
                    caption: Some("A -> B -> A (rows: sneaker, boot, sneaker back)".into())
                },
                Step::Translate {
                    source: "fashion-mnist:test@7".into(),
                    size: 28,
                    channels: 1
                },
                Step::DomainMetrics {
                    real: "fashion-mnist:test@9".into(),
                    translated: true,
                    train: None,
                    cost: SampleCost::OnePass
                },
                Step::LossCurves
            ]
        );
        // A translation model on a recipe without the two domains is an error, not a guess.
        let mut r = recipe("cyclegan").clone();
        r.translate = None;
        let e = plan(&r, list().get("cyclegan").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("translate"), "{e}");
    }

    #[test]
    fn a_points_energy_model_also_draws_its_density() {
        assert_eq!(
            plan_of("ebm-ring8"),
            [
                Step::ModeCoverage {
                    real: "ring8".into(),
                    n: 2500
                },
                Step::Scatter { n: 2500 },
                Step::EnergyMap { temperature: 0.05 },
                Step::LossCurves
            ]
        );
    }

    #[test]
    fn an_image_energy_model_shows_its_chains_restores_detects_and_calibrates() {
        let steps = plan_of("jem");
        let tail: Vec<&Step> = steps
            .iter()
            .skip_while(|s| !matches!(s, Step::Chains { .. }))
            .collect();
        assert_eq!(
            tail,
            [
                &Step::Chains { steps: 200 },
                &Step::Restore {
                    real: "fashion-mnist:test".into(),
                    corruptions: vec!["mask:center".into(), "noise:0.3".into()],
                    steps: 60
                },
                &Step::Ood {
                    real: "fashion-mnist:test".into(),
                    out_sets: vec![
                        "mnist-5k".into(),
                        "noise".into(),
                        "invert:fashion-mnist:test".into(),
                        "vflip:fashion-mnist:test".into()
                    ]
                },
                &Step::Calibration {
                    real: "fashion-mnist:test".into()
                },
                &Step::LossCurves
            ]
        );
        // the image steps come first
        assert!(matches!(steps[0], Step::SampleGrid { .. }));
    }

    #[test]
    fn points_and_text_models() {
        assert_eq!(
            plan_of("grid25-plain"),
            [
                Step::ModeCoverage {
                    real: "grid25".into(),
                    n: 2500
                },
                Step::Scatter { n: 2500 },
                Step::LossCurves
            ]
        );
        assert_eq!(
            plan_of("gpt-mini"),
            [
                Step::ValidationLoss,
                Step::Perplexity,
                Step::Generate {
                    prompt: "Call me Ishmael.".into()
                },
                Step::LossCurves
            ]
        );
        // A text model without likelihood gets no perplexity.
        let mut info = list().get("gpt-mini").unwrap().clone();
        info.capabilities = vec![Capability::TextGeneration];
        assert!(!plan(recipe("gpt-mini"), &info)
            .unwrap()
            .contains(&Step::Perplexity));
    }

    #[test]
    fn a_model_the_binary_does_not_list_is_an_error() {
        let mut l = list();
        l.models.retain(|m| m.name != "progan");
        let e = model_for(&l, recipe("progan")).unwrap_err().to_string();
        assert!(
            e.contains("`progan`") && e.contains("does not list") && e.contains("dcgan"),
            "{e}"
        );
        let mut r = recipe("dcgan").clone();
        r.family = "vae".into();
        assert!(model_for(&l, &r)
            .unwrap_err()
            .to_string()
            .contains("family"));
        assert!(plan_of("dcgan").iter().any(Step::needs_classifier));
        assert!(!plan_of("gpt-mini").iter().any(Step::needs_classifier));
    }

    #[test]
    fn interpolation_captions_read_as_sentences() {
        assert_eq!(
            interpolation_caption(Some("slerp in z")),
            "interpolation: rows walk along slerp in z"
        );
        assert_eq!(
            interpolation_caption(Some("linearly in W")),
            "interpolation: rows walk linearly in W"
        );
        assert_eq!(
            interpolation_caption(Some("along slerp in z")),
            "interpolation: rows walk along slerp in z"
        );
        assert_eq!(
            interpolation_caption(None),
            "interpolation: rows walk between two latents"
        );
    }
}
