//! A vCPU's state when the VM is stopped from outside, in one line: whether it was
//! halted, where it was, whether interrupts were enabled, what its local APIC had
//! pending and when its timer was due. A guest that "hangs" is then either halted
//! with nothing due (waiting for an interrupt nobody sends), halted with a vector
//! pending or a timer past due (an interrupt lost on the way), or running (busy).

use std::time::Instant;

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

/// What a vCPU last exited to the VMM for (kept on every device exit: no formatting
/// there, only at the stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceExit {
    /// Port I/O at this port.
    Port(u16),
    /// MMIO at this guest-physical address.
    Mmio(u64),
}

impl std::fmt::Display for DeviceExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceExit::Port(p) => write!(f, "port {p:#x}"),
            DeviceExit::Mmio(a) => write!(f, "MMIO {a:#x}"),
        }
    }
}

/// IA32_TSC (the guest's TSC) and IA32_TSC_DEADLINE.
const MSR_TSC: u32 = 0x10;
const MSR_TSC_DEADLINE: u32 = 0x6e0;

/// What the local APIC's register page says (offsets from the SDM, vol. 3, 11.4.1).
#[derive(Debug, PartialEq, Eq)]
pub struct Apic {
    /// Task priority.
    pub tpr: u32,
    /// LVT timer: vector, mask (bit 16), mode (bits 17-18: one-shot, periodic, TSC deadline).
    pub lvt_timer: u32,
    /// The timer's initial count (one-shot and periodic modes).
    pub tmict: u32,
    /// The timer's current count.
    pub tmcct: u32,
    /// Vectors requested.
    pub irr: Vec<u8>,
    /// Vectors in service.
    pub isr: Vec<u8>,
}

fn reg(page: &[u8], off: usize) -> u32 {
    page.get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// The vectors set in the 256-bit register at `off` (eight 32-bit words 16 bytes apart).
fn vectors(page: &[u8], off: usize) -> Vec<u8> {
    (0..8u8)
        .flat_map(|w| {
            let bits = reg(page, off + 16 * usize::from(w));
            (0..32u8)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w * 32 + b)
        })
        .collect()
}

impl Apic {
    /// Reads the 1 KiB register page KVM_GET_LAPIC returns.
    pub fn parse(page: &[u8]) -> Apic {
        Apic {
            tpr: reg(page, 0x80),
            lvt_timer: reg(page, 0x320),
            tmict: reg(page, 0x380),
            tmcct: reg(page, 0x390),
            irr: vectors(page, 0x200),
            isr: vectors(page, 0x100),
        }
    }

    fn timer(&self) -> String {
        let mode = match (self.lvt_timer >> 17) & 3 {
            0 => "one-shot",
            1 => "periodic",
            2 => "TSC deadline",
            _ => "reserved mode",
        };
        let masked = if self.lvt_timer & (1 << 16) != 0 {
            ", masked"
        } else {
            ""
        };
        format!(
            "timer {mode} vector {}{masked}, count {}/{}",
            self.lvt_timer & 0xff,
            self.tmcct,
            self.tmict
        )
    }
}

fn mp_state_name(s: u32) -> String {
    match s {
        kvm_bindings::KVM_MP_STATE_RUNNABLE => "runnable".into(),
        kvm_bindings::KVM_MP_STATE_UNINITIALIZED => "waiting for INIT".into(),
        kvm_bindings::KVM_MP_STATE_INIT_RECEIVED => "INIT received".into(),
        kvm_bindings::KVM_MP_STATE_HALTED => "halted".into(),
        kvm_bindings::KVM_MP_STATE_SIPI_RECEIVED => "SIPI received".into(),
        s => format!("mp_state {s}"),
    }
}

