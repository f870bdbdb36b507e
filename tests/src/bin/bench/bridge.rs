//! `bridge`: entries per second from Tether into JetStream and back, through the real
//! bridge (`protocol::bridge`) on a real store and a real `nats-server` (JetStream, file
//! storage, on loopback), against what `async-nats` alone publishes to the same server in
//! the same run, with the same number of publishes awaiting their acknowledgement as the
//! bridge keeps ([`IN_FLIGHT`]) and the same headers.
//!
//! Out: a backlog of entries is in the store before the bridge starts; timed from its
//! start until the last is acknowledged by JetStream. In: the messages are in the stream
//! before the bridge starts; timed until the last is durable in the store. Both sides
//! durable as they are for the node: the store's commits sync, JetStream's file store as
//! configured by default.

use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use protocol::bridge::{Bridge, headers};
use protocol::config::BridgeSettings;
use protocol::entry::{EntryId, Retention, Scope, Seq, Timestamp, TopicConfig};
use protocol::log::{Store, StoreConfig};
use serde_json::json;
use tests::TempDir;
use tests::cluster::{name, topic};

use crate::round2;

/// Publishes awaiting their acknowledgement, in both the bridge and the baseline.
const IN_FLIGHT: usize = 256;

/// Payload bytes per entry.
const PAYLOAD: usize = 256;

/// The longest a phase may take.
const PATIENCE: Duration = Duration::from_secs(300);

/// `nats-server` with JetStream on a free loopback port; killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn nats_server(dir: &std::path::Path) -> Result<Server, String> {
    let binary = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("nats-server"))
                .find(|c| c.is_file())
        })
        .ok_or("nats-server is not installed (Debian's package nats-server; .ci/tools)")?;
    let port = tests::fleet::free_tcp_port()?;
    let child = Command::new(binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nats-server: {e}"))?;
    Ok(Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
    })
}

