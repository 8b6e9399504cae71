//! The container verbs on top of the records: create, kill, stop, wait,
//! remove and exec. Signals go through a pidfd opened while the state says
//! `running` *and* the monitor holds its lock, re-checked after opening: the
//! monitor records the exit before it reaps, so such a pidfd can only name
//! the container's own PID 1, never a recycled pid.

use std::os::fd::OwnedFd;
use std::time::Duration;

use kiln_sandbox::{ExecSpec, Output, Stdin, WinSize};
use kiln_store::{ImageRecord, Store};
use serde_json::Value;

use crate::config::{RunOptions, apply_env_flags, container_config};
use crate::container::{Container, Containers, Observed, Status};
use crate::monitor::{Attach, RawTerminal, SignalForwarder, pump, terminal_size};
use crate::signal::parse_signal;
use crate::{Result, RunError, ids, io_err, sys};

/// Resolves an image name (`busybox`, `app:1`, `name@sha256:...`) or ID
/// (full or unique prefix of the config digest, with or without `sha256:`).
pub fn resolve_image(store: &Store, text: &str) -> Result<ImageRecord> {
    if let Ok(reference) = kiln_image::Reference::parse(text)
        && let Some(manifest) = store.resolve_ref(&reference.to_string())?
        && let Some(image) = store.image_as_recorded(&manifest)?
    {
        return Ok(image);
    }
    let id = text.strip_prefix("sha256:").unwrap_or(text);
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let found: Vec<ImageRecord> = store
            .find_images_by_id_prefix(id)?
            .into_iter()
            .filter(|i| i.config.hex().starts_with(id) || i.manifest.hex().starts_with(id))
            .collect();
        let mut configs: Vec<&kiln_store::Digest> = found.iter().map(|i| &i.config).collect();
        configs.dedup();
        if configs.len() == 1
            && let Some(image) = found.first()
        {
            return Ok(image.clone());
        }
        if configs.len() > 1 {
            return Err(RunError::InvalidArgument(format!(
                "image ID {text:?} is ambiguous: it matches {} images; give more characters",
                configs.len()
            )));
        }
    }
    Err(RunError::NoSuchImage(text.to_string()))
}

/// Creates a container record for `options` (docker's `create`): resolves
/// the image, merges its config with the flags, allocates ID and name.
pub fn create(store: &Store, containers: &Containers, options: &RunOptions) -> Result<Container> {
    let image = resolve_image(store, &options.image)?;
    let config_bytes = store.read_blob(&image.config)?;
    let image_config: Value =
        serde_json::from_slice(&config_bytes).map_err(|e| RunError::Image {
            image: options.image.clone(),
            why: format!("config {} is not JSON: {e}", image.config),
        })?;
    let id = ids::new_id();
    let config = container_config(
        &id,
        &image.config.to_string(),
        &image.manifest.to_string(),
        &image_config,
        options,
    )?;
    // A host port in use fails here, before any record exists (the monitor
    // binds the ports again for real; losing that race leaves a `created`
    // record with the error, as docker does).
    crate::net::check_ports_free(&config.ports)?;
    let auto_remove = config.auto_remove;
    let container = containers.create(config)?;
    // The container keeps its image, running or stopped, until it is removed
    // (docker's "image is being used by stopped container"). A prune that
    // removed the image between the resolve and the hold is caught here. A
    // `--rm` container exists only while it runs, when its monitor's lease
    // keeps the image: it skips the two store writes.
    if auto_remove {
        return Ok(container);
    }
    let held = store
        .hold_image(&container.image_owner(), &image.manifest)
        .map_err(RunError::from)
        .and_then(|()| match store.image_as_recorded(&image.manifest)? {
            Some(_) => Ok(()),
            None => Err(RunError::NoSuchImage(options.image.clone())),
        });
    if let Err(err) = held {
        let _ = container.remove_files();
        return Err(err);
    }
    Ok(container)
}

/// A pidfd for the container's PID 1 if it is running, else `None`.
pub fn running_pidfd(container: &Container) -> Result<Option<(i32, OwnedFd)>> {
    let before = container.state()?;
    if before.status != Status::Running || before.pid <= 0 || !container.monitor_alive()? {
        return Ok(None);
    }
    let fd = match sys::pidfd_open(before.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => {
            return Err(io_err(
                "opening the container process",
                format!("pid {}", before.pid),
            )(e));
        }
    };
    let after = container.state()?;
    if after.status != Status::Running || after.pid != before.pid || !container.monitor_alive()? {
        return Ok(None);
    }
    Ok(Some((before.pid, fd)))
}

/// `kiln kill -s SIGNAL`.
pub fn kill(container: &Container, signal: i32) -> Result<()> {
    let Some((pid, fd)) = running_pidfd(container)? else {
        return Err(RunError::NotRunning(container.short_id().to_string()));
    };
    sys::pidfd_send_signal(&fd, signal)
        .map_err(io_err("signalling the container", format!("pid {pid}")))
}

