//! Makes sure the wasm targets the bundled plugins need are installed in
//! the toolchain that runs the build, before nine minutes of compiling find
//! out that they are not.
//!
//! rustup installs the `targets` of `rust-toolchain.toml` only when it
//! installs the toolchain itself; a toolchain that was already there (the
//! case on a fresh machine of this project's kind, whose auto-install is
//! off) stays without them. So the build script looks in the sysroot and,
//! for each missing target, runs `rustup target add` for the active
//! toolchain. If that cannot work (no rustup, no network), the build stops
//! at once with one line saying what to run.
//!
//! Shared by `build.rs` and `tests/targets.rs` (which drives it against a
//! scratch sysroot and a stand-in `rustup`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where to look and what to run.
pub struct Toolchain {
    /// The sysroot of the compiler that will build the plugins.
    pub sysroot: PathBuf,
    /// The `rustup` executable to install targets with.
    pub rustup: PathBuf,
    /// The toolchain name to pass to `rustup --toolchain` (from
    /// `RUSTUP_TOOLCHAIN`), if rustup selected one.
    pub toolchain: Option<String>,
}

/// Whether `target`'s standard library is in `sysroot`.
pub fn is_installed(sysroot: &Path, target: &str) -> bool {
    sysroot
        .join("lib")
        .join("rustlib")
        .join(target)
        .join("lib")
        .is_dir()
}

/// The command a user runs by hand when the build cannot add the targets.
pub fn manual_command(targets: &[&str]) -> String {
    format!("rustup target add {}", targets.join(" "))
}

/// Installs every target of `targets` missing from the toolchain. Returns
/// the targets it added, or one line saying what failed and what to run.
pub fn ensure(toolchain: &Toolchain, targets: &[&str]) -> Result<Vec<String>, String> {
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !is_installed(&toolchain.sysroot, t))
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = Command::new(&toolchain.rustup);
    cmd.arg("target").arg("add");
    if let Some(name) = &toolchain.toolchain {
        cmd.arg("--toolchain").arg(name);
    }
    cmd.args(&missing);
    let advice = manual_command(&missing);
    let output = cmd.output().map_err(|e| {
        format!(
            "the wasm targets {missing:?} are not installed and `{}` could not run ({e}): run `{advice}`",
            toolchain.rustup.display()
        )
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "the wasm targets {missing:?} are not installed and `rustup target add` failed ({}): run `{advice}`",
            last.trim()
        ));
    }
    let still: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|t| !is_installed(&toolchain.sysroot, t))
        .collect();
    if !still.is_empty() {
        return Err(format!(
            "`rustup target add` succeeded but {still:?} is still missing from {}: run `{}`",
            toolchain.sysroot.display(),
            manual_command(&still)
        ));
    }
    Ok(missing.iter().map(|t| t.to_string()).collect())
}
