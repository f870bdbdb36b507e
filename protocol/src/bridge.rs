//! The bridge to NATS JetStream (`[bridge]`): a node's topics carried into JetStream and
//! messages from JetStream appended to its topics, each exactly once, whatever crashes,
//! restarts or NATS outages happen, with no time window.
//!
//! - **Out** ([`out`]): the entries of the `out` topics go to the stream `stream`, on the
//!   subject `<subject_prefix>.<topic>.<origin>`, in topic order (so in order per origin),
//!   with their identity, time, key, destination and headers as NATS headers
//!   ([`headers`]). Exactly once: the bridge is the stream's only publisher, so it knows
//!   the sequence JetStream will give each message. It sends each with
//!   `Nats-Expected-Last-Subject-Sequence` set to the sequence of the message before it
//!   on its subject. A publish that fails fails every later one on that subject, so no
//!   message can land after a missing one. After any failure the bridge reads, for each
//!   subject, the last message the stream holds and its `Tether-Seq`, and goes on after
//!   it. Its position in each topic is a durable consumer cursor, committed after
//!   JetStream's acknowledgements: a floor below which nothing is sent again.
//! - **In** ([`inbound`]): a durable pull consumer on `in_stream` (subjects
//!   `<in_prefix>.>`) delivers in stream order. Each batch is appended in one store
//!   transaction together with the stream sequence it reached, and acknowledged to NATS
//!   only once that is durable. Each session makes the consumer again, starting after
//!   that sequence, so nothing fetched and never acknowledged can come back later behind
//!   newer messages; a message delivered again within a session is at or below that
//!   sequence and is skipped.
//!
//! While NATS is away, the bridge tries again with a growing pause (up to
//! [`MAX_BACKOFF`]). The entries wait in the store, and the status says why.
//!
//! IO: NATS (async-nats), the store.

pub mod backbone;
mod durable;
pub mod headers;
mod inbound;
mod out;

pub use backbone::Backbone;
pub use inbound::decode;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::BridgeSettings;
use crate::entry::NodeName;
use crate::log::Store;

/// The longest pause between two tries after a failure.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The first pause after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// How long a JetStream request (a publish's acknowledgement, a stream lookup) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The bridge of a running node: its status, and its tasks (stopped when it is dropped).
#[derive(Debug)]
pub struct Bridge {
    status: watch::Receiver<BridgeStatus>,
    _tasks: JoinSet<()>,
}

/// What the bridge is doing, for the API, the page, the CLI and the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgeStatus {
    /// The NATS servers it was given.
    pub servers: Vec<String>,
    /// Whether the client is connected to one now.
    pub connected: bool,
    /// The last connection error, if the client is not connected.
    pub error: Option<String>,
    /// One per topic carried out, then one per topic carried in.
    pub mappings: Vec<MappingStatus>,
}

/// One topic's way into or out of JetStream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingStatus {
    /// `out` (into JetStream) or `in` (into the topic).
    pub direction: &'static str,
    /// The topic.
    pub topic: String,
    /// The stream.
    pub stream: String,
    /// The subjects: `tether.NEWS.*` out, `tether-in.NEWS` (and `.<edge>`) in.
    pub subjects: String,
    /// `running` (caught up or moving), `waiting` (for NATS, after a failure).
    pub state: &'static str,
    /// Out: entries in the topic not yet in JetStream. In: not known (0).
    pub lag_entries: u64,
    /// Out: how long the oldest entry not yet in JetStream has waited, in milliseconds.
    pub lag_ms: u64,
    /// Entries carried since the node started.
    pub carried: u64,
    /// Messages from JetStream refused (a malformed header, an unknown edge): logged,
    /// counted, and acknowledged so that they do not block the ones after them.
    pub refused: u64,
    /// The last failure, and when (milliseconds since the Unix epoch).
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_ms: Option<u64>,
}

