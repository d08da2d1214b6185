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
    if common::executor().is_some() {
        let o = run(&["--device", "no-such-device-anywhere", "--self-test"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("no Vulkan device"), "{}", text(&o));
        // A device node that does not exist: a clear error (after the warm-up).
        let o = run(&["--serve", "/dev/vgpu-exec/no-such-parent"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("no such device"), "{}", text(&o));
        assert!(text(&o).contains("warm-up: every shader"), "{}", text(&o));
    }
}

/// `--serve` end to end on a stand-in for the device node (a regular file with a queue
/// header: mmap works, poll always says readable): a wrong header is a clear error;
/// with a good one it serves, writes its metrics file, and SIGTERM makes it exit 0 with
/// its counters in the log.
#[test]
fn serve_checks_the_header_and_stops_on_sigterm() {
    use vgpu_engine_abi::exec::{self, hdr};
    if common::executor().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vgpu-executor-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let queue = dir.join("vgpu_shim9");
    let mut h = vec![0u8; exec::QUEUE_BYTES];
    for (_, off, v) in exec::HEADER {
        h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    let q = queue.to_str().expect("utf-8 path");
    let mut bad = h.clone();
    bad[hdr::VERSION] = 2;
    std::fs::write(&queue, &bad).expect("write");
    let o = run(&["--serve", q]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("version is 0x2"), "{}", text(&o));

    std::fs::write(&queue, &h).expect("write");
    let metrics = dir.join("m.prom");
    let child = Command::new(env!("CARGO_BIN_EXE_vgpu-executor"))
        .args(["--serve", q, "--metrics-file"])
        .arg(&metrics)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Serving once the metrics file is there (Vulkan starts first: allow a slow host).
    let t = std::time::Instant::now();
    while !metrics.exists() && t.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("exiting: pieces 0"), "{}", text(&o));
    let m = std::fs::read_to_string(&metrics).expect("metrics file");
    assert!(
        m.contains("vgpu_executor_pieces_total{parent=\"vgpu_shim9\",opcode=\"fill\"} 0"),
        "{m}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
