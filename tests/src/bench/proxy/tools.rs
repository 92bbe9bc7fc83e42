//! The tools the benchmark runs, found or installed, saying what it does: `wrk` and
//! `haproxy` from Debian's packages (`apt-get install`), `oha` from crates.io
//! (`cargo install oha --locked` into a tools directory beside the build).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Error;

/// Paths of the tools.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The fixed-rate load generator.
    pub oha: PathBuf,
    /// The saturation load generator.
    pub wrk: PathBuf,
    /// The reference proxy.
    pub haproxy: PathBuf,
}

/// `name` on `$PATH` (or the sbin directories).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn status(cmd: &mut Command, what: &str) -> Result<(), Error> {
    let s = cmd
        .status()
        .map_err(|e| Error::Tool(format!("cannot run {what}: {e}")))?;
    if !s.success() {
        return Err(Error::Tool(format!("{what} failed ({s})")));
    }
    Ok(())
}

/// Installs missing Debian packages (needs root, as on CI and the developer machines).
fn apt_install(packages: &[&str]) -> Result<(), Error> {
    eprintln!("tools: installing {} with apt-get", packages.join(" "));
    status(Command::new("apt-get").args(["update", "-qq"]), "apt-get update")?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}

/// Finds the tools, installing what is missing. `tools_dir` holds `oha` (`bin/oha`).
pub fn ensure(tools_dir: &Path) -> Result<Tools, Error> {
    let mut missing = Vec::new();
    for (bin, package) in [("wrk", "wrk"), ("haproxy", "haproxy")] {
        if which(bin).is_none() {
            missing.push(package);
        }
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    let found = |bin: &str| {
        which(bin).ok_or_else(|| Error::Tool(format!("{bin} is still missing after installing it")))
    };
    let (wrk, haproxy) = (found("wrk")?, found("haproxy")?);
    let local = tools_dir.join("bin").join("oha");
    let oha = match which("oha") {
        Some(p) => p,
        None if local.is_file() => local,
        None => {
            eprintln!(
                "tools: installing oha into {} (cargo install oha --locked; a few minutes, once)",
                tools_dir.display()
            );
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            status(
                Command::new(cargo)
                    .args(["install", "oha", "--locked", "--root"])
                    .arg(tools_dir),
                "cargo install oha",
            )?;
            if !local.is_file() {
                return Err(Error::Tool(format!(
                    "cargo install oha did not produce {}",
                    local.display()
                )));
            }
            local
        }
    };
    Ok(Tools { oha, wrk, haproxy })
}

/// `haproxy -v`'s first line, e.g. `HAProxy version 2.6.12-1+deb12u4 2025/…`.
pub fn haproxy_version(haproxy: &Path) -> String {
    Command::new(haproxy)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "HAProxy (version unknown)".into())
}

/// `oha --version`.
pub fn oha_version(oha: &Path) -> String {
    Command::new(oha)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "oha (version unknown)".into())
}
