//! stepwise's own CUDA kernels (`src/ops/cuda/kernels.cu`) checked without a GPU: compiled as
//! C++ against a CPU emulation of the CUDA built-ins they use
//! (`tests/cuda_emulation/cuda_bf16.h`: blocks one after another in shuffled order, a block's
//! threads as fibers meeting at its barriers) and run against plain references
//! (`tests/cuda_emulation/check.cpp`) with the launch geometry of `ops::launch`: every
//! BatchNorm and bias kernel, NCHW and channels-last, f32 and bf16, and the SGD update of
//! several tensors in one launch. What it cannot check —
//! cuDNN, the device's memory model, concurrent blocks — `stepwise selftest --device cuda`
//! checks on a GPU. Needs a C++20 compiler (`c++`, or `CXX`; Debian's g++).

use resnet::ops::launch::{self, Dims};
use resnet::ops::MemoryFormat;
use std::io::Write;
use std::process::{Command, Stdio};

/// (N, C, HW): one block or several per channel (N·HW ≥ 8,192, the last two), channel counts
/// below, at and above a channels-last group of 32, positions not a multiple of a warp.
const SHAPES: [(usize, usize, usize); 7] = [
    (4, 8, 64),
    (3, 5, 49),
    (2, 33, 9),
    (8, 40, 64),
    (1, 3, 1),
    (8, 8, 1024),
    (3, 40, 4096),
];

fn dims_line((grid, block): Dims) -> String {
    grid.iter()
        .chain(&block)
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn cuda_kernels_compute_their_references_under_emulation() {
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cuda_emulation");
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("check");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let compiled = Command::new(&cxx)
        .args(["-std=c++20", "-O2", "-Wall", "-I", here])
        .arg(format!("{here}/check.cpp"))
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| panic!("running {cxx} (a C++20 compiler, e.g. Debian's g++): {e}"));
    assert!(
        compiled.success(),
        "{cxx} failed on tests/cuda_emulation/check.cpp"
    );
    let mut cases = String::new();
    for (layout, format) in [(0, MemoryFormat::Nchw), (1, MemoryFormat::ChannelsLast)] {
        for (n, c, hw) in SHAPES {
            let elementwise = launch::elementwise(format, (n, c, hw));
            let reduction = launch::reduction(format, c, n * hw);
            cases += &format!(
                "bn {layout} {n} {c} {hw} {} {}\n",
                dims_line(elementwise),
                dims_line(reduction)
            );
        }
    }
    // Tensors shorter than a block, of several blocks, and longer than 256 blocks cover.
    let sgd_lengths = [1000, 37, 70_000, 5, 256, 3000];
    let largest = sgd_lengths.into_iter().max().unwrap_or(0);
    cases += &format!(
        "sgd {} {} {}\n",
        sgd_lengths.len(),
        sgd_lengths.map(|n| n.to_string()).join(" "),
        dims_line(launch::sgd(largest, sgd_lengths.len()))
    );
    let mut child = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert_eq!(report.trim(), "0 of 292 checks failed");
}
