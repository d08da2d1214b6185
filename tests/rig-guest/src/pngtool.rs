//! `vgpu-rig-tests pngpixel FILE X Y`: prints `WIDTHxHEIGHT RRGGBB` of an 8-bit RGB or
//! RGBA PNG (what `vgpu-vmm --display-png` writes), so a rig script can check the
//! picture a guest drew.

use crate::tools::{num, ToolError, ToolResult};

/// The subcommand.
pub fn pngpixel(args: &[String]) -> ToolResult {
    let path = args
        .first()
        .ok_or_else(|| ToolError::Usage("pngpixel FILE X Y".into()))?;
    let x: u32 = num("X", args.get(1))?;
    let y: u32 = num("Y", args.get(2))?;
    let f = std::fs::File::open(path).map_err(|e| ToolError::Failed(format!("{path}: {e}")))?;
    let mut r = png::Decoder::new(std::io::BufReader::new(f))
        .read_info()
        .map_err(|e| ToolError::Failed(format!("{path}: {e}")))?;
    let size = r
        .output_buffer_size()
        .ok_or_else(|| ToolError::Failed(format!("{path}: image too large")))?;
    let mut buf = vec![0; size];
    let info = r
        .next_frame(&mut buf)
        .map_err(|e| ToolError::Failed(format!("{path}: {e}")))?;
    let bpp = match (info.color_type, info.bit_depth) {
        (png::ColorType::Rgb, png::BitDepth::Eight) => 3,
        (png::ColorType::Rgba, png::BitDepth::Eight) => 4,
        (c, d) => {
            return Err(ToolError::Failed(format!(
                "{path}: {c:?} {d:?}, not 8-bit RGB"
            )))
        }
    };
    if x >= info.width || y >= info.height {
        return Err(ToolError::Failed(format!(
            "{path}: ({x}, {y}) outside {}x{}",
            info.width, info.height
        )));
    }
    let o = y as usize * info.line_size + x as usize * bpp;
    let px = buf
        .get(o..o + 3)
        .ok_or_else(|| ToolError::Failed(format!("{path}: short image")))?;
    println!(
        "{}x{} {:02x}{:02x}{:02x}",
        info.width, info.height, px[0], px[1], px[2]
    );
    Ok(())
}
