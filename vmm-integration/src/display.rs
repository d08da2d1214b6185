//! `--display-png FILE[,SECONDS]`: the guest's current frame as a PNG, for cloud desktops
//! and for tests that check what a guest drew. The frame comes from the vGPU's display
//! plane: `VFIO_DEVICE_QUERY_GFX_PLANE` for a region plane (vgpu_shim copies the scanout
//! into its display region at query time) and a read of that region, through vgpu-vfio.
//! The PNG is 8-bit RGB, written to `FILE.tmp` and renamed over FILE, so a reader never
//! sees half a picture. With SECONDS, a thread writes it at that interval; in any case it
//! is written once more when the VM ends. While the display is off (no mode set) nothing
//! is written.
//!
//! Encoded with the `png` crate (pure Rust, the image-rs project's encoder, no C).

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vgpu_vfio::abi::drm;
use vgpu_vfio::Device;

use crate::vgpu::Vgpu;

/// What `--display-png` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayPng {
    /// The PNG file.
    pub path: PathBuf,
    /// How often to write it while the VM runs; `None`: only at the end.
    pub interval: Option<Duration>,
}

/// Shortest interval: the copy is a snapshot of up to 16 MiB.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Parses `FILE[,SECONDS]` (SECONDS a positive decimal, at least 0.1).
pub fn parse_arg(s: &str) -> Result<DisplayPng, String> {
    let (file, interval) = match s.rsplit_once(',') {
        Some((f, secs)) => {
            let v: f64 = secs
                .parse()
                .map_err(|_| format!("--display-png {s}: '{secs}' is not a number of seconds"))?;
            let d = Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| *d >= MIN_INTERVAL)
                .ok_or_else(|| format!("--display-png {s}: the interval must be at least 0.1 s"))?;
            (f, Some(d))
        }
        None => (s, None),
    };
    if file.is_empty() {
        return Err(format!("--display-png {s}: no file"));
    }
    Ok(DisplayPng {
        path: PathBuf::from(file),
        interval,
    })
}

/// A frame in 8-bit RGB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Pixels per line.
    pub width: u32,
    /// Lines.
    pub height: u32,
    /// `width * height * 3` bytes, R, G, B.
    pub rgb: Vec<u8>,
}

/// Converts a scanout of DRM `format` (RGB565, RGB888, XRGB8888, little-endian as DRM
/// defines them) to RGB; `None` for another format or a buffer too short.
pub fn to_rgb(format: u32, width: u32, height: u32, stride: u32, buf: &[u8]) -> Option<Frame> {
    let bpp = match format {
        drm::FORMAT_RGB565 => 2,
        drm::FORMAT_RGB888 => 3,
        drm::FORMAT_XRGB8888 => 4,
        _ => return None,
    };
    let (w, h, stride) = (width as usize, height as usize, stride as usize);
    if w == 0 || h == 0 || stride < w * bpp || buf.len() < stride * (h - 1) + w * bpp {
        return None;
    }
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let line = &buf[y * stride..y * stride + w * bpp];
        for px in line.chunks_exact(bpp) {
            match bpp {
                2 => {
                    let v = u16::from_le_bytes([px[0], px[1]]);
                    let (r, g, b) = ((v >> 11) & 0x1f, (v >> 5) & 0x3f, v & 0x1f);
                    // Scale to 8 bits so that full intensity stays 255.
                    rgb.push(((r << 3) | (r >> 2)) as u8);
                    rgb.push(((g << 2) | (g >> 4)) as u8);
                    rgb.push(((b << 3) | (b >> 2)) as u8);
                }
                // RGB888 and XRGB8888: B, G, R[, X] in memory.
                _ => rgb.extend_from_slice(&[px[2], px[1], px[0]]),
            }
        }
    }
    Some(Frame { width, height, rgb })
}

/// The primary plane's current frame, `Ok(None)` while the display is off.
pub fn capture(dev: &Device) -> Result<Option<Frame>, String> {
    let p = dev
        .query_gfx_plane(drm::PLANE_TYPE_PRIMARY)
        .map_err(|e| e.to_string())?;
    if p.drm_format == 0 || p.size == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; p.size as usize];
    dev.read_region(p.region_index, 0, &mut buf)
        .map_err(|e| e.to_string())?;
    to_rgb(p.drm_format, p.width, p.height, p.stride, &buf)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "plane {:#x} {}x{} stride {} size {}: not a frame vgpu-vmm can read",
                p.drm_format, p.width, p.height, p.stride, p.size
            )
        })
}

/// Encodes `f` as a PNG into `out`.
pub fn encode(f: &Frame, out: impl std::io::Write) -> Result<(), String> {
    let mut enc = png::Encoder::new(out, f.width, f.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| e.to_string())?;
    w.write_image_data(&f.rgb).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())
}

/// Writes `f` to `path` through `path.tmp` and a rename.
pub fn write_png(f: &Frame, path: &Path) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    encode(f, BufWriter::new(file)).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Captures and writes one frame; `Ok(false)` while the display is off.
pub fn snapshot(dev: &Device, path: &Path) -> Result<bool, String> {
    match capture(dev)? {
        Some(f) => write_png(&f, path).map(|()| true),
        None => Ok(false),
    }
}

