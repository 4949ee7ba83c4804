//! Hostile files: every loader must answer a corrupt or malicious file with `Ok` or a one-line
//! `Err`, never a panic, and never allocate what a header merely claims.
//!
//! Each test writes small valid files of one format itself (IDX image and label files, raw and
//! gz; a folder of PNGs and a JPEG in class sub-folders; a CSV digit set, plain and gz; a text
//! corpus, a `tokenizer.json` and a serialised `Vocab`; a checkpoint written by
//! `Checkpoint::save` with its metadata), applies seeded mutations (truncations, bit flips,
//! random bytes, insertions, u32/u64 fields set to 0, 1, 2^31, 2^63, u32::MAX, ..., and
//! format-aware ones: IDX sizes, PNG IHDR sizes with the CRC fixed, the safetensors header
//! length and JSON shape / dtype / offset entries, the checkpoint's JSON metadata, tokenizer
//! JSON nodes) and calls the loader inside `catch_unwind`; datasets that open are read through
//! `Dataset::get` and a `DataLoader` batch. It fails on any panic, any case slower than
//! `CASE_LIMIT`, any multi-line error, and a peak RSS (`VmHWM`) over 2 GiB.
//!
//! `GENMODELS_MUTATIONS` sets the mutations per format (default 400), `GENMODELS_MUTATION_SEED`
//! the seed; run with `--nocapture` to see the tallies.

mod mutate;

use genmodels_core::checkpoint::{Checkpoint, TrainState};
use genmodels_core::data::{
    shared, BatchSource, CsvDigits, DataLoader, DataSpec, Dataset, DynDataset, IdxDataset,
    ImageFolder, TextBatches, TextCorpus, TextSplit, Vocab, VocabKind,
};
use genmodels_core::Error;
use mutate::*;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use tch::nn::{Init, VarStore};
use tch::{Device, Kind, Tensor};

const PEAK_RSS_LIMIT: u64 = 2 << 30;

fn count() -> usize {
    // Tiny tensors: one intra-op thread avoids OpenMP spinning against other processes.
    tch::set_num_threads(1);
    mutation_count(400)
}

