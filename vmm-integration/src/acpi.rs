//! The ACPI tables the guest boots with: RSDP → XSDT → FADT (→ DSDT) and MADT.
//!
//! ACPI is used for two things only: to enumerate the vCPUs and the IOAPIC (MADT;
//! without it Linux sees one CPU) and to power off (a FADT whose PM1a control block is
//! an I/O port of the VMM, and a DSDT with an `_S5` package: Linux's `poweroff` writes
//! `SLP_TYP(5) << 10 | SLP_EN` there). Reboot goes through the FADT's reset register
//! (port 0xcf9, value 6), which is also Linux's `reboot=pci` path.
//!
//! The FADT is a full one, not "hardware-reduced": on a hardware-reduced machine x86
//! Linux drops the legacy PIC and with it the ISA IRQs 0-15, so the 8250 at IRQ 4
//! (found without ACPI, at its legacy address) gets no interrupt and user-space output
//! never leaves the tty buffer; and it reboots through EFI. A full FADT needs a FACS
//! and an SCI (IRQ 9, never raised). There is no SMI command port: the machine is
//! always in ACPI mode. The FADT says there is no 8042, no VGA and no CMOS RTC, so the
//! guest probes none.

use crate::layout::{ACPI_START, IOAPIC_ADDR, LAPIC_ADDR, MMIO_HOLE_START};

/// PM1a event block: status (2 bytes) then enable (2 bytes); reads 0, writes ignored.
pub const PM1A_EVT_PORT: u16 = 0x600;
/// PM1a control block (2 bytes): `SLP_TYP` in bits 10-12, `SLP_EN` bit 13.
pub const PM1A_CNT_PORT: u16 = 0x604;
/// `SCI_EN` in PM1 control: reads as set (always in ACPI mode).
pub const SCI_EN: u16 = 1;
/// The SCI's IRQ (level, active high, as QEMU has it; never raised).
pub const SCI_IRQ: u8 = 9;
/// The reset register (the PCI reset control port).
pub const RESET_PORT: u16 = 0xcf9;
/// What the guest writes to [`RESET_PORT`] to reset.
pub const RESET_VALUE: u8 = 0x6;
/// `SLP_TYP` of `_S5` in our DSDT.
pub const S5_SLP_TYP: u8 = 5;
/// `SLP_EN` in PM1 control.
pub const SLP_EN: u16 = 1 << 13;

const OEM_ID: &[u8; 6] = b"VGPU  ";
const OEM_TABLE_ID: &[u8; 8] = b"VGPUVMM ";
const CREATOR_ID: &[u8; 4] = b"VGPU";

/// The tables, laid out from `base`: `(guest address, bytes)` pairs, RSDP first.
pub fn build(base: u64, vcpus: u8) -> Vec<(u64, Vec<u8>)> {
    // RSDP (36 bytes), the FACS (64-aligned), then each table 16-aligned.
    let rsdp_at = base;
    let facs_at = (rsdp_at + 36 + 63) & !63;
    let facs = facs();
    let dsdt_at = align16(facs_at + facs.len() as u64);
    let dsdt = dsdt();
    let fadt_at = align16(dsdt_at + dsdt.len() as u64);
    let fadt = fadt(dsdt_at, facs_at);
    let madt_at = align16(fadt_at + fadt.len() as u64);
    let madt = madt(vcpus);
    let xsdt_at = align16(madt_at + madt.len() as u64);
    let xsdt = xsdt(&[fadt_at, madt_at]);
    vec![
        (rsdp_at, rsdp(xsdt_at)),
        (facs_at, facs),
        (dsdt_at, dsdt),
        (fadt_at, fadt),
        (madt_at, madt),
        (xsdt_at, xsdt),
    ]
}

/// Where [`build`] puts the RSDP.
pub const RSDP_ADDR: u64 = ACPI_START;

fn align16(a: u64) -> u64 {
    (a + 15) & !15
}

