//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`: flags and output
//! like docker's; the work is in `kiln-registry`.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
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

/// Renders pull and push progress like docker: on a terminal one bar per blob
/// (`abc123def456: Downloading [=====>    ] 12.1MB/40.2MB`, then `Pull
/// complete`), otherwise plain lines per state change, nothing with `-q`.
/// Public so `kiln build --push` renders its push the same way.
pub struct TransferProgress {
    pushing: bool,
    /// Lines and bars on stderr instead of stdout (`kiln build`, whose
    /// stdout is the image id).
    to_stderr: bool,
    mode: Mode,
    /// (digest, state) pairs already printed as lines: never the same line twice.
    printed: Mutex<HashSet<(String, &'static str)>>,
}

enum Mode {
    Quiet,
    Lines,
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
    },
}

fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

fn megabytes(bytes: u64) -> String {
    indicatif::DecimalBytes(bytes).to_string()
}

impl TransferProgress {
    /// Bars when stdout is a terminal, lines otherwise, nothing when `quiet`.
    pub fn new(pushing: bool, quiet: bool) -> Self {
        Self::with_stream(pushing, quiet, false)
    }

    /// As [`TransferProgress::new`], on stderr when `to_stderr`.
    pub fn with_stream(pushing: bool, quiet: bool, to_stderr: bool) -> Self {
        let terminal = if to_stderr {
            io::stderr().is_terminal()
        } else {
            io::stdout().is_terminal()
        };
        let mode = if quiet {
            Mode::Quiet
        } else if terminal {
            let target = if to_stderr {
                ProgressDrawTarget::stderr_with_hz(10)
            } else {
                ProgressDrawTarget::stdout_with_hz(10)
            };
            Mode::Bars {
                multi: MultiProgress::with_draw_target(target),
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            Mode::Lines
        };
        TransferProgress {
            pushing,
            to_stderr,
            mode,
            printed: Mutex::new(HashSet::new()),
        }
    }

    fn active_style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{prefix}: {msg} [{bar:50}] {decimal_bytes}/{decimal_total_bytes}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
    }

    fn final_style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix}: {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
    }

    /// A plain line, once per (blob, state).
    fn line(&self, digest: &str, state: &'static str, text: &str) {
        let mut printed = self.printed.lock().unwrap_or_else(|p| p.into_inner());
        if printed.insert((digest.to_string(), state)) {
            self.say(&format!("{}: {text}", short_digest(digest)));
        }
    }

    fn say(&self, text: &str) {
        if self.to_stderr {
            let _ = writeln!(io::stderr().lock(), "{text}");
        } else {
            say!("{text}");
        }
    }

    /// The bar of `digest`, made (at the end of the list) when new.
    fn bar(
        multi: &MultiProgress,
        bars: &Mutex<HashMap<String, ProgressBar>>,
        digest: &str,
    ) -> ProgressBar {
        let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry(digest.to_string())
            .or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(Self::final_style());
                bar.set_prefix(short_digest(digest).to_string());
                bar
            })
            .clone()
    }

    /// The blob reached a final state: its bar shows `text` and stays.
    fn finish(&self, digest: &str, state: &'static str, text: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => self.line(digest, state, text),
            Mode::Bars { multi, bars } => {
                let bar = Self::bar(multi, bars, digest);
                bar.set_style(Self::final_style());
                bar.finish_with_message(text.to_string());
            }
        }
    }
}

