//! Child processes of the benchmark: started with their output in a log file, waited for
//! until a port answers, sampled from `/proc`, and stopped (SIGTERM, then SIGKILL) on
//! drop, so a failed run leaves nothing behind.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{AUTHORITY, Error, ProcessSpec};

/// A running child.
pub struct Running {
    /// Its name.
    pub name: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    child: Child,
}

impl Running {
    /// Starts `spec`, output to `<dir>/<name>.log`.
    pub fn start(spec: &ProcessSpec, dir: &Path) -> Result<Self, Error> {
        let log = dir.join(format!("{}.log", spec.name.replace(' ', "-")));
        let out =
            std::fs::File::create(&log).map_err(Error::io(format!("cannot create {}", log.display())))?;
        let err = out.try_clone().map_err(Error::io("log file"))?;
        let child = Command::new(&spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                Error::Process(format!(
                    "cannot start {} ({}): {e}",
                    spec.name,
                    spec.program.display()
                ))
            })?;
        Ok(Self {
            name: spec.name.clone(),
            log,
            child,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Fails if it has exited.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(Error::Process(format!(
                "{} exited ({status}); its log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            )));
        }
        Ok(())
    }

    /// Waits until `probe` succeeds, bounded; fails early if the process exits.
    pub fn wait_until(
        &mut self,
        what: &str,
        within: Duration,
        probe: impl Fn() -> bool,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        loop {
            self.check_alive()?;
            if probe() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Process(format!(
                    "{}: {what} not within {within:?}; its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the log's full text.
    pub fn stop(mut self, grace: Duration) -> String {
        self.terminate(grace);
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid, which it still is (not yet reaped).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(2));
    }
}

/// Whether `GET <path>` naming [`AUTHORITY`] through `addr` answers 200 (HTTP/1.1, a
/// fresh connection).
pub fn http_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {AUTHORITY}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
}

/// Whether something accepts TCP connections on `addr`.
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// CPU time a process has used, from `/proc/<pid>/stat` (utime + stime).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_ticks(&stat)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some(Duration::from_secs_f64(ticks as f64 / hz))
}

/// [`cpu_time`] of each of `pids`, in order.
pub fn cpu_times(pids: &[u32]) -> Vec<Option<Duration>> {
    pids.iter().map(|p| cpu_time(*p)).collect()
}

/// utime + stime in clock ticks from a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// The machine's CPU time so far, all CPUs, in clock ticks: (busy, total). Busy is all
/// but idle and I/O wait.
pub fn machine_ticks() -> Option<(u64, u64)> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// (busy, total) from the `cpu` line of a `/proc/stat` text.
pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    if f.len() < 5 {
        return None;
    }
    let total: u64 = f.iter().take(8).sum();
    Some((total - f[3] - f[4], total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ticks_count_all_but_idle_and_io_wait_as_busy() {
        let stat = "cpu  100 5 50 800 20 3 2 10 0 0\ncpu0 50 2 25 400 10 1 1 5 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((170, 990)));
        assert_eq!(parse_machine_ticks("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(parse_machine_ticks("cpu  1 2 x 4 5\n"), None);
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "1234 (odd ) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 10";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
        // Our own process has a readable CPU time and RSS.
        let me = std::process::id();
        assert!(cpu_time(me).is_some());
        assert!(rss_kib(me).unwrap() > 0);
    }
}
