//! The eval report: `results.json` (everything measured), `report.md` and a self-contained
//! `report.html` (metrics table, sample grids, interpolations, scatter plots, loss curves,
//! generated text, per-model tables such as FID against sampling steps), and the check of that
//! page in headless Chromium.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One trained and measured model.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ModelReport {
    /// Recipe name (e.g. `dcgan`, `grid25-wgangp`).
    pub id: String,
    /// Model name as `genmodels list` gives it.
    pub model: String,
    pub family: String,
    /// What the recipe is, in a few words.
    pub about: String,
    /// Data spec trained on.
    pub data: String,
    /// Step the run stands at, and the step total it aims for.
    pub steps: u64,
    pub planned_steps: u64,
    /// Step the run stood at before this eval (None: trained from scratch now).
    pub resumed_from: Option<u64>,
    /// Training time of the whole run (all invocations), seconds.
    pub train_s: f64,
    /// Headline scores for the table, formatted: (label, value).
    pub scores: Vec<(String, String)>,
    /// Feature network behind the image scores.
    pub feature_network: Option<String>,
    /// Every score as its command wrote it.
    pub metrics: serde_json::Value,
    /// Tables of the model's own section (e.g. FID against sampling steps per scheduler).
    pub tables: Vec<Table>,
    /// (caption, path relative to the report) of each picture.
    pub images: Vec<(String, String)>,
    /// Generated text (text models).
    pub text: Option<String>,
    /// The `genmodels` commands this eval ran for the model.
    pub commands: Vec<String>,
    /// Set when a stage failed; the row stays, with what went wrong.
    pub error: Option<String>,
}

/// A small table in a model's section: a caption, column names and formatted cells.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Table {
    pub caption: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn markdown(&self) -> String {
        let cell = |c: &String| c.replace('|', "\\|");
        let line = |cells: &[String]| {
            format!(
                "| {} |\n",
                cells.iter().map(cell).collect::<Vec<_>>().join(" | ")
            )
        };
        let mut md = format!("**{}**\n\n", self.caption);
        md += &line(&self.header);
        md += &format!("|{}\n", "---|".repeat(self.header.len()));
        for r in &self.rows {
            md += &line(r);
        }
        md + "\n"
    }

    fn html(&self) -> String {
        let row = |tag: &str, cells: &[String]| {
            let cells: String = cells
                .iter()
                .map(|c| format!("<{tag}>{}</{tag}>", esc(c)))
                .collect();
            format!("<tr>{cells}</tr>\n")
        };
        let mut h = format!(
            "<table class=\"model-table\"><caption>{}</caption>\n<thead>{}</thead><tbody>\n",
            esc_inline(&self.caption),
            row("th", &self.header)
        );
        for r in &self.rows {
            h += &row("td", r);
        }
        h + "</tbody></table>\n"
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub command: String,
    pub started_utc: String,
    pub wall_s: f64,
    pub quick: bool,
    /// Training budget per reference model, seconds (0 with `--no-train`).
    pub budget_s: f64,
    /// False with `--no-train`: the runs were measured as they stood.
    pub trained: bool,
    pub device: String,
    pub threads: String,
    pub machine: String,
    pub models: Vec<ModelReport>,
    pub notes: Vec<String>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Escapes `s` for HTML and turns `code` spans (markdown backticks) into <code> elements.
fn esc_inline(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(s).split('`').enumerate() {
        if i % 2 == 1 {
            out += &format!("<code>{part}</code>");
        } else {
            out += part;
        }
    }
    out
}

fn secs(s: f64) -> String {
    if s >= 120.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.0} s")
    }
}

fn steps_cell(m: &ModelReport) -> String {
    let mut s = format!("{} / {}", m.steps, m.planned_steps);
    if let Some(r) = m.resumed_from {
        s += &format!(" (resumed at {r})");
    }
    s
}

fn scores_text(m: &ModelReport) -> String {
    match &m.error {
        Some(e) => format!("failed: {e}"),
        None => m
            .scores
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(" · "),
    }
}

