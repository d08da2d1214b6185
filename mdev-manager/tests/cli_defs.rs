//! `vgpuctl define / undefine / start / stop / list --defined / modify --defined` as a
//! process, against a fake sysfs tree.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use vgpu_mdev_manager::fake::{FakeSysfs, SAMPLE_UUIDS};

mod common;
use common::golden;

const A: &str = "55555555-5555-4555-8555-555555555555";
const B: &str = "66666666-6666-4666-8666-666666666666";

fn vgpuctl(root: &Path, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run vgpuctl");
    (
        status.code().expect("exit code"),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn sample() -> (tempfile::TempDir, FakeSysfs) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSysfs::sample(dir.path()).unwrap();
    (dir, fake)
}

#[test]
fn define_list_modify_undefine() {
    let (dir, _fake) = sample();
    let root = dir.path();
    let r = vgpuctl(
        root,
        &[
            "define",
            "-u",
            A,
            "-p",
            "vgpu_shim1",
            "-t",
            "vgpu 512M",
            "--weight",
            "8",
            "--cap",
            "40%",
            "--auto",
        ],
    );
    assert_eq!(r, (0, format!("{A}\n"), String::new()));
    let r = vgpuctl(
        root,
        &[
            "define",
            "-u",
            A,
            "-p",
            "vgpu_shim1",
            "-t",
            "512m",
            "--weight",
            "8",
            "--cap",
            "40",
            "-a",
        ],
    );
    assert_eq!(
        r,
        (
            0,
            format!("{A}\n"),
            format!("vgpuctl: {A} is already defined on vgpu_shim1 as given\n")
        )
    );
    let capture = SAMPLE_UUIDS[1].to_string();
    assert_eq!(vgpuctl(root, &["define", &capture]).0, 0);
    let r = vgpuctl(
        root,
        &["define", "-t", "128M", "-u", B, "--placement", "pack"],
    );
    assert_eq!(r.0, 0, "{}", r.2);
    let (_, text, _) = vgpuctl(root, &["list", "--defined"]);
    golden("list-defined.txt", &text);
    let (_, json, _) = vgpuctl(root, &["list", "--defined", "--json"]);
    golden("list-defined.json", &json);

    assert_eq!(
        vgpuctl(
            root,
            &["modify", "-u", A, "--defined", "--manual", "--weight", "9"]
        )
        .0,
        0
    );
    let file = root.join("etc/mdevctl.d/vgpu_shim1").join(A);
    let text = fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("\"start\": \"manual\"") && text.contains("\"9\""),
        "{text}"
    );
    // --live on an instance that is not running: an error, and the definition unchanged.
    let r = vgpuctl(
        root,
        &["modify", A, "--defined", "--live", "--weight", "10"],
    );
    assert_eq!(r.0, 1);
    assert_eq!(r.2, format!("vgpuctl: error: no vgpu instance {A}\n"));
    assert_eq!(fs::read_to_string(&file).unwrap(), text);

    assert_eq!(
        vgpuctl(root, &["undefine", A]),
        (0, String::new(), String::new())
    );
    assert!(!file.exists());
    let r = vgpuctl(root, &["undefine", "-u", A]);
    assert_eq!(
        r,
        (
            0,
            String::new(),
            format!("vgpuctl: {A} is not defined; nothing to undefine\n")
        )
    );
    let r = vgpuctl(root, &["stop", A]);
    assert_eq!(
        r,
        (
            0,
            String::new(),
            format!("vgpuctl: {A} is not running; nothing to stop\n")
        )
    );
}

#[test]
fn bad_input_changes_nothing() {
    let (dir, _fake) = sample();
    let root = dir.path();
    for (args, code, msg) in [
        (
            &["define", "-u", "not-a-uuid", "-t", "1G"][..],
            2,
            "invalid value 'not-a-uuid'",
        ),
        (&["define", "-t", "3G"], 1, "unknown type `3G`"),
        (
            &["define", "-t", "1G", "-p", "vgpu_shim9"],
            1,
            "no vgpu parent named `vgpu_shim9`",
        ),
        (
            &["define", "-t", "1G", "--weight", "0"],
            2,
            "weight must be between 1 and 100, got 0",
        ),
        (
            &["define", "-t", "1G", "--cap", "150%"],
            2,
            "must be between 0 and 100, got 150",
        ),
        (
            &["define", "-t", "1G", "--placement", "fill"],
            2,
            "placement policy `fill` is unknown",
        ),
        (
            &["define", "-t", "4G"],
            1,
            "no parent has room for a 4G vGPU",
        ),
        (
            &["define", "-t", "1G", "--auto", "--manual"],
            2,
            "cannot be used with",
        ),
    ] {
        let r = vgpuctl(root, args);
        assert_eq!(r.0, code, "{args:?}: {}", r.2);
        assert!(r.2.contains(msg), "{args:?}: {}", r.2);
        assert_eq!(r.1, "", "{args:?}");
    }
    let base = root.join("etc/mdevctl.d");
    let left: Vec<_> = fs::read_dir(&base)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // A malformed definition: named, and nothing started.
    fs::create_dir_all(base.join("vgpu_shim0")).unwrap();
    fs::write(
        base.join("vgpu_shim0").join(A),
        "{\"mdev_type\": \"vgpu_shim-1G\"",
    )
    .unwrap();
    let r = vgpuctl(root, &["start", A]);
    assert_eq!(r.0, 1);
    assert!(
        r.2.starts_with("vgpuctl: error: bad definition ") && r.2.contains("not valid JSON"),
        "{}",
        r.2
    );
}

#[test]
fn concurrent_defines_all_land_whole() {
    let (dir, _fake) = sample();
    let root = dir.path().to_path_buf();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let uuid = format!("77777777-7777-4777-8777-{i:012}");
            let child = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
                .arg("--root")
                .arg(&root)
                .args([
                    "define", "-u", &uuid, "-t", "128M", "--weight", "3", "--auto",
                ])
                .output();
            (uuid, child)
        })
        .collect();
    let lock = root.join("run/lock/vgpuctl.lock");
    assert!(lock.exists());
    let mut parents = Vec::new();
    for (uuid, out) in children {
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let defs = fs::read_dir(root.join("etc/mdevctl.d")).unwrap();
        let found: Vec<_> = defs
            .filter_map(|d| {
                let p = d.unwrap().path().join(&uuid);
                p.exists().then_some(p)
            })
            .collect();
        assert_eq!(found.len(), 1, "{uuid}");
        let text = fs::read_to_string(&found[0]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["attrs"][0]["vgpu/weight"], "3");
        parents.push(found[0].parent().unwrap().file_name().unwrap().to_owned());
    }
    // spread placement alternates as the definitions fill the pools.
    assert!(parents.iter().any(|p| p == "vgpu_shim0") && parents.iter().any(|p| p == "vgpu_shim1"));
}
