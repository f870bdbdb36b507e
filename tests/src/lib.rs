//! Support shared by the end-to-end tests (`it/`), the crash child and the bench runner:
//! scratch directories, a seeded random generator, the crash scenario's topics, and the
//! link emulator with its named profiles ([`link`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::entry::{NodeName, Retention, Scope, TopicConfig, TopicName};
use protocol::log::{ConsumerName, TableName};

pub mod cluster;
pub mod emulator;
pub mod fleet;
pub mod mission;

/// A scratch directory under the system temp dir, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory whose name says what it is for.
    pub fn new(purpose: &str) -> std::io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tether-{purpose}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The runtime of the bench runner and the crash child: two workers, as on the target
/// machine's two cores.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Bytes held by the files under `dir`, recursively.
pub fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// A small, seeded generator (xorshift64*): reproducible runs without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// A generator seeded from the variable `var` if it holds a number, else from the
    /// clock; prints the seed and how to replay it, naming the test as `what`.
    pub fn from_env(var: &str, what: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(Rng::seed_from_clock);
        eprintln!("{what} seed {seed} (set {var} to replay)");
        Rng::new(seed)
    }

    /// A seed from the clock, to print and reuse.
    pub fn seed_from_clock() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Names used by the crash child and the crash test, in one place.
#[derive(Debug)]
pub struct CrashNames {
    /// The node that owns the store.
    pub node: NodeName,
    /// Producers append here.
    pub input: TopicName,
    /// The processor appends one entry per input entry here.
    pub output: TopicName,
    /// The processor's durable cursor over `input`.
    pub consumer: ConsumerName,
    /// The processor writes one document per input entry here.
    pub table: TableName,
}

impl CrashNames {
    /// The names.
    pub fn get() -> Self {
        // Literal names that follow the rules; a failure here is a bug in this function.
        let valid = "crash scenario names are valid";
        CrashNames {
            node: NodeName::new("crash").expect(valid),
            input: TopicName::new("crash.in").expect(valid),
            output: TopicName::new("crash.out").expect(valid),
            consumer: ConsumerName::new("crash.processor").expect(valid),
            table: TableName::new("crash").expect(valid),
        }
    }

    /// The two topics, local and without retention.
    pub fn topics(&self) -> [TopicConfig; 2] {
        let topic = |name: &TopicName| TopicConfig {
            name: name.clone(),
            scope: Scope::Local,
            retention: Retention::default(),
        };
        [topic(&self.input), topic(&self.output)]
    }
}
