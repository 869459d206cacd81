use crate::{Error, Result};
use candle_core::Device;
use domain::DeviceSpec;

/// The candle device for a device spec; a clear error for CUDA in a CPU-only build.
pub fn candle_device(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(ordinal) if cfg!(feature = "cuda") => Ok(Device::new_cuda(ordinal)?),
        DeviceSpec::Cuda(_) => Err(Error::NoCuda(spec)),
    }
}

/// Waits for queued device work (a no-op on the CPU), for honest timings.
pub fn synchronize(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}
