//! Writes vgpuctl's shell completions and man pages, generated from its command-line
//! definition (`src/bin/vgpuctl/cli.rs`, compiled in here as is), for the package
//! (packaging/build-deb.sh runs it):
//!
//!   vgpuctl-docs OUT_DIR
//!
//! OUT_DIR/completions/{vgpuctl.bash,_vgpuctl,vgpuctl.fish} and OUT_DIR/man/vgpuctl.8
//! with one page per verb (vgpuctl-list.8, ...). Not in vgpuctl itself: the generators
//! would be in every call's binary.

#[allow(dead_code)]
#[path = "../src/bin/vgpuctl/cli.rs"]
mod cli;

use clap::CommandFactory;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: vgpuctl-docs OUT_DIR");
        return ExitCode::from(2);
    };
    match write_all(Path::new(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vgpuctl-docs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(out: &Path) -> std::io::Result<()> {
    use clap_complete::Shell;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cli::Cli::command(), "vgpuctl", &completions)?;
    }
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    let mut cmd = cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    man_pages(&cmd, &man)
}

/// One page per command, section 8 (system administration, as mdevctl's own page).
fn man_pages(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir)?;
    }
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .generate_to(dir)
        .map(|_| ())
}
