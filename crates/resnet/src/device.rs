use crate::Result;
use candle_core::Device;
use domain::DeviceSpec;

/// The candle device for a device spec; a clear error for CUDA in a CPU-only build.
pub fn candle_device(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(ordinal) => Ok(crate::ops::cuda::new_device(ordinal)?),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => Err(crate::Error::NoCuda(spec)),
    }
}

/// The device as a reader names it: `cpu`, or `cuda:N (card name)`.
pub fn describe_device(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let context = d.cuda_stream().context().clone();
            let card = context
                .name()
                .unwrap_or_else(|e| format!("name unknown: {e}"));
            format!("cuda:{} ({card})", context.ordinal())
        }
        other => format!("{other:?}"),
    }
}

/// Waits for queued device work (a no-op on the CPU), for honest timings.
pub fn synchronize(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}
