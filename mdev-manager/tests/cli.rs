//! Runs the `vgpuctl` binary against a fake sysfs tree (`--root`).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use uuid::Uuid;
use vgpu_mdev_manager::fake::{FakeSysfs, SAMPLE_UUIDS};

const ABSENT: &str = "44444444-4444-4444-8444-444444444444";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn vgpuctl(root: &Path, args: &[&str]) -> Run {
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
    Run {
        code: status.code().expect("exit code"),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

fn sample() -> (tempfile::TempDir, FakeSysfs) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSysfs::sample(dir.path()).unwrap();
    (dir, fake)
}

fn golden(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ok(root: &Path, args: &[&str]) -> String {
    let r = vgpuctl(root, args);
    assert_eq!(r.code, 0, "{args:?} failed: {}", r.stderr);
    assert_eq!(r.stderr, "", "{args:?}");
    r.stdout
}

/// Runs a command that must fail with `code` and print one `vgpuctl: error:` line.
fn fails(root: &Path, args: &[&str], code: i32) -> String {
    let r = vgpuctl(root, args);
    assert_eq!(
        r.code, code,
        "{args:?}: stdout {:?} stderr {:?}",
        r.stdout, r.stderr
    );
    assert_eq!(r.stdout, "", "{args:?}");
    r.stderr
}

#[test]
fn listings_match_golden_outputs() {
    let (dir, _fake) = sample();
    let root = dir.path();
    for (args, file) in [
        (&["parents"][..], "parents.txt"),
        (&["parents", "--json"], "parents.json"),
        (&["types"], "types.txt"),
        (&["--json", "types"], "types.json"),
        (&["types", "--parent", "vgpu_shim1"], "types-vgpu_shim1.txt"),
        (&["list"], "list.txt"),
        (&["list", "--json"], "list.json"),
        (&["pool", "vgpu_shim0"], "pool.txt"),
        (&["pool", "vgpu_shim0", "--json"], "pool.json"),
    ] {
        assert_eq!(ok(root, args), golden(file), "vgpuctl {args:?}");
    }
}

#[test]
fn json_is_parseable() {
    let (dir, _fake) = sample();
    let v: serde_json::Value = serde_json::from_str(&ok(dir.path(), &["list", "--json"])).unwrap();
    assert_eq!(v[1]["weight"], 50);
    assert_eq!(v[1]["type"], "vgpu_shim-1G");
}

#[test]
fn empty_system() {
    let dir = tempfile::tempdir().unwrap();
    let note = "vgpuctl: no vgpu_shim parent found: the vgpu_shim module is not loaded \
                (modprobe vgpu_shim; see docs/operator-guide.md)\n";
    for (args, out) in [
        (
            &["list"][..],
            "UUID  PARENT  TYPE  VRAM_MB  USED_KB  WEIGHT  CAP\n",
        ),
        (&["parents", "--json"], "[]\n"),
        (
            &["types"],
            "PARENT  TYPE  NAME  VRAM_MB  WEIGHT  AVAILABLE  MAX  API\n",
        ),
    ] {
        let r = vgpuctl(dir.path(), args);
        assert_eq!(
            (r.code, r.stdout.as_str(), r.stderr.as_str()),
            (0, out, note),
            "{args:?}"
        );
    }
}

#[test]
fn create_prints_the_uuid() {
    let (dir, fake) = sample();
    let out = ok(
        dir.path(),
        &[
            "create",
            "--parent",
            "vgpu_shim1",
            "--type",
            "vgpu_shim-1G",
            "--uuid",
            ABSENT,
        ],
    );
    assert_eq!(out, format!("{ABSENT}\n"));
    let create = fake.type_dir("vgpu_shim1", "vgpu_shim-1G").join("create");
    assert_eq!(fs::read_to_string(create).unwrap(), ABSENT);

    let out = ok(
        dir.path(),
        &["create", "--parent", "vgpu_shim1", "--type", "128M"],
    );
    let uuid = Uuid::parse_str(out.trim_end()).unwrap();
    assert_eq!(uuid.get_version_num(), 4);

    let out = ok(
        dir.path(),
        &[
            "--json",
            "create",
            "--parent",
            "vgpu_shim1",
            "--type",
            "128M",
            "--uuid",
            ABSENT,
        ],
    );
    assert_eq!(out, format!("{{\n  \"uuid\": \"{ABSENT}\"\n}}\n"));
}

#[test]
fn create_errors() {
    let (dir, fake) = sample();
    let root = dir.path();
    assert_eq!(
        fails(
            root,
            &["create", "--parent", "vgpu_shim7", "--type", "1G"],
            1
        ),
        "vgpuctl: error: no vgpu parent named `vgpu_shim7` (known: vgpu_shim0, vgpu_shim1)\n"
    );
    assert_eq!(
        fails(
            root,
            &["create", "--parent", "vgpu_shim0", "--type", "1G"],
            1
        ),
        "vgpuctl: error: no vgpu_shim-1G instance available on vgpu_shim0: pool of vgpu_shim0 \
         has 768 MiB free, type needs 1024 MiB\n"
    );
    let taken = SAMPLE_UUIDS[0].to_string();
    assert_eq!(
        fails(
            root,
            &[
                "create",
                "--parent",
                "vgpu_shim0",
                "--type",
                "128M",
                "--uuid",
                &taken
            ],
            1
        ),
        format!("vgpuctl: error: an mdev device {taken} already exists\n")
    );
    let create = fake.type_dir("vgpu_shim0", "vgpu_shim-1G").join("create");
    assert_eq!(fs::read_to_string(create).unwrap(), "");
}

#[test]
fn remove_and_modify() {
    let (dir, fake) = sample();
    let root = dir.path();
    let uuid = SAMPLE_UUIDS[0].to_string();
    assert_eq!(
        ok(root, &["modify", &uuid, "--weight", "7", "--cap", "30"]),
        ""
    );
    let vgpu = fake
        .instance_dir("vgpu_shim0", SAMPLE_UUIDS[0])
        .join("vgpu");
    assert_eq!(fs::read_to_string(vgpu.join("weight")).unwrap(), "7");
    assert_eq!(fs::read_to_string(vgpu.join("cap")).unwrap(), "30");
    let json: serde_json::Value =
        serde_json::from_str(&ok(root, &["modify", &uuid, "--cap", "0", "--json"])).unwrap();
    assert_eq!(
        (json["weight"].as_u64(), json["cap"].as_u64()),
        (Some(7), Some(0))
    );

    assert!(fails(root, &["modify", &uuid, "--weight", "0"], 2)
        .contains("weight must be between 1 and 100, got 0"));
    assert!(fails(root, &["modify", &uuid, "--weight", "-1"], 2)
        .contains("weight must be between 1 and 100, got -1"));
    assert!(fails(root, &["modify", &uuid, "--cap", "101%"], 2)
        .contains("must be between 0 and 100, got 101"));
    ok(root, &["modify", "-u", &uuid, "--cap", "50%"]);
    assert_eq!(fs::read_to_string(vgpu.join("cap")).unwrap(), "50");
    assert_eq!(
        fails(root, &["modify", ABSENT, "--cap", "1"], 1),
        format!("vgpuctl: error: no vgpu instance {ABSENT}\n")
    );

    assert_eq!(ok(root, &["remove", &uuid]), "");
    let remove = fake
        .instance_dir("vgpu_shim0", SAMPLE_UUIDS[0])
        .join("remove");
    assert_eq!(fs::read_to_string(remove).unwrap(), "1");
    let foreign = SAMPLE_UUIDS[2].to_string();
    assert_eq!(
        fails(root, &["remove", &foreign], 1),
        format!("vgpuctl: error: no vgpu instance {foreign}\n")
    );
}

#[test]
fn pool_resize() {
    let (dir, fake) = sample();
    let root = dir.path();
    ok(root, &["pool", "vgpu_shim1", "--set-mb", "2048"]);
    let pool_mb = fake.parent_dir("vgpu_shim1").join("vgpu/pool_mb");
    assert_eq!(fs::read_to_string(pool_mb).unwrap(), "2048");
    assert_eq!(
        fails(root, &["pool", "vgpu_shim0", "--set-mb", "1024"], 1),
        "vgpuctl: error: cannot set pool of vgpu_shim0 to 1024 MiB: instances reserve 1280 MiB\n"
    );
    assert_eq!(
        fails(root, &["pool", "vgpu_shim0", "--set-mb", "10"], 1),
        "vgpuctl: error: pool_mb must be between 64 and 1048576, got 10\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    let (dir, _fake) = sample();
    let root = dir.path();
    for args in [
        &[][..],
        &["frobnicate"],
        &["remove"],
        &["remove", "not-a-uuid"],
        &["modify", ABSENT],
        &["modify", ABSENT, "--weight", "heavy"],
        &["modify", ABSENT, "--cap", "-1"],
        &["create", "--parent", "vgpu_shim0"],
        &["remove", ABSENT, "--uuid", ABSENT],
        &[
            "create",
            "--parent",
            "vgpu_shim0",
            "--type",
            "1G",
            "--uuid",
            "1234",
        ],
        &["pool"],
        &["pool", "vgpu_shim0", "--set-mb", "1X"],
        &["list", "--bogus"],
    ] {
        let r = vgpuctl(root, args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.starts_with("error: "), "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, "");
    }
}

#[test]
fn help_hides_root_and_verbose_logs() {
    let (dir, _fake) = sample();
    let help = ok(dir.path(), &["--help"]);
    for cmd in [
        "parents", "types", "list", "create", "remove", "modify", "pool", "--json",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from help");
    }
    assert!(!help.contains("--root"));
    let r = vgpuctl(dir.path(), &["-v", "remove", &SAMPLE_UUIDS[1].to_string()]);
    assert_eq!(r.code, 0);
    assert!(
        r.stderr.contains("vgpuctl: debug: writing 1 to "),
        "{}",
        r.stderr
    );
}
