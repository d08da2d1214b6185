//! Side by side with Debian's mdevctl 1.2.0 on definitions: each lists what the other
//! defined, and mdevctl rewriting a vgpuctl definition leaves it byte for byte the
//! same. mdevctl has no root option, so it runs in a private mount namespace with the
//! test's /etc/mdevctl.d bind-mounted over the real one (needs root and `unshare`;
//! skipped with a message otherwise). Starting each other's definitions needs the real
//! kernel: tests/rig/guest/vgpuctl-suite.

use std::fs;
use std::path::Path;
use std::process::Command;

use vgpu_mdev_manager::fake::FakeSysfs;

const A: &str = "55555555-5555-4555-8555-555555555555";
const B: &str = "66666666-6666-4666-8666-666666666666";

fn vgpuctl(root: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs mdevctl with `root`/etc/mdevctl.d as /etc/mdevctl.d; `None` if that is not
/// possible here.
fn mdevctl(root: &Path, args: &str) -> Option<String> {
    let store = root.join("etc/mdevctl.d");
    let script = format!(
        "mount --bind '{}' /etc/mdevctl.d && exec mdevctl {args}",
        store.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("mount") || err.contains("unshare") || err.contains("not found") {
            return None;
        }
        panic!("mdevctl {args}: {err}");
    }
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn definitions_interoperate_with_mdevctl() {
    if !Path::new("/usr/bin/mdevctl").exists() || !Path::new("/etc/mdevctl.d").is_dir() {
        eprintln!(
            "SKIPPED: mdevctl not installed (apt-get install mdevctl; scripts/setup installs it)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _fake = FakeSysfs::sample(root).unwrap();
    // mdevctl checks that its callout directories exist (its package makes them).
    fs::create_dir_all(root.join("etc/mdevctl.d/scripts.d/callouts")).unwrap();
    fs::create_dir_all(root.join("etc/mdevctl.d/scripts.d/notifiers")).unwrap();

    vgpuctl(
        root,
        &[
            "define",
            "-u",
            A,
            "-p",
            "vgpu_shim1",
            "-t",
            "512M",
            "--weight",
            "8",
            "--cap",
            "40",
            "--auto",
        ],
    );
    let Some(listed) = mdevctl(root, "list --defined --dumpjson") else {
        eprintln!(
            "SKIPPED: cannot run mdevctl in a private mount namespace (needs root and unshare)"
        );
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{ "vgpu_shim1": [{ A: {
            "mdev_type": "vgpu_shim-512M",
            "start": "auto",
            "attrs": [{ "vgpu/weight": "8" }, { "vgpu/cap": "40" }]
        }}]}])
    );
    // mdevctl rewriting the file (a no-op modify) produces the same bytes.
    let file = root.join("etc/mdevctl.d/vgpu_shim1").join(A);
    let ours = fs::read(&file).unwrap();
    mdevctl(root, &format!("modify -u {A} --auto")).unwrap();
    assert_eq!(
        fs::read(&file).unwrap(),
        ours,
        "mdevctl rewrote vgpuctl's file differently"
    );

    // What mdevctl defines, vgpuctl lists with its knobs.
    mdevctl(
        root,
        &format!("define -u {B} -p vgpu_shim0 -t vgpu_shim-128M --auto"),
    )
    .unwrap();
    mdevctl(
        root,
        &format!("modify -u {B} --addattr vgpu/weight --value 5"),
    )
    .unwrap();
    mdevctl(
        root,
        &format!("modify -u {B} --addattr vgpu/cap --value 10"),
    )
    .unwrap();
    let rows: serde_json::Value =
        serde_json::from_str(&vgpuctl(root, &["list", "--defined", "-u", B, "--json"])).unwrap();
    assert_eq!(rows[0]["parent"], "vgpu_shim0");
    assert_eq!(rows[0]["type"], "vgpu_shim-128M");
    assert_eq!(rows[0]["start"], "auto");
    assert_eq!(
        (rows[0]["weight"].as_u64(), rows[0]["cap"].as_u64()),
        (Some(5), Some(10))
    );
    // And undefining through either tool is seen by the other.
    vgpuctl(root, &["undefine", B]);
    let listed = mdevctl(root, "list --defined").unwrap();
    assert!(!listed.contains(B) && listed.contains(A), "{listed}");
}
