//! Interrupts: IRQ_INFO and SET_IRQS, good and bad.

use super::*;

// 11 --------------------------------------------------------------------------------------
fn fired(e: &EventFd) -> bool {
    e.read().is_ok()
}

/// An invalid SET_IRQS request: (what, flags, index, start, count, payload).
type IrqCase = (&'static str, u32, u32, u32, u32, Vec<u8>);

/// Flags not checked (count-0 indexes).
const ANY_FLAGS: u32 = u32::MAX;

pub(super) fn irqs(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-128M")?;
    let dev = inst.open().ctx("open")?;
    let want = [
        (irq::INTX, 1, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE),
        (irq::MSI, 1, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE),
        (irq::MSIX, 0, ANY_FLAGS),
        (irq::ERR, 0, ANY_FLAGS),
        (irq::REQ, 1, VFIO_IRQ_INFO_EVENTFD),
    ];
    for (idx, count, flags) in want {
        let ii = dev.irq_info(idx).ctx(format!("irq info {idx}"))?;
        ensure_eq!(ii.index, idx, "irq {idx} index");
        ensure_eq!(ii.count, count, "irq {idx} count");
        if flags != ANY_FLAGS {
            ensure_eq!(ii.flags, flags, "irq {idx} flags");
        }
    }
    expect_errno(dev.irq_info(5), &[libc::EINVAL], "irq info 5")?;
    for idx in [irq::INTX, irq::MSI, irq::REQ] {
        let e = EventFd::new(EFD_NONBLOCK).ctx("eventfd")?;
        dev.set_irq_eventfds(idx, 0, &[e.as_raw_fd()])
            .ctx(format!("set eventfd on {idx}"))?;
        ensure!(!fired(&e), "irq {idx}: eventfd fired on setup");
        dev.trigger_irq(idx, 0, 1).ctx(format!("trigger {idx}"))?;
        ensure!(
            fired(&e),
            "irq {idx}: DATA_NONE trigger did not signal the eventfd"
        );
        dev.trigger_irq_bool(idx, 0, &[true])
            .ctx(format!("bool trigger {idx}"))?;
        ensure!(fired(&e), "irq {idx}: DATA_BOOL true did not signal");
        dev.trigger_irq_bool(idx, 0, &[false])
            .ctx(format!("bool false {idx}"))?;
        ensure!(!fired(&e), "irq {idx}: DATA_BOOL false signalled");
        // Clear with fd -1, then with DATA_NONE count 0; a trigger then signals nothing.
        dev.set_irq_eventfds(idx, 0, &[-1])
            .ctx(format!("clear {idx} with -1"))?;
        let _ = dev.trigger_irq(idx, 0, 1);
        ensure!(!fired(&e), "irq {idx}: signalled after clearing with fd -1");
        dev.set_irq_eventfds(idx, 0, &[e.as_raw_fd()])
            .ctx("re-set")?;
        dev.disable_irq(idx).ctx(format!("disable {idx}"))?;
        let _ = dev.trigger_irq(idx, 0, 1);
        ensure!(!fired(&e), "irq {idx}: signalled after DATA_NONE count 0");
    }
    // INTx is MASKABLE: a trigger while masked stays pending and fires on unmask
    // (vfio-pci semantics; QEMU masks/unmasks INTx around EOI).
    let e = EventFd::new(EFD_NONBLOCK).ctx("eventfd")?;
    dev.set_irq_eventfds(irq::INTX, 0, &[e.as_raw_fd()])
        .ctx("set INTx eventfd")?;
    let none = VFIO_IRQ_SET_DATA_NONE;
    dev.set_irqs_raw(VFIO_IRQ_SET_ACTION_MASK | none, irq::INTX, 0, 1, &[])
        .ctx("mask INTx")?;
    dev.trigger_irq(irq::INTX, 0, 1)
        .ctx("trigger masked INTx")?;
    ensure!(!fired(&e), "masked INTx signalled");
    dev.set_irqs_raw(VFIO_IRQ_SET_ACTION_UNMASK | none, irq::INTX, 0, 1, &[])
        .ctx("unmask INTx")?;
    ensure!(fired(&e), "pending INTx not delivered on unmask");
    dev.set_irqs_raw(VFIO_IRQ_SET_ACTION_UNMASK | none, irq::INTX, 0, 1, &[])
        .ctx("unmask again")?;
    ensure!(!fired(&e), "second unmask delivered a second interrupt");
    dev.disable_irq(irq::INTX).ctx("disable INTx")?;
    // Invalid requests.
    let e = EventFd::new(EFD_NONBLOCK).ctx("eventfd")?;
    let fd = e.as_raw_fd().to_ne_bytes();
    let trig_efd = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD;
    let cases: Vec<IrqCase> = vec![
        (
            "eventfd on MSI-X (count 0)",
            trig_efd,
            irq::MSIX,
            0,
            1,
            fd.to_vec(),
        ),
        (
            "eventfd on ERR (count 0)",
            trig_efd,
            irq::ERR,
            0,
            1,
            fd.to_vec(),
        ),
        ("eventfd on index 5", trig_efd, 5, 0, 1, fd.to_vec()),
        ("MSI start 1", trig_efd, irq::MSI, 1, 1, fd.to_vec()),
        ("MSI count 2", trig_efd, irq::MSI, 0, 2, [fd, fd].concat()),
        (
            "MASK on MSI",
            VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE,
            irq::MSI,
            0,
            1,
            vec![],
        ),
        (
            "UNMASK on REQ",
            VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_NONE,
            irq::REQ,
            0,
            1,
            vec![],
        ),
        (
            "two data types",
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL,
            irq::MSI,
            0,
            1,
            vec![1],
        ),
        (
            "two actions",
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE,
            irq::MSI,
            0,
            1,
            vec![],
        ),
        ("eventfd payload missing", trig_efd, irq::MSI, 0, 1, vec![]),
        (
            "bool payload missing",
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL,
            irq::MSI,
            0,
            1,
            vec![],
        ),
    ];
    for (what, flags, idx, start, count, data) in cases {
        expect_io_errno(
            dev.set_irqs_raw(flags, idx, start, count, &data),
            &[libc::EINVAL],
            what,
        )?;
    }
    // Nothing stuck: MSI still works after the bad requests.
    dev.set_irq_eventfds(irq::MSI, 0, &[e.as_raw_fd()])
        .ctx("set MSI")?;
    dev.trigger_irq(irq::MSI, 0, 1).ctx("trigger MSI")?;
    ensure!(fired(&e), "MSI after invalid requests");
    dev.disable_irq(irq::MSI).ctx("disable MSI")?;
    Ok(())
}
