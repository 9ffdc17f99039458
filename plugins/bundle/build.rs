//! Builds every bundled plugin crate to a WebAssembly component and writes
//! `plugins.rs` (paths and bytes) into OUT_DIR.
//!
//! Plugins target `wasm32-unknown-unknown` linked by the toolchain's
//! `wasm-component-ld`, so their only imports are Keel's own interfaces.
//! The nested cargo uses its own target directory (`target/plugins-build`)
//! so it never waits on the outer build's lock.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "build/targets.rs"]
mod targets;

/// (short name, crate name, target, cargo features) of every bundled plugin.
/// Entries with features are variants of another crate (e.g. the next
/// version of the counter, for hot-swap tests) and build into their own
/// target directory so that their artifacts do not overwrite the default.
const PLUGINS: &[(&str, &str, &str, &str)] = &[
    (
        "counter",
        "keel-plugin-counter",
        "wasm32-unknown-unknown",
        "",
    ),
    ("bench", "keel-plugin-bench", "wasm32-unknown-unknown", ""),
    (
        "misbehave",
        "keel-plugin-misbehave",
        "wasm32-unknown-unknown",
        "",
    ),
    ("spot", "keel-plugin-spot", "wasm32-unknown-unknown", ""),
    (
        "auction",
        "keel-plugin-auction",
        "wasm32-unknown-unknown",
        "",
    ),
    ("perp", "keel-plugin-perp", "wasm32-unknown-unknown", ""),
    ("dag", "keel-plugin-dag", "wasm32-unknown-unknown", ""),
    (
        "counter-v2",
        "keel-plugin-counter",
        "wasm32-unknown-unknown",
        "v2",
    ),
    ("wasi-probe", "keel-plugin-wasi-probe", "wasm32-wasip2", ""),
    (
        "kv-probe",
        "keel-plugin-kv-probe",
        "wasm32-unknown-unknown",
        "",
    ),
];

/// The target directory of a build group.
fn group_dir(base: &Path, features: &str) -> PathBuf {
    if features.is_empty() {
        base.to_path_buf()
    } else {
        base.with_file_name(format!("plugins-build-{features}"))
    }
}

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    for dir in [
        "wit",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "plugins",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    // The outer build's target directory (CARGO_TARGET_DIR when set, as in
    // `.ci/fresh-machine`), so that a scratch build stays scratch.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("plugins-build");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ensure_wasm_targets();

    let mut groups: Vec<(&str, &str)> = PLUGINS.iter().map(|p| (p.2, p.3)).collect();
    groups.sort();
    groups.dedup();
    for (target, features) in groups {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&workspace)
            .args([
                "build",
                "--locked",
                "--profile",
                "plugin",
                "--target",
                target,
            ])
            .arg("--target-dir")
            .arg(group_dir(&target_dir, features));
        if !features.is_empty() {
            cmd.args(["--features", features]);
        }
        for (_, krate, t, f) in PLUGINS {
            if *t == target && *f == features {
                cmd.args(["-p", krate]);
            }
        }
        // The outer build's settings must not leak into the wasm build.
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_PROFILE_RELEASE_DEBUG",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_LLVM_COV",
            "LLVM_PROFILE_FILE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER",
            "wasm-component-ld",
        );
        let status = cmd.status().expect("running cargo for the plugins");
        assert!(
            status.success(),
            "building the bundled plugins for {target} (features {features:?}) failed"
        );
    }

    let mut out = String::new();
    writeln!(
        out,
        "/// Every bundled plugin: (name, path of its component)."
    )
    .unwrap();
    writeln!(out, "pub const ALL: &[(&str, &str)] = &[").unwrap();
    for (name, krate, target, features) in PLUGINS {
        let file = artifact(&group_dir(&target_dir, features), krate, target);
        writeln!(out, "    ({name:?}, {:?}),", file.display().to_string()).unwrap();
    }
    writeln!(out, "];").unwrap();
    for (name, krate, target, features) in PLUGINS {
        let file = artifact(&group_dir(&target_dir, features), krate, target);
        let ident = name.to_uppercase().replace('-', "_");
        writeln!(out, "/// Path of the `{name}` component.").unwrap();
        writeln!(
            out,
            "pub const {ident}: &str = {:?};",
            file.display().to_string()
        )
        .unwrap();
    }
    let out_file = PathBuf::from(env::var("OUT_DIR").unwrap()).join("plugins.rs");
    std::fs::write(out_file, out).unwrap();
}

/// Adds the wasm targets the plugins need when the toolchain lacks them,
/// or stops the build at once with the one command that fixes it.
fn ensure_wasm_targets() {
    let mut needed: Vec<&str> = PLUGINS.iter().map(|p| p.2).collect();
    needed.sort();
    needed.dedup();
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else {
        fail(&format!(
            "`{rustc} --print sysroot` failed; check the toolchain, then run `{}`",
            targets::manual_command(&needed)
        ));
    };
    let rustup = env::var_os("CARGO_HOME")
        .map(|home| PathBuf::from(home).join("bin").join("rustup"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("rustup"));
    let toolchain = targets::Toolchain {
        sysroot,
        rustup,
        toolchain: env::var("RUSTUP_TOOLCHAIN").ok(),
    };
    match targets::ensure(&toolchain, &needed) {
        Ok(added) if !added.is_empty() => {
            println!("cargo:warning=installed the wasm targets {added:?} for the bundled plugins");
        }
        Ok(_) => {}
        Err(line) => fail(&line),
    }
}

/// Stops the build with one line (no backtrace, no panic noise).
fn fail(line: &str) -> ! {
    eprintln!("error: {line}");
    std::process::exit(1);
}

fn artifact(target_dir: &Path, krate: &str, target: &str) -> PathBuf {
    let file = target_dir
        .join(target)
        .join("plugin")
        .join(format!("{}.wasm", krate.replace('-', "_")));
    assert!(file.exists(), "missing plugin artifact {}", file.display());
    file
}
