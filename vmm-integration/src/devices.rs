//! The minimal device model, all on port I/O: COM1 (vm-superio's 8250 at 0x3f8, IRQ 4
//! through an irqfd into KVM's in-kernel PIC/IOAPIC), the ACPI sleep control register
//! (power off), the reset register at 0xcf9, and the i8042's reset command (Linux's
//! `reboot=k`). Everything else reads as all ones (no device) and ignores writes.

use std::io::Write;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::acpi::{
    PM1A_CNT_PORT, PM1A_EVT_PORT, RESET_PORT, RESET_VALUE, S5_SLP_TYP, SCI_EN, SLP_EN,
};

/// COM1's base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's ISA IRQ (= GSI).
pub const COM1_IRQ: u32 = 4;
/// PM1a enable register (the second half of the PM1a event block).
pub const PM1A_ENABLE_PORT: u16 = PM1A_EVT_PORT + 2;
/// The i8042's command port; writing 0xfe pulses the CPU reset line.
pub const I8042_CMD_PORT: u16 = 0x64;
const I8042_RESET_CMD: u8 = 0xfe;

/// Why the guest stopped, as seen by a device or the vCPU loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestEvent {
    /// ACPI S5.
    PowerOff,
    /// Reset register, i8042 reset, triple fault.
    Reset,
}

/// Raises the serial IRQ by writing the irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The serial console's sink: stdout or a file.
pub type SerialOut = Box<dyn Write + Send>;

/// The port I/O devices.
pub struct PioBus {
    pci: crate::pci::PciBus,
    serial: Mutex<Serial<IrqTrigger, vm_superio::serial::NoEvents, SerialOut>>,
    /// PM1a enable register: kept so that ACPICA reads back what it enabled (it checks
    /// the global lock's enable bit). No event is ever raised.
    pm1_enable: AtomicU16,
}

impl PioBus {
    /// A bus with COM1 raising `irq` and writing to `out`, and PCI (with the vGPU, if
    /// any).
    pub fn new(
        irq: EventFd,
        out: SerialOut,
        vgpu: Option<std::sync::Arc<crate::vgpu::Vgpu>>,
    ) -> Self {
        PioBus {
            pci: crate::pci::PciBus::new(vgpu),
            serial: Mutex::new(Serial::new(IrqTrigger(irq), out)),
            pm1_enable: AtomicU16::new(0),
        }
    }