impl Progress for TransferProgress {
    fn event(&self, event: ProgressEvent<'_>) {
        let verb = if self.pushing {
            "Pushing"
        } else {
            "Downloading"
        };
        match event {
            ProgressEvent::BlobExists { digest } => self.finish(
                digest,
                "final",
                if self.pushing {
                    "Layer already exists"
                } else {
                    "Already exists"
                },
            ),
            ProgressEvent::BlobDone { digest } => self.finish(
                digest,
                "final",
                if self.pushing {
                    "Pushed"
                } else {
                    "Pull complete"
                },
            ),
            ProgressEvent::BlobMounted { digest, from } => {
                self.finish(digest, "final", &format!("Mounted from {from}"))
            }
            ProgressEvent::BlobStart { digest, size } => match &self.mode {
                Mode::Quiet => {}
                Mode::Lines => self.line(digest, "start", &format!("{verb} {}", megabytes(size))),
                Mode::Bars { multi, bars } => {
                    let bar = Self::bar(multi, bars, digest);
                    bar.set_length(size);
                    bar.set_style(Self::active_style());
                    bar.set_message(verb);
                }
            },
            ProgressEvent::BlobBytes { digest, done } => {
                if let Mode::Bars { multi, bars } = &self.mode {
                    Self::bar(multi, bars, digest).set_position(done);
                }
            }
            ProgressEvent::BlobRetry { digest, done, why } => match &self.mode {
                Mode::Quiet => {}
                Mode::Lines => {
                    self.say(&format!(
                        "{}: Retrying from {} ({why})",
                        short_digest(digest),
                        megabytes(done)
                    ));
                }
                Mode::Bars { multi, bars } => {
                    Self::bar(multi, bars, digest).set_message(format!("Retrying ({why})"));
                }
            },
            ProgressEvent::PlatformSelected { .. } => {}
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
    let progress = TransferProgress::new(false, args.quiet);
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
    let progress = TransferProgress::new(true, args.quiet);
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

/// The registry part of `kiln build`: `--push`, and `-o type=image` with
/// BuildKit's `name=REF` and `push=true` (`type=registry` is
/// `type=image,push=true`, as in buildx).
pub struct ImageOutput {
    /// The `-o` spec without the fields read here (None: no `-o`).
    pub rest: Option<String>,
    /// `name=` references: the image is named (and pushed) as these too.
    pub names: Vec<String>,
    /// Whether to push the image under every name after the build.
    pub push: bool,
}

impl ImageOutput {
    /// Reads `--push` and the image fields of `-o SPEC`.
    pub fn parse(spec: Option<&str>, push_flag: bool) -> Result<Self> {
        let mut output = ImageOutput {
            rest: spec.map(str::to_string),
            names: Vec::new(),
            push: push_flag,
        };
        let Some(spec) = spec else {
            return Ok(output);
        };
        let fields: Vec<&str> = spec.split(',').collect();
        if !fields
            .iter()
            .any(|f| *f == "type=image" || *f == "type=registry")
        {
            return Ok(output);
        }
        let mut rest = Vec::new();
        let mut after_name = false;
        for field in fields {
            match field.split_once('=') {
                Some(("type", "registry")) => {
                    output.push = true;
                    rest.push("type=image");
                    after_name = false;
                }
                Some(("name", value)) => {
                    output.names.push(value.trim_matches('"').to_string());
                    after_name = true;
                }
                Some(("push", value)) => {
                    output.push = match value {
                        "true" | "1" => true,
                        "false" | "0" => push_flag,
                        other => bail!("-o {spec:?}: push={other:?}; use push=true or push=false"),
                    };
                    after_name = false;
                }
                // BuildKit's CSV form `"name=a,b"`: names after the first.
                None if after_name => output.names.push(field.trim_matches('"').to_string()),
                _ => {
                    rest.push(field);
                    after_name = false;
                }
            }
        }
        output.rest = Some(rest.join(","));
        Ok(output)
    }

    /// Fails early (before the build) when a push has no name to push to.
    pub fn check(&self, tags: &[String], output_is_image: bool) -> Result<()> {
        if self.push && tags.is_empty() {
            bail!(
                "--push needs a name to push to: give -t REGISTRY/NAME:TAG or -o type=image,name=REGISTRY/NAME:TAG,push=true"
            );
        }
        if self.push && !output_is_image {
            bail!(
                "--push pushes an image: it cannot be combined with -o type=local/tar/docker/oci"
            );
        }
        Ok(())
    }
}

/// Pushes the just built image under each of `tags` (as `kiln push` does),
/// with progress on stderr (stdout is the image id).
pub fn push_built(store: &kiln_store::Store, tags: &[String], quiet: bool) -> Result<()> {
    for tag in tags {
        let reference = parse_reference(tag)?;
        let (_options, client) = client_for(reference.domain())?;
        if !quiet {
            eprintln!("pushing {} to {}", reference.familiar(), reference.domain());
        }
        let progress = TransferProgress::with_stream(true, quiet, true);
        let outcome = kiln_registry::push(store, &client, &reference, &progress)
            .with_context(|| format!("pushing {} after the build", reference.familiar()))?;
        drop(progress);
        if !quiet {
            eprintln!(
                "{}: digest: {} size: {}",
                reference.tag().unwrap_or("latest"),
                outcome.digest,
                outcome.size
            );
        }
    }
    Ok(())
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
