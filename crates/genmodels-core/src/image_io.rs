//! Image output: [-1, 1] <-> u8 conversion, sample grids and single images as PNG, and a plain
//! scatter plot for 2-D samples.

use crate::checkpoint::write_atomic;
use crate::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// [-1, 1] floats to u8 (round half away from zero after mapping to [0, 255], clamped).
pub fn to_u8(t: &Tensor) -> Tensor {
    ((t.to_kind(Kind::Float) + 1.0) * 127.5)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
}

/// u8 to [-1, 1] floats.
pub fn from_u8(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Float) / 127.5 - 1.0
}

fn encode_png(hwc: &[u8], w: u32, h: u32, channels: i64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let color = if channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut out),
        hwc,
        w,
        h,
        color,
    )
    .map_err(|e| Error::invalid(format!("PNG encoding failed: {e}")))?;
    Ok(out)
}

fn check_images(t: &Tensor) -> Result<(i64, i64, i64, i64)> {
    match t.size().as_slice() {
        &[n, c, h, w] if c == 1 || c == 3 => Ok((n, c, h, w)),
        s => Err(Error::invalid(format!(
            "expected images [N, 1 or 3, H, W], got shape {s:?}"
        ))),
    }
}

/// Writes one image `[C, H, W]` in [-1, 1] as a PNG (atomically).
pub fn save_image(img: &Tensor, path: &Path) -> Result<()> {
    save_grid(&img.unsqueeze(0), 1, 0, path)
}

/// Arranges `images` (`[N, C, H, W]` in [-1, 1]) in rows of `nrow` with `pad` pixels of white
/// between them, as torchvision's `make_grid`, and writes a PNG.
pub fn save_grid(images: &Tensor, nrow: i64, pad: i64, path: &Path) -> Result<()> {
    let (n, c, h, w) = check_images(images)?;
    if n == 0 || nrow < 1 {
        return Err(Error::invalid(
            "a grid needs at least one image and one column",
        ));
    }
    let cols = nrow.min(n);
    let rows = (n + cols - 1) / cols;
    let (gh, gw) = (rows * (h + pad) + pad, cols * (w + pad) + pad);
    let imgs = to_u8(&images.detach().to_device(Device::Cpu));
    let grid = Tensor::full([c, gh, gw], 255, (Kind::Uint8, Device::Cpu));
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        grid.narrow(1, pad + r * (h + pad), h)
            .narrow(2, pad + col * (w + pad), w)
            .copy_(&imgs.get(i));
    }
    let hwc = grid.permute([1, 2, 0]).contiguous();
    let mut buf = vec![0u8; hwc.numel()];
    hwc.copy_data_u8(&mut buf, hwc.numel());
    write_atomic(path, &encode_png(&buf, gw as u32, gh as u32, c)?)
}

/// Writes each image of a batch as `prefix_00000.png`, ... into `dir`.
pub fn save_each(images: &Tensor, dir: &Path, prefix: &str, start: usize) -> Result<usize> {
    let (n, ..) = check_images(images)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for i in 0..n {
        save_image(
            &images.get(i),
            &dir.join(format!("{prefix}_{:05}.png", start + i as usize)),
        )?;
    }
    Ok(n as usize)
}

/// A plain scatter plot of 2-D points `[N, 2]` within `[-lim, lim]^2` (for mode-coverage
/// pictures): data points in grey, samples in blue, on a `size` x `size` canvas.
pub fn save_scatter(
    samples: &Tensor,
    reference: Option<&Tensor>,
    lim: f64,
    size: u32,
    path: &Path,
) -> Result<()> {
    let s = size as usize;
    let mut canvas = vec![255u8; s * s * 3];
    let mut plot = |pts: &Tensor, rgb: [u8; 3]| -> Result<()> {
        if pts.dim() != 2 || pts.size()[1] != 2 {
            return Err(Error::invalid(format!(
                "scatter expects points [N, 2], got {:?}",
                pts.size()
            )));
        }
        let v: Vec<f32> = Vec::try_from(
            pts.detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .flatten(0, -1),
        )
        .map_err(Error::Torch)?;
        for p in v.chunks_exact(2) {
            let px = ((p[0] as f64 + lim) / (2.0 * lim) * (s as f64 - 1.0)).round();
            let py = ((lim - p[1] as f64) / (2.0 * lim) * (s as f64 - 1.0)).round();
            if px < 0.0 || py < 0.0 || px >= s as f64 || py >= s as f64 {
                continue;
            }
            let (x, y) = (px as usize, py as usize);
            for dy in 0..2usize {
                for dx in 0..2usize {
                    let (xx, yy) = ((x + dx).min(s - 1), (y + dy).min(s - 1));
                    canvas[(yy * s + xx) * 3..(yy * s + xx) * 3 + 3].copy_from_slice(&rgb);
                }
            }
        }
        Ok(())
    };
    if let Some(r) = reference {
        plot(r, [170, 170, 170])?;
    }
    plot(samples, [31, 119, 180])?;
    write_atomic(path, &encode_png(&canvas, size, size, 3)?)
}

