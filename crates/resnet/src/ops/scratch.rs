//! Scratch buffers kept per thread between kernel calls. The convolutions unfold images into
//! buffers many times larger than their output (a stage-1 forward pass at batch 128 asked for
//! 11 MB of zeroed scratch per call, as each rayon job allocated its own); taken from here,
//! they are allocated once per thread and zeroed only where a kernel relies on zeros.

use super::Real;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

/// Element types with a per-thread pool of spare buffers.
pub trait Pooled: Sized + 'static {
    fn spare() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>>;
}

thread_local! {
    static SPARE_F32: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static SPARE_F64: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

impl Pooled for f32 {
    fn spare() -> &'static LocalKey<RefCell<Vec<Vec<f32>>>> {
        &SPARE_F32
    }
}

impl Pooled for f64 {
    fn spare() -> &'static LocalKey<RefCell<Vec<Vec<f64>>>> {
        &SPARE_F64
    }
}

/// A buffer of this thread's pool, returned to it when dropped.
pub struct Scratch<T: Real>(Vec<T>);

impl<T: Real> Scratch<T> {
    /// `len` elements, all zero if `zeroed`, otherwise with unspecified (finite) contents
    /// for a kernel that overwrites them. The smallest spare buffer that is large enough
    /// is reused, so a kernel's differently sized buffers keep their own.
    pub fn take(len: usize, zeroed: bool) -> Self {
        if len == 0 {
            return Self(Vec::new());
        }
        let mut buf = T::spare().with_borrow_mut(|spare| {
            let fits = (0..spare.len())
                .filter(|&i| spare[i].capacity() >= len)
                .min_by_key(|&i| spare[i].capacity());
            let largest = (0..spare.len()).max_by_key(|&i| spare[i].capacity());
            fits.or(largest)
                .map(|i| spare.swap_remove(i))
                .unwrap_or_default()
        });
        if zeroed {
            buf.clear();
        }
        buf.resize(len, T::zero());
        Self(buf)
    }
}

/// Spare buffers kept per thread and type: more than the three a kernel holds at once.
const MAX_SPARE: usize = 6;

impl<T: Real> Drop for Scratch<T> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        if buf.capacity() == 0 {
            return;
        }
        T::spare().with_borrow_mut(|spare| {
            spare.push(buf);
            if spare.len() > MAX_SPARE {
                let smallest = (0..spare.len()).min_by_key(|&i| spare[i].capacity());
                spare.swap_remove(smallest.expect("not empty"));
            }
        });
    }
}

impl<T: Real> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Real> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_zeroed_on_request() {
        let first = {
            let mut a = Scratch::<f64>::take(100, true);
            assert!(a.iter().all(|&v| v == 0.0));
            a.fill(7.0);
            a.as_ptr()
        };
        let b = Scratch::<f64>::take(50, false);
        assert_eq!(b.as_ptr(), first, "the spare buffer is reused");
        assert_eq!(b.len(), 50);
        drop(b);
        let c = Scratch::<f64>::take(80, true);
        assert_eq!(c.as_ptr(), first);
        assert!(c.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn nested_buffers_are_distinct() {
        let mut a = Scratch::<f32>::take(10, true);
        let mut b = Scratch::<f32>::take(10, true);
        a[0] = 1.0;
        b[0] = 2.0;
        assert_ne!(a.as_ptr(), b.as_ptr());
        assert_eq!((a[0], b[0]), (1.0, 2.0));
    }
}