fn list(v: &[u8]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The TSC deadline relative to the TSC, as text ("none" when disarmed).
fn deadline(vcpu: &VcpuFd) -> String {
    let entries = [
        kvm_msr_entry {
            index: MSR_TSC,
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_TSC_DEADLINE,
            ..Default::default()
        },
    ];
    let mut msrs = match Msrs::from_entries(&entries) {
        Ok(m) => m,
        Err(e) => return format!("? ({e:?})"),
    };
    match vcpu.get_msrs(&mut msrs) {
        Ok(2) => {
            let e = msrs.as_slice();
            let (tsc, dl) = (e[0].data, e[1].data);
            if dl == 0 {
                "none".into()
            } else if dl >= tsc {
                format!("in {} TSC ticks", dl - tsc)
            } else {
                format!("{} TSC ticks past due", tsc - dl)
            }
        }
        Ok(n) => format!("? ({n} of 2 MSRs read)"),
        Err(e) => format!("? ({e})"),
    }
}

/// One line on vCPU `id` as it is now (call from its own thread, out of KVM_RUN);
/// `last` is its last exit to userspace for a device.
pub fn describe(id: u8, vcpu: &VcpuFd, last: Option<(Instant, DeviceExit)>) -> String {
    let mp = vcpu
        .get_mp_state()
        .map(|m| mp_state_name(m.mp_state))
        .unwrap_or_else(|e| format!("mp_state ? ({e})"));
    let regs = match vcpu.get_regs() {
        Ok(r) => format!(
            "RIP {:#x}, interrupts {}",
            r.rip,
            if r.rflags & (1 << 9) != 0 {
                "on"
            } else {
                "off"
            }
        ),
        Err(e) => format!("registers ? ({e})"),
    };
    let apic = match vcpu.get_lapic() {
        Ok(l) => {
            // The page is c_char (i8 on x86): the same bytes.
            let page: Vec<u8> = l.regs.iter().map(|&c| c as u8).collect();
            let a = Apic::parse(&page);
            format!(
                "APIC TPR {:#x}, IRR {}, ISR {}, {}",
                a.tpr,
                list(&a.irr),
                list(&a.isr),
                a.timer()
            )
        }
        Err(e) => format!("APIC ? ({e})"),
    };
    let last = match last {
        Some((t, what)) => format!("{} ms ago ({what})", t.elapsed().as_millis()),
        None => "never".into(),
    };
    format!(
        "vCPU {id} at the stop: {mp}, {regs}; {apic}; TSC deadline {}; last device exit {last}",
        deadline(vcpu)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(words: &[(usize, u32)]) -> Vec<u8> {
        let mut p = vec![0u8; 1024];
        for &(off, v) in words {
            p[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        p
    }

    #[test]
    fn parses_the_register_page() {
        // Vector 236 (word 7, bit 12) requested, 48 (word 1, bit 16) in service;
        // timer in TSC-deadline mode on vector 236.
        let p = page(&[
            (0x80, 0x10),
            (0x200 + 7 * 16, 1 << 12),
            (0x100 + 16, 1 << 16),
            (0x320, (2 << 17) | 236),
            (0x380, 5),
            (0x390, 3),
        ]);
        let a = Apic::parse(&p);
        assert_eq!(
            a,
            Apic {
                tpr: 0x10,
                lvt_timer: (2 << 17) | 236,
                tmict: 5,
                tmcct: 3,
                irr: vec![236],
                isr: vec![48],
            }
        );
        assert_eq!(a.timer(), "timer TSC deadline vector 236, count 3/5");
        assert_eq!(list(&a.irr), "236");
        assert_eq!(list(&[]), "none");
        assert_eq!(DeviceExit::Port(0x3fa).to_string(), "port 0x3fa");
        assert_eq!(DeviceExit::Mmio(0xd0000914).to_string(), "MMIO 0xd0000914");
    }

    #[test]
    fn masked_timer_and_short_page() {
        let a = Apic::parse(&page(&[(0x320, (1 << 16) | 0xef)]));
        assert_eq!(a.timer(), "timer one-shot vector 239, masked, count 0/0");
        // A page shorter than the registers reads as zeros rather than panicking.
        let b = Apic::parse(&[0u8; 16]);
        assert!(b.irr.is_empty() && b.lvt_timer == 0);
    }
}
