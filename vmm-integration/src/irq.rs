//! The vGPU's MSI without a VMM round trip: when the guest enables MSI in the device's
//! config space, the device's VFIO MSI eventfd becomes a KVM irqfd on a GSI whose route
//! is the guest's MSI address/data. The module signals the eventfd, KVM injects the
//! interrupt; vgpu-vmm never sees it.
//!
//! KVM_SET_GSI_ROUTING replaces the whole table, so the table written here always
//! holds the default routes KVM_CREATE_IRQCHIP set up (GSI 0–15 on the PIC and the
//! IOAPIC, 16–23 on the IOAPIC: the serial port's irqfd on GSI 4 depends on them) plus
//! the MSI route.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vgpu_vfio::{irq, Device};
use vmm_sys_util::eventfd::EventFd;

use crate::Error;

/// IOAPIC pins (GSI 0–23 are the IOAPIC's).
pub const IOAPIC_PINS: u32 = 24;
/// The GSI of the vGPU's MSI: the first one above the IOAPIC's.
pub const VGPU_MSI_GSI: u32 = IOAPIC_PINS;

/// What the guest programmed in the MSI capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// Address (64 bits: low and high words).
    pub addr: u64,
    /// Data.
    pub data: u32,
}

/// The default routes of KVM_CREATE_IRQCHIP on x86 (as the kernel's
/// `kvm_setup_default_irq_routing`): GSI n < 16 on PIC pin n % 8 (master below 8) and
/// IOAPIC pin n; 16–23 on the IOAPIC only.
pub fn default_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        if gsi < 16 {
            let chip = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            v.push(irqchip_route(gsi, chip, gsi % 8));
        }
        v.push(irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    v
}

fn irqchip_route(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

/// An MSI route for `gsi`.
pub fn msi_route(gsi: u32, m: MsiMessage) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = m.addr as u32;
    e.u.msi.address_hi = (m.addr >> 32) as u32;
    e.u.msi.data = m.data;
    e
}

/// The routing table: the defaults plus `msi` on [`VGPU_MSI_GSI`].
pub fn routing_table(msi: Option<MsiMessage>) -> Result<KvmIrqRouting, Error> {
    let mut entries = default_routes();
    if let Some(m) = msi {
        entries.push(msi_route(VGPU_MSI_GSI, m));
    }
    KvmIrqRouting::from_entries(&entries)
        .map_err(|e| Error::Setup(format!("GSI routing table: {e:?}")))
}

/// The vGPU's MSI as a KVM irqfd: off until the guest enables MSI.
pub struct MsiIrq {
    vm: Arc<VmFd>,
    efd: EventFd,
    /// The message routed now (`None`: MSI off, no irqfd, no VFIO trigger).
    on: Mutex<Option<MsiMessage>>,
    /// Routes (re)programmed, for the log and the tests.
    pub updates: std::sync::atomic::AtomicU64,
}

impl MsiIrq {
    /// Off; `vm` is where the routes and the irqfd go.
    pub fn new(vm: Arc<VmFd>) -> Result<Self, Error> {
        let efd = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| Error::Setup(format!("eventfd (vGPU MSI): {e}")))?;
        Ok(MsiIrq {
            vm,
            efd,
            on: Mutex::new(None),
            updates: Default::default(),
        })
    }

    /// Follow the guest's MSI capability: `msg` is the message when MSI is enabled,
    /// `None` when it is disabled. Enabling sets the route, the irqfd and the VFIO MSI
    /// trigger; a new address/data only rewrites the route; disabling undoes all three.
    pub fn update(&self, dev: &Device, msg: Option<MsiMessage>) -> Result<(), String> {
        let mut on = self.on.lock().unwrap_or_else(|p| p.into_inner());
        if *on == msg {
            return Ok(());
        }
        match (*on, msg) {
            (_, Some(m)) => {
                let table = routing_table(Some(m)).map_err(|e| e.to_string())?;
                self.vm
                    .set_gsi_routing(&table)
                    .map_err(|e| format!("KVM_SET_GSI_ROUTING: {e}"))?;
                if on.is_none() {
                    self.vm
                        .register_irqfd(&self.efd, VGPU_MSI_GSI)
                        .map_err(|e| format!("KVM_IRQFD (vGPU MSI): {e}"))?;
                    if let Err(e) = dev.set_irq_eventfds(irq::MSI, 0, &[self.efd.as_raw_fd()]) {
                        let _ = self.vm.unregister_irqfd(&self.efd, VGPU_MSI_GSI);
                        return Err(format!("VFIO_DEVICE_SET_IRQS (MSI): {e}"));
                    }
                }
                log::info!(
                    "vGPU MSI: address {:#x} data {:#x} on GSI {VGPU_MSI_GSI}",
                    m.addr,
                    m.data
                );
            }
            (Some(_), None) => {
                let mut err = Vec::new();
                if let Err(e) = dev.disable_irq(irq::MSI) {
                    err.push(format!("VFIO_DEVICE_SET_IRQS (MSI off): {e}"));
                }
                if let Err(e) = self.vm.unregister_irqfd(&self.efd, VGPU_MSI_GSI) {
                    err.push(format!("KVM_IRQFD deassign: {e}"));
                }
                match routing_table(None) {
                    Ok(t) => {
                        if let Err(e) = self.vm.set_gsi_routing(&t) {
                            err.push(format!("KVM_SET_GSI_ROUTING: {e}"));
                        }
                    }
                    Err(e) => err.push(e.to_string()),
                }
                log::info!("vGPU MSI: disabled");
                *on = None;
                self.updates
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return if err.is_empty() {
                    Ok(())
                } else {
                    Err(err.join("; "))
                };
            }
            (None, None) => {}
        }
        *on = msg;
        self.updates
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_pic_and_ioapic() {
        let r = default_routes();
        // 16 PIC + 24 IOAPIC entries.
        assert_eq!(r.len(), 40);
        let com1: Vec<_> = r.iter().filter(|e| e.gsi == 4).collect();
        assert_eq!(com1.len(), 2);
        // SAFETY: irqchip is the member written for IRQCHIP routes.
        let pins: Vec<_> = com1
            .iter()
            .map(|e| unsafe { (e.u.irqchip.irqchip, e.u.irqchip.pin) })
            .collect();
        assert!(pins.contains(&(KVM_IRQCHIP_PIC_MASTER, 4)));
        assert!(pins.contains(&(KVM_IRQCHIP_IOAPIC, 4)));
        // SAFETY: as above.
        let slave = r
            .iter()
            .find(|e| e.gsi == 12)
            .map(|e| unsafe { (e.u.irqchip.irqchip, e.u.irqchip.pin) });
        assert_eq!(slave, Some((KVM_IRQCHIP_PIC_SLAVE, 4)));
        assert!(r.iter().all(|e| e.gsi < IOAPIC_PINS));
    }

    #[test]
    fn msi_route_carries_the_message() {
        let m = MsiMessage {
            addr: 0x1_fee0_1000,
            data: 0x4041,
        };
        let t = routing_table(Some(m)).expect("table");
        let e = t.as_slice().last().copied().expect("an entry");
        assert_eq!((e.gsi, e.type_), (VGPU_MSI_GSI, KVM_IRQ_ROUTING_MSI));
        // SAFETY: msi is the member written for MSI routes.
        let (lo, hi, data) = unsafe { (e.u.msi.address_lo, e.u.msi.address_hi, e.u.msi.data) };
        assert_eq!((lo, hi, data), (0xfee0_1000, 1, 0x4041));
        assert_eq!(routing_table(None).expect("table").as_slice().len(), 40);
    }
}
