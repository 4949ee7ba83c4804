//! The replay buffer of persistent short-run chains (Du & Mordatch 2019, Sec. 3.1; JEM's
//! `sample_p_0`): chains start from stored end points of earlier chains, a share `reinit` of
//! them (5 % in both references) from fresh uniform noise on [-1, 1], and their ends go back
//! into the slots they came from. The buffer lives in its own variable store (untrained
//! variables `x` and `y`), so checkpoints carry it and a resumed run continues the same chains.

use tch::nn;
use tch::{Device, Kind, Tensor};

/// Stored chain states `[size, ...example]` and, for class-conditional energies, their labels
/// (`[size]`, as floats).
pub struct ReplayBuffer {
    pub x: Tensor,
    pub y: Option<Tensor>,
    pub reinit: f64,
    /// Fresh starts are uniform on [-init_range, init_range].
    pub init_range: f64,
    classes: i64,
}

/// Chain starts drawn from the buffer.
pub struct Draw {
    /// Buffer slots, `[n]`.
    pub idx: Tensor,
    /// Starting points.
    pub x0: Tensor,
    /// Labels of the chains (class-conditional buffers).
    pub y: Option<Tensor>,
    /// How many of the `n` starts are fresh noise.
    pub fresh: i64,
}

fn uniform(shape: &[i64], range: f64, device: Device) -> Tensor {
    (Tensor::rand(shape, (Kind::Float, device)) * 2.0 - 1.0) * range
}

impl ReplayBuffer {
    /// `size` slots of uniform noise on [-init_range, init_range] for examples of `shape`, in
    /// `p`; labelled uniformly at random over `classes` when `classes > 0`.
    pub fn new(
        p: &nn::Path,
        size: i64,
        shape: &[i64],
        classes: i64,
        reinit: f64,
        init_range: f64,
    ) -> Self {
        let mut full = vec![size];
        full.extend_from_slice(shape);
        let x = p.zeros_no_train("x", &full);
        let dev = x.device();
        tch::no_grad(|| x.shallow_clone().copy_(&uniform(&full, init_range, dev)));
        // Labels stored as floats (exact below 2^24), the store's kind.
        let y = (classes > 0).then(|| {
            let y = p.zeros_no_train("y", &[size]);
            let r = Tensor::randint(classes, [size], (Kind::Float, dev));
            tch::no_grad(|| y.shallow_clone().copy_(&r));
            y
        });
        ReplayBuffer {
            x,
            y,
            reinit,
            init_range,
            classes,
        }
    }

    pub fn len(&self) -> i64 {
        self.x.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` starts: random slots, each replaced by fresh noise (and a fresh label) with
    /// probability `reinit`.
    pub fn draw(&self, n: i64) -> Draw {
        let dev = self.x.device();
        let idx = Tensor::randint(self.len(), [n], (Kind::Int64, dev));
        let stored = self.x.index_select(0, &idx);
        let fresh = Tensor::rand([n], (Kind::Float, dev)).lt(self.reinit);
        let mut shape = vec![n];
        shape.extend(std::iter::repeat_n(1, stored.dim() - 1));
        let noise = uniform(&stored.size(), self.init_range, dev);
        let x0 = noise.where_self(&fresh.view(shape.as_slice()), &stored);
        let y = self.y.as_ref().map(|y| {
            let new = Tensor::randint(self.classes, [n], (Kind::Int64, dev));
            new.where_self(&fresh, &y.index_select(0, &idx).to_kind(Kind::Int64))
        });
        let fresh = fresh.sum(Kind::Int64).int64_value(&[]);
        Draw { idx, x0, y, fresh }
    }

    /// Chain ends back into their slots.
    pub fn store(&mut self, draw: &Draw, x: &Tensor) {
        tch::no_grad(|| {
            let _ = self.x.index_copy_(0, &draw.idx, &x.detach());
            if let (Some(buf), Some(y)) = (self.y.as_mut(), draw.y.as_ref()) {
                let _ = buf.index_copy_(0, &draw.idx, &y.to_kind(Kind::Float));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_reinit_of_the_starts_are_fresh_and_the_rest_come_from_the_buffer() {
        let _rng = crate::test_lock();
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut b = ReplayBuffer::new(&vs.root(), 1000, &[2], 3, 0.05, 1.0);
        // Mark the stored chains far outside the noise's range.
        let _ = b.x.fill_(7.0);
        let d = b.draw(20_000);
        let from_buffer =
            d.x0.eq(7.0)
                .all_dim(1, false)
                .sum(Kind::Int64)
                .int64_value(&[]);
        assert_eq!(from_buffer + d.fresh, 20_000);
        let share = d.fresh as f64 / 20_000.0;
        assert!((share - 0.05).abs() < 0.006, "fresh share {share}");
        // Fresh starts are uniform noise in [-1, 1].
        let fresh = d.x0.le(1.0).all_dim(1, false);
        assert_eq!(fresh.sum(Kind::Int64).int64_value(&[]), d.fresh);
        // Ends go back to their slots.
        let d = b.draw(10);
        b.store(&d, &Tensor::zeros([10, 2], (Kind::Float, Device::Cpu)));
        let back = b.x.index_select(0, &d.idx);
        assert_eq!(back.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
}
