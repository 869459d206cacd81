//! CUDA graphs: the work a closure queues on a device's stream, captured once and replayed
//! with one launch, so that a step's hundreds of kernels cost one launch of host time.
//!
//! What is captured must be replayable: no host reads of device memory, no uploads of host
//! data other than those candle caches for capture (its per-launch shape parameters, cached
//! while [`with_capture_cache`] is active, so warm-up steps must run inside it), no buffer
//! growth (cuDNN plans and workspaces exist after a warm-up step). Buffers allocated inside
//! are freed inside or, with the instantiation flag used here, at the next launch.

use candle_core::cuda_backend::cudarc::driver::sys::{
    self, CUgraphInstantiate_flags, CUstreamCaptureMode,
};
use candle_core::cuda_backend::cudarc::driver::{CudaContext, CudaGraph};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, Device, Result};
use std::sync::Arc;

/// A captured step.
pub struct Graph {
    /// `Some` until dropped.
    graph: Option<CudaGraph>,
    context: Arc<CudaContext>,
}

impl Graph {
    /// Queues one replay on the stream it was captured from.
    pub fn launch(&self) -> Result<()> {
        self.graph.as_ref().expect("until dropped").launch().w()
    }
}

impl Drop for Graph {
    /// Destroys the graph, then hands the memory the device keeps for graphs back to the
    /// driver: it is reserved for graphs alone, and after a run's training (say, before its
    /// analysis, or the next job of a worker) it would otherwise stay held, unused.
    fn drop(&mut self) {
        drop(self.graph.take());
        // Safety: the device of a live context, bound to this thread first; the driver frees
        // only blocks that no executing or scheduled graph uses.
        let trimmed = self
            .context
            .bind_to_thread()
            .and_then(|()| unsafe { sys::cuDeviceGraphMemTrim(self.context.cu_device()).result() });
        if let Err(e) = trimmed {
            // The memory stays reserved for graphs, as without the trim.
            tracing::warn!("releasing the memory of CUDA graphs: {e}");
        }
    }
}

/// Runs `f` with candle's host-to-device cache for graph capture on (see the module
/// comment); warm-up steps of what [`capture`] later records run inside it.
pub fn with_capture_cache<R>(device: &Device, f: impl FnOnce() -> R) -> Result<R> {
    let Device::Cuda(dev) = device else {
        bail!("CUDA graphs need a CUDA device");
    };
    let _cache = dev.enable_cuda_graph_htod_cache();
    Ok(f())
}

/// Captures the work `f` queues on `device`'s stream.
pub fn capture<E: From<candle_core::Error>>(
    device: &Device,
    f: impl FnOnce() -> std::result::Result<(), E>,
) -> std::result::Result<Graph, E> {
    let Device::Cuda(dev) = device else {
        return Err(candle_core::Error::Msg("CUDA graphs need a CUDA device".into()).into());
    };
    let _cache = dev.enable_cuda_graph_htod_cache();
    let stream = dev.cuda_stream();
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
        .w()
        .map_err(E::from)?;
    let queued = f();
    // The capture is ended whether or not `f` succeeded, so the stream is usable after.
    let graph = stream
        .end_capture(CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH)
        .w();
    queued?;
    let graph = match graph.map_err(E::from)? {
        Some(g) => Graph {
            graph: Some(g),
            context: stream.context().clone(),
        },
        None => return Err(candle_core::Error::Msg("the capture recorded no work".into()).into()),
    };
    // The graph's memory is mapped at its first launch; what the work before the capture
    // freed — all of an eager warm-up step whose results were read back — is handed back
    // first, so that it can serve the graph instead of being held beside it.
    super::release_freed_memory(dev);
    Ok(graph)
}