/// The writer of one VM: a thread for the interval, the last frame at [`Writer::finish`].
pub struct Writer {
    cfg: DisplayPng,
    vgpu: Arc<Vgpu>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts writing `cfg.path` every `cfg.interval` (if any).
    pub fn start(cfg: DisplayPng, vgpu: Arc<Vgpu>) -> Writer {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = cfg.interval.and_then(|every| {
            let (v, s, path) = (vgpu.clone(), stop.clone(), cfg.path.clone());
            std::thread::Builder::new()
                .name("display".into())
                .spawn(move || loop {
                    let (lock, cv) = &*s;
                    let g = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (g, _) = cv
                        .wait_timeout_while(g, every, |stop| !*stop)
                        .unwrap_or_else(|p| p.into_inner());
                    if *g {
                        return;
                    }
                    drop(g);
                    if let Err(e) = snapshot(v.device(), &path) {
                        log::warn!("--display-png {}: {e}", path.display());
                    }
                })
                .map_err(|e| log::warn!("--display-png: no writer thread: {e}"))
                .ok()
        });
        Writer {
            cfg,
            vgpu,
            stop,
            thread,
        }
    }

    /// Stops the thread and writes the last frame (the VM has ended, the device is still
    /// open). Returns whether a frame was written.
    pub fn finish(mut self) -> Result<bool, String> {
        {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        snapshot(self.vgpu.device(), &self.cfg.path)
            .map_err(|e| format!("--display-png {}: {e}", self.cfg.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg() {
        assert_eq!(
            parse_arg("/tmp/f.png").expect("plain"),
            DisplayPng {
                path: "/tmp/f.png".into(),
                interval: None
            }
        );
        assert_eq!(
            parse_arg("/tmp/f.png,0.5").expect("interval").interval,
            Some(Duration::from_millis(500))
        );
        for bad in [
            "/tmp/f.png,0",
            "/tmp/f.png,0.01",
            "/tmp/f.png,x",
            ",1",
            "/f,-1",
            "/f,inf",
        ] {
            assert!(parse_arg(bad).is_err(), "{bad}");
        }
    }

    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut r = dec.read_info().expect("png header");
        let mut buf = vec![0; r.output_buffer_size().expect("size")];
        let info = r.next_frame(&mut buf).expect("png frame");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    #[test]
    fn formats_round_trip_through_png() {
        // 2x2 with a stride of 3 pixels: red, green / blue, white (+ padding).
        let x = |r: u8, g: u8, b: u8| [b, g, r, 0x77];
        let mut xrgb = Vec::new();
        for px in [
            x(255, 0, 0),
            x(0, 255, 0),
            [9; 4],
            x(0, 0, 255),
            x(255, 255, 255),
            [9; 4],
        ] {
            xrgb.extend_from_slice(&px);
        }
        let want = vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        let f = to_rgb(drm::FORMAT_XRGB8888, 2, 2, 12, &xrgb).expect("xrgb");
        assert_eq!(f.rgb, want);
        let rgb888: Vec<u8> = xrgb.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        assert_eq!(
            to_rgb(drm::FORMAT_RGB888, 2, 2, 9, &rgb888)
                .expect("rgb888")
                .rgb,
            want
        );
        let p565 = |r: u16, g: u16, b: u16| (r << 11 | g << 5 | b).to_le_bytes();
        let mut rgb565 = Vec::new();
        for px in [
            p565(31, 0, 0),
            p565(0, 63, 0),
            [9; 2],
            p565(0, 0, 31),
            p565(31, 63, 31),
            [9; 2],
        ] {
            rgb565.extend_from_slice(&px);
        }
        assert_eq!(
            to_rgb(drm::FORMAT_RGB565, 2, 2, 6, &rgb565)
                .expect("565")
                .rgb,
            want
        );

        let mut out = Vec::new();
        encode(&f, &mut out).expect("encode");
        assert_eq!(decode(&out), (2, 2, want));
    }

    #[test]
    fn bad_planes_are_refused() {
        assert!(to_rgb(0x1234, 2, 2, 8, &[0; 16]).is_none());
        assert!(to_rgb(drm::FORMAT_XRGB8888, 2, 2, 4, &[0; 16]).is_none()); // stride < line
        assert!(to_rgb(drm::FORMAT_XRGB8888, 2, 2, 8, &[0; 15]).is_none()); // short
        assert!(to_rgb(drm::FORMAT_XRGB8888, 0, 2, 8, &[0; 16]).is_none());
    }

    #[test]
    fn written_atomically() {
        let dir = std::env::temp_dir().join(format!("vgpu-vmm-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("f.png");
        let f = Frame {
            width: 1,
            height: 1,
            rgb: vec![1, 2, 3],
        };
        write_png(&f, &p).expect("write");
        let bytes = std::fs::read(&p).expect("read");
        assert_eq!(decode(&bytes), (1, 1, vec![1, 2, 3]));
        assert!(!dir.join("f.png.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
