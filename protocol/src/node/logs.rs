//! The process's log subscriber, with what the UI needs of it: the log lines as they
//! happen (and the last few), and the filter, changeable at run time.
//!
//! [`init`] installs it once per process; [`control`] then hands out the [`LogControl`].
//! Lines go to stderr as text or JSON either way; the UI's copy is built only while
//! someone listens or for the short backlog.
//!
//! IO: stderr.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogFormat, LogSettings};

/// How many recent lines a new listener gets first.
const BACKLOG: usize = 200;

/// One log line as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message, then its fields as `key=value`.
    pub text: String,
}

/// The process's log filter and line feed.
pub struct LogControl {
    filter: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
    lines: broadcast::Sender<LogLine>,
    recent: Mutex<VecDeque<LogLine>>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("filter", &self.filter())
            .finish_non_exhaustive()
    }
}

static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// The log control, once [`init`] has run in this process.
pub fn control() -> Option<&'static LogControl> {
    CONTROL.get()
}

impl LogControl {
    /// The filter in force (a tracing `EnvFilter` directive).
    pub fn filter(&self) -> String {
        lock(&self.current).clone()
    }

    /// Replaces the filter (for example `debug`, or `protocol::link=debug,info`); a
    /// directive that does not parse is refused with the parser's reason.
    pub fn set_filter(&self, directive: &str) -> Result<(), String> {
        let filter = EnvFilter::builder()
            .parse(directive)
            .map_err(|e| format!("invalid log filter {directive:?}: {e}"))?;
        self.filter
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))?;
        *lock(&self.current) = directive.to_owned();
        Ok(())
    }

    /// The recent lines, oldest first, and a feed of the lines that follow.
    pub fn subscribe(&self) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        // Under the lock, so that no line falls between the backlog and the feed.
        let recent = lock(&self.recent);
        (recent.iter().cloned().collect(), self.lines.subscribe())
    }

    fn publish(&self, line: LogLine) {
        let mut recent = lock(&self.recent);
        if recent.len() == BACKLOG {
            recent.pop_front();
        }
        recent.push_back(line.clone());
        let _ = self.lines.send(line);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Installs the process's subscriber: text or JSON on stderr, filtered by `RUST_LOG` if
/// set, else by the config's filter; the filter can change later through [`control`].
pub fn init(log: &LogSettings) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (directive, origin) = match std::env::var("RUST_LOG") {
        Ok(rust_log) if !rust_log.trim().is_empty() => (rust_log, "RUST_LOG"),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err("RUST_LOG is not valid Unicode".into());
        }
        _ => (log.filter.clone(), "log.filter"),
    };
    let filter = EnvFilter::builder()
        .parse(&directive)
        .map_err(|e| format!("{origin}: invalid filter {directive:?}: {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let stderr = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let control = LogControl {
        filter: handle,
        current: Mutex::new(directive),
        lines: broadcast::Sender::new(1024),
        recent: Mutex::new(VecDeque::with_capacity(BACKLOG)),
    };
    if CONTROL.set(control).is_err() {
        return Err("the log subscriber is already installed".into());
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(Feed)
        .try_init()?;
    Ok(())
}

/// The layer that copies each line to the [`LogControl`].
struct Feed;

impl<S: Subscriber> Layer<S> for Feed {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(control) = CONTROL.get() else {
            return;
        };
        let mut text = Text::default();
        event.record(&mut text);
        let metadata = event.metadata();
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        control.publish(LogLine {
            time_ms,
            level: metadata.level().to_string(),
            target: metadata.target().to_owned(),
            text: text.message + &text.fields,
        });
    }
}

/// An event's message and fields as text.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