/// `kiln stop -t SECONDS`: the stop signal, then SIGKILL after `timeout`
/// (the container's configured default when `None`); returns once the
/// monitor has recorded the exit. Stopping a stopped container is not an error.
pub fn stop(container: &Container, timeout: Option<Duration>) -> Result<()> {
    let config = container.config()?;
    let timeout = timeout.unwrap_or(Duration::from_secs(config.stop_timeout));
    if let Some((pid, fd)) = running_pidfd(container)? {
        let signal = parse_signal(&config.stop_signal).unwrap_or(libc::SIGTERM);
        let what = format!("pid {pid}");
        sys::pidfd_send_signal(&fd, signal)
            .map_err(io_err("signalling the container", what.clone()))?;
        if !sys::wait_readable(&fd, Some(timeout))
            .map_err(io_err("waiting for the container", what.clone()))?
        {
            sys::pidfd_send_signal(&fd, libc::SIGKILL)
                .map_err(io_err("killing the container", what.clone()))?;
            sys::wait_readable(&fd, None).map_err(io_err("waiting for the container", what))?;
        }
    }
    container.wait_monitor_gone()?;
    container.settle_lost_monitor().or_else(ignore_removed)?;
    Ok(())
}

fn ignore_removed(err: RunError) -> Result<()> {
    match err {
        RunError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => Err(other),
    }
}

/// `kiln wait`: blocks until the container has exited; its exit code.
pub fn wait(container: &Container) -> Result<i32> {
    let last = container.state()?;
    container.wait_monitor_gone()?;
    let observed = match container.observe() {
        Ok(o) => o,
        // Removed by --rm after it exited: report what the monitor left last.
        Err(RunError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(last.exit_code.unwrap_or(0));
        }
        Err(e) => return Err(e),
    };
    match observed {
        Observed::Exited { code, .. } => Ok(code),
        Observed::Running { .. } | Observed::Created => Err(RunError::NotRunning(format!(
            "{} (it was never started)",
            container.short_id()
        ))),
    }
}

/// `kiln rm [-f]`: refuses a running container unless `force` (then SIGKILL).
pub fn remove(container: &Container, force: bool) -> Result<()> {
    container.settle_lost_monitor()?;
    if let Some((pid, fd)) = running_pidfd(container)? {
        if !force {
            return Err(RunError::RunningCannotRemove(
                container.short_id().to_string(),
            ));
        }
        sys::pidfd_send_signal(&fd, libc::SIGKILL)
            .map_err(io_err("killing the container", format!("pid {pid}")))?;
    } else if container.monitor_alive()? && !force {
        return Err(RunError::RunningCannotRemove(
            container.short_id().to_string(),
        ));
    }
    container.wait_monitor_gone()?;
    container.remove_files()
}

/// `kiln exec` flags.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub interactive: bool,
    pub tty: bool,
}

/// `kiln exec`: runs a command in the running container's namespaces,
/// attached to kiln's terminal; returns its exit code.
pub fn exec(container: &Container, options: &ExecOptions) -> Result<i32> {
    if options.argv.is_empty() {
        return Err(RunError::InvalidArgument("exec needs a command".into()));
    }
    let config = container.config()?;
    let Some((pid, _fd)) = running_pidfd(container)? else {
        return Err(RunError::NotRunning(container.short_id().to_string()));
    };
    let mut spec = ExecSpec::new(options.argv.clone());
    spec.env = config.env.clone();
    apply_env_flags(&mut spec.env, &options.env)?;
    if options.tty && !spec.env.iter().any(|e| e.starts_with("TERM=")) {
        spec.env.push("TERM=xterm".into());
    }
    spec.user = options.user.clone().unwrap_or(config.user);
    spec.cwd = options.workdir.clone().unwrap_or(config.working_dir);
    spec.stdin = if options.interactive {
        Stdin::Pipe
    } else {
        Stdin::Null
    };
    spec.stdout = Output::Pipe;
    spec.stderr = Output::Pipe;
    if options.tty {
        spec.tty = Some(terminal_size().unwrap_or(WinSize { rows: 24, cols: 80 }));
    }
    let signals =
        SignalForwarder::install(options.tty).map_err(io_err("blocking signals", "signalfd"))?;
    let mut running = kiln_sandbox::exec_in(pid, &spec)?;
    let _raw = if options.tty && options.interactive {
        RawTerminal::enter()
    } else {
        None
    };
    let attach = Attach {
        stdin: options.interactive,
        tty: options.tty,
    };
    pump(&mut running, None, Some(attach), Some(&signals))?;
    Ok(running.wait()?.code())
}