/// Makes the bytes sum to zero by setting the byte at `at`.
fn fix_checksum(t: &mut [u8], at: usize) {
    t[at] = 0;
    let sum = t.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    t[at] = 0u8.wrapping_sub(sum);
}

/// A system description table: the 36-byte header, then `body`.
fn sdt(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = 36 + body.len();
    let mut t = Vec::with_capacity(len);
    t.extend_from_slice(sig);
    t.extend_from_slice(&(len as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(CREATOR_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    fix_checksum(&mut t, 9);
    t
}

fn rsdp(xsdt: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(36);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum of the first 20 bytes
    r.extend_from_slice(OEM_ID);
    r.push(2); // revision: ACPI 2.0+, XSDT
    r.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&xsdt.to_le_bytes());
    r.push(0); // extended checksum
    r.extend_from_slice(&[0; 3]);
    fix_checksum(&mut r[..20], 8);
    fix_checksum(&mut r, 32);
    r
}

fn xsdt(tables: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = tables.iter().flat_map(|a| a.to_le_bytes()).collect();
    sdt(b"XSDT", 1, &body)
}

/// FACS: 64 bytes, no checksum; nothing in it is used (no S3, no global lock users).
fn facs() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&64u32.to_le_bytes());
    f[32] = 2; // version
    f
}

/// An AML PkgLength for `content` bytes that follow it (the encoding counts itself).
fn pkg_len(content: usize) -> Vec<u8> {
    if content < 63 {
        vec![(content + 1) as u8]
    } else {
        let n = content + 2; // two bytes: up to 4095
        vec![0x40 | (n & 0xf) as u8, (n >> 4) as u8]
    }
}

/// `Name (SEG, value)`.
fn aml_name(seg: &[u8; 4], value: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08];
    v.extend_from_slice(seg);
    v.extend_from_slice(value);
    v
}

/// An AML Buffer holding `bytes`.
fn aml_buffer(bytes: &[u8]) -> Vec<u8> {
    let mut size = vec![0x0a, bytes.len() as u8]; // BytePrefix: resource templates < 256
    size.extend_from_slice(bytes);
    let mut v = vec![0x11];
    v.extend(pkg_len(size.len()));
    v.extend(size);
    v
}

