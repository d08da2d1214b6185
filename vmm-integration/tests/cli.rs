//! The binary's behaviour on bad input, without KVM: clear messages and the documented
//! exit statuses (2 for arguments, 1 for a VMM failure). Booting is tested in the rig
//! (tests/rig/vmm.sh), where nested KVM can run Linux.

use std::process::Command;

fn vmm(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vgpu-vmm"))
        .args(args)
        .output()
        .expect("run vgpu-vmm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_kernel_flag() {
    let (rc, err) = vmm(&[]);
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("--kernel"), "{err}");
}

#[test]
fn missing_kernel_file() {
    let (rc, err) = vmm(&["--kernel", "/nonexistent/vmlinux"]);
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("--kernel /nonexistent/vmlinux"), "{err}");
}

#[test]
fn bad_numbers() {
    let me = env!("CARGO_BIN_EXE_vgpu-vmm");
    for (flag, v) in [("--vcpus", "0"), ("--vcpus", "300"), ("--memory", "8")] {
        let (rc, err) = vmm(&["--kernel", me, flag, v]);
        assert_eq!(rc, 2, "{flag} {v}: {err}");
        assert!(err.contains(flag), "{flag} {v}: {err}");
    }
}

#[test]
fn missing_kvm_device_is_a_vmm_error() {
    let me = env!("CARGO_BIN_EXE_vgpu-vmm");
    let (rc, err) = vmm(&["--kernel", me, "--kvm", "/nonexistent/kvm"]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("/nonexistent/kvm"), "{err}");
}

#[test]
fn help_exits_zero() {
    let (rc, _) = vmm(&["--help"]);
    assert_eq!(rc, 0);
}

#[test]
fn vgpu_that_is_not_an_mdev() {
    let me = env!("CARGO_BIN_EXE_vgpu-vmm");
    let (rc, err) = vmm(&["--kernel", me, "--vgpu", "/nonexistent/uuid"]);
    assert_eq!(rc, 2, "{err}");
    assert!(
        err.contains("--vgpu /nonexistent/uuid: not a mediated device"),
        "{err}"
    );
}

/// `--domain-xml`: malformed documents, wrong units and unknown elements exit 2 with an
/// error naming the problem; a good one gets as far as KVM (status 1 without it).
#[test]
fn domain_xml_bad_input() {
    let me = env!("CARGO_BIN_EXE_vgpu-vmm");
    let dir = std::env::temp_dir().join(format!("vgpu-vmm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = format!(
        "<domain type='kvm'><name>t</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type>hvm</type><kernel>{me}</kernel></os></domain>"
    );
    for (name, body, want) in [
        (
            "malformed",
            "<domain type='kvm'><name>t</domain>",
            "not well-formed",
        ),
        (
            "unit",
            "<domain type='kvm'><memory unit='furlongs'>1</memory></domain>",
            "unit='furlongs'",
        ),
        (
            "element",
            "<domain type='kvm'><devices><disk type='file'/></devices></domain>",
            "unsupported element <domain/devices/disk>",
        ),
    ] {
        let p = dir.join(format!("{name}.xml"));
        std::fs::write(&p, body).expect("write");
        let (rc, err) = vmm(&["--domain-xml", p.to_str().expect("utf-8"), "--kernel", me]);
        assert_eq!(rc, 2, "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
    }
    let p = dir.join("good.xml");
    std::fs::write(&p, good).expect("write");
    let (rc, err) = vmm(&[
        "--domain-xml",
        p.to_str().expect("utf-8"),
        "--kvm",
        "/nonexistent/kvm",
    ]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("/nonexistent/kvm"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
