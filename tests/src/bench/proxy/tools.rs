//! The tools the benchmark runs, all from Debian's packages: `h2load` (nghttp2-client),
//! `wrk` and `haproxy`. Missing ones are installed with `apt-get` when the harness runs as
//! root (as on CI and the developer machines), saying so; otherwise the error names the
//! command to run.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Error;

/// Paths of the tools.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The fixed-rate load generator.
    pub h2load: PathBuf,
    /// The saturation load generator.
    pub wrk: PathBuf,
    /// The reference proxy.
    pub haproxy: PathBuf,
}

/// Each tool's binary and the Debian package that has it.
pub const PACKAGES: &[(&str, &str)] = &[
    ("h2load", "nghttp2-client"),
    ("wrk", "wrk"),
    ("haproxy", "haproxy"),
];

/// `name` on `$PATH` (or the sbin directories, where Debian puts haproxy).
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

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Finds the tools, installing missing packages with apt-get when running as root.
pub fn ensure() -> Result<Tools, Error> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        let command = format!("apt-get install -y {}", missing.join(" "));
        if !is_root() {
            return Err(Error::Tool(format!(
                "missing benchmark tools; install them with `{command}` (as root)"
            )));
        }
        eprintln!("tools: {command}");
        status(Command::new("apt-get").args(["update", "-qq"]), "apt-get update")?;
        status(
            Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install",
        )?;
    }
    let found = |bin: &str| {
        which(bin).ok_or_else(|| Error::Tool(format!("{bin} is still missing after installing it")))
    };
    Ok(Tools {
        h2load: found("h2load")?,
        wrk: found("wrk")?,
        haproxy: found("haproxy")?,
    })
}

fn first_line(program: &Path, arg: &str) -> Option<String> {
    let o = Command::new(program).arg(arg).output().ok()?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// `haproxy -v`'s first line, e.g. `HAProxy version 2.6.12-1+deb12u4 2025/…`.
pub fn haproxy_version(haproxy: &Path) -> String {
    first_line(haproxy, "-v").unwrap_or_else(|| "HAProxy (version unknown)".into())
}

/// The load generators' versions, for the report: `h2load nghttp2/1.52.0, wrk 4.1.0`.
pub fn generators(tools: &Tools) -> String {
    let h2 = first_line(&tools.h2load, "--version")
        .and_then(|l| l.split_whitespace().last().map(|v| format!("h2load {v}")))
        .unwrap_or_else(|| "h2load".into());
    let wrk = first_line(&tools.wrk, "-v")
        .and_then(|l| l.split_whitespace().nth(1).map(|v| format!("wrk {v}")))
        .unwrap_or_else(|| "wrk".into());
    format!("{h2}, {wrk}")
}
