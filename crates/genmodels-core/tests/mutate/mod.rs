//! The mutation engine of the hostile-file harnesses (`hostile_files.rs` here and
//! `genmodels-transformer/tests/hostile_gpt2.rs`, which includes this file by path): a seeded
//! xorshift generator, byte-level mutations, header-field mutations for safetensors and JSON,
//! and a runner that calls a loader inside `catch_unwind` and tallies Ok / Err / panic.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

/// xorshift64* (Vigna 2016): enough randomness to pick mutations, reproducible from a seed.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // A zero state would stay zero.
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Values that break size arithmetic when a header field is set to them.
pub const HOSTILE_U32: [u32; 12] = [
    0,
    1,
    2,
    3,
    255,
    65_535,
    65_536,
    16_385,
    1 << 24,
    1 << 31,
    u32::MAX - 1,
    u32::MAX,
];

pub const HOSTILE_U64: [u64; 13] = [
    0,
    1,
    2,
    7,
    1 << 16,
    1 << 31,
    u32::MAX as u64,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 7,
    u64::MAX,
];

/// The number of mutations per format: `GENMODELS_MUTATIONS`, else `default`.
pub fn mutation_count(default: usize) -> usize {
    std::env::var("GENMODELS_MUTATIONS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The generic byte-level mutations, by name (for the tallies).
pub const BYTE_MUTATIONS: [&str; 7] = [
    "truncate",
    "flip bits",
    "random bytes",
    "insert bytes",
    "u32 field (BE)",
    "u32 field (LE)",
    "u64 field (LE)",
];

/// Applies one generic byte-level mutation (chosen at random) and returns its name.
pub fn mutate_bytes(rng: &mut XorShift, data: &mut Vec<u8>) -> &'static str {
    let len = data.len();
    let k = rng.below(BYTE_MUTATIONS.len());
    match k {
        0 => data.truncate(rng.below(len.max(1))),
        1 => {
            for _ in 0..1 + rng.below(4) {
                if len > 0 {
                    let i = rng.below(len);
                    data[i] ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            for _ in 0..1 + rng.below(8) {
                if len > 0 {
                    let i = rng.below(len);
                    data[i] = rng.next_u64() as u8;
                }
            }
        }
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let ins: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, ins);
        }
        4 | 5 => {
            if len >= 4 {
                let i = rng.below(len - 3);
                let v = *rng.pick(&HOSTILE_U32);
                let b = if k == 4 {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                data[i..i + 4].copy_from_slice(&b);
            }
        }
        _ => {
            if len >= 8 {
                let i = rng.below(len - 7);
                let v = *rng.pick(&HOSTILE_U64);
                data[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    BYTE_MUTATIONS[k]
}

/// A hostile JSON value: huge, negative, fractional or non-finite-looking numbers, wrong
/// types, empty containers.
pub fn hostile_json(rng: &mut XorShift) -> serde_json::Value {
    use serde_json::json;
    match rng.below(16) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(1u64 << 31),
        3 => json!(u32::MAX),
        4 => json!(1u64 << 32),
        5 => json!(1u64 << 63),
        6 => json!(u64::MAX),
        7 => json!(i64::MIN),
        8 => json!(1e308),
        9 => json!(0.5),
        10 => json!(null),
        11 => json!("x"),
        12 => json!([]),
        13 => json!({}),
        14 => json!(true),
        _ => json!(*rng.pick(&HOSTILE_U64)),
    }
}

/// Replaces one node of `v` (any depth) with a hostile value, or removes one member of an
/// object; returns what it did.
pub fn mutate_json(rng: &mut XorShift, v: &mut serde_json::Value) -> &'static str {
    // Collect the paths of all nodes, pick one.
    fn walk(v: &serde_json::Value, path: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
        out.push(path.clone());
        match v {
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(PathStep::Index(i));
                    walk(x, path, out);
                    path.pop();
                }
            }
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    path.push(PathStep::Key(k.clone()));
                    walk(x, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut paths = Vec::new();
    walk(v, &mut Vec::new(), &mut paths);
    // Prefer leaves that are numbers (the size fields) half of the time.
    let numbers: Vec<&Vec<PathStep>> = paths
        .iter()
        .filter(|p| get(v, p).is_some_and(|x| x.is_number()))
        .collect();
    let path = if !numbers.is_empty() && rng.chance(1, 2) {
        numbers[rng.below(numbers.len())].clone()
    } else {
        paths[rng.below(paths.len())].clone()
    };
    if let (Some(PathStep::Key(k)), true) = (path.last(), rng.chance(1, 5)) {
        let parent = get_mut(v, &path[..path.len() - 1]).unwrap();
        if let Some(o) = parent.as_object_mut() {
            o.remove(k);
            return "remove member";
        }
    }
    let new = hostile_json(rng);
    *get_mut(v, &path).unwrap() = new;
    "hostile value"
}

#[derive(Clone)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

fn get<'a>(v: &'a serde_json::Value, path: &[PathStep]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(v, |v, s| match s {
        PathStep::Key(k) => v.get(k),
        PathStep::Index(i) => v.get(i),
    })
}

fn get_mut<'a>(
    v: &'a mut serde_json::Value,
    path: &[PathStep],
) -> Option<&'a mut serde_json::Value> {
    path.iter().try_fold(v, |v, s| match s {
        PathStep::Key(k) => v.get_mut(k),
        PathStep::Index(i) => v.get_mut(*i),
    })
}

/// Replaces one run of digits in `text` with a number no integer type holds.
pub fn mutate_number_text(rng: &mut XorShift, text: &str) -> String {
    let runs: Vec<(usize, usize)> = {
        let b = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                let s = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push((s, i));
            } else {
                i += 1;
            }
        }
        out
    };
    if runs.is_empty() {
        return text.to_string();
    }
    let (s, e) = runs[rng.below(runs.len())];
    let with = *rng.pick(&[
        "18446744073709551616",
        "99999999999999999999999999",
        "1e400",
        "-1",
        "-0",
        "0",
        "4294967296",
        "2147483648",
        "9223372036854775808",
    ]);
    format!("{}{}{}", &text[..s], with, &text[e..])
}

