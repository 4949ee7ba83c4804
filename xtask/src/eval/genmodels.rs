//! The `genmodels` binary as eval drives it: building it, the options every call shares, the
//! command lines shown in the report, `list --json`, and the typed reports it writes.

use anyhow::{bail, Context, Result};
use genmodels_contracts::capability::ModelList;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `genmodels` binary with the options every call shares; records each command.
#[derive(Debug, Clone)]
pub struct Genmodels {
    pub bin: PathBuf,
    pub threads: Option<usize>,
    pub device: Option<String>,
}

impl Genmodels {
    /// The same binary and device with another thread count.
    pub fn with_threads(&self, threads: Option<usize>) -> Genmodels {
        Genmodels {
            threads,
            ..self.clone()
        }
    }

    /// The command, and its text as a user would type it.
    fn command(&self, args: &[String], with_device: bool) -> (Command, String) {
        let mut c = Command::new(&self.bin);
        let mut shown = vec!["genmodels".to_string()];
        if let Some(t) = self.threads {
            shown.extend(["--threads".into(), t.to_string()]);
        }
        shown.extend(args.iter().cloned());
        if with_device {
            if let Some(d) = &self.device {
                shown.extend(["--device".into(), d.clone()]);
            }
        }
        c.args(&shown[1..]);
        c.current_dir(crate::root());
        (c, shown_text(&shown))
    }

    /// Runs with inherited output (progress bars show); the command goes into `log`.
    pub fn run(&self, args: &[String], log: &mut Vec<String>) -> Result<()> {
        let (mut c, text) = self.command(args, true);
        log.push(text.clone());
        let st = c
            .status()
            .with_context(|| format!("could not start {text}"))?;
        if !st.success() {
            bail!("`{text}` failed ({st})");
        }
        Ok(())
    }

    /// Runs and returns stdout (stderr, with progress bars, still shows).
    pub fn stdout(&self, args: &[String], log: &mut Vec<String>) -> Result<String> {
        let (c, text) = self.command(args, true);
        log.push(text.clone());
        capture(c, &text)
    }

    /// `genmodels list --json`: every model this build registers, with its capabilities.
    pub fn list(&self) -> Result<ModelList> {
        let args = ["list".to_string(), "--json".to_string()];
        let (c, text) = self.command(&args, false);
        let out = capture(c, &text)?;
        parse_model_list(&out).with_context(|| format!("reading what `{text}` printed"))
    }
}

fn capture(mut c: Command, text: &str) -> Result<String> {
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {text}"))?;
    if !out.status.success() {
        bail!("`{text}` failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parses `genmodels list --json`.
pub fn parse_model_list(json: &str) -> Result<ModelList> {
    serde_json::from_str(json).context("`genmodels list --json` did not print a ModelList")
}

/// A command line as a user would type it: quoted where needed, workspace paths relative.
fn shown_text(args: &[String]) -> String {
    let text = args
        .iter()
        .map(|a| {
            if a.contains([' ', '"', '\'']) {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    text.replace(&format!("{}/", crate::root().display()), "")
}

/// Reads a report the binary wrote, as its contract type; the error names the file.
pub fn read_report<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    Ok(genmodels_contracts::read_json::<T>(path)?)
}

/// Builds the `genmodels` binary and returns its path.
pub fn build(release: bool) -> Result<PathBuf> {
    println!(
        "xtask eval: building the genmodels binary ({} profile)",
        if release { "release" } else { "dev" }
    );
    let mut c = crate::cargo();
    c.args(["build", "-p", "genmodels-cli", "--bin", "genmodels"]);
    if release {
        c.arg("--release");
    }
    crate::run(&mut c)?;
    let bin = crate::root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("genmodels");
    if !bin.exists() {
        bail!("the build did not produce {}", bin.display());
    }
    Ok(bin)
}

/// Argument helpers: owned strings from literals, a path as an argument.
pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

pub fn p(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use genmodels_contracts::reports::PerplexityReport;

    #[test]
    fn commands_show_threads_first_and_the_device_last() {
        let g = Genmodels {
            bin: "/bin/true".into(),
            threads: Some(1),
            device: Some("cpu".into()),
        };
        let run = crate::root()
            .join("target")
            .join("eval")
            .join("runs")
            .join("x");
        let (_, text) = g.command(
            &[
                s(&["generate"]),
                vec![p(&run)],
                s(&["--prompt", "Call me Ishmael."]),
            ]
            .concat(),
            true,
        );
        assert_eq!(
            text,
            "genmodels --threads 1 generate target/eval/runs/x --prompt \"Call me Ishmael.\" --device cpu"
        );
        let (_, text) = g.with_threads(None).command(&s(&["list", "--json"]), false);
        assert_eq!(text, "genmodels list --json");
    }

    #[test]
    fn reports_are_read_typed_and_a_missing_one_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("perplexity.json");
        let e = read_report::<PerplexityReport>(&f).unwrap_err().to_string();
        assert!(e.contains("perplexity.json"), "{e}");
        // A renamed field is an error naming the file, not a NaN.
        std::fs::write(
            &f,
            r#"{"tokens": 10, "loss_nats_per_token": 1.0, "ppl": 2.7, "bits_per_token": 1.4, "bits_per_char": 1.4, "split": "val"}"#,
        )
        .unwrap();
        let e = format!("{:#}", read_report::<PerplexityReport>(&f).unwrap_err());
        assert!(
            e.contains("perplexity.json") && e.contains("perplexity"),
            "{e}"
        );
        std::fs::write(
            &f,
            r#"{"tokens": 10, "loss_nats_per_token": 1.0, "perplexity": 2.7, "bits_per_token": 1.4, "bits_per_char": 1.4, "split": "val"}"#,
        )
        .unwrap();
        assert_eq!(read_report::<PerplexityReport>(&f).unwrap().tokens, 10);
        assert!(parse_model_list("{\"models\": 3}").is_err());
    }
}