impl Report {
    /// Writes results.json, report.md and report.html into `dir`; returns the HTML's path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(
            &dir.join("results.json"),
            &serde_json::to_string_pretty(self)?,
        )?;
        write_atomic(&dir.join("report.md"), &self.markdown())?;
        let html = dir.join("report.html");
        write_atomic(&html, &self.html())?;
        Ok(html)
    }

    fn header_line(&self) -> String {
        let training = if self.trained {
            format!(
                "training budget {} per reference model{}",
                secs(self.budget_s),
                if self.quick { " (quick)" } else { "" }
            )
        } else {
            "no training (runs measured as they stood)".to_string()
        };
        format!(
            "`{}` · started {} · {} wall · {training} · device {} · threads {} · {}",
            self.command,
            self.started_utc,
            secs(self.wall_s),
            self.device,
            self.threads,
            self.machine
        )
    }

    pub fn markdown(&self) -> String {
        let mut md = format!("# genmodels eval report\n\n{}\n\n", self.header_line());
        md += "| model | family | data | steps | training time | scores | feature network |\n|---|---|---|---|---|---|---|\n";
        for m in &self.models {
            md += &format!(
                "| {} (`{}`) | {} | `{}` | {} | {} | {} | {} |\n",
                m.id,
                m.model,
                m.family,
                m.data,
                steps_cell(m),
                secs(m.train_s),
                scores_text(m).replace('|', "\\|"),
                m.feature_network.as_deref().unwrap_or("")
            );
        }
        for n in &self.notes {
            md += &format!("\n{n}\n");
        }
        for m in &self.models {
            md += &format!("\n## {}: {}\n\n", m.id, m.about);
            for t in &m.tables {
                md += &t.markdown();
            }
            for (cap, path) in &m.images {
                md += &format!("**{cap}**\n\n![{cap}]({path})\n\n");
            }
            if let Some(t) = &m.text {
                md += &format!("Generated text:\n\n```text\n{t}\n```\n\n");
            }
            if !m.commands.is_empty() {
                md += "Commands:\n\n```sh\n";
                for c in &m.commands {
                    md += c;
                    md += "\n";
                }
                md += "```\n";
            }
        }
        md
    }

    pub fn html(&self) -> String {
        let mut h = String::from(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>genmodels eval report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.9em; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { border: 1px solid #ddd; padding: 0.4rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.failed { color: #b00; }
table.model-table { width: auto; }
table.model-table caption { text-align: left; font-weight: 600; padding-bottom: 0.3rem; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; }
figure img { max-width: 520px; image-rendering: pixelated; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; max-width: 520px; }
pre.text { background: #f8f8f8; padding: 0.8rem; white-space: pre-wrap; max-width: 900px; }
#image-check { color: #b00; }
</style></head><body>
<h1>genmodels eval report</h1>
"#,
        );
        h += &format!(
            "<p class=\"meta\">{}</p>\n<p>Also here: <a href=\"report.md\">report.md</a>, <a href=\"results.json\">results.json</a>.</p>\n",
            esc_inline(&self.header_line())
        );
        h += "<table id=\"metrics\"><thead><tr><th>model</th><th>family</th><th>data</th><th>steps</th><th>training time</th><th>scores</th><th>feature network</th></tr></thead><tbody>\n";
        for m in &self.models {
            h += &format!(
                "<tr data-model=\"{}\"><td><a href=\"#{}\">{}</a> (<code>{}</code>)</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td></tr>\n",
                esc(&m.id),
                esc(&m.id),
                esc(&m.id),
                esc(&m.model),
                esc(&m.family),
                esc(&m.data),
                esc(&steps_cell(m)),
                esc(&secs(m.train_s)),
                if m.error.is_some() { " class=\"failed\"" } else { "" },
                esc(&scores_text(m)),
                esc(m.feature_network.as_deref().unwrap_or(""))
            );
        }
        h += "</tbody></table>\n<p id=\"image-check\"></p>\n";
        for n in &self.notes {
            h += &format!("<p>{}</p>\n", esc_inline(n));
        }
        for m in &self.models {
            h += &format!(
                "<section id=\"{}\"><h2>{}: {}</h2>\n",
                esc(&m.id),
                esc(&m.id),
                esc(&m.about)
            );
            for t in &m.tables {
                h += &t.html();
            }
            h += "<div class=\"figures\">\n";
            for (cap, path) in &m.images {
                h += &format!(
                    "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>\n",
                    esc(path),
                    esc(cap),
                    esc(cap)
                );
            }
            h += "</div>\n";
            if let Some(t) = &m.text {
                h += &format!(
                    "<h3>Generated text</h3>\n<pre class=\"text\">{}</pre>\n",
                    esc(t)
                );
            }
            if !m.commands.is_empty() {
                h += &format!(
                    "<details><summary>commands</summary><pre>{}</pre></details>\n",
                    esc(&m.commands.join("\n"))
                );
            }
            h += "</section>\n";
        }
        // Every image must load: the page says so itself, and leaves the counts on <body> for
        // the browser test.
        h += r#"<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.getAttribute('src'); });
  var b = document.body.dataset;
  b.imagesTotal = imgs.length;
  b.imagesBroken = bad.length;
  b.brokenList = bad.join(' ');
  b.tableRows = document.querySelectorAll('#metrics tbody tr').length;
  b.checked = 'yes';
  if (bad.length) {
    document.getElementById('image-check').textContent =
      bad.length + ' of ' + imgs.length + ' images did not load: ' + bad.join(', ');
  }
});
</script>
</body></html>
"#;
        h
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves half a report.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// What Chromium saw on the page.
#[derive(Debug, PartialEq)]
pub struct BrowserCheck {
    pub images_total: usize,
    pub images_broken: usize,
    pub broken: Vec<String>,
    pub table_rows: usize,
}

/// The Chromium binary: `$CHROMIUM`, else the first of chromium, chromium-browser,
/// google-chrome on PATH.
pub fn find_chromium() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.exists() {
            return Ok(p);
        }
        bail!("$CHROMIUM points at {}, which does not exist", p.display());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "Chromium is missing: the report's browser check needs a headless Chromium. Install it \
         with `sudo apt-get install chromium` (Debian; `cargo xtask setup` does this), or point $CHROMIUM \
         at a Chromium or Chrome binary"
    )
}

