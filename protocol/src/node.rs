//! The node runtime both binaries share: start a node, run it until asked to stop, stop it.
//!
//! - [`run`] opens the store at `<data_dir>/store`, creates the configured topics, then
//!   applies retention every `retention_interval` until its shutdown future resolves;
//!   then it flushes and closes the store. QUIC links and the HTTP API join it later.
//! - [`main_for`] is all of a binary's `main`: arguments (no clap: four flags), config,
//!   the tracing subscriber, the tokio runtime, and SIGTERM or Ctrl-C as the shutdown
//!   signal (a second one exits at once). Errors are printed with their causes, and
//!   become the exit code.
//!
//! IO: the store directory, and (in [`main_for`] only) arguments, environment, signals,
//! stdout and stderr.

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tracing::{error, info};

use crate::config::{Config, LogFormat, LogSettings};
use crate::entry::TopicName;
use crate::log::{OpenError, Store, WriteError};

/// What a node is in the mission: the HQ node or a field node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The HQ node (`core-node`): it listens, and stores every `core` topic.
    Core,
    /// A field node (`edge-node`): it dials the core.
    Edge,
}

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A configured topic could not be created, for example because it exists with
    /// another scope.
    #[error("cannot create topic {topic}: {source}")]
    CreateTopic {
        /// The topic.
        topic: TopicName,
        /// Why the store refused it.
        source: WriteError,
    },
    /// The store stopped taking writes while the node ran (a failed write poisons it);
    /// the node must restart.
    #[error("store failed: {0}")]
    Store(WriteError),
    /// The store could not be flushed and closed at shutdown.
    #[error("cannot close the store: {0}")]
    Close(WriteError),
}

/// Resolves when the process is asked to stop: the first SIGTERM or Ctrl-C that
/// [`main_for`] receives.
#[derive(Debug)]
pub struct Shutdown(oneshot::Receiver<()>);

impl Role {
    /// `core` or `edge`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Core => "core",
            Role::Edge => "edge",
        }
    }

    /// The binary that runs a node of this role: `core-node` or `edge-node`.
    pub fn binary(self) -> &'static str {
        match self {
            Role::Core => "core-node",
            Role::Edge => "edge-node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped sender also means stop: nobody is left to say it later.
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

/// Runs a node of `role` until `shutdown` resolves, then closes its store.
pub async fn run(
    role: Role,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    run_boxed(role, config, Box::pin(shutdown)).await
}

async fn run_boxed(
    role: Role,
    config: Config,
    mut shutdown: Pin<Box<dyn Future<Output = ()> + Send + '_>>,
) -> Result<(), NodeError> {
    // Opening reads the catalog from disk on this thread: it happens once, before the
    // node does anything else, so blocking a worker for it is harmless.
    let store = Store::open(config.store_dir(), config.store_config())?;
    for topic in &config.topics {
        let created = store.create_topic(topic.clone()).await;
        created.map_err(|source| NodeError::CreateTopic {
            topic: topic.name.clone(),
            source,
        })?;
    }
    info!(
        node = %config.node.name,
        role = %role,
        data_dir = %config.node.data_dir.display(),
        topics = config.topics.len(),
        "node ready"
    );

    // The first tick completes at once: retention also runs at start, after a long stop.
    let mut ticker = tokio::time::interval(config.store.retention_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            _ = ticker.tick() => match store.enforce_retention().await {
                // The store logs what retention removed and any gap it recorded.
                Ok(_) => {}
                Err(e @ (WriteError::Poisoned(_) | WriteError::Closed)) => {
                    return Err(NodeError::Store(e));
                }
                Err(err) => error!(%err, "retention failed"),
            },
        }
    }

    store.close().await.map_err(NodeError::Close)?;
    info!(node = %config.node.name, "node stopped");
    Ok(())
}