fn seed() -> u64 {
    std::env::var("GENMODELS_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED)
}

fn case_rng(format: u64, i: usize) -> XorShift {
    XorShift::new(seed() ^ format.wrapping_mul(0xA24B_AED4_963E_E407) ^ (i as u64 + 1))
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Reads a dataset that opened the way training does: a few examples through `get` (and one
/// past the end, which must be an error) and batches through a `DataLoader`.
fn exercise(ds: DynDataset) -> genmodels_core::Result<()> {
    let shape = ds.example_shape();
    let per = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?));
    let per = match per {
        Some(p) if (1..=1 << 26).contains(&p) => p,
        _ => panic!("a dataset opened with example shape {shape:?}"),
    };
    let n = ds.len();
    assert!(n >= 1, "a dataset opened with no examples");
    let _ = (ds.num_classes(), ds.describe());
    let mut buf = vec![0f32; per];
    for i in [0, n / 2, n - 1] {
        ds.get(i, &mut buf)?;
        assert!(
            buf.iter().all(|v| v.is_finite()),
            "non-finite value decoded"
        );
    }
    assert!(ds.get(n, &mut buf).is_err(), "get past the end succeeded");
    assert!(
        ds.get(0, &mut buf[..per - 1]).is_err() || per == 1,
        "get into a short buffer succeeded"
    );
    let bs = n.min(4);
    if per * bs <= 1 << 24 {
        let mut dl = DataLoader::new(ds.clone(), bs, true, 7, Device::Cpu)?;
        for step in [0, 3] {
            let b = dl.batch_at(step)?;
            let mut want = vec![bs as i64];
            want.extend(&shape);
            assert_eq!(b.x.size(), want);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// IDX

fn idx_images(n: u32, h: u32, w: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend((0..n * h * w).map(|i| (i * 37 % 256) as u8));
    v
}

fn idx_labels(n: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&n.to_be_bytes());
    v.extend((0..n).map(|i| (i % 10) as u8));
    v
}

fn idx_header(dims: &[u32], ndim_byte: u8, data: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 8, ndim_byte];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(7u8, data));
    v
}

fn open_idx(ip: &Path, lp: &Path) -> genmodels_core::Result<()> {
    exercise(shared(IdxDataset::open(ip, Some(lp))?))?;
    exercise(shared(IdxDataset::open(ip, None)?))
}

#[test]
fn idx_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (ip, lp) = (dir.path().join("images"), dir.path().join("labels"));
    let (images, labels) = (idx_images(5, 4, 3), idx_labels(5));
    let mut t = Tally::default();

    // The reported ones: sizes whose product overflows (2^22 * 2^21 * 2^21 wraps to 0 in a
    // release build, so an empty data section passed the length check), zero sides, huge sides.
    let regressions: Vec<(Vec<u32>, usize)> = vec![
        (vec![1 << 22, 1 << 21, 1 << 21], 0),
        (vec![u32::MAX, u32::MAX, u32::MAX], 0),
        (vec![5, 0, 3], 0),
        (vec![5, 4, 0], 0),
        (vec![0, 4, 3], 0),
        (vec![1, 16385, 1], 16385),
        (vec![1, 1 << 31, 1], 0),
        (vec![1 << 16, 1 << 14, 1 << 14], 0),
        (vec![1 << 31, 1, 1], 8),
    ];
    for (dims, data) in &regressions {
        for zip in [false, true] {
            let raw = idx_header(dims, 3, *data);
            std::fs::write(&ip, if zip { gz(&raw) } else { raw }).unwrap();
            std::fs::write(&lp, &labels).unwrap();
            t.run(
                "regression",
                || format!("dims {dims:?}"),
                || {
                    let r = open_idx(&ip, &lp);
                    assert!(r.is_err(), "IDX {dims:?} opened");
                    r
                },
            );
        }
    }

    for i in 0..count() {
        let mut rng = case_rng(1, i);
        let on_labels = rng.chance(1, 3);
        let mut bytes = if on_labels {
            labels.clone()
        } else {
            images.clone()
        };
        let mut kind = match rng.below(4) {
            0 => {
                // A size field of the header.
                let ndim = if on_labels { 1 } else { 3 };
                let j = rng.below(ndim);
                let v = *rng.pick(&HOSTILE_U32);
                bytes[4 + 4 * j..8 + 4 * j].copy_from_slice(&v.to_be_bytes());
                if rng.chance(1, 3) {
                    // ...with data enough for small claims.
                    bytes.extend(std::iter::repeat_n(1u8, rng.below(4096)));
                }
                "IDX size field"
            }
            1 => {
                let j = rng.below(4);
                bytes[j] = *rng.pick(&[0u8, 1, 3, 8, 0x0D, 0xff]);
                "IDX magic / ndim byte"
            }
            _ => mutate_bytes(&mut rng, &mut bytes),
        };
        let zip = rng.below(3);
        let bytes = match zip {
            0 => bytes,
            1 => gz(&bytes),
            _ => {
                // Mutate the compressed stream of the (possibly already mutated) file.
                let mut z = gz(&bytes);
                kind = mutate_bytes(&mut rng, &mut z);
                z
            }
        };
        let kind = match zip {
            0 => kind.to_string(),
            1 => format!("gz of {kind}"),
            _ => format!("gz stream: {kind}"),
        };
        let (mine, other) = if on_labels {
            (&lp, (&ip, &images))
        } else {
            (&ip, (&lp, &labels))
        };
        std::fs::write(mine, &bytes).unwrap();
        std::fs::write(other.0, other.1).unwrap();
        t.run(&kind, || format!("IDX case {i}"), || open_idx(&ip, &lp));
    }
    t.finish("IDX");
    assert_peak_rss_below(PEAK_RSS_LIMIT);
}

// ---------------------------------------------------------------------------------------------
// Image folders

fn png_bytes(img: image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn base_images() -> Vec<(&'static str, Vec<u8>)> {
    let rgb = image::RgbImage::from_fn(9, 6, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 99]));
    let grey = image::GrayImage::from_fn(5, 5, |x, y| image::Luma([(x * y * 9) as u8]));
    let rgba = image::RgbaImage::from_fn(4, 7, |x, _| image::Rgba([x as u8, 1, 2, 200]));
    let mut jpg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(rgb.clone())
        .write_to(&mut jpg, image::ImageFormat::Jpeg)
        .unwrap();
    vec![
        ("a/0.png", png_bytes(image::DynamicImage::ImageRgb8(rgb))),
        ("a/1.png", png_bytes(image::DynamicImage::ImageLuma8(grey))),
        ("b/2.png", png_bytes(image::DynamicImage::ImageRgba8(rgba))),
        ("b/3.jpg", jpg.into_inner()),
    ]
}