/// A safetensors file split into its JSON header and its data.
pub struct SafetensorsParts {
    pub header: serde_json::Value,
    pub data: Vec<u8>,
}

impl SafetensorsParts {
    pub fn parse(bytes: &[u8]) -> Self {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        SafetensorsParts {
            header: serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
            data: bytes[8 + n..].to_vec(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let h = serde_json::to_vec(&self.header).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(&self.data);
        out
    }

    fn tensor_names(&self) -> Vec<String> {
        self.header
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "__metadata__")
            .cloned()
            .collect()
    }
}

/// The header-level mutations of a safetensors file, by name.
pub const SAFETENSORS_MUTATIONS: [&str; 11] = [
    "header length field",
    "shape entry",
    "shape rank",
    "dtype",
    "data offsets",
    "drop tensor",
    "rename tensor",
    "metadata JSON",
    "metadata not JSON",
    "data length",
    "header JSON node",
];

const DTYPES: [&str; 17] = [
    "F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "U16", "U32", "U64",
    "F8_E4M3", "F8_E5M2", "f32", "X",
];

/// Applies one safetensors header mutation (the file stays well-formed around it unless the
/// mutation is the length field or the data length) and returns its name.
/// `metadata_key` names the `__metadata__` entry holding JSON (`genmodels`), if any.
pub fn mutate_safetensors(
    rng: &mut XorShift,
    bytes: &[u8],
    metadata_key: Option<&str>,
) -> (Vec<u8>, &'static str) {
    let mut p = SafetensorsParts::parse(bytes);
    let names = p.tensor_names();
    let k = rng.below(SAFETENSORS_MUTATIONS.len());
    let pick_tensor = |rng: &mut XorShift, _: &mut SafetensorsParts| -> Option<String> {
        (!names.is_empty()).then(|| names[rng.below(names.len())].clone())
    };
    match k {
        0 => {
            let mut out = p.to_bytes();
            let v = if rng.chance(1, 2) {
                *rng.pick(&HOSTILE_U64)
            } else {
                // Off by a little.
                let n = u64::from_le_bytes(out[..8].try_into().unwrap());
                n.wrapping_add(rng.below(17) as u64).wrapping_sub(8)
            };
            out[..8].copy_from_slice(&v.to_le_bytes());
            return (out, SAFETENSORS_MUTATIONS[k]);
        }
        1 => {
            if let Some(n) = pick_tensor(rng, &mut p) {
                let shape = p.header[&n]["shape"].as_array_mut().unwrap();
                let v = *rng.pick(&HOSTILE_U64);
                if shape.is_empty() {
                    shape.push(v.into());
                } else {
                    let i = rng.below(shape.len());
                    shape[i] = v.into();
                    // Sometimes zero out another dimension so the byte size stays 0 and only
                    // the huge entry is left to catch.
                    if shape.len() > 1 && rng.chance(1, 3) {
                        let j = (i + 1) % shape.len();
                        shape[j] = 0.into();
                    }
                }
            }
        }
        2 => {
            if let Some(n) = pick_tensor(rng, &mut p) {
                let shape = p.header[&n]["shape"].as_array_mut().unwrap();
                match rng.below(3) {
                    0 => {
                        shape.pop();
                    }
                    1 => shape.push(1.into()),
                    _ => {
                        let rank = 1 + rng.below(80);
                        *shape = vec![1.into(); rank];
                    }
                }
            }
        }
        3 => {
            if let Some(n) = pick_tensor(rng, &mut p) {
                p.header[&n]["dtype"] = (*rng.pick(&DTYPES)).into();
            }
        }
        4 => {
            if let Some(n) = pick_tensor(rng, &mut p) {
                let off = p.header[&n]["data_offsets"].as_array_mut().unwrap();
                let i = rng.below(2);
                off[i] = if rng.chance(1, 2) {
                    (*rng.pick(&HOSTILE_U64)).into()
                } else {
                    let v = off[i].as_u64().unwrap_or(0);
                    v.wrapping_add(rng.below(9) as u64).wrapping_sub(4).into()
                };
            }
        }
        5 => {
            if let Some(n) = pick_tensor(rng, &mut p) {
                p.header.as_object_mut().unwrap().remove(&n);
            }
        }
        6 => {
            if let Some(n) = pick_tensor(rng, &mut p) {
                let v = p.header.as_object_mut().unwrap().remove(&n).unwrap();
                let new = format!("{n}{}", *rng.pick(&[".x", "", "/../y", "\u{0}"]));
                p.header.as_object_mut().unwrap().insert(new, v);
            }
        }
        7 | 8 => match (metadata_key, p.header.get("__metadata__").cloned()) {
            (Some(key), Some(meta)) => {
                let mut meta = meta;
                let s = meta
                    .get(key)
                    .and_then(|v| v.as_str())
                    .unwrap_or("{}")
                    .to_string();
                let new = if k == 7 {
                    let mut inner: serde_json::Value =
                        serde_json::from_str(&s).unwrap_or(serde_json::json!({}));
                    mutate_json(rng, &mut inner);
                    let t = serde_json::to_string(&inner).unwrap();
                    if rng.chance(1, 4) {
                        mutate_number_text(rng, &t)
                    } else {
                        t
                    }
                } else {
                    // A garbage prefix before a cut-off piece of the real metadata.
                    let cut = rng.below(s.len().max(1));
                    let cut = (0..=cut)
                        .rev()
                        .find(|&i| s.is_char_boundary(i))
                        .unwrap_or(0);
                    (*rng.pick(&["", "{", "not json", "[1,2]", "null"])).to_string() + &s[..cut]
                };
                match rng.below(6) {
                    0 => {
                        meta.as_object_mut().unwrap().remove(key);
                    }
                    1 => meta[key] = serde_json::json!(7),
                    _ => meta[key] = new.into(),
                }
                p.header["__metadata__"] = meta;
            }
            _ => {
                p.header["__metadata__"] = hostile_json(rng);
            }
        },
        9 => {
            if rng.chance(1, 2) && !p.data.is_empty() {
                let cut = rng.below(p.data.len());
                p.data.truncate(cut);
            } else {
                p.data.extend(std::iter::repeat_n(0u8, 1 + rng.below(8)));
            }
        }
        _ => {
            mutate_json(rng, &mut p.header);
        }
    }
    (p.to_bytes(), SAFETENSORS_MUTATIONS[k])
}

/// Ok / Err / panic counts of one format, with what the panics said.
#[derive(Default)]
pub struct Tally {
    pub cases: usize,
    pub ok: usize,
    pub err: usize,
    pub panics: Vec<String>,
    pub slowest: (Duration, String),
    pub by_kind: std::collections::BTreeMap<String, (usize, usize)>,
    pub sample_errors: Vec<String>,
}

thread_local! {
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Installs (once) a panic hook that stays quiet inside a case (recording the location) and
/// reports normally elsewhere.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CASE.with(|c| c.get()) {
                let loc = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = loc);
            } else {
                default(info)
            }
        }));
    });
}

