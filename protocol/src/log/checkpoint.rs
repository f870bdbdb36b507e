//! The checkpoint: each topic's next offset, kept in a file beside sled's, so that a
//! truncated or rolled-back store is an error at open, not a silent loss.
//!
//! sled recovers a log cut short by dropping its tail, which is right after a crash
//! (the tail was never acknowledged) and wrong after damage at rest (it was). The owner
//! rewrites the checkpoint atomically (temporary file, fsync, rename, fsync of the
//! directory) after a durable round at most every [`INTERVAL`], and at close. It only
//! ever records durable state, so a healthy store always holds at least what it says;
//! a store that holds less has lost acknowledged entries.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::codec;

/// How often the checkpoint is rewritten while the store takes writes. Damage to entries
/// acknowledged in the last interval before a crash is not detected by it.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);

const FILE: &str = "checkpoint";

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The store format version it was written by.
    format: u32,
    /// Topic name and next offset.
    topics: Vec<(String, u64)>,
}

/// Checks a checkpoint's bytes against the store: `next` gives a topic's next offset as
/// loaded (`None`: the topic is missing). The error says what does not hold.
pub(crate) fn check(bytes: &[u8], next: impl Fn(&str) -> Option<u64>) -> Result<(), String> {
    let record: Record = codec::decode(bytes, "checkpoint").map_err(|e| e.to_string())?;
    for (topic, expected) in record.topics {
        match next(&topic) {
            None => {
                return Err(format!(
                    "topic {topic} is missing; the last checkpoint had {expected} entries"
                ));
            }
            Some(held) if held < expected => {
                return Err(format!(
                    "truncated: topic {topic} reaches offset {held}, the last checkpoint recorded {expected}"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The checkpoint file of one store, and when it was last written.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    dir: PathBuf,
    written: Option<Instant>,
}

impl Checkpoint {
    pub(crate) fn new(dir: &Path) -> Self {
        Checkpoint {
            dir: dir.to_path_buf(),
            written: None,
        }
    }

    /// Checks that the store holds at least what the checkpoint recorded: `next` gives
    /// a topic's next offset as loaded (`None`: the topic is missing).
    pub(crate) fn verify(&self, next: impl Fn(&str) -> Option<u64>) -> Result<(), String> {
        let path = self.dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let advice = format!("(remove {} to open the store as it is)", path.display());
        check(&bytes, next).map_err(|e| format!("{e} {advice}"))
    }

    /// Whether a rewrite is due (never written, or [`INTERVAL`] ago).
    pub(crate) fn due(&self) -> bool {
        self.written.is_none_or(|t| t.elapsed() >= INTERVAL)
    }

    /// Rewrites the checkpoint atomically with these topics' next offsets.
    pub(crate) fn write(&mut self, format: u32, topics: Vec<(String, u64)>) -> std::io::Result<()> {
        let bytes = codec::encode(&Record { format, topics });
        let temporary = self.dir.join(format!("{FILE}.tmp"));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, self.dir.join(FILE))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        self.written = Some(Instant::now());
        Ok(())
    }
}
