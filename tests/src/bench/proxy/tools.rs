//! The tools the benchmark runs: from Debian's packages `h2load` (nghttp2-client), `wrk`,
//! `haproxy` and `stunnel4`, and from crates.io `oha`, the default fixed-rate generator. Missing
//! packages are installed with `apt-get` when the harness runs as root (as on CI and the
//! developer machines), saying so; otherwise the error names the command to run. A missing
//! `oha` is built once with `cargo install` into the target directory
//! (`target/bench-tools`), saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Error;
use super::load::Generator;

/// Paths of the tools.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The fixed-rate load generator.
    pub h2load: PathBuf,
    /// The saturation load generator.
    pub wrk: PathBuf,
    /// The reference proxy.
    pub haproxy: PathBuf,
    /// The evenly paced fixed-rate load generator, when the run uses it.
    pub oha: Option<PathBuf>,
}

/// The `oha` the harness installs when none is on `$PATH` (the version its JSON parser
/// was written against).
pub const OHA_VERSION: &str = "1.16.0";

/// Each tool's binary and the Debian package that has it.
pub const PACKAGES: &[(&str, &str)] = &[
    ("h2load", "nghttp2-client"),
    ("wrk", "wrk"),
    ("haproxy", "haproxy"),
    ("stunnel4", "stunnel4"),
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

/// `oha` on `$PATH`, or built once into `root` (`target/bench-tools`) with `cargo install`.
fn ensure_oha(root: &Path) -> Result<PathBuf, Error> {
    let built = root.join("bin/oha");
    if let Some(found) = which("oha").or_else(|| built.is_file().then(|| built.clone())) {
        return Ok(found);
    }
    eprintln!(
        "tools: oha is missing; building oha {OHA_VERSION} from crates.io into {} (once; cargo shows its progress; a few minutes on 2 cores)",
        root.display()
    );
    let mut cmd = crate::bench::nested_cargo();
    cmd.args(["install", "--locked", "oha", "--version", OHA_VERSION, "--root"])
        .arg(root);
    status(&mut cmd, "cargo install oha").map_err(|e| {
        Error::Tool(format!(
            "{e}; install it by hand with `cargo install --locked oha --version {OHA_VERSION}`, or run with --fixed-rate-generator h2load"
        ))
    })?;
    if built.is_file() {
        Ok(built)
    } else {
        Err(Error::Tool(format!(
            "cargo install oha did not leave {}",
            built.display()
        )))
    }
}

/// Finds the tools, installing missing packages with apt-get when running as root, and
/// `oha` into `tools_root` when `generator` is oha.
pub fn ensure(generator: Generator, tools_root: &Path) -> Result<Tools, Error> {
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
        oha: match generator {
            Generator::Oha => Some(ensure_oha(tools_root)?),
            Generator::H2load => None,
        },
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

/// The load generators' versions, for the report: `oha 1.16.0, h2load nghttp2/1.52.0, wrk 4.1.0`.
pub fn generators(tools: &Tools) -> String {
    let h2 = first_line(&tools.h2load, "--version")
        .and_then(|l| l.split_whitespace().last().map(|v| format!("h2load {v}")))
        .unwrap_or_else(|| "h2load".into());
    let wrk = first_line(&tools.wrk, "-v")
        .and_then(|l| l.split_whitespace().nth(1).map(|v| format!("wrk {v}")))
        .unwrap_or_else(|| "wrk".into());
    match &tools.oha {
        Some(oha) => {
            let oha = first_line(oha, "--version").unwrap_or_else(|| "oha".into());
            format!("{oha}, {h2}, {wrk}")
        }
        None => format!("{h2}, {wrk}"),
    }
}
