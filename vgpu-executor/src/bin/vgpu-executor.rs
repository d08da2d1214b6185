//! `vgpu-executor`: the host daemon that runs the pieces of validated engine commands
//! the kernel hands it in external mode on a Vulkan device (docs/executor.md): `--serve
//! /dev/vgpu-exec/<parent>`; also lists and selects devices and checks the chosen one
//! against the reference (`--self-test`).

use std::process::ExitCode;

use log::{error, info};
use vgpu_engine_abi::reference;
use vgpu_engine_abi::Cmd;
use vgpu_executor::{list_devices, logger, DeviceSelector, Executor};

const USAGE: &str = "usage: vgpu-executor --list-devices
       vgpu-executor [--device NAME|INDEX|UUID] --self-test
       vgpu-executor --serve /dev/vgpu-exec/PARENT [--device SEL] [--metrics-file F]
                     [--batch N]
  --list-devices   index, name, UUID and type of every Vulkan device
  --device SEL     the device: an index, a UUID, or (part of) a name (default: the
                   first GPU with a compute queue, else the first device)
  --self-test      run one of each command on the device and compare with the reference
  --serve DEV      run the pieces the kernel hands through DEV until SIGTERM/SIGINT
  --metrics-file F write the counters there (Prometheus text), every second or so
  --batch N        at most N pieces per GPU submission (1..=64, default 1: the
                   kernel charges each piece handoff -> completion, so a batch
                   charges every piece of it the whole batch's time)
  VGPU_LOG=debug   more logging (error, warn, info, debug, trace)";

fn self_test(ex: &Executor) -> Result<(), String> {
    let len = 1 << 20;
    let mut vram = ex.alloc_vram(len).map_err(|e| e.to_string())?;
    info!(
        "VRAM: {} KiB, {}",
        len >> 10,
        if vram.imported() {
            "host memory imported with VK_EXT_external_memory_host"
        } else {
            "mapped device memory (no VK_EXT_external_memory_host)"
        }
    );
    let mut seed = 0x1234_5678_9abc_def0u64;
    for b in vram.bytes_mut() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *b = (seed >> 56) as u8;
    }
    let mut image = vram.bytes().to_vec();
    let mode = reference::ScanoutMode {
        xres: 64,
        yres: 32,
        bytes_pp: 3,
        stride: 200,
        start: 512 << 10,
    };
    let cmds = [
        Cmd::Fill {
            dst: 4096,
            len: 8192,
            value: 0x1234_5678,
        },
        Cmd::Copy {
            dst: 3,
            src: 0,
            len: 10_000,
        },
        Cmd::Checksum {
            src: 0,
            len: 65_536 * 4,
            dst: 8,
        },
        Cmd::Gemm {
            a: 0,
            b: 40_000,
            c: 200_000,
            m: 33,
            n: 47,
            k: 29,
        },
        Cmd::Gemm {
            a: 0,
            b: 4096,
            c: 64,
            m: 5,
            n: 5,
            k: 5,
        },
        Cmd::Blit {
            src: 510 << 10,
            src_stride: 100,
            width: 50,
            height: 30,
            dst_x: 3,
            dst_y: 2,
        },
        Cmd::Fence {
            seqno: 42,
            addr: 16,
            irq: false,
            write: true,
        },
    ];
    let raw: Vec<_> = cmds.iter().map(Cmd::raw).collect();
    for c in &raw {
        reference::apply(&mut image, c, Some(&mode))
            .ok_or("reference refused a self-test command")?;
    }
    ex.execute(&mut vram, &raw, Some(mode))
        .map_err(|e| e.to_string())?;
    match vram.bytes().iter().zip(&image).position(|(a, b)| a != b) {
        None => {
            info!(
                "self-test: {} commands bit-identical to the reference",
                raw.len()
            );
            Ok(())
        }
        Some(off) => Err(format!(
            "self-test: GPU and reference differ at VRAM offset {off:#x}"
        )),
    }
}

fn main() -> ExitCode {
    logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sel = DeviceSelector::Default;
    let (mut list, mut test) = (false, false);
    let (mut serve, mut metrics, mut batch) = (None, None, 1usize);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list-devices" => list = true,
            "--self-test" => test = true,
            "--serve" | "--metrics-file" | "--batch" => {
                let Some(v) = it.next() else {
                    eprintln!("{a} needs a value\n{USAGE}");
                    return ExitCode::from(2);
                };
                match a.as_str() {
                    "--serve" => serve = Some(v.clone()),
                    "--metrics-file" => metrics = Some(std::path::PathBuf::from(v)),
                    _ => match v.parse::<usize>() {
                        Ok(n) if (1..=vgpu_executor::MAX_BATCH).contains(&n) => batch = n,
                        _ => {
                            eprintln!("--batch takes 1..=64, not {v:?}\n{USAGE}");
                            return ExitCode::from(2);
                        }
                    },
                }
            }
            "--device" => match it.next() {
                Some(v) => sel = DeviceSelector::parse(v),
                None => {
                    eprintln!("--device needs a value\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("unknown argument {a:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if list {
        return match list_devices() {
            Ok(devs) => {
                println!("index\tname\tuuid\ttype");
                for d in devs {
                    println!("{d}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(path) = serve {
        return match vgpu_executor::daemon::device::serve(&path, &sel, metrics.as_deref(), batch) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if !test {
        eprintln!("nothing to do\n{USAGE}");
        return ExitCode::from(2);
    }
    let ex = match Executor::new(&sel) {
        Ok(ex) => ex,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match self_test(&ex) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
