//! The tools outside Rust that some scenarios drive: Debian's chromium and chromedriver
//! (the page's browser tests), Debian's nats-server (the bridge's) and the Python venv of `.ci/tools` (the chart's tests, the
//! API's schema check).
//!
//! A tool that is missing skips its test with a line on stderr saying how to install it,
//! unless `TETHER_REQUIRE_TOOLS` is set (as `.ci/run` does): then it fails the test, so
//! that CI never passes by skipping.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How to install every tool here.
const INSTALL: &str = "run .ci/tools once (Debian's chromium, chromium-driver and nats-server, \
                       and a venv in .venv)";

/// The workspace's root directory.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_path_buf()
}

/// The venv's Python if it has every module in `modules`, else `None` after saying why
/// (or a panic when tools are required). `TETHER_VENV` names another venv.
pub(crate) fn python(test: &str, modules: &[&str]) -> Option<PathBuf> {
    let venv = std::env::var_os("TETHER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    let python = venv.join("bin").join("python");
    let import = format!("import {}", modules.join(", "));
    let found = Command::new(&python)
        .args(["-c", &import])
        .output()
        .is_ok_and(|out| out.status.success());
    if found {
        Some(python)
    } else {
        missing(
            test,
            &format!("{} with {}", python.display(), modules.join(", ")),
        );
        None
    }
}

/// Chromium and chromedriver, if both are installed, else `None` after saying why (or a
/// panic when tools are required).
pub(crate) fn chromium(test: &str) -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
    };
    match (find("chromium"), find("chromedriver")) {
        (Some(browser), Some(driver)) => Some((browser, driver)),
        _ => {
            missing(test, "chromium and chromedriver");
            None
        }
    }
}

/// Debian's `nats-server`, if it is installed, else `None` after saying why (or a panic
/// when tools are required).
pub(crate) fn nats_server(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        missing(test, "nats-server");
    }
    found
}

fn missing(test: &str, what: &str) {
    if std::env::var_os("TETHER_REQUIRE_TOOLS").is_some() {
        panic!("{test}: {what} not found and TETHER_REQUIRE_TOOLS is set; {INSTALL}");
    }
    eprintln!("SKIPPED {test}: {what} not found; {INSTALL}");
}
