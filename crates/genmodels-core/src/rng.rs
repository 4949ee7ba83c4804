//! A small, fast, seedable generator for CPU-side randomness (shuffling, synthetic data), so
//! that data order depends only on the run's seed and not on libtorch's generator.

/// SplitMix64 (Steele, Lea & Flood 2014): 64 bits of state, passes BigCrush, trivially seedable.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (Lemire's multiply-shift; bias below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal by Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

thread_local! {
    /// The seed of the training step under way and how many [`randn_rows`] draws it made.
    static STEP: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
}

fn mix(a: u64, b: u64) -> u64 {
    SplitMix64::new(a ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// The seed of `rank`'s stream for a step seeded `seed`: the seed itself on rank 0 (so a lone
/// process draws what it always drew), one derived from it and the rank elsewhere.
fn rank_seed(seed: u64, rank: usize) -> u64 {
    if rank == 0 {
        seed
    } else {
        mix(seed, rank as u64)
    }
}

/// Seeds libtorch's generators for one training step (the trainer calls it with the step's
/// seed): each rank of a data-parallel run gets its own stream, and [`randn_rows`] draws
/// become the rank's rows of one global draw.
pub fn begin_step(step_seed: u64) {
    STEP.with(|s| s.set(Some((step_seed, 0))));
    crate::device::seed_everything(rank_seed(step_seed, crate::dist::rank()));
}

/// Ends the step begun by [`begin_step`]: later [`randn_rows`] calls are plain draws.
pub fn end_step() {
    STEP.with(|s| s.set(None));
}

/// Standard normal noise for the rows of a batch (`shape[row_dim]` rows: latents, the
/// reparameterisation noise). Inside a training step these are, on every rank, that rank's
/// rows of one draw made for the global batch (`shape[row_dim] x world size` rows, the same on
/// all ranks), so a data-parallel run draws the numbers one process with the global batch
/// draws; the rank's own stream continues afterwards. Outside a step, `Tensor::randn`.
pub fn randn_rows(shape: &[i64], row_dim: usize, opts: (tch::Kind, tch::Device)) -> tch::Tensor {
    rows_draw(shape, row_dim, |s| tch::Tensor::randn(s, opts))
}

/// Bernoulli draws with probabilities `p` (rows along `row_dim`), as [`randn_rows`]: inside a
/// training step, `u < p` with `u` this rank's rows of one uniform draw for the global batch;
/// outside a step, `p.bernoulli()`.
pub fn bernoulli_rows(p: &tch::Tensor, row_dim: usize) -> tch::Tensor {
    if STEP.with(|s| s.get()).is_none() {
        return p.bernoulli();
    }
    let u = rows_draw(&p.size(), row_dim, |s| {
        tch::Tensor::rand(s, (p.kind(), p.device()))
    });
    u.lt_tensor(p).to_kind(p.kind())
}

fn rows_draw(shape: &[i64], row_dim: usize, draw: impl Fn(&[i64]) -> tch::Tensor) -> tch::Tensor {
    let step = STEP.with(|s| s.get());
    let Some((seed, k)) = step.filter(|_| row_dim < shape.len()) else {
        return draw(shape);
    };
    STEP.with(|s| s.set(Some((seed, k + 1))));
    let (world, rank) = (crate::dist::world_size(), crate::dist::rank());
    crate::device::seed_everything(mix(seed, 0x5EED_0000 + 2 * k));
    let mut global = shape.to_vec();
    global[row_dim] *= world as i64;
    let all = draw(&global);
    crate::device::seed_everything(rank_seed(mix(seed, 0x5EED_0001 + 2 * k), rank));
    if world == 1 {
        return all;
    }
    let n = shape[row_dim];
    all.narrow(row_dim as i64, rank as i64 * n, n).contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_and_seeded() {
        let mut a: Vec<usize> = (0..100).collect();
        let mut b = a.clone();
        SplitMix64::new(3).shuffle(&mut a);
        SplitMix64::new(3).shuffle(&mut b);
        assert_eq!(a, b);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_ne!(a, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = SplitMix64::new(1);
        let xs: Vec<f64> = (0..20000).map(|_| r.normal()).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64;
        assert!(m.abs() < 0.03, "mean {m}");
        assert!((v - 1.0).abs() < 0.05, "var {v}");
    }

    #[test]
    fn randn_rows_are_a_prefix_of_the_global_draw_and_steps_are_reproducible() {
        let opts = (tch::Kind::Float, tch::Device::Cpu);
        begin_step(42);
        let a = randn_rows(&[4, 3], 0, opts);
        let after_a = tch::Tensor::randn([5], opts);
        end_step();
        begin_step(42);
        let b = randn_rows(&[4, 3], 0, opts);
        let after_b = tch::Tensor::randn([5], opts);
        end_step();
        assert!(a.equal(&b) && after_a.equal(&after_b));
        // A second draw in the same step differs from the first.
        begin_step(42);
        let _ = randn_rows(&[4, 3], 0, opts);
        let c = randn_rows(&[4, 3], 0, opts);
        end_step();
        assert!(!a.equal(&c));
        // Outside a step: plain draws.
        tch::manual_seed(7);
        let d = randn_rows(&[2, 2], 0, opts);
        tch::manual_seed(7);
        assert!(d.equal(&tch::Tensor::randn([2, 2], opts)));
    }
}
