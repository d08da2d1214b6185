//! vCPU state at power-on: CPUID (what KVM supports, with this vCPU's APIC ID), the
//! local APIC's LINT pins, the FPU, and for the boot vCPU the PVH entry state (flat
//! 32-bit protected mode, paging off, %ebx = `hvm_start_info`). The other vCPUs wait
//! for the guest's INIT/SIPI in KVM's in-kernel local APIC.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, CpuId};
use kvm_ioctls::VcpuFd;

use crate::boot::{BootInfo, BOOT_GDT, GDT_CODE, GDT_DATA, GDT_TSS};
use crate::layout::GDT_ADDR;
use crate::Error;

const X86_CR0_PE: u64 = 0x1;
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// What the VMM adds to or hides from KVM_GET_SUPPORTED_CPUID.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuidOpts {
    /// Hide XSAVE (see [`crate::config::Args::no_xsave`]): Linux then uses FXSAVE and
    /// clears AVX and everything that depends on it by itself.
    pub no_xsave: bool,
    /// Announce the TSC-deadline timer (leaf 1 ECX bit 24), which KVM emulates in its
    /// local APIC (KVM_CAP_TSC_DEADLINE_TIMER) but leaves out of the supported CPUID
    /// for the VMM to set, as QEMU and Firecracker do. Without it Linux calibrates the
    /// APIC timer against the PIT, which under nested virtualisation can fail
    /// ("APIC timer disabled due to verification failure") and leave the guest on a
    /// broadcast PIT tick.
    pub tsc_deadline: bool,
}

/// CPUID for vCPU `id`: `base` (KVM_GET_SUPPORTED_CPUID) with the APIC ID filled in
/// where the guest reads it, the hypervisor bit set, and `opts` applied.
pub fn cpuid_for(base: &CpuId, id: u8, vcpus: u8, opts: CpuidOpts) -> CpuId {
    let no_xsave = opts.no_xsave;
    let mut c = base.clone();
    for e in c.as_mut_slice() {
        match e.function {
            1 => {
                // EBX[31:24] initial APIC ID, [23:16] logical processors per package.
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(vcpus) << 16);
                if vcpus > 1 {
                    e.edx |= 1 << 28; // HTT: the [23:16] field is valid
                }
                e.ecx |= 1 << 31; // running under a hypervisor
                if opts.tsc_deadline {
                    e.ecx |= 1 << 24;
                }
                if no_xsave {
                    e.ecx &= !((1 << 26) | (1 << 27)); // XSAVE, OSXSAVE
                }
            }
            0xd if no_xsave => (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0),
            0xb | 0x1f => e.edx = u32::from(id),  // x2APIC ID
            0x8000_001e => e.eax = u32::from(id), // AMD extended APIC ID
            _ => {}
        }
    }
    c
}

/// A segment register from a GDT descriptor.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base,
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Sets up vCPU `id`; the boot vCPU (0) also gets the PVH entry state from `boot`.
pub fn setup(
    vcpu: &VcpuFd,
    base_cpuid: &CpuId,
    id: u8,
    vcpus: u8,
    boot: &BootInfo,
    opts: CpuidOpts,
) -> Result<(), Error> {
    let kvm = |what: &'static str| move |e: kvm_ioctls::Error| Error::Kvm(what, e);
    vcpu.set_cpuid2(&cpuid_for(base_cpuid, id, vcpus, opts))
        .map_err(kvm("KVM_SET_CPUID2"))?;

    // LINT0 = ExtINT (the 8259 in virtual-wire mode), LINT1 = NMI, as a BIOS leaves them.
    let mut lapic = vcpu.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    for (off, mode) in [
        (APIC_LVT_LINT0, APIC_MODE_EXTINT),
        (APIC_LVT_LINT1, APIC_MODE_NMI),
    ] {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            *x = lapic.regs[off + i] as u8;
        }
        let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
        for (i, x) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[off + i] = *x as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))?;
    if id != 0 {
        return Ok(());
    }

    let mut sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    let code = segment_from_gdt(BOOT_GDT[usize::from(GDT_CODE)], GDT_CODE);
    let data = segment_from_gdt(BOOT_GDT[usize::from(GDT_DATA)], GDT_DATA);
    let tss = segment_from_gdt(BOOT_GDT[usize::from(GDT_TSS)], GDT_TSS);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (8 * BOOT_GDT.len() - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = X86_CR0_PE;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;

    let regs = kvm_regs {
        rflags: 0x2,
        rip: boot.entry,
        rbx: boot.rbx,
        rsi: boot.rsi,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let cs = segment_from_gdt(BOOT_GDT[2], GDT_CODE);
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 0x10));
        assert_eq!(
            (cs.type_, cs.present, cs.s, cs.db, cs.g, cs.l),
            (0xb, 1, 1, 1, 1, 0)
        );
        let ds = segment_from_gdt(BOOT_GDT[3], GDT_DATA);
        assert_eq!(
            (ds.base, ds.limit, ds.selector, ds.type_),
            (0, 0xffff_ffff, 0x18, 0x3)
        );
        let tr = segment_from_gdt(BOOT_GDT[4], GDT_TSS);
        assert_eq!(
            (tr.limit, tr.selector, tr.type_, tr.s, tr.g),
            (0x67, 0x20, 0xb, 0, 0)
        );
    }

    #[test]
    fn cpuid_carries_the_apic_id() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xdead_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
        ];
        let base = CpuId::from_entries(&entries).expect("cpuid");
        let c = cpuid_for(&base, 3, 4, CpuidOpts::default());
        let s = c.as_slice();
        assert_eq!(s[0].ebx, 0x0304_0800);
        assert_ne!(s[0].ecx & (1 << 31), 0);
        assert_ne!(s[0].edx & (1 << 28), 0);
        assert_eq!(s[0].ecx & (1 << 24), 0, "no TSC deadline unless asked");
        assert_eq!(s[1].edx, 3);
        let opts = CpuidOpts {
            tsc_deadline: true,
            ..CpuidOpts::default()
        };
        let c = cpuid_for(&base, 3, 4, opts);
        assert_ne!(c.as_slice()[0].ecx & (1 << 24), 0, "TSC deadline");
    }

    #[test]
    fn no_xsave_hides_xsave() {
        let e = |function, index, eax, ecx| kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ecx,
            ..Default::default()
        };
        let entries = [
            e(1, 0, 0, (1 << 26) | (1 << 28) | 1),
            e(0xd, 0, 0x207, 0xa88),
        ];
        let base = CpuId::from_entries(&entries).expect("cpuid");
        let kept = cpuid_for(&base, 0, 1, CpuidOpts::default());
        assert_ne!(kept.as_slice()[0].ecx & (1 << 26), 0);
        assert_eq!(kept.as_slice()[1].eax, 0x207);
        let opts = CpuidOpts {
            no_xsave: true,
            ..CpuidOpts::default()
        };
        let c = cpuid_for(&base, 0, 1, opts);
        let s = c.as_slice();
        assert_eq!(s[0].ecx & (1 << 26), 0, "XSAVE hidden");
        assert_ne!(s[0].ecx & 1, 0, "the rest kept");
        assert_eq!((s[1].eax, s[1].ecx), (0, 0));
    }
}
