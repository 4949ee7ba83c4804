//! `genmodels list`: the registered models, with their families and capabilities.

use crate::common::registry;
use anyhow::Result;
use clap::Args;
use genmodels_contracts::capability::ModelList;

#[derive(Args)]
pub struct ListArgs {
    /// Print the models as JSON (name, family, summary, output, capabilities).
    #[arg(long)]
    json: bool,
}

pub fn list(a: ListArgs) -> Result<()> {
    let reg = registry();
    if a.json {
        let l = ModelList {
            models: reg.entries().iter().map(|e| e.info()).collect(),
        };
        println!("{}", genmodels_contracts::to_json_pretty(&l));
        return Ok(());
    }
    println!(
        "{:<12} {:<12} {:<40} summary",
        "model", "family", "capabilities"
    );
    for e in reg.entries() {
        let caps: Vec<&str> = e.capabilities.iter().map(|c| c.as_str()).collect();
        println!(
            "{:<12} {:<12} {:<40} {}",
            e.name,
            e.family,
            caps.join(","),
            e.summary
        );
    }
    Ok(())
}
