//! HEALTHCHECK: docker's health probes, run by the monitor on a schedule.
//!
//! The probe runs inside the container through `kiln_sandbox::exec_in` (as
//! `docker exec` would); its outcome moves the status `starting` → `healthy`
//! / `unhealthy` with docker's rules: a success is healthy at once and resets
//! the failing streak; a failure counts only after the start period (unless
//! the container was already healthy once) and `retries` consecutive counted
//! failures make it unhealthy. The last 5 results are kept, as docker does.
//! Results live in `health.json` next to `state.json` (only the health thread
//! writes it, so it never races the monitor's own state writes).

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use kiln_sandbox::{ExecSpec, Output, Stdin};

use crate::container::{Container, timestamp, write_atomic};
use crate::{Result, RunError};

/// A resolved health check (image HEALTHCHECK overridden by `--health-*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The probe's argv (`CMD-SHELL x` becomes `/bin/sh -c x`).
    pub argv: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub start_period_ms: u64,
    pub retries: u32,
    /// The check as docker's `Config.Healthcheck.Test` shows it
    /// (`["CMD-SHELL", "..."]` or `["CMD", ...]`), for `inspect`.
    #[serde(default)]
    pub test: Vec<String>,
}

/// `--health-*` flags; `None` fields keep the image's values.
#[derive(Debug, Clone, Default)]
pub struct HealthFlags {
    pub cmd: Option<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub retries: Option<u32>,
    pub disabled: bool,
}

const DEFAULT_INTERVAL_MS: u64 = 30_000;
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_RETRIES: u32 = 3;
const KEPT_RESULTS: usize = 5;
/// Output kept per probe, as docker (4 KiB).
const MAX_OUTPUT: usize = 4096;

fn nanos_to_ms(value: Option<&Value>) -> Option<u64> {
    value
        .and_then(Value::as_u64)
        .filter(|&n| n > 0)
        .map(|n| n / 1_000_000)
}

/// The health check docker would run: the image's `Healthcheck` with the
/// flags applied; `None` when there is none or it is disabled (`NONE`,
/// `--no-healthcheck`).
pub fn resolve(image_config: &Value, flags: &HealthFlags) -> Option<HealthCheck> {
    if flags.disabled {
        return None;
    }
    let image = image_config
        .get("config")
        .and_then(|c| c.get("Healthcheck"))
        .unwrap_or(&Value::Null);
    let test: Vec<String> = match &flags.cmd {
        Some(cmd) => vec!["CMD-SHELL".into(), cmd.clone()],
        None => image
            .get("Test")
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let argv = match test.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
        Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
            vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
        }
        _ => return None,
    };
    let ms = |flag: Option<Duration>, key: &str, default: u64| {
        flag.map(|d| d.as_millis() as u64)
            .filter(|&n| n > 0)
            .or_else(|| nanos_to_ms(image.get(key)))
            .unwrap_or(default)
    };
    Some(HealthCheck {
        argv,
        test,
        interval_ms: ms(flags.interval, "Interval", DEFAULT_INTERVAL_MS),
        timeout_ms: ms(flags.timeout, "Timeout", DEFAULT_TIMEOUT_MS),
        start_period_ms: ms(flags.start_period, "StartPeriod", 0),
        retries: flags
            .retries
            .filter(|&n| n > 0)
            .or_else(|| {
                image
                    .get("Retries")
                    .and_then(Value::as_u64)
                    .filter(|&n| n > 0)
                    .map(|n| n as u32)
            })
            .unwrap_or(DEFAULT_RETRIES),
    })
}

/// Parses a Go duration as docker's flags take them: `30s`, `1m30s`, `500ms`, `2h`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || {
        RunError::InvalidArgument(format!(
            "invalid duration {text:?}: use a number with a unit, e.g. 500ms, 30s, 1m30s"
        ))
    };
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// One probe's result, as docker's `State.Health.Log` entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProbeResult {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

/// docker's `State.Health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// "starting", "healthy" or "unhealthy".
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<ProbeResult>,
}

impl Health {
    fn starting() -> Health {
        Health {
            status: "starting".into(),
            failing_streak: 0,
            log: Vec::new(),
        }
    }

    /// Applies one probe's outcome with docker's rules.
    fn record(&mut self, result: ProbeResult, in_start_period: bool, retries: u32) {
        if result.exit_code == 0 {
            self.status = "healthy".into();
            self.failing_streak = 0;
        } else if !(in_start_period && self.status == "starting") {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = "unhealthy".into();
            }
        }
        self.log.push(result);
        if self.log.len() > KEPT_RESULTS {
            self.log.remove(0);
        }
    }
}