    /// A guest `in` from `port`: fills `data`.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        if crate::pci::PciBus::claims(port, data.len()) {
            return self.pci.read(port, data);
        }
        match port {
            COM1_PORT..=0x3ff if data.len() == 1 => {
                data[0] = self.with_serial(|s| s.read((port - COM1_PORT) as u8));
            }
            PM1A_EVT_PORT..=0x601 => data.fill(0),
            PM1A_ENABLE_PORT => {
                let v = self.pm1_enable.load(Ordering::Relaxed).to_le_bytes();
                for (d, b) in data.iter_mut().zip(v) {
                    *d = b;
                }
            }
            PM1A_CNT_PORT => {
                data.fill(0);
                data[0] = SCI_EN as u8;
            }
            // i8042 status: input buffer empty, so Linux's reboot through the keyboard
            // controller (`reboot=k`, and its fallback after ACPI) writes its reset
            // command at once instead of polling 10 x 65536 times for a controller that
            // is not there.
            I8042_CMD_PORT => data.fill(0),
            _ => log::trace!("in {port:#x} ({} bytes): no device", data.len()),
        }
    }

    /// A guest `out` of `data` to `port`; returns the event it causes, if any.
    pub fn write(&self, port: u16, data: &[u8]) -> Option<GuestEvent> {
        let byte = data.first().copied().unwrap_or(0);
        if crate::pci::PciBus::claims(port, data.len()) {
            self.pci.write(port, data);
            return None;
        }
        match port {
            COM1_PORT..=0x3ff if data.len() == 1 => {
                if let Err(e) = self.with_serial(|s| s.write((port - COM1_PORT) as u8, byte)) {
                    log::warn!("serial: {e}");
                }
                None
            }
            PM1A_CNT_PORT if data.len() >= 2 => {
                let v = u16::from_le_bytes([data[0], data[1]]);
                let typ = ((v >> 10) & 7) as u8;
                if v & SLP_EN == 0 {
                    None
                } else if typ == S5_SLP_TYP {
                    Some(GuestEvent::PowerOff)
                } else {
                    log::warn!("guest asked for sleep type {typ}: not supported");
                    None
                }
            }
            PM1A_ENABLE_PORT => {
                let mut v = self.pm1_enable.load(Ordering::Relaxed).to_le_bytes();
                for (b, d) in v.iter_mut().zip(data) {
                    *b = *d;
                }
                self.pm1_enable
                    .store(u16::from_le_bytes(v), Ordering::Relaxed);
                None
            }
            PM1A_EVT_PORT..=0x603 => None,
            RESET_PORT if data.len() == 1 && byte & RESET_VALUE == RESET_VALUE => {
                Some(GuestEvent::Reset)
            }
            I8042_CMD_PORT if byte == I8042_RESET_CMD => Some(GuestEvent::Reset),
            // POST code / I/O delay; the CMOS (Linux's reboot through the BIOS writes a
            // shutdown status there first).
            0x80 | 0x70 | 0x71 => None,
            _ => {
                log::debug!("out {port:#x} {data:x?}: no device");
                None
            }
        }
    }

    /// The PCI bus (for MMIO to BARs).
    pub fn pci(&self) -> &crate::pci::PciBus {
        &self.pci
    }

    fn with_serial<R>(
        &self,
        f: impl FnOnce(&mut Serial<IrqTrigger, vm_superio::serial::NoEvents, SerialOut>) -> R,
    ) -> R {
        // A vCPU thread that panicked while holding the lock leaves the serial state as
        // consistent as any byte boundary: keep going.
        let mut g = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<StdMutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn bus() -> (PioBus, Sink, EventFd) {
        let sink = Sink::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let bus = PioBus::new(
            irq.try_clone().expect("clone"),
            Box::new(sink.clone()),
            None,
        );
        (bus, sink, irq)
    }

    #[test]
    fn serial_output_reaches_the_sink_and_raises_the_irq() {
        let (bus, sink, irq) = bus();
        assert_eq!(bus.write(COM1_PORT + 1, &[0x02]), None); // IER: THR empty
        for b in b"hi\n" {
            bus.write(COM1_PORT, &[*b]);
        }
        assert_eq!(&*sink.0.lock().expect("sink"), b"hi\n");
        assert!(irq.read().expect("irq raised") >= 1);
    }

    #[test]
    fn power_and_reset_ports() {
        let (bus, _, _) = bus();
        let pm1 = |v: u16| v.to_le_bytes();
        assert_eq!(
            bus.write(PM1A_CNT_PORT, &pm1((5 << 10) | SLP_EN | 1)),
            Some(GuestEvent::PowerOff)
        );
        assert_eq!(bus.write(PM1A_CNT_PORT, &pm1((3 << 10) | SLP_EN)), None);
        assert_eq!(bus.write(PM1A_CNT_PORT, &pm1(5 << 10)), None);
        assert_eq!(
            bus.write(RESET_PORT, &[RESET_VALUE]),
            Some(GuestEvent::Reset)
        );
        assert_eq!(bus.write(RESET_PORT, &[0x2]), None);
        assert_eq!(bus.write(I8042_CMD_PORT, &[0xfe]), Some(GuestEvent::Reset));
        assert_eq!(bus.write(I8042_CMD_PORT, &[0xad]), None);
        let mut d = [0u8; 4];
        bus.read(0x2f8, &mut d[..1]);
        assert_eq!(d[0], 0xff, "no COM2: reads float high");
        let mut s = [0xaau8; 2];
        bus.read(PM1A_EVT_PORT, &mut s);
        assert_eq!(s, [0, 0]);
        bus.write(PM1A_ENABLE_PORT, &[0x20, 0x01]);
        bus.read(PM1A_ENABLE_PORT, &mut s);
        assert_eq!(s, [0x20, 0x01], "PM1 enable reads back");
        bus.read(PM1A_CNT_PORT, &mut s);
        assert_eq!(u16::from_le_bytes(s) & SCI_EN, SCI_EN);
    }
}