/// Connects, waiting for the server to listen.
async fn connect(url: &str) -> Result<async_nats::Client, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match async_nats::connect(url).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => return Err(format!("nats-server: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The headers the bridge puts on an entry like the ones here.
fn bridge_headers(seq: u64) -> async_nats::HeaderMap {
    let entry = protocol::entry::Entry {
        id: EntryId {
            origin: name("hq"),
            seq: Seq(seq),
        },
        timestamp: Timestamp::now(),
        key: None,
        to: None,
        headers: Vec::new(),
        payload: Vec::new(),
    };
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers::of_entry(&topic("NEWS"), &entry) {
        map.append(name, value);
    }
    map
}

/// `async-nats` alone: `n` publishes of the same size, `IN_FLIGHT` awaiting their
/// acknowledgement; messages per second.
async fn baseline(js: &jetstream::Context, n: usize) -> Result<f64, String> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: "BASELINE".to_owned(),
        subjects: vec!["baseline.>".to_owned()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    publish_all(js, n, "baseline.NEWS.hq", 7, |i| {
        let mut headers = bridge_headers(i as u64 + 1);
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            i.to_string().as_str(),
        );
        headers
    })
    .await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Publishes `n` messages of `PAYLOAD` bytes of `fill` on `subject`, with `IN_FLIGHT`
/// awaiting their acknowledgement, the headers of each from `headers`.
async fn publish_all(
    js: &jetstream::Context,
    n: usize,
    subject: &str,
    fill: u8,
    headers: impl Fn(usize) -> async_nats::HeaderMap,
) -> Result<(), String> {
    let payload = bytes::Bytes::from(vec![fill; PAYLOAD]);
    let mut pending: VecDeque<jetstream::context::PublishAckFuture> = VecDeque::new();
    for i in 0..n {
        if pending.len() == IN_FLIGHT
            && let Some(ack) = pending.pop_front()
        {
            ack.await.map_err(|e| e.to_string())?;
        }
        pending.push_back(
            js.publish_with_headers(subject.to_owned(), headers(i), payload.clone())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    for ack in pending {
        ack.await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Waits until the bridge has carried `n` entries in its only mapping; the time it took
/// from `started`.
async fn carried(bridge: &Bridge, n: u64, started: Instant) -> Result<Duration, String> {
    let mut status = bridge.watch();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (done, error) = {
            let s = status.borrow_and_update();
            let m = &s.mappings[0];
            (m.carried, m.last_error.clone())
        };
        if done >= n {
            return Ok(started.elapsed());
        }
        match tokio::time::timeout_at(deadline, status.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(format!(
                    "the bridge carried {done} of {n}; last error: {error:?}"
                ));
            }
        }
    }
}

/// `bridge [--quick]`: 100,000 entries each way (`--quick`: 10,000).
pub(crate) async fn bridge(quick: bool) -> crate::Lines {
    let n: usize = if quick { 10_000 } else { 100_000 };
    let dir = TempDir::new("bridge").map_err(|e| e.to_string())?;
    let server = nats_server(&dir.path().join("nats"))?;
    let client = connect(&server.url).await?;
    let js = jetstream::new(client);
    let base = baseline(&js, n).await?;
    eprintln!("bridge: async-nats alone, {IN_FLIGHT} in flight: {base:.0} messages/s");

    let store = Store::open(dir.path().join("store"), StoreConfig::new(name("hq")))
        .map_err(|e| e.to_string())?;
    for t in ["NEWS", "ORDERS"] {
        store
            .create_topic(TopicConfig {
                name: topic(t),
                scope: Scope::All,
                retention: Retention::default(),
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    crate::impaired::fill(&store, &topic("NEWS"), n, 7).await?;
    let settings = BridgeSettings {
        urls: vec![server.url.clone()],
        in_flight: IN_FLIGHT,
        ..BridgeSettings::default()
    };

    // Out: the backlog into JetStream.
    let started = Instant::now();
    let out = Bridge::start(
        store.clone(),
        name("hq"),
        BridgeSettings {
            out: vec![topic("NEWS")],
            ..settings.clone()
        },
        1 << 20,
        None,
    );
    let took = carried(&out, n as u64, started).await?;
    drop(out);
    let out_rate = n as f64 / took.as_secs_f64();
    eprintln!(
        "bridge: out, {n} entries in {:.2} s: {out_rate:.0}/s ({:.2} of async-nats alone)",
        took.as_secs_f64(),
        out_rate / base
    );

    // In: messages in the stream, into the topic.
    js.get_or_create_stream(jetstream::stream::Config {
        name: settings.in_stream.clone(),
        subjects: vec![format!("{}.>", settings.in_prefix)],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let subject = format!("{}.ORDERS", settings.in_prefix);
    publish_all(&js, n, &subject, 9, |_| async_nats::HeaderMap::new()).await?;
    let started = Instant::now();
    let inbound = Bridge::start(
        store.clone(),
        name("hq"),
        BridgeSettings {
            inbound: vec![topic("ORDERS")],
            ..settings.clone()
        },
        1 << 20,
        None,
    );
    let took = carried(&inbound, n as u64, started).await?;
    drop(inbound);
    let in_rate = n as f64 / took.as_secs_f64();
    eprintln!(
        "bridge: in, {n} messages in {:.2} s: {in_rate:.0}/s ({:.2} of async-nats alone)",
        took.as_secs_f64(),
        in_rate / base
    );
    let held = store.topic(&topic("ORDERS")).map_or(0, |t| t.next.0);
    if held != n as u64 {
        return Err(format!("the topic holds {held} entries, not {n}"));
    }
    store.close().await.map_err(|e| e.to_string())?;
    drop(server);
    Ok(vec![json!({
        "scenario": "bridge",
        "quick": quick,
        "entries": n,
        "payload_bytes": PAYLOAD,
        "in_flight": IN_FLIGHT,
        "nats_publish_per_s": base.round(),
        "out_per_s": out_rate.round(),
        "out_ratio": round2(out_rate / base),
        "in_per_s": in_rate.round(),
        "in_ratio": round2(in_rate / base),
    })])
}