impl Bridge {
    /// Starts the bridge of `node` on `store` as `settings` say, in tasks of its own;
    /// messages coming in must fit in `max_entry_bytes` (`store.max_entry_bytes`).
    pub fn start(
        store: Store,
        node: NodeName,
        settings: BridgeSettings,
        max_entry_bytes: u64,
        backbone: Option<Backbone>,
    ) -> Bridge {
        let mut mappings = Vec::new();
        if backbone.is_some() {
            for topic in backbone::carried(&store) {
                for direction in [BACKBONE_OUT, BACKBONE_IN] {
                    mappings.push(MappingStatus::new(
                        direction,
                        topic.as_str(),
                        &settings.backbone_stream,
                        format!("{}.{}.*", settings.backbone_prefix, topic),
                    ));
                }
            }
        }
        for topic in &settings.out {
            mappings.push(MappingStatus::new(
                "out",
                topic.as_str(),
                &settings.stream,
                format!("{}.{}.*", settings.subject_prefix, topic),
            ));
        }
        for topic in &settings.inbound {
            mappings.push(MappingStatus::new(
                "in",
                topic.as_str(),
                &settings.in_stream,
                format!(
                    "{}.{topic} and {}.{topic}.<edge>",
                    settings.in_prefix, settings.in_prefix
                ),
            ));
        }
        let (tx, rx) = watch::channel(BridgeStatus {
            servers: settings.urls.clone(),
            connected: false,
            error: None,
            mappings,
        });
        let status = Arc::new(tx);
        let mut tasks = JoinSet::new();
        let settings = Arc::new(settings);
        tasks.spawn(run(
            store,
            node,
            settings,
            max_entry_bytes,
            status,
            backbone,
        ));
        Bridge {
            status: rx,
            _tasks: tasks,
        }
    }

    /// What it is doing now.
    pub fn status(&self) -> BridgeStatus {
        self.status.borrow().clone()
    }

    /// Its status as it changes.
    pub fn watch(&self) -> watch::Receiver<BridgeStatus> {
        self.status.clone()
    }
}

impl MappingStatus {
    fn new(direction: &'static str, topic: &str, stream: &str, subjects: String) -> Self {
        MappingStatus {
            direction,
            topic: topic.to_owned(),
            stream: stream.to_owned(),
            subjects,
            state: "waiting",
            lag_entries: 0,
            lag_ms: 0,
            carried: 0,
            refused: 0,
            last_error: None,
            last_error_ms: None,
        }
    }
}

/// Where a mapping writes its status.
#[derive(Clone)]
struct Report {
    status: Arc<watch::Sender<BridgeStatus>>,
    direction: &'static str,
}

impl Report {
    /// Changes the status of `topic`'s mapping in this direction.
    fn update(&self, topic: &str, change: impl FnOnce(&mut MappingStatus)) {
        self.status.send_if_modified(|status| {
            let Some(mapping) = status
                .mappings
                .iter_mut()
                .find(|m| m.direction == self.direction && m.topic == topic)
            else {
                return false;
            };
            let before = mapping.clone();
            change(mapping);
            *mapping != before
        });
    }

    /// Records a failure of every mapping in this direction, which now wait.
    fn failed(&self, error: &str) {
        let now = millis(SystemTime::now());
        self.status.send_modify(|status| {
            for mapping in status
                .mappings
                .iter_mut()
                .filter(|m| m.direction == self.direction)
            {
                mapping.state = "waiting";
                mapping.last_error = Some(error.to_owned());
                mapping.last_error_ms = Some(now);
            }
        });
    }
}

