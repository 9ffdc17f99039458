//! What the build script does when a wasm target is missing: it runs
//! `rustup target add` for the active toolchain, or stops at once with one
//! line naming the command to run. Driven against a scratch sysroot and a
//! stand-in `rustup` script (the real path is exercised by
//! `.ci/fresh-toolchain-check`).

#[path = "../build/targets.rs"]
mod targets;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use targets::{Toolchain, ensure, is_installed};

const WANTED: &[&str] = &["wasm32-unknown-unknown", "wasm32-wasip2"];

/// The tests write a script and run it; one test's fork (running its
/// script) could inherit another's still-open write handle, and running
/// that script then fails with "Text file busy" (seen in CI). So they run
/// one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A scratch sysroot with `present` targets installed.
fn sysroot(dir: &Path, present: &[&str]) -> PathBuf {
    let root = dir.join("sysroot");
    for t in present {
        std::fs::create_dir_all(root.join("lib/rustlib").join(t).join("lib")).unwrap();
    }
    std::fs::create_dir_all(root.join("lib/rustlib")).unwrap();
    root
}

/// A stand-in `rustup` that logs its arguments and runs `body`.
fn fake_rustup(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("rustup");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\n{body}\n",
            dir.join("calls").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn calls(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("calls")).unwrap_or_default()
}

#[test]
fn nothing_runs_when_every_target_is_installed() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let toolchain = Toolchain {
        sysroot: sysroot(dir.path(), WANTED),
        rustup: fake_rustup(dir.path(), "exit 1"),
        toolchain: Some("1.95.0".into()),
    };
    assert_eq!(ensure(&toolchain, WANTED).unwrap(), Vec::<String>::new());
    assert_eq!(calls(dir.path()), "");
}

#[test]
fn missing_targets_are_added_for_the_active_toolchain() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = sysroot(dir.path(), &["wasm32-wasip2"]);
    // The stand-in installs what it is asked for, as rustup would.
    let body = format!(
        "shift 4; for t in \"$@\"; do mkdir -p '{}/lib/rustlib/'$t/lib; done",
        root.display()
    );
    let toolchain = Toolchain {
        sysroot: root.clone(),
        rustup: fake_rustup(dir.path(), &body),
        toolchain: Some("1.95.0-x86_64-unknown-linux-gnu".into()),
    };
    let added = ensure(&toolchain, WANTED).unwrap();
    assert_eq!(added, vec!["wasm32-unknown-unknown".to_string()]);
    assert_eq!(
        calls(dir.path()).trim(),
        "target add --toolchain 1.95.0-x86_64-unknown-linux-gnu wasm32-unknown-unknown"
    );
    assert!(is_installed(&root, "wasm32-unknown-unknown"));
}

#[test]
fn a_failing_rustup_stops_the_build_with_one_line_naming_the_command() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let toolchain = Toolchain {
        sysroot: sysroot(dir.path(), &[]),
        rustup: fake_rustup(
            dir.path(),
            "echo 'info: downloading component' >&2; echo 'error: could not download file' >&2; exit 1",
        ),
        toolchain: None,
    };
    let line = ensure(&toolchain, WANTED).unwrap_err();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.contains("could not download file"), "{line}");
    assert!(
        line.ends_with("run `rustup target add wasm32-unknown-unknown wasm32-wasip2`"),
        "{line}"
    );
}

#[test]
fn no_rustup_at_all_says_what_to_run() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let toolchain = Toolchain {
        sysroot: sysroot(dir.path(), &["wasm32-unknown-unknown"]),
        rustup: dir.path().join("no-such-rustup"),
        toolchain: None,
    };
    let line = ensure(&toolchain, WANTED).unwrap_err();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.ends_with("run `rustup target add wasm32-wasip2`"),
        "{line}"
    );
}

#[test]
fn a_rustup_that_succeeds_without_installing_is_not_believed() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let toolchain = Toolchain {
        sysroot: sysroot(dir.path(), &[]),
        rustup: fake_rustup(dir.path(), "exit 0"),
        toolchain: None,
    };
    let line = ensure(&toolchain, WANTED).unwrap_err();
    assert!(line.contains("still missing"), "{line}");
}
