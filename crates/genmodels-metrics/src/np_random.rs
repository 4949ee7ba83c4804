//! numpy's legacy `np.random.RandomState` for integer seeds: MT19937 (Matsumoto & Nishimura
//! 1998) seeded by `init_genrand`, and `permutation` / `choice(replace=False)` exactly as numpy
//! draws them (Fisher-Yates from the end with `random_interval`'s masked rejection sampling).
//! torch-fidelity uses this generator, seeded 2020, for the Inception Score's shuffle and the
//! KID subsets; reproducing it makes our numbers equal to theirs.

/// MT19937 with numpy's legacy seeding.
pub struct RandomState {
    mt: [u32; 624],
    pos: usize,
}

impl RandomState {
    /// `np.random.RandomState(seed)` for a 32-bit seed.
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        RandomState { mt, pos: 624 }
    }

    fn refill(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % 624] & LOWER);
            let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= 0x9908_b0df;
            }
            self.mt[i] = v;
        }
        self.pos = 0;
    }

    /// The next 32-bit output (tempered).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.refill();
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_u64(&mut self) -> u64 {
        ((self.next_u32() as u64) << 32) | self.next_u32() as u64
    }

    /// numpy's `random_interval(max)`: uniform in [0, max] by masked rejection.
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> s;
        }
        if max <= 0xffff_ffff {
            loop {
                let v = self.next_u32() as u64 & mask;
                if v <= max {
                    return v;
                }
            }
        } else {
            loop {
                let v = self.next_u64() & mask;
                if v <= max {
                    return v;
                }
            }
        }
    }

    /// `RandomState.permutation(n)`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u64) as usize;
            v.swap(i, j);
        }
        v
    }

    /// `RandomState.choice(n, k, replace=False)`: the first `k` of a permutation.
    pub fn choice_without_replacement(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut p = self.permutation(n);
        p.truncate(k);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_mt19937_reference_output() {
        // First outputs of init_genrand(5489), the reference implementation's default seed.
        let mut r = RandomState::new(5489);
        assert_eq!(
            [r.next_u32(), r.next_u32(), r.next_u32()],
            [3_499_211_612, 581_869_302, 3_890_346_734]
        );
    }
}
