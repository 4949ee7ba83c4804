//! One module per verb: its arguments and its pipeline.

pub mod cas;
pub mod classifier;
pub mod energy;
pub mod fid;
pub mod generate;
pub mod import;
pub mod interpolate;
pub mod langevin;
pub mod launch;
pub mod list;
pub mod metrics;
pub mod nll;
pub mod ood;
pub mod perplexity;
pub mod reconstruct;
pub mod sample;
pub mod train;
pub mod translate;
pub mod traverse;