/// A perceptual colour map (dark purple -> blue -> green -> yellow, viridis' stops) for t in [0, 1].
fn viridis(t: f64) -> [u8; 3] {
    const STOPS: [[f64; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let t = t.clamp(0.0, 1.0) * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f64;
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        *o = (STOPS[i][c] * (1.0 - f) + STOPS[i + 1][c] * f).round() as u8;
    }
    out
}

/// A heat map of `values` `[H, W]` (row 0 at the top), scaled from its minimum to its maximum,
/// optionally with `points` `[N, 2]` drawn in white over the square `[-lim, lim]^2` the grid
/// covers. Written atomically as a PNG.
pub fn save_heatmap(values: &Tensor, points: Option<&Tensor>, lim: f64, path: &Path) -> Result<()> {
    let (h, w) = match values.size().as_slice() {
        &[h, w] if h > 0 && w > 0 => (h as usize, w as usize),
        s => {
            return Err(Error::invalid(format!(
                "a heat map needs values [H, W], got shape {s:?}"
            )))
        }
    };
    let v: Vec<f64> = Vec::try_from(
        values
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Double)
            .flatten(0, -1),
    )
    .map_err(Error::Torch)?;
    let (lo, hi) = v
        .iter()
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut canvas = Vec::with_capacity(h * w * 3);
    for x in &v {
        let t = if x.is_finite() { (x - lo) / span } else { 0.0 };
        canvas.extend_from_slice(&viridis(t));
    }
    if let Some(p) = points {
        let pv: Vec<f32> = Vec::try_from(
            p.detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .flatten(0, -1),
        )
        .map_err(Error::Torch)?;
        for q in pv.chunks_exact(2) {
            let px = ((q[0] as f64 + lim) / (2.0 * lim) * (w as f64 - 1.0)).round();
            let py = ((lim - q[1] as f64) / (2.0 * lim) * (h as f64 - 1.0)).round();
            if px >= 0.0 && py >= 0.0 && px < w as f64 && py < h as f64 {
                let i = (py as usize * w + px as usize) * 3;
                canvas[i..i + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
    }
    write_atomic(path, &encode_png(&canvas, w as u32, h as u32, 3)?)
}

/// A reliability diagram: for equal-width confidence bins over (0, 1], bars of the bins'
/// accuracies `(accuracy, count)` (empty bins drawn pale), on a `size` x `size` white square
/// with the diagonal of perfect calibration in grey. Written atomically as a PNG.
pub fn save_reliability(bins: &[(f64, f64)], size: u32, path: &Path) -> Result<()> {
    if bins.is_empty() || !(16..=4096).contains(&size) {
        return Err(Error::invalid(format!(
            "a reliability diagram needs at least one bin and a size from 16 to 4096, got {} bins, size {size}",
            bins.len()
        )));
    }
    let s = size as usize;
    let mut canvas = vec![255u8; s * s * 3];
    let mut put = |x: usize, y: usize, rgb: [u8; 3]| {
        if x < s && y < s {
            canvas[(y * s + x) * 3..(y * s + x) * 3 + 3].copy_from_slice(&rgb);
        }
    };
    let k = bins.len();
    for (b, &(acc, count)) in bins.iter().enumerate() {
        let (x0, x1) = (b * s / k, ((b + 1) * s / k).max(b * s / k + 1));
        let h = (acc.clamp(0.0, 1.0) * s as f64).round() as usize;
        let rgb = if count > 0.0 {
            [31, 119, 180]
        } else {
            [220, 220, 220]
        };
        for x in x0..x1.saturating_sub(1).max(x0 + 1) {
            for y in s - h..s {
                put(x, y, rgb);
            }
        }
    }
    for i in 0..s {
        put(i, s - 1 - i, [120, 120, 120]);
    }
    write_atomic(path, &encode_png(&canvas, size, size, 3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliability_diagrams_draw_the_bins_accuracies() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.png");
        save_reliability(&[(0.0, 0.0), (1.0, 5.0)], 20, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // The full bar on the right, nothing but the diagonal on the left.
        assert_eq!(img.get_pixel(15, 2).0, [31, 119, 180]);
        assert_eq!(img.get_pixel(2, 2).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(0, 19).0, [120, 120, 120]);
        assert!(save_reliability(&[], 20, &p).is_err());
    }

    #[test]
    fn heat_maps_run_from_the_first_to_the_last_colour_stop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.png");
        let v = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
        save_heatmap(&v, None, 1.0, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (3, 2));
        assert_eq!(img.get_pixel(0, 0).0, [68, 1, 84]);
        assert_eq!(img.get_pixel(2, 1).0, [253, 231, 37]);
        assert!(save_heatmap(
            &Tensor::zeros([4], (Kind::Float, Device::Cpu)),
            None,
            1.0,
            &p
        )
        .is_err());
    }

    #[test]
    fn u8_round_trip() {
        let u = Tensor::arange(256, (Kind::Uint8, Device::Cpu));
        assert!(to_u8(&from_u8(&u)).equal(&u));
        let x = Tensor::from_slice(&[-2.0f32, -1.0, 0.0, 1.0, 3.0]);
        assert_eq!(
            Vec::<u8>::try_from(to_u8(&x)).unwrap(),
            vec![0, 0, 128, 255, 255]
        );
    }

    #[test]
    fn grid_layout_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.png");
        let imgs = Tensor::ones([5, 3, 4, 6], (Kind::Float, Device::Cpu)) * -1.0;
        save_grid(&imgs, 2, 2, &p).unwrap();
        let g = image::open(&p).unwrap().to_rgb8();
        assert_eq!((g.width(), g.height()), (2 * 8 + 2, 3 * 6 + 2));
        assert_eq!(g.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(g.get_pixel(2, 2).0, [0, 0, 0]);
        let bad = Tensor::zeros([2, 2, 4, 4], (Kind::Float, Device::Cpu));
        assert!(save_grid(&bad, 2, 2, &p)
            .unwrap_err()
            .to_string()
            .contains("expected images"));
        let pts = Tensor::zeros([10, 2], (Kind::Float, Device::Cpu));
        save_scatter(&pts, Some(&pts), 3.0, 64, &dir.path().join("s.png")).unwrap();
    }
}
