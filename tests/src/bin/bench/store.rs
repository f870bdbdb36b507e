//! Scenarios of one node's store.

use std::time::{Duration, Instant};

use protocol::entry::{Append, NodeName, Retention, Scope, TopicConfig, TopicName};
use protocol::log::{Store, StoreConfig};
use serde_json::json;
use tests::{Rng, TempDir, dir_bytes};

use crate::round2;

/// `log-append`: 200,000 durable appends of 256-byte payloads from 64 producers; then,
/// on the same directory, the disk's own limit: the latency of a 4 KiB append +
/// `fdatasync` (the durable path of a log), and the appends per second one sync per
/// round of all producers would give (`sync_limit_per_s`). Where the bytes are
/// (`disk_entry_file_bytes_per_entry`: the entry files; `disk_log_bytes_per_entry`:
/// sled's log; `disk_blob_bytes_per_entry`, `blob_files`: its blob files); then what
/// retention gives back (`retention_*`, see [`retention_pass`]).
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
    let parts = SledFiles::of(dir.path()).map_err(|e| e.to_string())?;
    let entry_files = dir_bytes(&dir.path().join("entries")).map_err(|e| e.to_string())?;
    let syncs = sync_latencies(dir.path(), if quick { 200 } else { 1000 })
        .map_err(|e| format!("sync probe: {e}"))?;
    let retention = retention_pass(dir.path(), &topic, disk).await?;
    let sync_median = syncs[syncs.len() / 2].as_secs_f64() * 1e3;
    let sync_p99 = syncs[(syncs.len() * 99 / 100).min(syncs.len() - 1)].as_secs_f64() * 1e3;
    let sync_limit = PRODUCERS as f64 / (sync_median / 1e3);

    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1e3
    };
    let rate = total as f64 / elapsed.as_secs_f64();
    eprintln!(
        "log-append: {rate:.0} appends/s, p99 {:.2} ms; disk: sync median {sync_median:.3} ms, p99 {sync_p99:.3} ms, limit {sync_limit:.0}/s",
        pct(0.99)
    );
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
        "sync_median_ms": (sync_median * 1e3).round() / 1e3,
        "sync_p99_ms": (sync_p99 * 1e3).round() / 1e3,
        "sync_limit_per_s": sync_limit.round(),
        "disk_entry_file_bytes_per_entry": round2(entry_files as f64 / total as f64),
        "disk_log_bytes_per_entry": round2(parts.log as f64 / total as f64),
        "disk_blob_bytes_per_entry": round2(parts.blobs as f64 / total as f64),
        "blob_files": parts.blob_files,
        "retention_disk_bytes_before": disk,
        "retention_disk_bytes_after_pass": retention.after_pass,
        "retention_disk_bytes_after": retention.after,
        "retention_rounds": retention.rounds,
        "quick": quick,
    }))
}

/// Where the store's bytes are after close: sled's log (`sled/db`), its blob files
/// (`sled/blobs/`, values or pages over a quarter of a segment).
struct SledFiles {
    log: u64,
    blobs: u64,
    blob_files: u64,
}

impl SledFiles {
    fn of(store: &std::path::Path) -> std::io::Result<SledFiles> {
        let sled = store.join("sled");
        let log = std::fs::metadata(sled.join("db"))?.len();
        let (mut blobs, mut blob_files) = (0, 0);
        match std::fs::read_dir(sled.join("blobs")) {
            Ok(entries) => {
                for entry in entries {
                    blobs += entry?.metadata()?.len();
                    blob_files += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(SledFiles {
            log,
            blobs,
            blob_files,
        })
    }
}

/// What a retention pass gives back, on the store the appends left (`before` bytes).
struct Reclaimed {
    /// Bytes on disk (store open, sled's files) right after the first pass.
    after_pass: u64,
    /// Bytes on disk after close, once below half of `before` or after the last round.
    after: u64,
    /// Rounds of 64 appends (each followed by a pass) it took.
    rounds: u64,
}

/// Reopens the store, keeps 1 MiB of the topic, and goes on appending 64 entries a round
/// from 64 producers with a retention pass after each (as a node's timer would), until
/// the store holds less than half of `before` (at most 200 rounds; 0 when the pass
/// itself gave the space back: it removes whole entry files).
async fn retention_pass(
    dir: &std::path::Path,
    topic: &TopicName,
    before: u64,
) -> Result<Reclaimed, String> {
    let node = NodeName::new("bench").map_err(|e| e.to_string())?;
    let store = Store::open(dir, StoreConfig::new(node)).map_err(|e| e.to_string())?;
    let config = TopicConfig {
        name: topic.clone(),
        scope: Scope::Local,
        retention: Retention {
            max_bytes: Some(1 << 20),
            ..Retention::default()
        },
    };
    store
        .create_topic(config)
        .await
        .map_err(|e| e.to_string())?;
    let removed = store
        .enforce_retention()
        .await
        .map_err(|e| e.to_string())?
        .removed;
    let after_pass = store.disk_bytes();
    let mut rng = Rng::new(0x5eed);
    let mut rounds = 0;
    while store.disk_bytes() >= before / 2 && rounds < 200 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let mut payload = vec![0; 256];
            rng.fill(&mut payload);
            let (store, topic) = (store.clone(), topic.clone());
            tasks.spawn(async move { store.append(&topic, Append::new(payload)).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        store.enforce_retention().await.map_err(|e| e.to_string())?;
        rounds += 1;
    }
    store.close().await.map_err(|e| e.to_string())?;
    drop(store);
    let after = dir_bytes(dir).map_err(|e| e.to_string())?;
    eprintln!(
        "log-append: retention removed {removed} entries; disk {before} bytes, {after_pass} after the pass, {after} after {rounds} rounds of 64 appends"
    );
    Ok(Reclaimed {
        after_pass,
        after,
        rounds,
    })
}

/// Sorted latencies of `n` rounds of a 4 KiB append + `fdatasync` to a new file in `dir`
/// (removed after).
pub(crate) fn sync_latencies(dir: &std::path::Path, n: usize) -> std::io::Result<Vec<Duration>> {
    use std::io::Write;
    let path = dir.join("sync-probe");
    let mut file = std::fs::File::create(&path)?;
    std::fs::File::open(dir)?.sync_all()?;
    let block = [0x5au8; 4096];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        out.push(t.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    out.sort_unstable();
    Ok(out)
}