/// Connects, then runs both directions, each trying again after a failure.
async fn run(
    store: Store,
    node: NodeName,
    settings: Arc<BridgeSettings>,
    max_entry_bytes: u64,
    status: Arc<watch::Sender<BridgeStatus>>,
    backbone: Option<Backbone>,
) {
    let client = {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match connect(&settings).await {
                Ok(client) => break client,
                Err(e) => {
                    tracing::warn!(servers = ?settings.urls, error = %e, "bridge: cannot connect to NATS; trying again");
                    status.send_modify(|s| {
                        s.connected = false;
                        s.error = Some(e.clone());
                    });
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    };
    tracing::info!(servers = ?settings.urls, "bridge: connected to NATS");
    let js = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .max_ack_inflight(settings.in_flight.max(1) * 2)
        .build(client.clone());
    let mut tasks = JoinSet::new();
    // The connection's state, as the client sees it.
    {
        let (client, status) = (client.clone(), status.clone());
        tasks.spawn(async move {
            loop {
                let connected =
                    client.connection_state() == async_nats::connection::State::Connected;
                status.send_if_modified(|s| {
                    let changed = s.connected != connected || (connected && s.error.is_some());
                    s.connected = connected;
                    if connected {
                        s.error = None;
                    }
                    changed
                });
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
    if !settings.out.is_empty() {
        let report = Report {
            status: status.clone(),
            direction: "out",
        };
        let (js, store, settings) = (js.clone(), store.clone(), settings.clone());
        tasks.spawn(retrying("out", report.clone(), move || {
            out::run(js.clone(), store.clone(), settings.clone(), report.clone())
        }));
    }
    if !settings.inbound.is_empty() {
        let report = Report {
            status: status.clone(),
            direction: "in",
        };
        let (js, store, settings) = (js.clone(), store.clone(), settings.clone());
        tasks.spawn(retrying("in", report.clone(), move || {
            inbound::run(
                js.clone(),
                store.clone(),
                node.clone(),
                settings.clone(),
                max_entry_bytes,
                report.clone(),
            )
        }));
    }
    if let Some(backbone) = backbone {
        let report = Report {
            status: status.clone(),
            direction: BACKBONE_OUT,
        };
        let (js2, store2, settings2, backbone2) = (
            js.clone(),
            store.clone(),
            settings.clone(),
            backbone.clone(),
        );
        tasks.spawn(retrying(BACKBONE_OUT, report.clone(), move || {
            backbone::run_out(
                js2.clone(),
                store2.clone(),
                backbone2.clone(),
                settings2.clone(),
                report.clone(),
            )
        }));
        let report = Report {
            status: status.clone(),
            direction: BACKBONE_IN,
        };
        let (js2, settings2, backbone2) = (js.clone(), settings.clone(), backbone.clone());
        tasks.spawn(retrying(BACKBONE_IN, report.clone(), move || {
            backbone::run_in(
                js2.clone(),
                store.clone(),
                backbone2.clone(),
                settings2.clone(),
                report.clone(),
            )
        }));
        let report = Report {
            status: status.clone(),
            direction: "fleet",
        };
        tasks.spawn(retrying("fleet", report, move || {
            backbone::run_fleet(js.clone(), backbone.clone(), settings.clone())
        }));
    }
    while tasks.join_next().await.is_some() {}
}

/// The backbone's two directions, in the status.
const BACKBONE_OUT: &str = "backbone out";
const BACKBONE_IN: &str = "backbone in";

/// Runs `session` again after each failure, pausing longer each time (reset once a
/// session has run for a while).
async fn retrying<F, Fut>(direction: &'static str, report: Report, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<std::convert::Infallible, String>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let began = tokio::time::Instant::now();
        let Err(error) = session().await;
        tracing::warn!(direction, %error, "bridge: a session failed; it goes on after a pause");
        report.failed(&error);
        if began.elapsed() > MAX_BACKOFF * 3 {
            backoff = FIRST_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A client for `settings`' servers and credentials.
async fn connect(settings: &BridgeSettings) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name("tether bridge")
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        // Reconnects go on for ever, each a little later: NATS may be away for days.
        .max_reconnects(None);
    if let Some((user, password)) = &settings.user {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &settings.token {
        options = options.token(token.clone());
    }
    if let Some(file) = &settings.nkey_seed_file {
        let seed = std::fs::read_to_string(file)
            .map_err(|e| format!("bridge.nkey_seed_file {}: {e}", file.display()))?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let Some(file) = &settings.creds_file {
        options = options
            .credentials_file(file)
            .await
            .map_err(|e| format!("bridge.creds_file {}: {e}", file.display()))?;
    }
    if let Some(ca) = &settings.tls_ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &settings.tls_client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    options
        .connect(settings.urls.as_slice())
        .await
        .map_err(|e| e.to_string())
}

/// Finds the stream `name`, or creates it (file storage, for `subjects`) when the
/// settings say so.
async fn stream(
    js: &jetstream::Context,
    settings: &BridgeSettings,
    name: &str,
    subjects: String,
) -> Result<jetstream::stream::Stream, String> {
    if !settings.create_streams {
        return js.get_stream(name).await.map_err(|e| {
            format!(
                "stream {name}: {e} (bridge.create_streams is false: an operator creates it, \
                 for the subjects {subjects})"
            )
        });
    }
    js.get_or_create_stream(jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects],
        storage: jetstream::stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("stream {name}: {e}"))
}

/// Milliseconds since the Unix epoch.
fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
