//! Reading a stream exactly once, for the way in and the backbone's: a durable pull
//! consumer made again at each session, starting after the stream sequence this node
//! stored in the same transaction as what it took, so that nothing fetched and never
//! acknowledged comes back later behind newer messages.
//!
//! IO: NATS (async-nats), the store.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt as _;
use serde_json::json;

use crate::log::{Store, TableName, Txn};

/// The store table that holds, per stream, the sequence taken through.
const TABLE: &str = "_bridge";

/// How long JetStream waits for an acknowledgement before it delivers again.
const ACK_WAIT: Duration = Duration::from_secs(60);

fn table() -> Result<TableName, String> {
    TableName::new(TABLE).map_err(|e| e.to_string())
}

/// The sequence of `stream` this node has taken through (0: nothing yet).
pub(super) fn taken_through(store: &Store, stream: &str) -> Result<u64, String> {
    Ok(store
        .doc(&table()?, stream)
        .map_err(|e| e.to_string())?
        .and_then(|doc| doc.get("through").and_then(|v| v.as_u64()))
        .unwrap_or(0))
}

/// Adds to `txn` that `stream` is taken through `through`.
pub(super) fn take_through(txn: &mut Txn, stream: &str, through: u64) -> Result<(), String> {
    txn.put(
        &table()?,
        stream,
        json!({ "stream": stream, "through": through }),
    );
    Ok(())
}

/// The durable consumer `name` on `stream` (subjects `filter`), made again to deliver
/// from after `position`, with up to `batch` × 4 messages unacknowledged.
pub(super) async fn consumer_after(
    stream: &jetstream::stream::Stream,
    name: &str,
    filter: String,
    position: u64,
    batch: usize,
) -> Result<jetstream::consumer::PullConsumer, String> {
    // Not there (the first session) is fine; any other failure shows when it is made.
    if let Err(e) = stream.delete_consumer(name).await {
        tracing::debug!(consumer = %name, error = %e, "bridge: the consumer was not deleted");
    }
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subject: filter,
            deliver_policy: match position {
                0 => jetstream::consumer::DeliverPolicy::All,
                through => jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: through + 1,
                },
            },
            ack_policy: jetstream::consumer::AckPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: (batch * 4) as i64,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("consumer {name}: {e}"))
}

/// Up to `batch` messages, waiting at most `wait` for them (none: an empty batch).
pub(super) async fn fetch(
    consumer: &jetstream::consumer::PullConsumer,
    batch: usize,
    wait: Duration,
) -> Result<Vec<jetstream::Message>, String> {
    let mut fetched = consumer
        .fetch()
        .max_messages(batch)
        .expires(wait)
        .messages()
        .await
        .map_err(|e| format!("fetching: {e}"))?;
    let mut messages = Vec::new();
    while let Some(message) = fetched.next().await {
        messages.push(message.map_err(|e| format!("fetching: {e}"))?);
    }
    Ok(messages)
}
