//! Small tensor operations the GANs share.

use tch::Tensor;

/// Leaky ReLU with any slope: ATen's kernel forward and backward
/// ([`genmodels_core::ops::leaky_relu`]).
pub fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    genmodels_core::ops::leaky_relu(x, slope)
}

/// Pads `[N, C, H, W]` images in [-1, 1] to `side` x `side` with the background value -1
/// (centred; the extra pixel of an odd margin goes right and down).
pub fn pad_background(x: &Tensor, side: i64) -> Tensor {
    let pad = side - x.size()[2];
    if pad <= 0 {
        return x.shallow_clone();
    }
    let (a, b) = (pad / 2, pad - pad / 2);
    (x + 1.0).constant_pad_nd([a, b, a, b]) - 1.0
}

/// The centred `size` x `size` crop, the inverse of [`pad_background`].
pub fn crop_center(x: &Tensor, size: i64) -> Tensor {
    let off = (x.size()[2] - size) / 2;
    x.narrow(2, off, size).narrow(3, off, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn pad_then_crop_is_the_identity_and_the_border_is_background() {
        let x = Tensor::rand([2, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let p = pad_background(&x, 32);
        assert_eq!(p.size(), [2, 1, 32, 32]);
        assert_eq!(p.double_value(&[0, 0, 0, 0]), -1.0);
        assert!(crop_center(&p, 28).equal(&x));
        let y = Tensor::from_slice(&[-2.0f32, 3.0]);
        assert!(leaky_relu(&y, 0.2).allclose(
            &Tensor::from_slice(&[-0.4f32, 3.0]),
            1e-6,
            1e-6,
            false
        ));
    }
}
