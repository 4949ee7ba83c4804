//! Caps on what a file may claim about itself, checked with overflow-checked arithmetic before
//! anything is allocated. A header (IDX dimensions, safetensors shapes, a PNG's size, a GPT-2
//! `config.json`) is user-controlled: these keep a corrupt or hostile file from making a loader
//! allocate terabytes (which would abort the process) instead of giving a one-line error.
//!
//! The caps sit far above every real data set and checkpoint this project reads (MNIST is
//! 60000 x 28 x 28; GPT-2 XL's largest tensor has 80M elements).

/// Elements in any one tensor a loader builds from a file (2^31).
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 31;

/// Height and width of an image in an IDX file.
pub const MAX_IDX_SIDE: usize = 16384;

/// Output side (`SIZE` in `folder:DIR:SIZE`) of an image folder, in pixels.
pub const MAX_FOLDER_SIDE: u32 = 4096;

/// Width and height of an image file the decoder accepts (before resizing).
pub const MAX_DECODE_SIDE: u32 = 16384;

/// Bytes the image decoder may allocate for one image file.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// Pixels of an image after the shorter-side resize and before the centre crop (an extreme
/// aspect ratio at a large output size would otherwise ask for billions).
pub const MAX_RESIZED_PIXELS: u64 = 1 << 26;

/// Bytes a gzip-compressed CSV digit set may decompress to (a zip bomb stops here).
pub const MAX_CSV_BYTES: u64 = 1 << 30;

/// Bytes of a `tokenizer.json` (GPT-2's is 1.4 MB, the largest common ones a few tens of MB).
pub const MAX_TOKENIZER_BYTES: u64 = 1 << 30;

/// Classes a labelled data set may have (labels are class indices below this).
pub const MAX_CLASSES: usize = 1 << 16;

/// Tokens in a vocabulary (a `tokenizer.json`, a trained BPE, a character set).
pub const MAX_VOCAB: usize = 1 << 20;

/// `a * b * ...` with overflow checking, as `usize`; `None` on overflow or a negative factor.
pub fn checked_product<I, T>(dims: I) -> Option<usize>
where
    I: IntoIterator<Item = T>,
    T: TryInto<usize>,
{
    dims.into_iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(d.try_into().ok()?))
}

/// A message from another crate (a decoder, a parser) on one line: line breaks and runs of
/// white space become single spaces, so that every error stays one line.
pub(crate) fn one_line(msg: impl std::fmt::Display) -> String {
    msg.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first line of a libtorch error (its message; the rest is a C++ backtrace), for errors
/// that must stay one line.
pub fn torch_error_line(e: &tch::TchError) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_check_overflow_and_sign() {
        assert_eq!(checked_product([2usize, 3, 4]), Some(24));
        assert_eq!(checked_product::<_, usize>([]), Some(1));
        assert_eq!(checked_product([u32::MAX, u32::MAX, u32::MAX]), None);
        assert_eq!(checked_product([3i64, -1]), None);
        assert_eq!(checked_product([0u64, u64::MAX]), Some(0));
    }
}
