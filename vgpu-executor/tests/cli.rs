//! The `vgpu-executor` binary: --list-devices, --device by index, name and UUID,
//! --self-test, and clear errors for bad arguments.

mod common;

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgpu-executor"))
        .args(args)
        .output()
        .expect("run vgpu-executor")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn list_select_and_self_test() {
    let Some(ex) = common::executor() else { return };
    let info = ex.info().clone();
    drop(ex);
    let o = run(&["--list-devices"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = format!(
        "{}\t{}\t{}\t{}",
        info.index,
        info.name,
        info.uuid_string(),
        info.kind_name()
    );
    assert!(
        out.lines().any(|l| l.starts_with(&line)),
        "{line:?} not in\n{out}"
    );
    let idx = info.index.to_string();
    let uuid = info.uuid_string();
    let name: String = info.name.chars().take(5).collect();
    for sel in [idx.as_str(), uuid.as_str(), name.as_str()] {
        let o = run(&["--device", sel, "--self-test"]);
        assert!(o.status.success(), "--device {sel}: {}", text(&o));
        assert!(
            text(&o).contains("bit-identical to the reference"),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn bad_arguments() {
    let o = run(&["--bogus"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown argument"));
    let o = run(&["--device"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    for bad in [&["--batch", "0"][..], &["--batch", "65"], &["--serve"]] {
        let o = run(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", text(&o));
    }
    // A device node that does not exist: a clear error before any Vulkan work.
    let o = run(&["--serve", "/dev/vgpu-exec/no-such-parent"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no such device"), "{}", text(&o));
    if common::executor().is_some() {
        let o = run(&["--device", "no-such-device-anywhere", "--self-test"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("no Vulkan device"), "{}", text(&o));
    }
}