/// Loads `html` in headless Chromium and reads back what the page's own check found.
pub fn check_in_browser(html: &Path) -> Result<BrowserCheck> {
    let chromium = find_chromium()?;
    let html = html
        .canonicalize()
        .with_context(|| format!("{} does not exist", html.display()))?;
    let profile = std::env::temp_dir().join(format!("genmodels-chromium-{}", std::process::id()));
    // Flags: headless as root in a sandboxed machine, and nothing that reaches for the network.
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-file-access-from-files",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .with_context(|| format!("could not start {}", chromium.display()))?;
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || dom.trim().is_empty() {
        bail!(
            "Chromium ({}) could not load {} ({}):\n{}",
            chromium.display(),
            html.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    parse_dom(&dom)
        .with_context(|| format!("reading the page Chromium rendered from {}", html.display()))
}

/// Reads the `data-*` counts the page's script leaves on `<body>`.
fn parse_dom(dom: &str) -> Result<BrowserCheck> {
    let body = dom
        .find("<body")
        .map(|i| &dom[i..])
        .and_then(|b| b.find('>').map(|j| &b[..j]))
        .context("the rendered page has no <body>")?;
    let attr = |name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let i = body.find(&key)? + key.len();
        let j = body[i..].find('"')?;
        Some(body[i..i + j].to_string())
    };
    if attr("data-checked").as_deref() != Some("yes") {
        bail!("the page's check script did not run (no data-checked on <body>)");
    }
    let num = |name: &str| -> Result<usize> {
        attr(name)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no numeric {name} on <body>"))
    };
    Ok(BrowserCheck {
        images_total: num("data-images-total")?,
        images_broken: num("data-images-broken")?,
        broken: attr("data-broken-list")
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect(),
        table_rows: num("data-table-rows")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot;

    fn sample_report(dir: &Path) -> Report {
        let img = dir.join("img");
        std::fs::create_dir_all(&img).unwrap();
        let series = vec![plot::Series {
            name: "loss".into(),
            points: (1..50).map(|i| (i as f64, 2.0 / i as f64)).collect(),
        }];
        plot::line_chart(&img.join("a-loss.png"), "a", "step", &series, 400, 260).unwrap();
        plot::scatter(
            &img.join("b-modes.png"),
            "b",
            &[(0.1, 0.0)],
            &[(0.0, 0.0)],
            0.05,
            1.0,
        )
        .unwrap();
        let model = |id: &str, images: Vec<(String, String)>| ModelReport {
            id: id.into(),
            model: id.into(),
            family: "gan".into(),
            about: format!("{id} <test>"),
            data: "fashion-mnist".into(),
            steps: 10,
            planned_steps: 20,
            train_s: 3.0,
            scores: vec![("FID".into(), "12.3".into())],
            images,
            ..Default::default()
        };
        Report {
            command: "cargo xtask eval --quick".into(),
            started_utc: "2026-11-29 00:00".into(),
            wall_s: 5.0,
            quick: true,
            budget_s: 60.0,
            trained: true,
            device: "cpu".into(),
            threads: "2".into(),
            machine: "test".into(),
            models: vec![
                ModelReport {
                    tables: vec![Table {
                        caption: "FID against sampling steps (`sample --scheduler S --steps K`)"
                            .into(),
                        header: vec!["scheduler".into(), "steps".into(), "FID".into()],
                        rows: vec![
                            vec!["ddim".into(), "10".into(), "80.8".into()],
                            vec!["a|b <c>".into(), "20".into(), "73.2".into()],
                        ],
                    }],
                    ..model("a", vec![("loss curves".into(), "img/a-loss.png".into())])
                },
                model("b", vec![("modes".into(), "img/b-modes.png".into())]),
                model("c", vec![]),
            ],
            notes: vec![],
        }
    }

    #[test]
    fn markdown_and_json_name_every_model() {
        let dir = tempfile::tempdir().unwrap();
        let r = sample_report(dir.path());
        r.write(dir.path()).unwrap();
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert_eq!(md.matches("| gan |").count(), 3);
        assert!(md.contains("![loss curves](img/a-loss.png)"));
        let j: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(j["models"].as_array().unwrap().len(), 3);
        // HTML-escaped text, markdown code spans as <code>
        assert!(r.html().contains("a &lt;test&gt;"));
        assert!(r.html().contains("<code>cargo xtask eval --quick</code>"));
        assert_eq!(esc_inline("a `b<c>` d"), "a <code>b&lt;c&gt;</code> d");
        // a model's own tables, in both pages and in results.json
        assert!(md.contains(
            "**FID against sampling steps (`sample --scheduler S --steps K`)**\n\n| scheduler | steps | FID |\n|---|---|---|\n| ddim | 10 | 80.8 |\n| a\\|b <c> | 20 | 73.2 |\n"
        ), "{md}");
        let html = r.html();
        assert!(html.contains("<table class=\"model-table\"><caption>FID against sampling steps (<code>sample --scheduler S --steps K</code>)</caption>"), "{html}");
        assert!(html.contains("<tr><td>a|b &lt;c&gt;</td><td>20</td><td>73.2</td></tr>"));
        assert_eq!(j["models"][0]["tables"][0]["rows"][1][2], "73.2");
        // the metrics table is still the only one with an id, one row per model
        assert_eq!(html.matches("<tr data-model=").count(), 3);
    }

    #[test]
    fn dom_attributes_are_read_back() {
        let dom = "<html><head></head><body data-images-total=\"3\" data-images-broken=\"1\" data-broken-list=\"img/x.png\" data-table-rows=\"2\" data-checked=\"yes\"><p>x</p></body></html>";
        let c = parse_dom(dom).unwrap();
        assert_eq!(
            c,
            BrowserCheck {
                images_total: 3,
                images_broken: 1,
                broken: vec!["img/x.png".into()],
                table_rows: 2
            }
        );
        assert!(parse_dom("<html><body></body></html>").is_err());
    }

    /// The report in a real browser: every image resolves and the table has a row per model.
    /// Needs Chromium (`cargo xtask setup` installs it); set GENMODELS_SKIP_BROWSER_TEST=1 to skip it
    /// knowingly on a machine without one.
    #[test]
    fn report_page_renders_in_headless_chromium() {
        if std::env::var_os("GENMODELS_SKIP_BROWSER_TEST").is_some() {
            eprintln!("SKIPPED: the browser test (GENMODELS_SKIP_BROWSER_TEST is set)");
            return;
        }
        if let Err(e) = find_chromium() {
            panic!("{e:#}\n(or set GENMODELS_SKIP_BROWSER_TEST=1 to skip this test knowingly)");
        }
        let dir = tempfile::tempdir().unwrap();
        let r = sample_report(dir.path());
        let html = r.write(dir.path()).unwrap();
        let c = check_in_browser(&html).unwrap();
        assert_eq!(c.table_rows, 3, "one table row per model");
        assert_eq!(c.images_total, 2);
        assert_eq!(c.images_broken, 0, "broken images: {:?}", c.broken);

        // The check can fail: a missing picture is reported by name.
        std::fs::remove_file(dir.path().join("img").join("b-modes.png")).unwrap();
        let c = check_in_browser(&html).unwrap();
        assert_eq!(c.images_broken, 1);
        assert_eq!(c.broken, vec!["img/b-modes.png".to_string()]);
    }
}
