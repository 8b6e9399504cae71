//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`: flags and output
//! like docker's; the work is in `kiln-registry`.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use kiln_image::{Platform, Reference};
use kiln_registry::{
    ClientOptions, Credentials, DockerConfig, Progress, ProgressEvent, PullOptions, RegistryClient,
};

use super::image::open_store;

/// Prints a line to stdout; a closed pipe (`kiln pull ... | head`) is not
/// worth a panic, the work is done either way.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Subcommand)]
pub enum RegistryVerb {
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Log in to a registry
    Login(LoginArgs),
    /// Log out from a registry
    Logout(LogoutArgs),
}

#[derive(Args)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST], e.g. `busybox` or `registry:5000/team/app:1`
    pub reference: String,
    /// Platform to pick from a multi-platform image (default: the host's), e.g. linux/arm64
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct PushArgs {
    /// NAME[:TAG], e.g. `registry:5000/team/app:1`
    pub reference: String,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct LoginArgs {
    /// Registry host (default: Docker Hub)
    pub server: Option<String>,
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: this one is visible to other processes)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// Registry host (default: Docker Hub)
    pub server: Option<String>,
}

pub fn run(root: &Path, verb: RegistryVerb) -> Result<ExitCode> {
    match verb {
        RegistryVerb::Pull(a) => pull(root, a),
        RegistryVerb::Push(a) => push(root, a),
        RegistryVerb::Login(a) => login(a),
        RegistryVerb::Logout(a) => logout(a),
    }
}

/// Prints docker-like lines per blob (never twice for one blob) and, on a
/// terminal, one status line of bytes transferred that updates in place.
struct LineProgress {
    pushing: bool,
    quiet: bool,
    terminal: bool,
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    reported: HashSet<String>,
    /// Per blob in transfer: (done, size).
    transfers: HashMap<String, (u64, u64)>,
    last_draw: Option<Instant>,
    status_shown: bool,
}

