//! The foundation suite: sysfs, pool admission, VRAM, config space, regions, display,
//! IRQs, lifecycle, multiple parents, reset (docs/device-abi.md).

use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use vgpu_sysfs::handle::{Instance, Parent};
use vgpu_vfio::abi::{self, dispi, drm, info};
use vgpu_vfio::uapi::{
    VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_GFX_PLANE_TYPE_DMABUF,
    VFIO_GFX_PLANE_TYPE_REGION, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
    VFIO_IRQ_INFO_NORESIZE, VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vgpu_vfio::{irq, region, Device, EventFd, OpenInstance, EFD_NONBLOCK};

use crate::harness::{Context, Ctx, Fail, Suite, Test, TestResult};
use crate::sys;
use crate::util::*;
use crate::{ensure, ensure_eq};

mod display;
mod irqs;
mod lifecycle;
mod pci;
mod pool;
mod sysfs;
mod vram;

use display::*;
use irqs::*;
use lifecycle::*;
use pci::*;
use pool::*;
pub(crate) use sysfs::*;
use vram::*;

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// The suite.
pub fn suite() -> Suite {
    let t = |name, params, run| Test { name, params, run };
    Suite {
        name: "foundation",
        about: "device ABI: sysfs, pool, VRAM, config, regions, display, IRQs, lifecycle",
        tests: vec![
            t("types", None, types),
            t("create_remove", Some("pool_mb=8192"), create_remove),
            t("pool_admission", Some("pool_mb=3000"), pool_admission),
            t("vram_mmap", Some(""), vram_mmap),
            t("pread_mmap_agree", Some(""), pread_mmap_agree),
            t("scrub", Some(""), scrub),
            t("isolation", Some(""), isolation),
            t("config_space", Some("pool_mb=4352"), config_space),
            t("region_info", Some("pool_mb=4352"), region_info),
            t("display_plane", Some(""), display_plane),
            t("irqs", Some(""), irqs),
            t("sysfs_bad_input", Some(""), sysfs_bad_input),
            t("remove_while_open", Some(""), remove_while_open),
            t("rmmod_while_busy", None, rmmod_while_busy),
            t("multi_parent", Some("parents=3 pool_mb=1024"), multi_parent),
            t("reset", Some(""), reset),
            t("vfio_ioctls_compat", Some(""), vfio_ioctls_compat),
            t(
                "instances_attr",
                Some("pool_mb=8192"),
                crate::listing::instances_attr,
            ),
            t(
                "instances_attr_churn",
                Some("pool_mb=2048"),
                crate::listing::instances_attr_churn,
            ),
            t(
                "instances_attr_more",
                Some("pool_mb=12800"),
                crate::listing::instances_attr_more,
            ),
        ],
    }
}

fn quota(t: &str) -> Result<u64, Fail> {
    Ok(abi::type_spec(t)
        .ok_or_else(|| Fail(format!("no type {t}")))?
        .vram_mb)
}