/// Reads a container's health (None when it has no health check or it has
/// not been written yet).
pub fn read(container: &Container) -> Option<Health> {
    let bytes = fs::read(health_path(container.dir.as_path())).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn health_path(dir: &Path) -> std::path::PathBuf {
    dir.join("health.json")
}

fn write(container: &Container, health: &Health) {
    if let Ok(json) = serde_json::to_vec_pretty(health) {
        let _ = write_atomic(&health_path(&container.dir), &json);
    }
}

/// Runs probes every `interval` until `stop` is set; the thread is detached
/// work of the monitor and ends with it.
pub fn start(
    container: Container,
    check: HealthCheck,
    container_pid: i32,
    env: Vec<String>,
    user: String,
    cwd: String,
    stop: Arc<AtomicBool>,
) {
    let mut health = Health::starting();
    write(&container, &health);
    std::thread::spawn(move || {
        let started = Instant::now();
        let interval = Duration::from_millis(check.interval_ms);
        loop {
            sleep_unless_stopped(interval, &stop);
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let result = probe(&check, container_pid, &env, &user, &cwd);
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let in_start_period = started.elapsed() < Duration::from_millis(check.start_period_ms);
            health.record(result, in_start_period, check.retries);
            write(&container, &health);
        }
    });
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let deadline = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn probe(check: &HealthCheck, pid: i32, env: &[String], user: &str, cwd: &str) -> ProbeResult {
    let (start, _) = timestamp();
    let mut spec = ExecSpec::new(check.argv.clone());
    spec.env = env.to_vec();
    spec.user = user.to_string();
    spec.cwd = cwd.to_string();
    spec.stdin = Stdin::Null;
    spec.stdout = Output::Pipe;
    spec.stderr = Output::Pipe;
    let (exit_code, output) = match kiln_sandbox::exec_in(pid, &spec) {
        Err(e) => (-1, e.to_string()),
        Ok(mut running) => {
            let mut output = Vec::new();
            let deadline = Instant::now() + Duration::from_millis(check.timeout_ms);
            let mut streams: Vec<std::fs::File> = [running.take_stdout(), running.take_stderr()]
                .into_iter()
                .flatten()
                .collect();
            let mut timed_out = false;
            let mut buf = [0u8; 4096];
            while !streams.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    timed_out = true;
                    break;
                }
                let mut fds: Vec<libc::pollfd> = streams
                    .iter()
                    .map(|f| libc::pollfd {
                        fd: f.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: valid pollfd array.
                let n = unsafe {
                    libc::poll(
                        fds.as_mut_ptr(),
                        fds.len() as libc::nfds_t,
                        left.as_millis().min(i32::MAX as u128) as i32,
                    )
                };
                if n < 0 {
                    continue;
                }
                let mut closed = Vec::new();
                for (i, pfd) in fds.iter().enumerate() {
                    if pfd.revents == 0 {
                        continue;
                    }
                    let Some(file) = streams.get_mut(i) else {
                        continue;
                    };
                    match std::io::Read::read(file, &mut buf) {
                        Ok(0) | Err(_) => closed.push(i),
                        Ok(n) => {
                            if output.len() < MAX_OUTPUT {
                                output.extend_from_slice(&buf[..n.min(MAX_OUTPUT - output.len())]);
                            }
                        }
                    }
                }
                for i in closed.into_iter().rev() {
                    streams.remove(i);
                }
            }
            if timed_out {
                let _ = running.kill(libc::SIGKILL);
                let _ = running.wait();
                (
                    -1,
                    format!("Health check exceeded timeout ({}ms)", check.timeout_ms),
                )
            } else {
                let code = running.wait().map(|s| s.code()).unwrap_or(-1);
                (code, String::from_utf8_lossy(&output).into_owned())
            }
        }
    };
    ProbeResult {
        start,
        end: timestamp().0,
        exit_code,
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn image_healthcheck_and_flags() {
        let image = json!({"config": {"Healthcheck": {
            "Test": ["CMD-SHELL", "wget -q -O- localhost/health"],
            "Interval": 5_000_000_000u64, "Retries": 2
        }}});
        let check = resolve(&image, &HealthFlags::default()).expect("check");
        assert_eq!(
            check.argv,
            ["/bin/sh", "-c", "wget -q -O- localhost/health"]
        );
        assert_eq!(
            (check.interval_ms, check.timeout_ms, check.retries),
            (5000, 30_000, 2)
        );
        let flags = HealthFlags {
            cmd: Some("true".into()),
            interval: Some(Duration::from_millis(200)),
            ..Default::default()
        };
        let check = resolve(&image, &flags).expect("check");
        assert_eq!(check.argv, ["/bin/sh", "-c", "true"]);
        assert_eq!(check.interval_ms, 200);
        let none = json!({"config": {"Healthcheck": {"Test": ["NONE"]}}});
        assert!(resolve(&none, &HealthFlags::default()).is_none());
        let disabled = HealthFlags {
            disabled: true,
            ..Default::default()
        };
        assert!(resolve(&image, &disabled).is_none());
        assert!(resolve(&json!({}), &HealthFlags::default()).is_none());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
    }

    fn result(code: i32) -> ProbeResult {
        ProbeResult {
            start: String::new(),
            end: String::new(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn docker_status_rules() {
        let mut health = Health::starting();
        health.record(result(1), true, 2);
        assert_eq!(
            (health.status.as_str(), health.failing_streak),
            ("starting", 0),
            "start period"
        );
        health.record(result(1), false, 2);
        assert_eq!(health.status, "starting");
        health.record(result(1), false, 2);
        assert_eq!(health.status, "unhealthy");
        health.record(result(0), false, 2);
        assert_eq!(
            (health.status.as_str(), health.failing_streak),
            ("healthy", 0)
        );
        for _ in 0..10 {
            health.record(result(0), false, 2);
        }
        assert_eq!(health.log.len(), KEPT_RESULTS);
    }
}
