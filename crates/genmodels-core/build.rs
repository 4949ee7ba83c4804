//! Compiles csrc/ops.cpp (ATen operators that tch does not expose with all their arguments)
//! against the libtorch headers that torch-sys uses. Without the headers (e.g. a libtorch found
//! through LIBTORCH_USE_PYTORCH), the crate falls back to pure-tch versions of the same
//! operators, which give the same numbers more slowly.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(genmodels_native_ops)");
    println!("cargo::rustc-check-cfg=cfg(genmodels_dist)");
    println!("cargo:rerun-if-changed=csrc/dist.cpp");
    println!("cargo:rerun-if-changed=csrc/gloo_opaque");
    println!("cargo:rerun-if-changed=csrc/ops.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let Some(root) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!("cargo:warning=LIBTORCH is not set: genmodels-core builds without its native ops (slower leaky ReLU)");
        return;
    };
    let inc = root.join("include");
    if !inc.join("ATen").join("ops").join("leaky_relu.h").exists() {
        println!(
            "cargo:warning=no ATen headers under {}: genmodels-core builds without its native ops (slower leaky ReLU)",
            inc.display()
        );
        return;
    }
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    // c10d's Gloo process group (csrc/dist.cpp) when the headers are there (they are in every
    // torch wheel; see csrc/gloo_opaque/README.md for the Gloo headers they include).
    let c10d = inc.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp");
    let dist = c10d.exists();
    if !dist {
        println!(
            "cargo:warning=no {}: genmodels-core builds without data-parallel training",
            c10d.display()
        );
    }
    let mut build = cc::Build::new();
    build.cpp(true).file("csrc/ops.cpp");
    if dist {
        build.file("csrc/dist.cpp").include("csrc/gloo_opaque");
    }
    build
        .include(&inc)
        .include(inc.join("torch").join("csrc").join("api").join("include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // A C function that falls off its end after a catch is undefined behaviour (it was a
        // double free once): refuse to build it.
        .flag("-Werror=return-type")
        .warnings(false)
        .opt_level(2)
        .compile("genmodels_ops");
    println!("cargo:rustc-cfg=genmodels_native_ops");
    if dist {
        println!("cargo:rustc-cfg=genmodels_dist");
    }
}
