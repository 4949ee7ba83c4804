//! The eval recipes: `xtask/recipes.toml` (compiled in, so a plain `cargo xtask eval` needs
//! nothing beside the binary), parsed into [`Recipe`]s, and the selection by family, recipe
//! id or model name.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::sync::OnceLock;

/// The recipe file's text. Cargo rebuilds xtask when it changes.
pub const RECIPES_TOML: &str = include_str!("../../recipes.toml");

/// The whole recipe file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeBook {
    /// Families the project plans but this build does not have yet.
    #[serde(default)]
    pub planned_families: Vec<String>,
    /// The domain classifier of the image scores.
    pub classifier: ClassifierSpec,
    #[serde(rename = "recipe")]
    pub recipes: Vec<Recipe>,
}

/// What the domain classifier is trained and tested on (`genmodels classifier`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
    pub data: String,
    pub test: String,
}

/// A reference model: what to train, on what, for how long, and the data its measurements
/// need. What is measured comes from the model's capabilities (see `plan`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub id: String,
    pub model: String,
    pub family: String,
    pub data: String,
    pub batch: usize,
    pub steps: u64,
    /// Share of the budget (the 2-D mixtures need a fraction of an image model's time).
    #[serde(default = "one")]
    pub share: f64,
    /// A tiny model (MLP on 2-D points): one libtorch thread is faster than several.
    #[serde(default)]
    pub small: bool,
    /// Part of the default set (one reference per family, plus the mode-collapse pair).
    #[serde(default)]
    pub default: bool,
    /// Extra `genmodels train` arguments.
    #[serde(default)]
    pub args: Vec<String>,
    pub about: String,
    /// Images in the sample grid.
    #[serde(default = "grid64")]
    pub grid: usize,
    /// The sample grid's caption (default: from the model's capabilities).
    #[serde(default)]
    pub grid_caption: Option<String>,
    /// The real set samples are scored against (the mixture, for points models).
    #[serde(default = "fmnist_test")]
    pub real: String,
    /// The training set of the memorisation check.
    #[serde(default = "fmnist")]
    pub train_set: String,
    /// 2-D samples for mode coverage and the scatter.
    #[serde(default = "points2500")]
    pub points: usize,
    /// Text models: the prompt of the generated passage.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Translation models: what is translated, and what the translations are scored against.
    #[serde(default)]
    pub translate: Option<TranslateSpec>,
    /// Models with `schedulers`: the samplers (`sample --scheduler`) whose FID against
    /// sampling steps the report plots.
    #[serde(default = "two_schedulers")]
    pub schedulers: Vec<String>,
}

/// The two domains of a translation recipe.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateSpec {
    /// Images to translate (domain A), e.g. `fashion-mnist:test@7`.
    pub source: String,
    /// Real images of domain B the translations are scored against.
    pub target: String,
    /// Side of the translated PNGs.
    #[serde(default = "side28")]
    pub size: usize,
    /// Channels of the translated PNGs.
    #[serde(default = "one_channel")]
    pub channels: usize,
}

fn one() -> f64 {
    1.0
}
fn grid64() -> usize {
    64
}
fn points2500() -> usize {
    2500
}
fn side28() -> usize {
    28
}
fn one_channel() -> usize {
    1
}
/// DDIM (Song et al. 2021) and DPM-Solver++ (Lu et al. 2022): the two samplers a few-step
/// comparison is usually about.
fn two_schedulers() -> Vec<String> {
    vec!["ddim".into(), "dpm-solver++".into()]
}
fn fmnist() -> String {
    "fashion-mnist".into()
}
fn fmnist_test() -> String {
    "fashion-mnist:test".into()
}

