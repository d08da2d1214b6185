//! `vgpuctl apply` as a process on a fake tree (which does not act on writes, so only
//! what needs no kernel: dry runs, bad manifests, standard input, refusals).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use vgpu_mdev_manager::fake::FakeSysfs;

const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";

fn vgpuctl(root: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vgpuctl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn dry_run_from_stdin_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    FakeSysfs::sample(root).unwrap();
    let m = format!(r#"{{"vgpus": [{{"uuid": "{A}", "type": "1G", "start": "auto"}}]}}"#);
    let (code, out, err) = vgpuctl(root, &["apply", "--dry-run", "-"], &m);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "UUID                                  PARENT      TYPE          DEFINITION  \
             INSTANCE\n{A}  vgpu_shim1  vgpu_shim-1G  defined     started\n"
        )
    );
    assert_eq!(
        err,
        "vgpuctl: dry run, nothing written: 1 vGPUs: 1 defined, 1 started, 0 changed, 0 as \
         the manifest says already\n"
    );
    assert!(!root.join("etc/mdevctl.d/vgpu_shim1").exists());

    let file = root.join("m.json");
    std::fs::write(&file, r#"{"vgpus": [{"uuid": "x"}]}"#).unwrap();
    let (code, out, err) = vgpuctl(root, &["apply", file.to_str().unwrap()], "");
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.starts_with(&format!(
            "vgpuctl: error: {}: vgpus[0]: `uuid` `x`: invalid",
            file.display()
        )),
        "{err}"
    );
    let (code, _, err) = vgpuctl(root, &["apply", "/nonexistent.json"], "");
    assert_eq!(code, 1);
    assert!(
        err.starts_with("vgpuctl: error: cannot read /nonexistent.json:"),
        "{err}"
    );
    let two = format!(r#"{{"vgpus": [{{"uuid": "{A}", "type": "2G", "parent": "vgpu_shim1"}}]}}"#);
    let (code, _, err) = vgpuctl(root, &["apply", "-"], &two);
    assert_eq!(code, 1);
    assert!(
        err.contains("nothing applied: 1 of 1 vGPUs cannot be"),
        "{err}"
    );
}