/// Longest a case may take.
pub const CASE_LIMIT: Duration = Duration::from_secs(5);

impl Tally {
    /// Runs one case: `f` must return `Ok` or `Err`; a panic is recorded with `what`.
    pub fn run<E: std::fmt::Display>(
        &mut self,
        kind: &str,
        what: impl FnOnce() -> String,
        f: impl FnOnce() -> Result<(), E>,
    ) {
        install_hook();
        IN_CASE.with(|c| c.set(true));
        let t0 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(f));
        let dt = t0.elapsed();
        IN_CASE.with(|c| c.set(false));
        self.cases += 1;
        let e = self.by_kind.entry(kind.to_string()).or_default();
        match r {
            Ok(Ok(())) => {
                self.ok += 1;
                e.0 += 1;
            }
            Ok(Err(err)) => {
                self.err += 1;
                e.1 += 1;
                let msg = err.to_string();
                if self.sample_errors.len() < 400 && !self.sample_errors.contains(&msg) {
                    self.sample_errors.push(msg);
                }
            }
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "non-string panic".into());
                let loc = LAST_PANIC.with(|p| p.borrow().clone());
                self.panics
                    .push(format!("{} [{kind}]: panicked at {loc}: {msg}", what()));
            }
        }
        if dt > self.slowest.0 {
            self.slowest = (dt, kind.to_string());
        }
    }

    /// Prints the tally and fails on any panic, slow case, or error message that is not one line.
    pub fn finish(&self, format: &str) {
        println!(
            "{format}: {} cases, {} Ok, {} Err, {} panics; slowest case {:.3} s ({})",
            self.cases,
            self.ok,
            self.err,
            self.panics.len(),
            self.slowest.0.as_secs_f64(),
            self.slowest.1
        );
        for (k, (ok, err)) in &self.by_kind {
            println!("  {format} / {k}: {ok} Ok, {err} Err");
        }
        for m in self.sample_errors.iter().take(6) {
            println!("  e.g. {m}");
        }
        let multi: Vec<&String> = self
            .sample_errors
            .iter()
            .filter(|m| m.contains('\n'))
            .collect();
        assert!(
            self.panics.is_empty(),
            "{format}: {} of {} cases panicked:\n{}",
            self.panics.len(),
            self.cases,
            self.panics
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            self.slowest.0 < CASE_LIMIT,
            "{format}: a case took {:.1} s ({})",
            self.slowest.0.as_secs_f64(),
            self.slowest.1
        );
        assert!(
            multi.is_empty(),
            "{format}: errors of more than one line: {multi:?}"
        );
    }
}

/// The process's peak resident memory (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Fails when the peak resident memory went past `limit` bytes.
pub fn assert_peak_rss_below(limit: u64) {
    if let Some(peak) = peak_rss_bytes() {
        println!("peak RSS so far: {:.1} MiB", peak as f64 / (1 << 20) as f64);
        assert!(
            peak < limit,
            "peak RSS {} MiB is over the {} MiB a hostile file may make us use",
            peak >> 20,
            limit >> 20
        );
    }
}