impl RecipeBook {
    /// Parses and checks a recipe file: ids unique, every number usable.
    pub fn parse(text: &str) -> Result<RecipeBook> {
        let book: RecipeBook = toml::from_str(text).context("xtask/recipes.toml does not parse")?;
        let mut seen: Vec<&str> = Vec::new();
        for r in &book.recipes {
            if seen.contains(&r.id.as_str()) {
                bail!("xtask/recipes.toml: two recipes are called `{}`", r.id);
            }
            seen.push(&r.id);
            if !(r.share > 0.0 && r.share.is_finite()) || r.steps == 0 || r.batch == 0 {
                bail!(
                    "xtask/recipes.toml: recipe `{}` needs share > 0, steps > 0 and batch > 0",
                    r.id
                );
            }
            if r.grid == 0 || r.points == 0 {
                bail!(
                    "xtask/recipes.toml: recipe `{}` needs grid > 0 and points > 0",
                    r.id
                );
            }
            if r.schedulers.is_empty() || r.schedulers.iter().any(|s| s.trim().is_empty()) {
                bail!(
                    "xtask/recipes.toml: recipe `{}` needs at least one scheduler name in `schedulers` (or none of the field: ddim and dpm-solver++)",
                    r.id
                );
            }
            if book.planned_families.contains(&r.family) {
                bail!(
                    "xtask/recipes.toml: recipe `{}` belongs to `{}`, which is listed as planned (not built)",
                    r.id,
                    r.family
                );
            }
        }
        if book.recipes.is_empty() {
            bail!("xtask/recipes.toml holds no [[recipe]]");
        }
        Ok(book)
    }