/// A word address space descriptor (bus numbers or I/O), producer, fixed range.
fn word_space(kind: u8, type_flags: u8, min: u16, max: u16) -> Vec<u8> {
    let len = max - min + 1;
    let mut v = vec![0x88, 0x0d, 0x00, kind, 0x0c, type_flags, 0, 0];
    for x in [min, max, 0, len] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// The resources of the PCI root bridge: bus 0, the config ports, I/O around them,
/// and the 32-bit MMIO hole up to the IOAPIC.
fn pci0_crs() -> Vec<u8> {
    let mut r = word_space(2, 0, 0, 0); // bus 0
    r.extend_from_slice(&[0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08]); // IO 0xcf8, 8
    r.extend(word_space(1, 3, 0, 0x0cf7));
    r.extend(word_space(1, 3, 0x0d00, 0xffff));
    let (min, max) = (MMIO_HOLE_START as u32, IOAPIC_ADDR - 1);
    r.extend_from_slice(&[0x87, 0x17, 0x00, 0x00, 0x0c, 0x01]); // memory, RW, non-cacheable
    for x in [0, min, max, 0, max - min + 1] {
        r.extend_from_slice(&x.to_le_bytes());
    }
    r.extend_from_slice(&[0x79, 0x00]); // end tag
    r
}

/// DSDT: `Name (_S5, Package () { 5, 0, 0, 0 })` at the root, and
/// `Scope (\_SB) { Device (PCI0) { _HID PNP0A03, _UID 0, _SEG 0, _BBN 0, _CRS } }`.
fn dsdt() -> Vec<u8> {
    let mut aml = vec![
        0x08, b'_', b'S', b'5', b'_', // NameOp "_S5_"
        0x12, 0x07, 0x04, // PackageOp, PkgLength 7, 4 elements
        0x0a, S5_SLP_TYP, // BytePrefix 5
        0x00, 0x00, 0x00, // ZeroOp x3
    ];
    let mut dev = b"PCI0".to_vec();
    dev.extend(aml_name(b"_HID", &[0x0c, 0x41, 0xd0, 0x0a, 0x03])); // EisaId PNP0A03
    dev.extend(aml_name(b"_UID", &[0x00]));
    dev.extend(aml_name(b"_SEG", &[0x00]));
    dev.extend(aml_name(b"_BBN", &[0x00]));
    dev.extend(aml_name(b"_CRS", &aml_buffer(&pci0_crs())));
    let mut device = vec![0x5b, 0x82]; // DeviceOp
    device.extend(pkg_len(dev.len()));
    device.extend(dev);
    let mut scope = b"\\_SB_".to_vec();
    scope.extend(device);
    aml.push(0x10); // ScopeOp
    aml.extend(pkg_len(scope.len()));
    aml.extend(scope);
    sdt(b"DSDT", 2, &aml)
}

/// A Generic Address Structure for a byte-wide I/O port.
fn gas_io(port: u16) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O space
    g[1] = 8; // bit width
    g[3] = 1; // byte access
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

/// FADT revision 6 (276 bytes), with a PM1a block and no SMI command port.
fn fadt(dsdt: u64, facs: u64) -> Vec<u8> {
    const RESET_REG_SUP: u32 = 1 << 10;
    const PWR_BUTTON: u32 = 1 << 4; // no fixed power button
    const SLP_BUTTON: u32 = 1 << 5; // no fixed sleep button
    const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
    const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
    // Offsets below count from the start of the table; the body starts at 36.
    let mut b = vec![0u8; 276 - 36];
    let mut put =
        |off: usize, bytes: &[u8]| b[off - 36..off - 36 + bytes.len()].copy_from_slice(bytes);
    put(36, &(facs as u32).to_le_bytes());
    put(40, &(dsdt as u32).to_le_bytes());
    put(46, &u16::from(SCI_IRQ).to_le_bytes());
    put(56, &u32::from(PM1A_EVT_PORT).to_le_bytes());
    put(64, &u32::from(PM1A_CNT_PORT).to_le_bytes());
    put(88, &[4]); // PM1_EVT_LEN
    put(89, &[2]); // PM1_CNT_LEN
    put(
        109,
        &(IAPC_VGA_NOT_PRESENT | IAPC_CMOS_RTC_NOT_PRESENT).to_le_bytes(),
    );
    put(
        112,
        &(RESET_REG_SUP | PWR_BUTTON | SLP_BUTTON).to_le_bytes(),
    );
    put(116, &gas_io(RESET_PORT));
    put(128, &[RESET_VALUE]);
    put(131, &[0]); // minor version
    put(132, &facs.to_le_bytes()); // X_FIRMWARE_CTRL
    put(140, &dsdt.to_le_bytes()); // X_DSDT
                                   // The X_PM1a blocks stay zero: ACPICA takes the 32-bit ones above.
    put(268, b"VGPUVMM\0"); // hypervisor vendor identity
    sdt(b"FACP", 6, &b)
}

/// MADT: one enabled local APIC per vCPU (APIC ID = vCPU index), the IOAPIC, and the
/// SCI override (IRQ 9 level, active high). ISA IRQ 0 stays on IOAPIC pin 0, where
/// KVM's default GSI routing puts the in-kernel PIT.
fn madt(vcpus: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: there are 8259s
    for id in 0..vcpus {
        b.extend_from_slice(&[0, 8, id, id]);
        b.extend_from_slice(&1u32.to_le_bytes()); // enabled
    }
    b.extend_from_slice(&[1, 12, 0, 0]); // IOAPIC id 0
    b.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    b.extend_from_slice(&[2, 10, 0, SCI_IRQ]); // ISA bus, IRQ 9
    b.extend_from_slice(&u32::from(SCI_IRQ).to_le_bytes()); // → GSI 9
    b.extend_from_slice(&0x000du16.to_le_bytes()); // active high, level
    sdt(b"APIC", 5, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
    }

    #[test]
    fn checksums_and_lengths() {
        let t = build(RSDP_ADDR, 4);
        let (rsdp_at, rsdp) = &t[0];
        assert_eq!(*rsdp_at, RSDP_ADDR);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(rsdp), 0);
        for (a, tbl) in &t[1..] {
            assert_eq!(u32_at(tbl, 4) as usize, tbl.len());
            if &tbl[..4] == b"FACS" {
                assert_eq!(a % 64, 0, "FACS alignment");
            } else {
                assert_eq!(sum(tbl), 0, "{:?}", std::str::from_utf8(&tbl[..4]));
            }
        }
        // All of it within the BIOS area, nothing overlapping.
        let mut end = 0;
        for (a, tbl) in &t {
            assert!(*a >= end);
            end = a + tbl.len() as u64;
        }
        assert!(end <= crate::layout::HIGHMEM_START);
    }

    #[test]
    fn pointers_chain_up() {
        let t = build(RSDP_ADDR, 1);
        let at = |sig: &[u8]| t.iter().find(|(_, b)| &b[..4] == sig).map(|x| x.0);
        let xsdt_at = u64_at(&t[0].1, 24);
        assert_eq!(Some(xsdt_at), at(b"XSDT"));
        let xsdt = &t.iter().find(|x| x.0 == xsdt_at).expect("xsdt").1;
        assert_eq!(u64_at(xsdt, 36), at(b"FACP").expect("fadt"));
        assert_eq!(u64_at(xsdt, 44), at(b"APIC").expect("madt"));
        let fadt = &t.iter().find(|x| &x.1[..4] == b"FACP").expect("fadt").1;
        assert_eq!(fadt.len(), 276);
        assert_eq!(u64_at(fadt, 140), at(b"DSDT").expect("dsdt"));
        assert_eq!(u64_at(fadt, 132), at(b"FACS").expect("facs"));
        assert_eq!(u32_at(fadt, 64), u32::from(PM1A_CNT_PORT));
        assert_eq!(u64_at(fadt, 116 + 4), u64::from(RESET_PORT));
        assert_eq!(u32_at(fadt, 112) & (1 << 20), 0, "not hardware-reduced");
    }

    #[test]
    fn aml_lengths() {
        assert_eq!(pkg_len(5), vec![6]);
        assert_eq!(pkg_len(62), vec![63]);
        assert_eq!(pkg_len(86), vec![0x48, 0x05]); // 88
        let crs = pci0_crs();
        assert_eq!(crs.len(), 16 + 8 + 16 + 16 + 26 + 2);
        assert_eq!(&crs[crs.len() - 2..], &[0x79, 0]);
        let d = dsdt();
        // The device's PkgLength covers exactly the rest of the table.
        let at = d
            .windows(2)
            .position(|w| w == [0x5b, 0x82])
            .expect("DeviceOp");
        let (b0, b1) = (d[at + 2] as usize, d[at + 3] as usize);
        let len = if b0 & 0xc0 == 0 {
            b0
        } else {
            (b0 & 0xf) | (b1 << 4)
        };
        assert_eq!(at + 2 + len, d.len());
    }

    #[test]
    fn madt_lists_every_vcpu() {
        for n in [1u8, 2, 8, 254] {
            let m = madt(n);
            let mut ids = Vec::new();
            let mut o = 44;
            while o < m.len() {
                let (kind, len) = (m[o], m[o + 1] as usize);
                if kind == 0 {
                    assert_eq!(u32_at(&m, o + 4), 1);
                    ids.push(m[o + 3]);
                }
                o += len;
            }
            assert_eq!(o, m.len());
            assert_eq!(ids, (0..n).collect::<Vec<_>>());
        }
    }
}