impl LineProgress {
    fn new(pushing: bool, quiet: bool) -> Self {
        LineProgress {
            pushing,
            quiet,
            terminal: io::stderr().is_terminal(),
            state: Mutex::new(ProgressState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn line(&self, digest: &str, text: &str) {
        if self.quiet {
            return;
        }
        let mut state = self.state();
        state.transfers.remove(digest);
        if state.reported.insert(digest.to_string()) {
            if state.status_shown {
                // Clear the status line before printing above it.
                eprint!("\r\x1b[2K");
                state.status_shown = false;
            }
            let short = digest.strip_prefix("sha256:").unwrap_or(digest);
            let short = short.get(..12).unwrap_or(short);
            say!("{short}: {text}");
        }
    }

    fn draw(&self, state: &mut ProgressState) {
        if self.quiet || !self.terminal || state.transfers.is_empty() {
            return;
        }
        let now = Instant::now();
        if state
            .last_draw
            .is_some_and(|last| now.duration_since(last) < Duration::from_millis(100))
        {
            return;
        }
        state.last_draw = Some(now);
        let (done, total) = state
            .transfers
            .values()
            .fold((0, 0), |(d, t), (done, size)| (d + done, t + size));
        let verb = if self.pushing {
            "Pushing"
        } else {
            "Downloading"
        };
        eprint!(
            "\r\x1b[2K{verb} {} blob(s): {:.1} / {:.1} MB",
            state.transfers.len(),
            done as f64 / 1e6,
            total as f64 / 1e6
        );
        state.status_shown = true;
    }
}

impl Progress for LineProgress {
    fn event(&self, event: ProgressEvent<'_>) {
        match event {
            ProgressEvent::BlobExists { digest } => self.line(
                digest,
                if self.pushing {
                    "Layer already exists"
                } else {
                    "Already exists"
                },
            ),
            ProgressEvent::BlobDone { digest } => self.line(
                digest,
                if self.pushing {
                    "Pushed"
                } else {
                    "Pull complete"
                },
            ),
            ProgressEvent::BlobMounted { digest, from } => {
                self.line(digest, &format!("Mounted from {from}"))
            }
            ProgressEvent::BlobStart { digest, size } => {
                let mut state = self.state();
                state.transfers.insert(digest.to_string(), (0, size));
                self.draw(&mut state);
            }
            ProgressEvent::BlobBytes { digest, done } => {
                let mut state = self.state();
                if let Some(entry) = state.transfers.get_mut(digest) {
                    entry.0 = done;
                }
                self.draw(&mut state);
            }
            ProgressEvent::PlatformSelected { .. } | ProgressEvent::BlobRetry { .. } => {}
        }
    }
}

impl Drop for LineProgress {
    fn drop(&mut self) {
        if self.state().status_shown {
            eprint!("\r\x1b[2K");
        }
    }
}

fn parse_reference(text: &str) -> Result<Reference> {
    Reference::parse(text).with_context(|| format!("invalid reference format {text:?}"))
}

fn client_for(registry: &str) -> Result<(ClientOptions, RegistryClient)> {
    let options = ClientOptions::from_env().context("reading registry settings")?;
    let client = RegistryClient::new(registry, &options)
        .with_context(|| format!("setting up a client for {registry}"))?;
    Ok((options, client))
}

fn pull(root: &Path, args: PullArgs) -> Result<ExitCode> {
    let reference = parse_reference(&args.reference)?;
    let platform = match &args.platform {
        Some(text) => Platform::parse(text)?,
        None => Platform::host(),
    };
    let store = open_store(root)?;
    let (_options, client) = client_for(reference.domain())?;
    if !args.quiet {
        if Reference::parse_named(&args.reference)
            .is_ok_and(|r| r.tag().is_none() && r.digest().is_none())
        {
            say!("Using default tag: latest");
        }
        let label = reference
            .tag()
            .map(str::to_string)
            .or_else(|| reference.digest().map(|d| d.to_string()))
            .unwrap_or_default();
        say!(
            "{label}: Pulling from {}",
            reference.repository().familiar_name()
        );
    }
    let progress = LineProgress::new(false, args.quiet);
    let outcome = kiln_registry::pull(
        &store,
        &client,
        &reference,
        &PullOptions { platform },
        &progress,
    )
    .with_context(|| format!("pulling {}", reference.familiar()))?;
    if args.quiet {
        say!("{}", reference.familiar());
    } else {
        say!("Digest: {}", outcome.resolved);
        if outcome.name_changed || outcome.downloaded_blobs > 0 {
            say!(
                "Status: Downloaded newer image for {}",
                reference.familiar()
            );
        } else {
            say!("Status: Image is up to date for {}", reference.familiar());
        }
        say!("{}", reference.familiar());
    }
    Ok(ExitCode::SUCCESS)
}

fn push(root: &Path, args: PushArgs) -> Result<ExitCode> {
    let reference = parse_reference(&args.reference)?;
    let store = open_store(root)?;
    let (_options, client) = client_for(reference.domain())?;
    if !args.quiet {
        say!(
            "The push refers to repository [{}]",
            reference.repository().familiar_name()
        );
    }
    let progress = LineProgress::new(true, args.quiet);
    let outcome = kiln_registry::push(&store, &client, &reference, &progress)
        .with_context(|| format!("pushing {}", reference.familiar()))?;
    if args.quiet {
        say!("{}", reference.familiar());
    } else {
        let label = reference.tag().unwrap_or("latest");
        say!("{label}: digest: {} size: {}", outcome.digest, outcome.size);
    }
    Ok(ExitCode::SUCCESS)
}

/// `https://host:5000/v2/` → `host:5000`; None → Docker Hub.
fn registry_host(server: Option<&str>) -> String {
    let Some(server) = server.map(str::trim).filter(|s| !s.is_empty()) else {
        return "docker.io".to_string();
    };
    let without_scheme = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

fn prompt_line(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    io::stderr().flush().ok();
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads a password from the terminal without echoing it.
fn prompt_password() -> Result<String> {
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let hidden = stty("-echo");
    let password = prompt_line("Password: ");
    if hidden {
        stty("echo");
        eprintln!();
    }
    password
}

fn login(args: LoginArgs) -> Result<ExitCode> {
    let registry = registry_host(args.server.as_deref());
    let interactive = io::stdin().is_terminal();
    let password = if args.password_stdin {
        if args.password.is_some() {
            bail!("--password and --password-stdin are mutually exclusive");
        }
        if args.username.is_none() {
            bail!("Must provide --username with --password-stdin");
        }
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .context("reading the password from stdin")?;
        Some(text.trim_end_matches(['\r', '\n']).to_string())
    } else {
        if args.password.is_some() {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        }
        args.password.clone()
    };
    let username = match args.username {
        Some(user) => user,
        None if interactive => prompt_line("Username: ")?,
        None => bail!(
            "Cannot perform an interactive login from a non TTY device; give -u USER and --password-stdin"
        ),
    };
    let password = match password {
        Some(p) => p,
        None if interactive => prompt_password()?,
        None => bail!(
            "Cannot perform an interactive login from a non TTY device; give --password-stdin"
        ),
    };
    if username.is_empty() || password.is_empty() {
        bail!("Error: Username and password are required");
    }
    let options = ClientOptions::from_env().context("reading registry settings")?;
    let mut config = DockerConfig::load_default()?;
    let credentials = Credentials {
        username,
        secret: password,
        identity_token: false,
    };
    kiln_registry::login(&registry, credentials, &options, &mut config)
        .with_context(|| format!("logging in to {registry}"))?;
    say!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

fn logout(args: LogoutArgs) -> Result<ExitCode> {
    let registry = registry_host(args.server.as_deref());
    let key = kiln_registry::credentials::server_key(&registry);
    let mut config = DockerConfig::load_default()?;
    if config.erase(&registry)? {
        say!("Removing login credentials for {key}");
    } else {
        say!("Not logged in to {key}");
    }
    Ok(ExitCode::SUCCESS)
}