/// The whole `main` of a node binary: parses the arguments, loads the config, installs
/// the tracing subscriber, builds the runtime and calls `run` with a [`Shutdown`] that
/// resolves at the first SIGTERM or Ctrl-C. A second signal exits at once.
///
/// Exit codes: 0 after a clean stop, 2 for bad arguments, 1 for any other error.
pub fn main_for<F, Fut, E>(role: Role, run: F) -> ExitCode
where
    F: FnOnce(Config, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    let action = match parse_args(std::env::args_os().skip(1)) {
        Ok(action) => action,
        Err(message) => {
            eprintln!("error: {message}\n\n{}", usage(role));
            return ExitCode::from(2);
        }
    };
    let path = match action {
        Action::Help => {
            print!("{}", help(role));
            return ExitCode::SUCCESS;
        }
        Action::Version => {
            println!("{} {}", role.binary(), env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Action::PrintConfig(None) => {
            print!("{}", Config::default_for(role).to_toml());
            return ExitCode::SUCCESS;
        }
        Action::PrintConfig(Some(path)) => {
            return match Config::load(role, Some(&path)) {
                Ok(config) => {
                    print!("{}", config.to_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            };
        }
        Action::Run(path) => path,
    };
    let config = match Config::load(role, path.as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    if let Err(e) = init_tracing(&config.log) {
        return fail(&*e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tether-worker")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&StartError("cannot start the async runtime", e)),
    };
    let served = runtime.block_on(serve(config, run));
    match served {
        Served::Stopped(Ok(())) => ExitCode::SUCCESS,
        Served::Stopped(Err(e)) => fail(&e),
        Served::NoSignals(e) => fail(&StartError("cannot listen for signals", e)),
        Served::Forced => {
            // Do not wait for tasks that may be stuck: that is why the operator insisted.
            runtime.shutdown_background();
            ExitCode::FAILURE
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Run(Option<PathBuf>),
    PrintConfig(Option<PathBuf>),
    Help,
    Version,
}

/// How [`serve`] ended.
#[derive(Debug)]
enum Served<E> {
    Stopped(Result<(), E>),
    NoSignals(std::io::Error),
    Forced,
}

/// A start-up step of [`main_for`] that failed, with the OS's reason as its source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StartError(&'static str, #[source] std::io::Error);

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Action, String> {
    let mut args = args.into_iter();
    let mut config = None;
    let mut print = false;
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            return Err(format!("unexpected argument {}", arg.to_string_lossy()));
        };
        match text {
            "-h" | "--help" => return Ok(Action::Help),
            "--version" => return Ok(Action::Version),
            "--print-config" => print = true,
            "-c" | "--config" => {
                let path = args.next().ok_or_else(|| format!("{text} needs a path"))?;
                if config.replace(PathBuf::from(path)).is_some() {
                    return Err(format!("{text} given twice"));
                }
            }
            _ if text.starts_with("--config=") => {
                let path = &text["--config=".len()..];
                if config.replace(PathBuf::from(path)).is_some() {
                    return Err("--config given twice".to_owned());
                }
            }
            _ => return Err(format!("unexpected argument {text:?}")),
        }
    }
    Ok(if print {
        Action::PrintConfig(config)
    } else {
        Action::Run(config)
    })
}

fn usage(role: Role) -> String {
    let bin = role.binary();
    format!("Usage: {bin} [--config <path>]\n       {bin} --print-config [--config <path>]\n")
}

fn help(role: Role) -> String {
    let what = match role {
        Role::Core => "the Tether HQ node",
        Role::Edge => "a Tether field node",
    };
    format!(
        "Runs {what} until SIGTERM or Ctrl-C (a second one exits at once).

{usage}
Options:
  -c, --config <path>  read the config from this TOML file (without it: the defaults)
      --print-config   print the default config, or with --config the config as loaded
  -h, --help           print this help
      --version        print the version

Environment:
  TETHER_<SECTION>__<KEY>  override one config key, e.g. TETHER_NODE__NAME=bravo
  RUST_LOG                 log filter; overrides the config's [log] filter
",
        usage = usage(role),
    )
}

/// Prints `error: ` and the error with its causes on one line; returns exit code 1.
fn fail(err: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("error: {}", chain(err));
    ExitCode::FAILURE
}

/// The error and its sources, joined by `: `. A source whose text the message already
/// contains (many errors here print their source) is not repeated.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        let more = more.trim_end();
        if !text.contains(more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

/// Installs the process's subscriber: text or JSON on stderr, filtered by `RUST_LOG` if
/// set, else by the config's filter.
fn init_tracing(log: &LogSettings) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use tracing_subscriber::EnvFilter;

    let directives = match std::env::var("RUST_LOG") {
        Ok(rust_log) if !rust_log.trim().is_empty() => EnvFilter::builder()
            .parse(&rust_log)
            .map_err(|e| format!("RUST_LOG: invalid filter {rust_log:?}: {e}"))?,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err("RUST_LOG is not valid Unicode".into());
        }
        _ => EnvFilter::builder()
            .parse(&log.filter)
            .map_err(|e| format!("log.filter: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(directives)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
}

/// Runs the node with signals as its shutdown: the first asks it to stop, a second one
/// while it stops gives up on it.
async fn serve<F, Fut, E>(config: Config, run: F) -> Served<E>
where
    F: FnOnce(Config, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => return Served::NoSignals(e),
    };
    let (stop, stopped) = oneshot::channel();
    let mut stop = Some(stop);
    let node = run(config, Shutdown(stopped));
    tokio::pin!(node);
    loop {
        tokio::select! {
            result = &mut node => return Served::Stopped(result),
            signal = signals.recv() => match stop.take() {
                Some(stop) => {
                    info!(signal, "shutting down");
                    // The node may have stopped on its own already; then its result comes next.
                    let _ = stop.send(());
                }
                None => {
                    error!(signal, "second signal: exiting without a clean shutdown");
                    return Served::Forced;
                }
            },
        }
    }
}

/// The signals that stop a node: SIGTERM (Kubernetes) and SIGINT (Ctrl-C).
#[derive(Debug)]
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening; from now on these signals no longer kill the process.
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal; returns its name.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.terminate.recv() => "SIGTERM",
                Some(()) = self.interrupt.recv() => "SIGINT",
                // Both streams ended (the runtime is going away): no signal will come.
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Action, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn arguments() {
        let path = || Some(PathBuf::from("node.toml"));
        assert_eq!(parse(&[]), Ok(Action::Run(None)));
        assert_eq!(parse(&["-c", "node.toml"]), Ok(Action::Run(path())));
        assert_eq!(parse(&["--config", "node.toml"]), Ok(Action::Run(path())));
        assert_eq!(parse(&["--config=node.toml"]), Ok(Action::Run(path())));
        assert_eq!(parse(&["--print-config"]), Ok(Action::PrintConfig(None)));
        assert_eq!(
            parse(&["--print-config", "-c", "node.toml"]),
            Ok(Action::PrintConfig(path()))
        );
        assert_eq!(parse(&["-c", "node.toml", "--help"]), Ok(Action::Help));
        assert_eq!(parse(&["-h"]), Ok(Action::Help));
        assert_eq!(parse(&["--version"]), Ok(Action::Version));
        assert_eq!(
            parse(&["--config"]),
            Err("--config needs a path".to_owned())
        );
        assert_eq!(
            parse(&["-c", "a", "-c", "b"]),
            Err("-c given twice".to_owned())
        );
        assert_eq!(
            parse(&["--verbose"]),
            Err("unexpected argument \"--verbose\"".to_owned())
        );
        assert_eq!(
            parse(&["node.toml"]),
            Err("unexpected argument \"node.toml\"".to_owned())
        );
    }

    #[test]
    fn chain_skips_repeated_sources() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(
            chain(&StartError("cannot start", io())),
            "cannot start: disk on fire"
        );
        let open = OpenError::Io {
            path: PathBuf::from("/x"),
            source: io(),
        };
        assert_eq!(chain(&open), "cannot open store at /x: disk on fire");
    }

    #[tokio::test]
    async fn run_creates_topics_and_closes_the_store() {
        let dir = std::env::temp_dir().join(format!("tether-node-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = Config::default_for(Role::Edge);
        config.node.data_dir = dir.clone();

        let node = run(Role::Edge, config.clone(), async {});
        // Tests and binaries may spawn a node: its future must be Send.
        fn send<T: Send>(t: T) -> T {
            t
        }
        send(node).await.unwrap();

        // Closed: the store opens again, with the configured topics.
        let store = Store::open(config.store_dir(), config.store_config()).unwrap();
        let names: Vec<_> = store
            .topics()
            .into_iter()
            .map(|t| t.config.name.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "ASSET_BROADCAST",
                "ASSET_REQUEST",
                "ASSET_RESPONSE",
                "_gaps"
            ]
        );
        store.close().await.unwrap();
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
