//! Seeded batching. Epoch `e` visits the training set in the permutation drawn from
//! stream (Shuffle, e); batch `b` of it is augmented from stream (Augment, e, b). A batch is
//! therefore a pure function of (seed, epoch, index): a run resumed in the middle of an
//! epoch sees exactly the batches the uninterrupted run saw, and batches can be prepared
//! on another thread while the previous step computes.

use crate::augment::{Jitter, Normalizer};
use crate::rng::{rng, Stream};
use crate::{Images, IMAGE_BYTES};
use domain::{Normalization, RunSpec};
use rand::seq::SliceRandom;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Normalised images (N, 3, 32, 32) row-major, and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
}

/// The (images, labels) pair the model side takes.
impl From<Batch> for (Vec<f32>, Vec<u32>) {
    fn from(b: Batch) -> Self {
        (b.images, b.labels)
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// How a training set is cut into batches.
#[derive(Clone, Debug)]
pub struct BatchPlan {
    pub seed: u64,
    pub batch_size: usize,
    pub augment: bool,
    pub normalization: Normalization,
}

impl BatchPlan {
    /// A trained run's plan: its seed, batch size and augmentation, and the normalisation
    /// bound when it started (None before: the spec is not yet a run's).
    pub fn of_run(spec: &RunSpec) -> Option<Self> {
        Some(Self {
            seed: spec.train.seed,
            batch_size: spec.train.batch_size as usize,
            augment: spec.data.augment,
            normalization: spec.data.normalization?,
        })
    }

    /// Batches per epoch; the last one may be smaller.
    pub fn batches_per_epoch(&self, examples: usize) -> usize {
        examples.div_ceil(self.batch_size)
    }

    pub fn permutation(&self, examples: usize, epoch: u32) -> Vec<u32> {
        let mut order: Vec<u32> = (0..examples as u32).collect();
        order.shuffle(&mut rng(self.seed, Stream::Shuffle, epoch, 0));
        order
    }

    /// The examples of batch `index` of epoch `epoch` given that epoch's permutation, in
    /// order, each with its crop and flip.
    pub fn members(&self, order: &[u32], epoch: u32, index: usize) -> Vec<(u32, Jitter)> {
        let start = index * self.batch_size;
        let end = (start + self.batch_size).min(order.len());
        let mut r = rng(self.seed, Stream::Augment, epoch, index as u32);
        order[start..end]
            .iter()
            .map(|&i| {
                let jitter = if self.augment {
                    Jitter::random(&mut r)
                } else {
                    Jitter::NONE
                };
                (i, jitter)
            })
            .collect()
    }

    /// Batch `index` of epoch `epoch` given that epoch's permutation.
    pub fn batch(&self, images: &Images, order: &[u32], epoch: u32, index: usize) -> Batch {
        let members = self.members(order, epoch, index);
        let norm = Normalizer::new(&self.normalization);
        let mut out = Batch {
            images: vec![0.0; members.len() * IMAGE_BYTES],
            labels: Vec::with_capacity(members.len()),
        };
        for (slot, &(i, jitter)) in out.images.chunks_exact_mut(IMAGE_BYTES).zip(&members) {
            norm.write(images.image(i as usize), jitter, slot);
            out.labels.push(images.labels[i as usize]);
        }
        out
    }

    /// The batches of one epoch from `start` on, prepared ahead on a prefetch thread.
    pub fn epoch(&self, images: Arc<Images>, epoch: u32, start: usize) -> EpochBatches {
        let (tx, rx) = sync_channel(2);
        let plan = self.clone();
        let worker = std::thread::Builder::new()
            .name("stepwise-batches".into())
            .spawn(move || {
                let order = plan.permutation(images.len(), epoch);
                for index in start..plan.batches_per_epoch(images.len()) {
                    if tx.send(plan.batch(&images, &order, epoch, index)).is_err() {
                        return; // the consumer stopped early
                    }
                }
            })
            .expect("spawning the batch thread");
        EpochBatches {
            rx: Some(rx),
            worker: Some(worker),
        }
    }
}

/// Iterator over prefetched batches; dropping it stops the prefetch thread.
pub struct EpochBatches {
    rx: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
}

impl Iterator for EpochBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        self.rx.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// A fixed, seeded subset of `n` examples of a split (`split` 0 = train, 1 = test).
pub fn fixed_subset(images: &Images, n: usize, seed: u64, split: u32) -> Images {
    let mut order: Vec<u32> = (0..images.len() as u32).collect();
    order.shuffle(&mut rng(seed, Stream::Subset, split, 0));
    order.truncate(n.min(images.len()));
    images.select(&order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize) -> Images {
        let mut out = Images::default();
        for i in 0..n {
            out.push(&vec![(i * 7 % 256) as u8; IMAGE_BYTES], (i % 10) as u32);
        }
        out
    }

    fn plan() -> BatchPlan {
        BatchPlan {
            seed: 3,
            batch_size: 4,
            augment: true,
            normalization: Normalization {
                mean: [0.5; 3],
                std: [0.25; 3],
            },
        }
    }

    #[test]
    fn prefetched_batches_equal_direct_ones_and_cover_the_epoch() {
        let data = Arc::new(images(10));
        let plan = plan();
        let order = plan.permutation(10, 2);
        let mut seen: Vec<u32> = vec![];
        for (i, b) in plan.epoch(data.clone(), 2, 0).enumerate() {
            assert_eq!(b, plan.batch(&data, &order, 2, i));
            seen.extend(&b.labels);
        }
        assert_eq!(seen.len(), 10);
        let resumed: Vec<Batch> = plan.epoch(data.clone(), 2, 1).collect();
        assert_eq!(resumed.len(), 2);
        assert_eq!(resumed[0], plan.batch(&data, &order, 2, 1));
        assert_ne!(plan.permutation(10, 2), plan.permutation(10, 3));
    }

    #[test]
    fn dropping_an_epoch_early_stops_its_thread() {
        let data = Arc::new(images(100));
        let mut it = plan().epoch(data, 0, 0);
        assert!(it.next().is_some());
        drop(it);
    }

    #[test]
    fn in_order_batches_cover_the_split_once() {
        let data = images(10);
        let batches: Vec<(&[u8], &[u32])> = data.batches(4).collect();
        assert_eq!(
            batches.iter().map(|b| b.1.len()).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        assert_eq!(batches[2].1, [8, 9]);
        assert_eq!(batches[2].0, &data.pixels[8 * IMAGE_BYTES..]);
        assert!(batches
            .iter()
            .all(|(p, l)| p.len() == l.len() * IMAGE_BYTES));
    }
}
