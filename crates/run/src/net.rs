//! Container networking: `-p` parsing, the container's own network namespace
//! and the userspace TCP proxy that publishes a container port on the host.
//!
//! The namespace is created by a short-lived thread that `unshare`s
//! `CLONE_NEWNET` (a per-thread operation) and hands back an fd of it; the
//! fd keeps the namespace alive, the sandbox joins it through
//! `/proc/self/fd/N`, and it disappears when the monitor and the container
//! are gone (no bind mount under /run/netns that could leak).
//!
//! Outbound access comes from slirp4netns (a userspace TCP/IP stack, as
//! rootless podman uses) attached to the namespace when it is installed:
//! a tap device `tap0` with 10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3,
//! the host's own 127.0.0.1 unreachable (`--disable-host-loopback`, as
//! docker's bridge). It needs no bridge, no iptables rule and no address
//! allocation shared between containers, and it dies with the monitor (its
//! exit fd closes), so nothing can be left behind.
//!
//! The proxy listens on the host port before the container starts (a port in
//! use fails the start, nothing half-started). Each accepted TCP connection
//! gets a thread that `setns`es into the container's namespace, connects to
//! the container's address 10.0.2.100:<container port> there (as docker's
//! proxy reaches the container's bridge address: a server that listens only
//! on the container's 127.0.0.1 is not published; without slirp4netns, no
//! tap device, 127.0.0.1), and copies bytes both ways. UDP is
//! proxied per client address as docker-proxy does: the first datagram from
//! a client makes a socket inside the namespace connected to the container
//! port; replies on it go back to that client from the host port, and the
//! flow is forgotten after 90 s without a reply (docker's UDP timeout).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Result, RunError};

/// One `-p [IP:]HOST:CONTAINER[/tcp|udp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
}

impl PortBinding {
    /// Parses docker's `-p` syntax (`tcp` or `udp`; sctp is refused).
    pub fn parse(text: &str) -> Result<PortBinding> {
        let bad = |why: &str| {
            RunError::InvalidArgument(format!(
                "invalid port publication {text:?}: {why} (expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp])"
            ))
        };
        let (spec, protocol) = match text.rsplit_once('/') {
            Some((spec, proto)) => (spec, proto.to_ascii_lowercase()),
            None => (text, "tcp".to_string()),
        };
        if protocol != "tcp" && protocol != "udp" {
            return Err(bad(&format!(
                "protocol {protocol:?} cannot be published by kiln (tcp and udp can)"
            )));
        }
        let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
        let port = |p: &str| -> Result<u16> {
            p.parse::<u16>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(&format!("{p:?} is not a port number")))
        };
        let (ip, host, container) = match parts.as_slice() {
            // `-p 80`: a random free host port, as docker.
            [container] => (None, "", *container),
            [container, host] => (None, *host, *container),
            [container, host, ip] => (Some(*ip), *host, *container),
            _ => return Err(bad("a host port is required")),
        };
        let host_ip = match ip {
            None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(ip) => ip
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| bad(&format!("{ip:?} is not an IP address")))?,
        };
        Ok(PortBinding {
            host_ip,
            host_port: if host.is_empty() { 0 } else { port(host)? },
            container_port: port(container)?,
            protocol,
        })
    }

    /// Docker's `ps` form: `0.0.0.0:8080->80/tcp`.
    pub fn display(&self) -> String {
        format!(
            "{}->{}/{}",
            SocketAddr::new(self.host_ip, self.host_port),
            self.container_port,
            self.protocol
        )
    }
}

/// A network namespace held open by an fd.
pub struct NetNs {
    fd: OwnedFd,
    /// Set when slirp4netns is started on it: the namespace then has the
    /// tap device with the container's address.
    has_tap: std::sync::atomic::AtomicBool,
}

