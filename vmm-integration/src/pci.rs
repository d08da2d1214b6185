//! PCI: configuration mechanism #1 (ports 0xcf8/0xcfc) on bus 0, with a host bridge at
//! 00:00.0. The vGPU joins it as a device next (issue 8); the guest finds the root bus
//! through the DSDT's `PCI0` (acpi.rs), since x86 Linux with ACPI IRQ routing scans
//! only the root bridges ACPI describes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::vgpu::Vgpu;

/// The configuration address port (dword access only; byte 0xcf9 is the reset register).
pub const CONFIG_ADDRESS: u16 = 0xcf8;
/// The configuration data ports (0xcfc..=0xcff).
pub const CONFIG_DATA: u16 = 0xcfc;

/// Host bridge IDs: Red Hat's "QEMU PCIe host bridge" (1b36:0008), which Linux has no
/// quirks for.
pub const HOST_BRIDGE_VENDOR: u16 = 0x1b36;
/// See [`HOST_BRIDGE_VENDOR`].
pub const HOST_BRIDGE_DEVICE: u16 = 0x0008;

/// Bus 0 behind configuration mechanism #1.
pub struct PciBus {
    address: AtomicU32,
    host_bridge: [u8; 256],
    vgpu: Option<Arc<Vgpu>>,
}

/// The vGPU's slot on bus 0.
pub const VGPU_DEVICE: u32 = 1;

impl PciBus {
    /// A bus with the host bridge, and the vGPU at 00:01.0 if there is one.
    pub fn new(vgpu: Option<Arc<Vgpu>>) -> Self {
        let mut c = [0u8; 256];
        c[0..2].copy_from_slice(&HOST_BRIDGE_VENDOR.to_le_bytes());
        c[2..4].copy_from_slice(&HOST_BRIDGE_DEVICE.to_le_bytes());
        c[0x0b] = 0x06; // class: bridge
        c[0x0a] = 0x00; // subclass: host bridge
        c[0x2c..0x2e].copy_from_slice(&0x1af4u16.to_le_bytes()); // subsystem vendor
        c[0x2e..0x30].copy_from_slice(&0x1100u16.to_le_bytes());
        PciBus {
            address: AtomicU32::new(0),
            host_bridge: c,
            vgpu,
        }
    }

    /// Whether `port` is one of ours for an access of `len` bytes.
    pub fn claims(port: u16, len: usize) -> bool {
        (port == CONFIG_ADDRESS && len == 4) || (CONFIG_DATA..=CONFIG_DATA + 3).contains(&port)
    }

    /// The device (slot) and config offset the latched address plus `byte` (0..=3)
    /// selects, if the address is enabled and on bus 0, function 0.
    fn target(&self, byte: u16) -> Option<(u32, u64)> {
        let a = self.address.load(Ordering::Relaxed);
        let enabled = a & 0x8000_0000 != 0;
        let (bus, dev, func) = ((a >> 16) & 0xff, (a >> 11) & 0x1f, (a >> 8) & 7);
        (enabled && bus == 0 && func == 0).then_some((dev, u64::from(a & 0xfc) + u64::from(byte)))
    }

    /// A guest `in`.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        if port == CONFIG_ADDRESS {
            data.copy_from_slice(&self.address.load(Ordering::Relaxed).to_le_bytes()[..data.len()]);
            return;
        }
        data.fill(0xff);
        match (self.target(port - CONFIG_DATA), &self.vgpu) {
            (Some((0, off)), _) => {
                for (i, d) in data.iter_mut().enumerate() {
                    *d = self
                        .host_bridge
                        .get(off as usize + i)
                        .copied()
                        .unwrap_or(0xff);
                }
            }
            (Some((VGPU_DEVICE, off)), Some(v)) => v.config_read(off, data),
            _ => {}
        }
    }

    /// A guest `out`: latches the address, or writes config space (the host bridge's is
    /// read-only; the vGPU's goes to VFIO).
    pub fn write(&self, port: u16, data: &[u8]) {
        if port == CONFIG_ADDRESS {
            if data.len() == 4 {
                let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                self.address.store(v, Ordering::Relaxed);
            }
            return;
        }
        if let (Some((VGPU_DEVICE, off)), Some(v)) = (self.target(port - CONFIG_DATA), &self.vgpu) {
            v.config_write(off, data);
        }
    }

    /// A guest MMIO read; `false` if no BAR is there.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.vgpu
            .as_ref()
            .is_some_and(|v| v.mmio(addr, Some(data), None))
    }

    /// A guest MMIO write; `false` if no BAR is there.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        self.vgpu
            .as_ref()
            .is_some_and(|v| v.mmio(addr, None, Some(data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_read(bus: &PciBus, dev: u32, reg: u32) -> u32 {
        bus.write(
            CONFIG_ADDRESS,
            &(0x8000_0000 | (dev << 11) | reg).to_le_bytes(),
        );
        let mut d = [0u8; 4];
        bus.read(CONFIG_DATA, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn host_bridge_answers_and_empty_slots_float() {
        let bus = PciBus::new(None);
        assert_eq!(cfg_read(&bus, 0, 0), 0x0008_1b36);
        assert_eq!(cfg_read(&bus, 0, 8) >> 16, 0x0600, "class host bridge");
        assert_eq!(cfg_read(&bus, 1, 0), 0xffff_ffff);
        // Linux's type 1 probe: the address port reads back what was written.
        bus.write(CONFIG_ADDRESS, &0x8000_0000u32.to_le_bytes());
        let mut d = [0u8; 4];
        bus.read(CONFIG_ADDRESS, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x8000_0000);
        // Sub-dword reads at an offset within the data window.
        bus.write(CONFIG_ADDRESS, &0x8000_0000u32.to_le_bytes());
        let mut w = [0u8; 2];
        bus.read(CONFIG_DATA + 2, &mut w);
        assert_eq!(u16::from_le_bytes(w), HOST_BRIDGE_DEVICE);
        assert!(PciBus::claims(0xcf8, 4) && !PciBus::claims(0xcf9, 1));
    }
}
