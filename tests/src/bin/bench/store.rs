//! Scenarios of one node's store.

use std::time::{Duration, Instant};

use protocol::entry::{Append, NodeName, Retention, Scope, TopicConfig, TopicName};
use protocol::log::{Store, StoreConfig};
use serde_json::json;
use tests::{Rng, TempDir, dir_bytes};

use crate::round2;

/// `log-append`: 200,000 durable appends of 256-byte payloads from 64 producers.
pub(crate) async fn log_append(quick: bool) -> Result<serde_json::Value, String> {
    const PRODUCERS: usize = 64;
    const PAYLOAD: usize = 256;
    let total: usize = if quick { 20_000 } else { 200_000 };
    let per_producer = total / PRODUCERS;
    let total = per_producer * PRODUCERS;

    let dir = TempDir::new("bench-log-append").map_err(|e| e.to_string())?;
    let node = NodeName::new("bench").map_err(|e| e.to_string())?;
    let topic = TopicName::new("bench").map_err(|e| e.to_string())?;
    let store = Store::open(dir.path(), StoreConfig::new(node)).map_err(|e| e.to_string())?;
    let config = TopicConfig {
        name: topic.clone(),
        scope: Scope::Local,
        retention: Retention::default(),
    };
    store
        .create_topic(config)
        .await
        .map_err(|e| e.to_string())?;

    eprintln!("log-append: {total} appends of {PAYLOAD} bytes from {PRODUCERS} producers");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PRODUCERS {
        let (store, topic) = (store.clone(), topic.clone());
        tasks.spawn(async move {
            let mut rng = Rng::new(p as u64 + 1);
            let mut latencies = Vec::with_capacity(per_producer);
            for _ in 0..per_producer {
                let mut payload = vec![0; PAYLOAD];
                rng.fill(&mut payload);
                let t = Instant::now();
                store
                    .append(&topic, Append::new(payload))
                    .await
                    .map_err(|e| e.to_string())?;
                latencies.push(t.elapsed());
            }
            Ok::<_, String>(latencies)
        });
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    store.close().await.map_err(|e| e.to_string())?;
    drop(store);
    let disk = dir_bytes(dir.path()).map_err(|e| e.to_string())?;

    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1e3
    };
    let rate = total as f64 / elapsed.as_secs_f64();
    eprintln!("log-append: {rate:.0} appends/s, p99 {:.2} ms", pct(0.99));
    Ok(json!({
        "scenario": "log-append",
        "appends": total,
        "producers": PRODUCERS,
        "payload_bytes": PAYLOAD,
        "appends_per_s": rate.round(),
        "p50_ack_ms": round2(pct(0.50)),
        "p99_ack_ms": round2(pct(0.99)),
        "disk_bytes_per_entry": round2(disk as f64 / total as f64),
        "seconds": round2(elapsed.as_secs_f64()),
        "quick": quick,
    }))
}
