//! Kernel outputs written in parallel without a zeroing pass first. `vec![0; len]` zeroes on
//! the calling thread alone, while the other cores wait: for a stage-1 convolution at batch
//! 250 that is 16 MB, a few percent of an analysis pass in `memset`, before the kernel
//! overwrites every element anyway.
#![allow(unsafe_code)]

use rayon::prelude::*;

/// A vector of `count · template.len()` elements followed by `tail`: chunk `i` starts as a
/// copy of `template` and is then handed to `f(state, i, chunk)`, chunks in parallel, `init`
/// making one state per rayon job (as `for_each_init`).
pub fn par_chunks_from<T, S>(
    count: usize,
    template: &[T],
    tail: &[T],
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) -> Vec<T>
where
    T: Copy + Send + Sync,
{
    let chunk = template.len();
    let len = count * chunk;
    let mut out: Vec<T> = Vec::with_capacity(len + tail.len());
    if chunk > 0 {
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each_init(init, |state, (i, uninit)| {
                f(state, i, uninit.write_copy_of_slice(template));
            });
    }
    // SAFETY: `len` ≤ capacity, and every element below it was initialised: the chunks
    // tile [0, len) exactly, and each was written whole by `write_copy_of_slice` before
    // `f` saw it (a panic in any of them propagates before this line, leaving `out` empty).
    unsafe { out.set_len(len) };
    out.extend_from_slice(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_starts_as_the_template_and_gets_its_own_index_then_the_tail() {
        let out = par_chunks_from(
            5,
            &[1.0f32, 2.0, 3.0],
            &[-1.0],
            || (),
            |_, i, chunk| chunk[0] += i as f32 * 10.0,
        );
        let want: Vec<f32> = (0..5)
            .flat_map(|i| [1.0 + i as f32 * 10.0, 2.0, 3.0])
            .chain([-1.0])
            .collect();
        assert_eq!(out, want);
        assert_eq!(
            out.capacity(),
            want.len(),
            "the tail fits without a reallocation"
        );
        assert!(par_chunks_from(3, &[] as &[f32], &[], || (), |_, _, _| {}).is_empty());
        assert!(par_chunks_from(0, &[1.0f32], &[], || (), |_, _, _| {}).is_empty());
    }
}