    /// The compiled-in recipe file.
    pub fn embedded() -> Result<&'static RecipeBook> {
        static BOOK: OnceLock<std::result::Result<RecipeBook, String>> = OnceLock::new();
        BOOK.get_or_init(|| RecipeBook::parse(RECIPES_TOML).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The families the recipes belong to, in the file's order, each once.
    pub fn families(&self) -> Vec<&str> {
        let mut f: Vec<&str> = Vec::new();
        for r in &self.recipes {
            if !f.contains(&r.family.as_str()) {
                f.push(&r.family);
            }
        }
        f
    }

    /// The recipes chosen by `--family` and `--model` (recipe ids or model names). No
    /// `--model`: the default set, limited to the families given.
    pub fn select(&self, families: &[String], models: &[String]) -> Result<Vec<&Recipe>> {
        let known = self.families();
        for f in families {
            if self.planned_families.contains(f) {
                bail!(
                    "the {f} family is not built yet; families in this build: {}",
                    known.join(", ")
                );
            }
            if !known.contains(&f.as_str()) {
                bail!(
                    "unknown family `{f}`; families in this build: {}",
                    known.join(", ")
                );
            }
        }
        let in_families = |r: &Recipe| families.is_empty() || families.contains(&r.family);
        if models.is_empty() {
            return Ok(self
                .recipes
                .iter()
                .filter(|r| r.default && in_families(r))
                .collect());
        }
        let mut out: Vec<&Recipe> = Vec::new();
        for m in models {
            let found: Vec<&Recipe> = self
                .recipes
                .iter()
                .filter(|r| r.id == *m || r.model == *m)
                .collect();
            if found.is_empty() {
                let ids: Vec<&str> = self.recipes.iter().map(|r| r.id.as_str()).collect();
                bail!("no eval recipe for `{m}`; recipes: {}", ids.join(", "));
            }
            for r in found {
                if !out.iter().any(|o| o.id == r.id) {
                    out.push(r);
                }
            }
        }
        out.retain(|r| in_families(r));
        if out.is_empty() {
            bail!("none of the --model recipes belongs to the --family given");
        }
        Ok(out)
    }
}

/// `--family`'s help, from the recipe file.
pub fn family_help() -> String {
    match RecipeBook::embedded() {
        Ok(b) => {
            let mut s = format!("Only these families ({}", b.families().join(", "));
            if !b.planned_families.is_empty() {
                s += &format!(
                    "; planned, not built yet: {}",
                    b.planned_families.join(", ")
                );
            }
            s + "); repeatable"
        }
        Err(e) => format!("Only these families; repeatable ({e})"),
    }
}

/// `--model`'s help, from the recipe file.
pub fn model_help() -> String {
    match RecipeBook::embedded() {
        Ok(b) => {
            let ids: Vec<&str> = b.recipes.iter().map(|r| r.id.as_str()).collect();
            let mut models: Vec<&str> = Vec::new();
            for r in &b.recipes {
                if !ids.contains(&r.model.as_str()) && !models.contains(&r.model.as_str()) {
                    models.push(&r.model);
                }
            }
            let defaults: Vec<&str> = b
                .recipes
                .iter()
                .filter(|r| r.default)
                .map(|r| r.id.as_str())
                .collect();
            let mut s = format!("Only these recipes ({})", ids.join(", "));
            if !models.is_empty() {
                s += &format!(
                    " or models ({}: every recipe of the model)",
                    models.join(", ")
                );
            }
            format!(
                "{s}; repeatable; default: {} (the recipes are in xtask/recipes.toml)",
                defaults.join(", ")
            )
        }
        Err(e) => format!("Only these recipes or models; repeatable ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> &'static RecipeBook {
        RecipeBook::embedded().unwrap()
    }

    fn sel(families: &[&str], models: &[&str]) -> Result<Vec<&'static str>> {
        let f: Vec<String> = families.iter().map(|s| s.to_string()).collect();
        let m: Vec<String> = models.iter().map(|s| s.to_string()).collect();
        Ok(book()
            .select(&f, &m)?
            .into_iter()
            .map(|r| r.id.as_str())
            .collect())
    }

    #[test]
    fn the_recipe_file_parses_with_known_families_and_unique_ids() {
        let b = RecipeBook::parse(RECIPES_TOML).unwrap();
        assert_eq!(
            b.families(),
            ["gan", "transformer", "vae", "diffusion", "ebm"]
        );
        assert!(b.planned_families.is_empty());
        for r in &b.recipes {
            assert!(
                ["gan", "transformer", "vae", "diffusion", "ebm"].contains(&r.family.as_str()),
                "{}: family {}",
                r.id,
                r.family
            );
            assert!(r.share > 0.0 && r.steps > 0 && r.batch > 0);
            assert_eq!(b.recipes.iter().filter(|o| o.id == r.id).count(), 1);
        }
        let defaults: Vec<&str> = b
            .recipes
            .iter()
            .filter(|r| r.default)
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(
            defaults,
            [
                "dcgan",
                "grid25-plain",
                "grid25-wgangp",
                "gpt-mini",
                "vae",
                "ddpm",
                "ebm-ring8"
            ]
        );
        assert_eq!(b.recipes.len(), 20);
    }

    #[test]
    fn recipe_fields_and_their_defaults() {
        let get = |id: &str| book().recipes.iter().find(|r| r.id == id).unwrap();
        let d = get("dcgan");
        assert_eq!(
            (d.grid, d.real.as_str(), d.train_set.as_str()),
            (64, "fashion-mnist:test", "fashion-mnist")
        );
        assert_eq!(
            d.args,
            ["--sample-every", "1000", "--checkpoint-every", "200"]
        );
        assert_eq!(d.grid_caption, None);
        assert_eq!(get("biggan").grid, 100);
        let c = get("cyclegan");
        assert_eq!(
            c.translate,
            Some(TranslateSpec {
                source: "fashion-mnist:test@7".into(),
                target: "fashion-mnist:test@9".into(),
                size: 28,
                channels: 1
            })
        );
        assert!(c
            .grid_caption
            .as_deref()
            .unwrap()
            .starts_with("A -> B -> A"));
        assert_eq!(get("gpt-mini").prompt.as_deref(), Some("Call me Ishmael."));
        let g = get("grid25-wgangp");
        assert_eq!(
            (g.real.as_str(), g.points, g.share, g.small),
            ("grid25", 2500, 0.5, true)
        );
        assert_eq!(g.args.join(" "), "--sample-every 5000 --checkpoint-every 1000 --seed 1 --set loss=wasserstein --set gp_lambda=0.1 --set n_critic=5 --set lr=1e-4 --set beta2=0.9");
        // the diffusion reference: the two samplers of the FID-against-steps plot by default
        let dd = get("ddpm");
        assert_eq!(
            (dd.family.as_str(), dd.data.as_str(), dd.default),
            ("diffusion", "fashion-mnist", true)
        );
        assert_eq!(dd.schedulers, ["ddim", "dpm-solver++"]);
        assert!(dd
            .args
            .join(" ")
            .starts_with("--ema 0.99 --lr-schedule warmup:100"));
        assert_eq!(get("ddpm-cond").grid, 100);
    }

    #[test]
    fn bad_recipe_files_are_refused() {
        let one = "[classifier]\ndata = \"d\"\ntest = \"t\"\n[[recipe]]\nid = \"a\"\nmodel = \"m\"\nfamily = \"gan\"\ndata = \"d\"\nbatch = 1\nsteps = 1\nabout = \"x\"\n";
        let b = RecipeBook::parse(one).unwrap();
        assert_eq!(
            (b.recipes[0].share, b.recipes[0].default, b.recipes[0].grid),
            (1.0, false, 64)
        );
        let twice = format!("{one}{}", &one[one.find("[[recipe]]").unwrap()..]);
        let e = RecipeBook::parse(&twice).unwrap_err().to_string();
        assert!(e.contains("two recipes are called `a`"), "{e}");
        let typo = one.replace("batch = 1", "batch = 1\nbtach = 2");
        assert!(RecipeBook::parse(&typo).is_err());
        let zero = one.replace("steps = 1", "steps = 0");
        assert!(RecipeBook::parse(&zero).is_err());
        assert_eq!(b.recipes[0].schedulers, ["ddim", "dpm-solver++"]);
        let none = one.replace("batch = 1", "batch = 1\nschedulers = []");
        let e = RecipeBook::parse(&none).unwrap_err().to_string();
        assert!(e.contains("schedulers"), "{e}");
        let planned = format!("planned_families = [\"gan\"]\n{one}");
        let e = RecipeBook::parse(&planned).unwrap_err().to_string();
        assert!(e.contains("planned"), "{e}");
    }

    #[test]
    fn selection_by_family_and_model() {
        assert_eq!(
            sel(&[], &[]).unwrap(),
            [
                "dcgan",
                "grid25-plain",
                "grid25-wgangp",
                "gpt-mini",
                "vae",
                "ddpm",
                "ebm-ring8"
            ]
        );
        assert_eq!(sel(&["vae"], &[]).unwrap(), ["vae"]);
        assert_eq!(sel(&["diffusion"], &[]).unwrap(), ["ddpm"]);
        // `--model ddpm` is the recipe of that id, not every recipe of a model named alike
        assert_eq!(sel(&[], &["ddpm"]).unwrap(), ["ddpm"]);
        assert_eq!(sel(&[], &["ddpm-cond"]).unwrap(), ["ddpm-cond"]);
        assert_eq!(sel(&["transformer"], &[]).unwrap(), ["gpt-mini"]);
        // a model name selects every recipe of that model
        assert_eq!(
            sel(&[], &["gan2d"]).unwrap(),
            ["grid25-plain", "grid25-wgangp"]
        );
        assert_eq!(
            sel(&[], &["stylegan2", "dcgan"]).unwrap(),
            ["stylegan2", "dcgan"]
        );
        assert_eq!(sel(&["ebm"], &[]).unwrap(), ["ebm-ring8"]);
        let e = sel(&["gann"], &[]).unwrap_err().to_string();
        assert!(
            e.contains("unknown family") && e.contains("gan, transformer, vae, diffusion, ebm"),
            "{e}"
        );
        let e = sel(&[], &["nope"]).unwrap_err().to_string();
        assert!(
            e.contains("no eval recipe for `nope`") && e.contains("dcgan"),
            "{e}"
        );
        assert!(sel(&["transformer"], &["dcgan"]).is_err());
        assert_eq!(sel(&["gan"], &["dcgan", "vae"]).unwrap(), ["dcgan"]);
    }

    #[test]
    fn the_help_texts_come_from_the_recipe_file() {
        let f = family_help();
        assert!(
            f.contains("(gan, transformer, vae, diffusion, ebm)") && !f.contains("not built yet"),
            "{f}"
        );
        let m = model_help();
        for r in &book().recipes {
            assert!(m.contains(&r.id) && m.contains(&r.model), "{m}");
        }
        assert!(
            m.contains(
                "default: dcgan, grid25-plain, grid25-wgangp, gpt-mini, vae, ddpm, ebm-ring8"
            ),
            "{m}"
        );
    }
}