/// Sets a PNG's IHDR width or height and recomputes the chunk's CRC, so only the size is wrong.
fn png_ihdr_size(bytes: &mut [u8], height: bool, v: u32) {
    let o = if height { 20 } else { 16 };
    bytes[o..o + 4].copy_from_slice(&v.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
}

#[test]
fn image_folders_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    let base = base_images();
    let write_all = || {
        for (name, bytes) in &base {
            let p = root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
    };
    write_all();
    let mut t = Tally::default();

    // The reported one, `folder:DIR:70000`, and other sizes on the command line.
    for spec in [
        format!("folder:{}:70000", root.display()),
        format!("folder:{}:4097:1", root.display()),
        format!("folder:{}:{}", root.display(), u32::MAX),
        format!("folder:{}:65536:3", root.display()),
    ] {
        t.run(
            "regression",
            || spec.clone(),
            || {
                let r = DataSpec::parse(&spec).and_then(|s| s.dataset()).map(|_| ());
                assert!(r.is_err(), "{spec} opened");
                r
            },
        );
    }
    for (size, ch) in [(1, 3), (2, 1), (0, 0)] {
        t.run(
            "regression",
            || format!("size {size}"),
            || exercise(shared(ImageFolder::open(&root, size, ch)?)),
        );
    }
    // The largest size allowed: one example (a batch would be 4 x 64 MiB).
    t.run(
        "regression",
        || "size 4096".into(),
        || {
            let ds = ImageFolder::open(&root, 4096, 1)?;
            let mut buf = vec![0f32; 4096 * 4096];
            ds.get(1, &mut buf).map(|_| ())
        },
    );

    for i in 0..count() {
        let mut rng = case_rng(2, i);
        write_all();
        let (name, orig) = &base[rng.below(base.len())];
        let mut bytes = orig.clone();
        let kind = if name.ends_with(".png") && rng.chance(1, 3) {
            png_ihdr_size(&mut bytes, rng.chance(1, 2), *rng.pick(&HOSTILE_U32));
            "PNG IHDR size (CRC fixed)"
        } else {
            mutate_bytes(&mut rng, &mut bytes)
        };
        std::fs::write(root.join(name), &bytes).unwrap();
        let (size, ch) = *rng.pick(&[(8u32, 3u8), (8, 1), (0, 0), (0, 3), (5, 1), (16, 0)]);
        t.run(
            kind,
            || format!("folder case {i} ({name}, size {size})"),
            || exercise(shared(ImageFolder::open(&root, size, ch)?)),
        );
    }
    t.finish("image folder");
    assert_peak_rss_below(PEAK_RSS_LIMIT);
}

// ---------------------------------------------------------------------------------------------
// CSV digit sets

fn csv_base() -> String {
    (0..6)
        .map(|r| {
            let mut row: Vec<String> = (0..16)
                .map(|c| ((r * 5 + c * 3) % 17).to_string())
                .collect();
            row.push((r % 3).to_string());
            row.join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

const CSV_TOKENS: [&str; 16] = [
    "nan",
    "inf",
    "-inf",
    "-1",
    "1e39",
    "1e-50",
    "4294967296",
    "99999999999999999999",
    "",
    "0x10",
    " 3 ",
    "1,2",
    "\u{0}",
    "65536",
    "2.5",
    "255",
];

fn mutate_csv(rng: &mut XorShift, text: &str) -> (String, &'static str) {
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let r = rng.below(rows.len());
    let kind = match rng.below(5) {
        0 => {
            let c = rng.below(rows[r].len());
            rows[r][c] = rng.pick(&CSV_TOKENS).to_string();
            "CSV field"
        }
        1 => {
            let last = rows[r].len() - 1;
            rows[r][last] = rng.pick(&CSV_TOKENS).to_string();
            "CSV label"
        }
        2 => {
            if rng.chance(1, 2) {
                rows[r].pop();
            } else {
                rows[r].push("1".into());
            }
            "CSV column count"
        }
        3 => {
            // Every row one shape: a non-square or a huge square.
            let cols = *rng.pick(&[1usize, 2, 3, 4, 10, 17, 26, 10_001]);
            for row in &mut rows {
                row.resize(cols, "1".into());
            }
            "CSV row width"
        }
        _ => {
            let n = rng.below(2000);
            let row = rows[r].clone();
            rows.extend(std::iter::repeat_n(row, n));
            "CSV many rows"
        }
    };
    let out = rows
        .iter()
        .map(|r| r.join(","))
        .collect::<Vec<_>>()
        .join("\n");
    (out, kind)
}

#[test]
fn csv_digit_sets_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("digits.csv");
    let base = csv_base();
    let mut t = Tally::default();
    for i in 0..count() {
        let mut rng = case_rng(3, i);
        let (mut bytes, kind) = if rng.chance(1, 2) {
            let (s, k) = mutate_csv(&mut rng, &base);
            (s.into_bytes(), k)
        } else {
            let mut b = base.clone().into_bytes();
            let k = mutate_bytes(&mut rng, &mut b);
            (b, k)
        };
        if rng.chance(1, 3) {
            bytes = gz(&bytes);
            if rng.chance(1, 3) {
                mutate_bytes(&mut rng, &mut bytes);
            }
        }
        std::fs::write(&p, &bytes).unwrap();
        let max = *rng.pick(&[
            None,
            Some(16.0f32),
            Some(255.0),
            Some(0.0),
            Some(-1.0),
            Some(f32::NAN),
        ]);
        t.run(
            kind,
            || format!("CSV case {i}"),
            || exercise(shared(CsvDigits::open(&p, max)?)),
        );
    }
    t.finish("CSV");
    assert_peak_rss_below(PEAK_RSS_LIMIT);
}

// ---------------------------------------------------------------------------------------------
// Text corpora, tokenizer.json, serialised vocabularies

fn corpus_text() -> String {
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money \
     in my purse, and nothing particular to interest me on shore, I thought I would sail about \
     a little and see the watery part of the world. Naïve café, 白鯨.\n"
        .repeat(12)
}

/// Uses a vocabulary the way a text model does; must not panic whatever the vocabulary is.
fn use_vocab(v: &Vocab) -> genmodels_core::Result<()> {
    let n = v.size();
    let ids = v.encode("the whale, Ishmael")?;
    v.decode(&ids)?;
    for probe in [0u32, n.saturating_sub(1) as u32, n as u32, u32::MAX] {
        let _ = v.decode(&[probe]);
    }
    Ok(())
}

fn use_corpus(c: TextCorpus) -> genmodels_core::Result<()> {
    use_vocab(&c.vocab)?;
    let c = Arc::new(c);
    for split in [TextSplit::Train, TextSplit::Val] {
        if let Ok(mut tb) = TextBatches::new(c.clone(), split, 8, 2, 3, Device::Cpu) {
            let b = tb.batch_at(5)?;
            assert_eq!(b.x.size(), vec![2, 8]);
            let max = b.x.max().int64_value(&[]);
            assert!(
                (max as usize) < c.vocab.size().max(1),
                "token {max} outside the vocabulary of {}",
                c.vocab.size()
            );
        }
    }
    Ok(())
}

#[test]
fn text_and_tokenizers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let text = corpus_text();
    let bpe = Vocab::train_bpe(&text, 300).unwrap();
    let chars = Vocab::chars_of(&text);
    let tok_json = bpe.bpe.clone();
    let tp = dir.path().join("corpus.txt");
    let jp = dir.path().join("tokenizer.json");

    // Corpora.
    let mut t = Tally::default();
    for i in 0..count() {
        let mut rng = case_rng(4, i);
        let mut bytes = text.clone().into_bytes();
        let kind = mutate_bytes(&mut rng, &mut bytes);
        std::fs::write(&tp, &bytes).unwrap();
        let vf = *rng.pick(&[0.1, 0.0, 0.5, 0.99]);
        let how = rng.below(20);
        t.run(
            kind,
            || format!("text case {i} ({how})"),
            || match how {
                0 => use_corpus(TextCorpus::open(&tp, VocabKind::Bpe(280), vf)?),
                1..=3 => use_corpus(TextCorpus::open_with(&tp, VocabKind::Char, vf, Some(&bpe))?),
                4..=6 => use_corpus(TextCorpus::open_with(
                    &tp,
                    VocabKind::Char,
                    vf,
                    Some(&chars),
                )?),
                7..=12 => use_corpus(TextCorpus::open(&tp, VocabKind::Byte, vf)?),
                _ => use_corpus(TextCorpus::open(&tp, VocabKind::Char, vf)?),
            },
        );
    }
    t.finish("text corpus");

    // tokenizer.json files.
    let mut t = Tally::default();
    let tok_value: serde_json::Value = serde_json::from_str(&tok_json).unwrap();
    for i in 0..count() {
        let mut rng = case_rng(5, i);
        let (bytes, kind) = match rng.below(3) {
            0 => {
                let mut b = tok_json.clone().into_bytes();
                let k = mutate_bytes(&mut rng, &mut b);
                (b, k)
            }
            1 => {
                let mut v = tok_value.clone();
                let k = mutate_json(&mut rng, &mut v);
                (serde_json::to_vec(&v).unwrap(), k)
            }
            _ => (
                mutate_number_text(&mut rng, &tok_json).into_bytes(),
                "number text",
            ),
        };
        std::fs::write(&jp, &bytes).unwrap();
        t.run(
            kind,
            || format!("tokenizer case {i}"),
            || {
                let v = Vocab::from_tokenizer_file(&jp)?;
                v.validate()?;
                use_vocab(&v)?;
                let back: Vocab = serde_json::from_str(&serde_json::to_string(&v)?)?;
                use_vocab(&back)
            },
        );
    }
    t.finish("tokenizer.json");

    // Vocabularies as a checkpoint's config stores them (serde JSON of `Vocab`).
    let mut t = Tally::default();
    let stored = [
        serde_json::to_value(&bpe).unwrap(),
        serde_json::to_value(&chars).unwrap(),
        serde_json::to_value(Vocab::bytes()).unwrap(),
    ];
    for i in 0..count() {
        let mut rng = case_rng(6, i);
        let mut v = stored[rng.below(stored.len())].clone();
        let kind = if rng.chance(1, 4) {
            // Structural changes the other mutations rarely reach.
            match rng.below(3) {
                0 => v["kind"] = serde_json::json!({ "Bpe": *rng.pick(&HOSTILE_U32) }),
                1 => v["chars"] = serde_json::json!(["z", "a", "a"]),
                _ => v["kind"] = serde_json::json!("Char"),
            }
            "vocab kind / chars"
        } else {
            mutate_json(&mut rng, &mut v)
        };
        t.run(
            kind,
            || format!("vocab case {i}"),
            || {
                let voc: Vocab = serde_json::from_value(v)?;
                // Unvalidated use must not panic either; then the check must refuse what is wrong.
                let _ = use_vocab(&voc);
                voc.validate()?;
                use_vocab(&voc)
            },
        );
    }
    t.finish("stored vocab");
    assert_peak_rss_below(PEAK_RSS_LIMIT);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

fn model_store() -> VarStore {
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let _ = (&root / "fc").var("weight", &[3, 4], Init::Const(0.25));
    let _ = (&root / "fc").var("bias", &[3], Init::Const(-1.0));
    let _ = (&root / "emb").var("weight", &[5, 2], Init::Const(0.5));
    vs
}

fn base_checkpoint(path: &Path) {
    let mut c = Checkpoint::new(
        "dcgan",
        serde_json::json!({"width": 4, "depth": [1, 2, 3], "vocab": null}),
        TrainState {
            step: 5,
            seed: 9,
            elapsed_s: 1.5,
            trainer: serde_json::json!({"steps": 10, "batch_size": 4}),
            data: serde_json::json!("ring8"),
        },
    );
    c.add_var_store("model/g", &model_store());
    c.tensors.insert("optim/g/steps".into(), Tensor::from(3i64));
    c.tensors.insert(
        "ema/fc.weight".into(),
        Tensor::ones([3, 4], (Kind::Half, Device::Cpu)),
    );
    c.tensors.insert(
        "ema/emb.weight".into(),
        Tensor::ones([5, 2], (Kind::BFloat16, Device::Cpu)),
    );
    c.tensors
        .insert("flags".into(), Tensor::from_slice(&[true, false, true]));
    c.tensors.insert(
        "empty".into(),
        Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)),
    );
    c.save(path).unwrap();
}

fn open_checkpoint(p: &Path) -> Result<(), String> {
    let ck = Checkpoint::load(p).map_err(|e| e.to_string())?;
    for t in ck.tensors.values() {
        let _ = (t.size(), t.numel(), t.kind());
    }
    let _ = ck.has_prefix("ema");
    match ck.load_var_store("model/g", &model_store(), p) {
        Ok(()) => Ok(()),
        // The mismatch error lists each problem on its own line by design; one line here.
        Err(Error::CheckpointMismatch { problems, .. }) => {
            Err(format!("mismatch: {}", problems.join("; ")))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn checkpoints_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.safetensors");
    base_checkpoint(&base_path);
    let base = std::fs::read(&base_path).unwrap();
    open_checkpoint(&base_path).unwrap();
    let p = dir.path().join("checkpoint.safetensors");
    let mut t = Tally::default();
    for i in 0..count() {
        let mut rng = case_rng(7, i);
        let (bytes, kind) = if rng.chance(1, 3) {
            let mut b = base.clone();
            let k = mutate_bytes(&mut rng, &mut b);
            (b, k)
        } else {
            mutate_safetensors(&mut rng, &base, Some("genmodels"))
        };
        std::fs::write(&p, &bytes).unwrap();
        t.run(
            kind,
            || format!("checkpoint case {i}"),
            || open_checkpoint(&p),
        );
    }
    t.finish("checkpoint");
    assert_peak_rss_below(PEAK_RSS_LIMIT);
}
