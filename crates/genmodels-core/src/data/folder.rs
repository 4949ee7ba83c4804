//! Folders of PNG/JPEG images, read at their own size (the default, as pytorch-fid and
//! torch-fidelity read them) or resized (shorter side) and centre-cropped to a square size.
//! Sub-folders, when present, are classes (sorted by name), as in torchvision's `ImageFolder`.

use super::limits::{
    one_line, MAX_DECODE_BYTES, MAX_DECODE_SIDE, MAX_FOLDER_SIDE, MAX_RESIZED_PIXELS,
    MAX_TENSOR_ELEMENTS,
};
use super::{u8_to_unit, Dataset};
use crate::{Error, Result};
use image::imageops::FilterType;
use image::DynamicImage;
use std::path::{Path, PathBuf};

/// Images decoded lazily from files; the loader decodes a batch in parallel.
pub struct ImageFolder {
    files: Vec<(PathBuf, Option<i64>)>,
    classes: Vec<String>,
    height: u32,
    width: u32,
    channels: u8,
    /// Resize every image to `height` (= `width`); otherwise each must have the first's size.
    resize: bool,
    /// Channels followed the first image (a grey first image makes colour ones an error).
    native_channels: bool,
    root: PathBuf,
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_file() && is_image(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

impl ImageFolder {
    /// Opens `root`: images directly inside it (no labels) or in class sub-folders.
    /// `channels` is 1 (grey) or 3 (RGB), or 0 to follow the first image (grey -> 1, else 3);
    /// `size` is the output side in pixels, or 0 for the first image's own (shorter) side.
    pub fn open(root: &Path, size: u32, channels: u8) -> Result<Self> {
        if channels > 3 || channels == 2 {
            return Err(Error::invalid(format!(
                "channels must be 1 or 3 (or 0 for the images' own), got {channels}"
            )));
        }
        if size > MAX_FOLDER_SIDE {
            return Err(Error::invalid(format!(
                "image size {size} is too large: at most {MAX_FOLDER_SIDE} pixels a side"
            )));
        }
        if !root.is_dir() {
            return Err(Error::bad_data(root, "not a folder of images"));
        }
        let mut files: Vec<(PathBuf, Option<i64>)> =
            list_images(root)?.into_iter().map(|p| (p, None)).collect();
        let mut classes = Vec::new();
        if files.is_empty() {
            let mut subdirs: Vec<PathBuf> = std::fs::read_dir(root)
                .map_err(|e| Error::io(root, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            subdirs.sort();
            for d in subdirs {
                let imgs = list_images(&d)?;
                if imgs.is_empty() {
                    continue;
                }
                let label = classes.len() as i64;
                classes.push(
                    d.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
                files.extend(imgs.into_iter().map(|p| (p, Some(label))));
            }
        }
        if files.is_empty() {
            return Err(Error::bad_data(
                root,
                "no .png/.jpg/.jpeg files found (directly or in class sub-folders)",
            ));
        }
        let follow_channels = channels == 0;
        let (mut height, mut width, mut channels) = (size, size, channels);
        if size == 0 || channels == 0 {
            let first = &files[0].0;
            let img = decode_image(first)?;
            if size == 0 {
                (height, width) = (img.height(), img.width());
                if height.max(width) > MAX_FOLDER_SIDE {
                    return Err(Error::bad_data(
                        first,
                        format!(
                            "the first image is {}x{}, larger than {MAX_FOLDER_SIDE} pixels a side: give the size (folder:DIR:SIZE)",
                            img.width(),
                            img.height()
                        ),
                    ));
                }
            }
            if channels == 0 {
                channels = if img.color().has_color() { 3 } else { 1 };
            }
        }
        Ok(ImageFolder {
            files,
            classes,
            height,
            width,
            channels,
            resize: size != 0,
            native_channels: follow_channels,
            root: root.to_path_buf(),
        })
    }

    /// Class names, in label order (empty when the folder has no class sub-folders).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The file behind example `i`.
    pub fn path(&self, i: usize) -> &Path {
        &self.files[i].0
    }
}

/// Decodes an image file with the decoder's limits set: a file of at most
/// [`MAX_DECODE_BYTES`], at most [`MAX_DECODE_SIDE`] pixels a side and [`MAX_DECODE_BYTES`] of
/// pixel memory, so a header claiming a huge image is refused before anything is allocated.
fn decode_image(path: &Path) -> Result<DynamicImage> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_DECODE_BYTES {
        return Err(Error::bad_data(
            path,
            format!("{len} bytes, more than the {MAX_DECODE_BYTES} an image file may have"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |e: &dyn std::fmt::Display| {
        Error::bad_data(
            path,
            format!(
                "cannot decode as an image ({}); expected a PNG or JPEG file",
                one_line(e)
            ),
        )
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
        .with_guessed_format()
        .map_err(|e| bad(&e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODE_SIDE);
    limits.max_image_height = Some(MAX_DECODE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(&e))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::bad_data(path, "image has zero width or height"));
    }
    Ok(img)
}

/// Decodes one image file into `out` (CHW in [-1, 1], `channels * size * size` values) after
/// resizing its shorter side to `size` (Catmull-Rom) and centre-cropping.
pub fn decode_image_into(path: &Path, size: u32, channels: u8, out: &mut [f32]) -> Result<()> {
    check_target(size, size, channels, out.len())?;
    let img = decode_image(path)?;
    let (w, h) = (img.width(), img.height());
    let img = if w != size || h != size {
        let scale = size as f64 / w.min(h) as f64;
        let (nw, nh) = (
            ((w as f64 * scale).round() as u32).max(size),
            ((h as f64 * scale).round() as u32).max(size),
        );
        if nw as u64 * nh as u64 > MAX_RESIZED_PIXELS {
            return Err(Error::bad_data(
                path,
                format!(
                    "a {w}x{h} image resized to {size} on its shorter side would be {nw}x{nh}, more than {MAX_RESIZED_PIXELS} pixels: the aspect ratio is too extreme"
                ),
            ));
        }
        let r = img.resize_exact(nw, nh, FilterType::CatmullRom);
        r.crop_imm((nw - size) / 2, (nh - size) / 2, size, size)
    } else {
        img
    };
    write_chw(&img, channels, out);
    Ok(())
}

/// Decodes one image file at its own size into `out` (CHW in [-1, 1]): the image must be
/// `width` x `height`, as pytorch-fid and torch-fidelity need every image of a folder to be.
/// With `strict_colour`, a colour image is an error when `channels` is 1 (the folder's first
/// image was grey), instead of a silent conversion to grey.
pub fn decode_native_into(
    path: &Path,
    height: u32,
    width: u32,
    channels: u8,
    strict_colour: bool,
    out: &mut [f32],
) -> Result<()> {
    check_target(height, width, channels, out.len())?;
    let img = decode_image(path)?;
    if img.width() != width || img.height() != height {
        return Err(Error::bad_data(
            path,
            format!(
                "{}x{} pixels, but the folder's first image is {width}x{height}: images read at their own size must all have one size (give folder:DIR:SIZE to resize every image to SIZE x SIZE)",
                img.width(),
                img.height()
            ),
        ));
    }
    if strict_colour && channels == 1 && img.color().has_color() {
        return Err(Error::bad_data(
            path,
            "a colour image, but the folder's first image is grey: give folder:DIR:0:3 to read every image as RGB (grey ones repeated to three channels, as PIL's convert(\"RGB\") does)",
        ));
    }
    write_chw(&img, channels, out);
    Ok(())
}

fn check_target(height: u32, width: u32, channels: u8, len: usize) -> Result<()> {
    if height == 0
        || width == 0
        || height.max(width) > MAX_FOLDER_SIDE
        || !(channels == 1 || channels == 3)
    {
        return Err(Error::invalid(format!(
            "cannot decode into {channels}x{height}x{width}: expected 1 or 3 channels and sides of 1 to {MAX_FOLDER_SIDE}"
        )));
    }
    // sides <= 4096, so neither product overflows.
    let need = height as usize * width as usize * channels as usize;
    debug_assert!(need <= MAX_TENSOR_ELEMENTS);
    if len != need {
        return Err(Error::invalid(format!(
            "a buffer of {len} values for a {channels}x{height}x{width} image"
        )));
    }
    Ok(())
}

/// Writes `img` as CHW values in [-1, 1]: grey by luma, RGB with alpha dropped (as PIL's
/// `convert("RGB")`), grey images repeated to three channels.
fn write_chw(img: &DynamicImage, channels: u8, out: &mut [f32]) {
    let plane = img.width() as usize * img.height() as usize;
    match channels {
        1 => {
            let g = img.to_luma8();
            for (o, p) in out.iter_mut().zip(g.as_raw()) {
                *o = u8_to_unit(*p);
            }
        }
        _ => {
            let rgb = img.to_rgb8();
            for (i, px) in rgb.as_raw().chunks_exact(3).take(plane).enumerate() {
                for c in 0..3 {
                    out[c * plane + i] = u8_to_unit(px[c]);
                }
            }
        }
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn example_shape(&self) -> Vec<i64> {
        vec![self.channels as i64, self.height as i64, self.width as i64]
    }
    fn num_classes(&self) -> Option<usize> {
        (!self.classes.is_empty()).then_some(self.classes.len())
    }
    fn get(&self, idx: usize, out: &mut [f32]) -> Result<Option<i64>> {
        let (p, label) = self.files.get(idx).ok_or_else(|| {
            Error::invalid(format!(
                "index {idx} out of range for {} images",
                self.files.len()
            ))
        })?;
        if self.resize {
            decode_image_into(p, self.height, self.channels, out)?;
        } else {
            decode_native_into(
                p,
                self.height,
                self.width,
                self.channels,
                self.native_channels,
                out,
            )?;
        }
        Ok(*label)
    }
    fn describe(&self) -> String {
        format!(
            "image folder {} ({} images, {}x{}x{}, {})",
            self.root.display(),
            self.files.len(),
            self.channels,
            self.height,
            self.width,
            if self.resize {
                "resized (shorter side) and centre-cropped"
            } else {
                "at their own size"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_class_folders_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        for (cls, shade) in [("a", 0u8), ("b", 255u8)] {
            std::fs::create_dir(dir.path().join(cls)).unwrap();
            let img = image::RgbImage::from_pixel(20, 10, image::Rgb([shade, shade, shade]));
            img.save(dir.path().join(cls).join("x.png")).unwrap();
        }
        let ds = ImageFolder::open(dir.path(), 8, 3).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.classes(), &["a".to_string(), "b".to_string()]);
        let mut buf = vec![0f32; 3 * 64];
        assert_eq!(ds.get(1, &mut buf).unwrap(), Some(1));
        assert!(buf.iter().all(|v| (*v - 1.0).abs() < 1e-6));
        assert_eq!(ds.get(0, &mut buf).unwrap(), Some(0));
        assert!(buf.iter().all(|v| (*v + 1.0).abs() < 1e-6));
    }

    #[test]
    fn a_png_that_is_not_a_png_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fake.png"), b"this is text, not an image").unwrap();
        let ds = ImageFolder::open(dir.path(), 8, 1).unwrap();
        let mut buf = vec![0f32; 64];
        let err = ds.get(0, &mut buf).unwrap_err().to_string();
        assert!(
            err.contains("fake.png") && err.contains("cannot decode"),
            "{err}"
        );
    }

    #[test]
    fn empty_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ImageFolder::open(dir.path(), 8, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no .png"), "{err}");
        assert!(ImageFolder::open(dir.path(), 8, 2).is_err());
        // native size and channels follow the first image: 5 wide, 7 high, grey
        image::GrayImage::from_pixel(5, 7, image::Luma([9]))
            .save(dir.path().join("g.png"))
            .unwrap();
        let ds = ImageFolder::open(dir.path(), 0, 0).unwrap();
        assert_eq!(ds.example_shape(), vec![1, 7, 5]);
    }

    #[test]
    fn native_size_keeps_the_pixels_and_refuses_a_second_size() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_fn(30, 20, |x, y| image::Rgb([x as u8, y as u8, 7]));
        img.save(dir.path().join("a.png")).unwrap();
        let ds = ImageFolder::open(dir.path(), 0, 0).unwrap();
        // not square, not shrunk: the pixels come back exactly
        assert_eq!(ds.example_shape(), vec![3, 20, 30]);
        let mut buf = vec![0f32; 3 * 20 * 30];
        ds.get(0, &mut buf).unwrap();
        let back = |v: f32| ((v + 1.0) * 127.5).round() as u8;
        assert_eq!(back(buf[29]), 29);
        assert_eq!(back(buf[600 + 19 * 30]), 19);
        assert_eq!(back(buf[1200 + 5]), 7);
        image::RgbImage::from_pixel(32, 32, image::Rgb([1, 2, 3]))
            .save(dir.path().join("b.png"))
            .unwrap();
        let ds = ImageFolder::open(dir.path(), 0, 0).unwrap();
        let err = ds.get(1, &mut buf).unwrap_err().to_string();
        assert!(
            err.contains("b.png") && err.contains("32x32") && err.contains("folder:DIR:SIZE"),
            "{err}"
        );
        // with a size given, both are resized
        let ds = ImageFolder::open(dir.path(), 16, 3).unwrap();
        let mut buf = vec![0f32; 3 * 16 * 16];
        ds.get(1, &mut buf).unwrap();
    }

    #[test]
    fn a_colour_image_after_a_grey_first_one_is_an_error_not_a_silent_grey() {
        let dir = tempfile::tempdir().unwrap();
        image::GrayImage::from_pixel(8, 8, image::Luma([50]))
            .save(dir.path().join("a.png"))
            .unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb([200, 0, 0]))
            .save(dir.path().join("b.png"))
            .unwrap();
        let ds = ImageFolder::open(dir.path(), 0, 0).unwrap();
        assert_eq!(ds.example_shape(), vec![1, 8, 8]);
        let mut buf = vec![0f32; 64];
        let err = ds.get(1, &mut buf).unwrap_err().to_string();
        assert!(
            err.contains("b.png") && err.contains("folder:DIR:0:3"),
            "{err}"
        );
        // read as RGB, the grey one is repeated to three channels (PIL's convert("RGB"))
        let ds = ImageFolder::open(dir.path(), 0, 3).unwrap();
        let mut buf = vec![0f32; 3 * 64];
        ds.get(0, &mut buf).unwrap();
        assert!(buf.iter().all(|v| (*v - buf[0]).abs() < 1e-7));
        ds.get(1, &mut buf).unwrap();
    }
}
