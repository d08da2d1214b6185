//! `vgpuctl xml` and `define --from-xml`: golden documents, a round trip, and
//! libvirt's own validator (`virt-xml-validate`, Debian package libvirt-clients, which
//! scripts/setup installs).

use std::fs;
use std::path::Path;
use std::process::Command;

use vgpu_mdev_manager::fake::{FakeSysfs, SAMPLE_UUIDS};

mod common;
use common::golden;

const A: &str = "55555555-5555-4555-8555-555555555555";

fn vgpuctl(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run vgpuctl");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ok(root: &Path, args: &[&str]) -> String {
    let (code, out, err) = vgpuctl(root, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// Runs virt-xml-validate on `doc` as `kind`; `false` (with a message) if the tool is
/// not installed.
fn validate(doc: &str, kind: &str) -> bool {
    if Command::new("virt-xml-validate")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: virt-xml-validate not found (apt-get install libvirt-clients; scripts/setup \
             installs it)"
        );
        return false;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{kind}.xml"));
    fs::write(&file, doc).unwrap();
    let out = Command::new("virt-xml-validate")
        .arg(&file)
        .arg(kind)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virt-xml-validate {kind} rejected:\n{doc}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

#[test]
fn documents_match_golden_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let _fake = FakeSysfs::sample(dir.path()).unwrap();
    let root = dir.path();
    let running = SAMPLE_UUIDS[1].to_string();
    let live = ok(root, &["xml", &running]);
    golden("xml-instance.xml", &live);
    ok(
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
        ],
    );
    let defined = ok(root, &["xml", "-u", A]);
    golden("xml-definition.xml", &defined);
    let hostdev = ok(root, &["xml", A, "--hostdev"]);
    golden("xml-hostdev.xml", &hostdev);
    let domain = format!(
        "<domain type='kvm'>\n  <name>vm</name>\n  <memory>131072</memory>\n  <os>\n    \
         <type>hvm</type>\n  </os>\n  <devices>\n{hostdev}  </devices>\n</domain>\n"
    );
    if validate(&live, "nodedev") {
        validate(&defined, "nodedev");
        validate(&domain, "domain");
    }
}

#[test]
fn define_from_xml_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let _fake = FakeSysfs::sample(dir.path()).unwrap();
    let root = dir.path();
    ok(
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
            "40%",
            "--auto",
        ],
    );
    let doc = ok(root, &["xml", A]);
    let file = root.join("a.xml");
    fs::write(&file, &doc).unwrap();
    let before = fs::read_to_string(root.join("etc/mdevctl.d/vgpu_shim1").join(A)).unwrap();
    ok(root, &["undefine", A]);
    assert_eq!(
        ok(
            root,
            &["define", "--from-xml", file.to_str().unwrap(), "--auto"]
        ),
        format!("{A}\n")
    );
    let after = fs::read_to_string(root.join("etc/mdevctl.d/vgpu_shim1").join(A)).unwrap();
    assert_eq!(after, before);
    // A running instance's document defines it as it runs, under a new UUID if asked.
    let live = ok(root, &["xml", &SAMPLE_UUIDS[1].to_string()]);
    fs::write(
        &file,
        live.replace(
            &SAMPLE_UUIDS[1].to_string(),
            "77777777-7777-4777-8777-777777777777",
        ),
    )
    .unwrap();
    let r = vgpuctl(root, &["define", "--from-xml", file.to_str().unwrap()]);
    // vgpu_shim0 has 768 MiB left beside its running instances: a 1G does not fit.
    assert_eq!(r.0, 1, "{}", r.2);
    assert!(
        r.2.contains("needs 1024 MiB, 768 of its 2048 MiB pool are left"),
        "{}",
        r.2
    );
}

#[test]
fn bad_documents_are_named_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let _fake = FakeSysfs::sample(dir.path()).unwrap();
    let root = dir.path();
    let file = root.join("bad.xml");
    for (doc, why) in [
        ("<device><capability type='mdev'>", "not well-formed XML"),
        ("<device><capability type='mdev'><type id='vgpu_shim-9G'/></capability></device>", "unknown type"),
        ("<device><capability type='mdev'><type id='vgpu_shim-1G'/><attr name='vgpu/cap' value='x'/></capability></device>", "cap must be"),
    ] {
        fs::write(&file, doc).unwrap();
        let (code, out, err) = vgpuctl(root, &["define", "--from-xml", file.to_str().unwrap()]);
        assert_eq!((code, out.as_str()), (1, ""), "{doc}: {err}");
        assert!(err.contains(why), "{doc}: {err}");
    }
    let (code, _, err) = vgpuctl(root, &["define", "--from-xml", "/nonexistent.xml"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent.xml"), "{err}");
    assert!(
        !root.join("etc/mdevctl.d/vgpu_shim0").exists()
            && !root.join("etc/mdevctl.d/vgpu_shim1").exists()
    );
}
