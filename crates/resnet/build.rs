//! With the `cuda` feature, compiles stepwise's CUDA kernels to PTX with nvcc (from
//! `CUDA_HOME`, else `PATH`), for the compute capability in `CUDA_COMPUTE_CAP` (default 80;
//! newer GPUs JIT-compile the PTX). Without it, nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=src/ops/cuda/kernels.cu");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|home| PathBuf::from(home).join("bin").join("nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("src/ops/cuda/kernels.cu")
        .arg("-o")
        .arg(out.join("kernels.ptx"))
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e} (set CUDA_HOME)", nvcc.display()));
    assert!(
        status.success(),
        "nvcc failed to compile src/ops/cuda/kernels.cu"
    );
}