impl NetNs {
    /// Creates a new network namespace (loopback is brought up by the sandbox
    /// when the container joins it).
    pub fn create() -> Result<NetNs> {
        let handle = std::thread::spawn(|| -> io::Result<OwnedFd> {
            // SAFETY: unshare affects only this thread, which exits right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let file = File::open("/proc/thread-self/ns/net")?;
            Ok(OwnedFd::from(file))
        });
        let fd = handle
            .join()
            .map_err(|_| RunError::NetNs(io::Error::other("namespace thread panicked")))?
            .map_err(RunError::NetNs)?;
        Ok(NetNs {
            fd,
            has_tap: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A path the sandbox can open to join the namespace (valid while `self` lives).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Where published ports are reached inside the namespace: the
    /// container's address, or 127.0.0.1 when the namespace has no tap
    /// device (no slirp4netns), where that address does not exist.
    fn container_address(&self) -> Ipv4Addr {
        if self.has_tap.load(std::sync::atomic::Ordering::Relaxed) {
            CONTAINER_ADDRESS
        } else {
            Ipv4Addr::LOCALHOST
        }
    }

    fn enter_current_thread(&self) -> io::Result<()> {
        // SAFETY: valid namespace fd; affects only the calling thread.
        if unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A slirp4netns process giving a namespace outbound access; stopped on drop.
pub struct Slirp {
    child: std::process::Child,
    exit_fd: Option<OwnedFd>,
}

/// The DNS server slirp4netns serves inside the namespace.
pub const SLIRP_DNS: &str = "10.0.2.3";
/// The container's own address on slirp4netns' tap device.
const CONTAINER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: valid array for pipe2.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl NetNs {
    /// Starts slirp4netns to give the namespace outbound access (call
    /// `wait_ready` before relying on it); `Ok(None)` when slirp4netns is not
    /// installed (the namespace keeps loopback only).
    pub fn start_slirp(&self) -> Result<Option<SlirpStarting>> {
        use std::os::unix::process::CommandExt;
        let Some(program) = find_in_path("slirp4netns") else {
            return Ok(None);
        };
        let (ready_read, ready_write) = pipe().map_err(RunError::NetNs)?;
        let (exit_read, exit_write) = pipe().map_err(RunError::NetNs)?;
        let ns_path = format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd());
        let (ready_fd, exit_fd) = (ready_write.as_raw_fd(), exit_read.as_raw_fd());
        let mut command = std::process::Command::new(&program);
        command
            .args([
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--netns-type=path",
                "--ready-fd=3",
                "--exit-fd=4",
            ])
            .arg(&ns_path)
            .arg("tap0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            // It chats about its tap fd on stderr: not the container's output.
            .stderr(std::process::Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Dies with the monitor thread that started it, whatever happens.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::dup2(ready_fd, 3) < 0 || libc::dup2(exit_fd, 4) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(RunError::NetNs)?;
        self.has_tap
            .store(true, std::sync::atomic::Ordering::Relaxed);
        drop(ready_write);
        drop(exit_read);
        Ok(Some(SlirpStarting {
            slirp: Slirp {
                child,
                exit_fd: Some(exit_write),
            },
            ready: File::from(ready_read),
            program,
        }))
    }
}

/// A slirp4netns started but perhaps not yet ready.
pub struct SlirpStarting {
    slirp: Slirp,
    ready: File,
    program: PathBuf,
}

impl SlirpStarting {
    /// Waits (up to 10 s) until slirp4netns has configured the namespace.
    pub fn wait_ready(self) -> Result<Slirp> {
        let SlirpStarting {
            slirp,
            mut ready,
            program,
        } = self;
        let configured =
            crate::sys::wait_readable(&ready, Some(std::time::Duration::from_secs(10)))
                .map_err(RunError::NetNs)?;
        let mut byte = [0u8; 1];
        if !configured || ready.read(&mut byte).map_err(RunError::NetNs)? != 1 {
            return Err(RunError::NetNs(io::Error::other(format!(
                "{} did not configure the namespace",
                program.display()
            ))));
        }
        Ok(slirp)
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        // Closing the exit fd asks it to stop; kill in case it does not.
        self.exit_fd = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host socket bound for one published port.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Listener {
    fn local_port(&self) -> Option<u16> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            Listener::Udp(s) => s.local_addr().ok().map(|a| a.port()),
        }
    }
}

/// Binds every published port on the host; fails (closing the ones already
/// bound) if any is in use.
pub fn bind_ports(ports: &[PortBinding]) -> Result<Vec<(PortBinding, Listener)>> {
    let mut bound = Vec::with_capacity(ports.len());
    for port in ports {
        let addr = SocketAddr::new(port.host_ip, port.host_port);
        let in_use = |source| RunError::PortInUse {
            addr: format!("{addr}/{}", port.protocol),
            source,
        };
        let listener = if port.protocol == "udp" {
            Listener::Udp(UdpSocket::bind(addr).map_err(in_use)?)
        } else {
            Listener::Tcp(TcpListener::bind(addr).map_err(in_use)?)
        };
        // Host port 0 (`-p 80`, `-P`): the kernel's choice is the real one.
        let mut port = port.clone();
        if let Some(local) = listener.local_port() {
            port.host_port = local;
        }
        bound.push((port, listener));
    }
    Ok(bound)
}

/// Checks that every published port with a fixed host port can be bound now
/// (binding and releasing it), so `kiln run` can refuse a port in use before
/// it creates anything. The monitor binds them again for real.
pub fn check_ports_free(ports: &[PortBinding]) -> Result<()> {
    let fixed: Vec<PortBinding> = ports.iter().filter(|p| p.host_port != 0).cloned().collect();
    bind_ports(&fixed).map(drop)
}

/// Serves the published ports: one thread per TCP port accepting, one thread
/// per connection direction; one thread per UDP port and one per UDP client.
/// Threads end with the process (the monitor exits when the container does).
pub fn start_proxies(netns: Arc<NetNs>, listeners: Vec<(PortBinding, Listener)>) {
    for (port, listener) in listeners {
        let netns = Arc::clone(&netns);
        let target = port.container_port;
        match listener {
            Listener::Tcp(listener) => {
                std::thread::spawn(move || {
                    for client in listener.incoming() {
                        let Ok(client) = client else { continue };
                        let netns = Arc::clone(&netns);
                        std::thread::spawn(move || {
                            let _ = proxy_connection(&netns, client, target);
                        });
                    }
                });
            }
            Listener::Udp(socket) => {
                std::thread::spawn(move || serve_udp(&netns, socket, target));
            }
        }
    }
}

/// How long a UDP flow lives without a reply from the container (docker-proxy's
/// `UDPConnTrackTimeout`).
const UDP_FLOW_TIMEOUT: Duration = Duration::from_secs(90);

type UdpFlows = Arc<Mutex<HashMap<SocketAddr, UdpSocket>>>;

fn serve_udp(netns: &Arc<NetNs>, host: UdpSocket, port: u16) {
    let flows: UdpFlows = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = match host.recv_from(&mut buf) {
            Ok(got) => got,
            // ICMP errors from earlier replies surface here; keep serving.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                ) =>
            {
                continue;
            }
            Err(_) => return,
        };
        let known = flows
            .lock()
            .ok()
            .and_then(|f| f.get(&client).and_then(|s| s.try_clone().ok()));
        let upstream = match known {
            Some(s) => s,
            None => match start_udp_flow(netns, &host, client, port, &flows) {
                Ok(s) => s,
                Err(_) => continue,
            },
        };
        // Nothing listening in the container: the datagram is dropped, as a
        // real network would.
        let _ = upstream.send(&buf[..n]);
    }
}

/// A socket inside the container's namespace connected to its `port`, whose
/// replies a new thread sends back to `client` from the host socket.
fn start_udp_flow(
    netns: &Arc<NetNs>,
    host: &UdpSocket,
    client: SocketAddr,
    port: u16,
    flows: &UdpFlows,
) -> io::Result<UdpSocket> {
    let host = host.try_clone()?;
    let netns = Arc::clone(netns);
    let flows_for_thread = Arc::clone(flows);
    let (tx, rx) = std::sync::mpsc::channel::<io::Result<UdpSocket>>();
    std::thread::spawn(move || {
        // This thread lives in the container's namespace from here on; it
        // only ever serves this one flow.
        let made = netns.enter_current_thread().and_then(|()| {
            let address = netns.container_address();
            let socket = UdpSocket::bind((address, 0))?;
            socket.connect((address, port))?;
            socket.set_read_timeout(Some(UDP_FLOW_TIMEOUT))?;
            Ok(socket)
        });
        let socket = match made {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        if socket.try_clone().map(|c| tx.send(Ok(c))).is_err() {
            return;
        }
        let mut buf = vec![0u8; 65536];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let _ = host.send_to(&buf[..n], client);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                // ECONNREFUSED: nothing listened when a datagram arrived; a
                // later one may find a listener.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                Err(_) => break,
            }
        }
        if let Ok(mut f) = flows_for_thread.lock() {
            f.remove(&client);
        }
    });
    let socket = rx
        .recv()
        .map_err(|_| io::Error::other("the UDP flow thread ended"))??;
    if let Ok(mut f) = flows.lock() {
        f.insert(client, socket.try_clone()?);
    }
    Ok(socket)
}

fn proxy_connection(netns: &NetNs, client: TcpStream, port: u16) -> io::Result<()> {
    // This thread lives in the container's namespace from here on; it only
    // ever serves this one connection.
    netns.enter_current_thread()?;
    let upstream = match TcpStream::connect((netns.container_address(), port)) {
        Ok(s) => s,
        Err(e) => {
            // Nothing listens in the container (yet): close the client, as
            // docker's proxy does.
            let _ = client.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let client_read = client.try_clone()?;
    let upstream_write = upstream.try_clone()?;
    let forward = std::thread::spawn(move || copy_then_shutdown(client_read, upstream_write));
    copy_then_shutdown(upstream, client);
    let _ = forward.join();
    Ok(())
}

fn copy_then_shutdown(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_port_forms() {
        let p = PortBinding::parse("8080:80").expect("parse");
        assert_eq!((p.host_port, p.container_port), (8080, 80));
        assert_eq!(p.display(), "0.0.0.0:8080->80/tcp");
        let p = PortBinding::parse("127.0.0.1:18080:8080/tcp").expect("parse");
        assert_eq!(p.host_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            PortBinding::parse("80").expect("parse").host_port,
            0,
            "random host port"
        );
        let bound =
            bind_ports(&[PortBinding::parse("127.0.0.1::80").expect("parse")]).expect("bind");
        assert_ne!(bound[0].0.host_port, 0, "the kernel's port is recorded");
        let udp = PortBinding::parse("5353:53/udp").expect("udp");
        assert_eq!(udp.protocol, "udp");
        assert_eq!(udp.display(), "0.0.0.0:5353->53/udp");
        assert!(PortBinding::parse("8080:80/sctp").is_err());
        assert!(PortBinding::parse("x:80").is_err());
        assert!(PortBinding::parse("1.2.3:80:80").is_err());
    }

    #[test]
    fn port_in_use_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let spec = PortBinding::parse(&format!("127.0.0.1:{port}:80")).expect("parse");
        let err = bind_ports(&[spec]).expect_err("must fail");
        assert!(
            err.to_string().contains("cannot publish 127.0.0.1:"),
            "{err}"
        );
    }
}
