//! Crash safety: a child appends and processes in a loop; it is killed with SIGKILL at
//! random moments, many times; after each kill the store must hold every acknowledged
//! entry exactly once, with version vectors that match, and the processor's outputs,
//! documents and cursor must agree (exactly-once processing).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use protocol::entry::{Offset, Seq};
use protocol::log::{Store, StoreConfig};
use tests::{CrashNames, Rng, TempDir};

/// Kill/reopen rounds; `TETHER_CRASH_ROUNDS` sets more for a longer soak.
fn rounds() -> u64 {
    std::env::var("TETHER_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_survive_sigkill_exactly_once() {
    let mut rng = Rng::from_env("TETHER_CRASH_SEED", "crash test");
    let dir = TempDir::new("crash").unwrap();
    let names = CrashNames::get();
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut processed_total = 0;

    for round in 0..rounds() {
        // Kill after a random number of acknowledgements: the owner is then anywhere in
        // its cycle (taking requests, writing a batch, in fsync, replying).
        let kill_after = rng.range(1, 600);
        let mut child = spawn_child(dir.path());
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < kill_after {
            let Some(line) = lines.next() else { break };
            record_ack(&line.unwrap(), &mut acked);
            seen += 1;
        }
        child.kill().unwrap(); // SIGKILL
        // Acknowledgements already in the pipe were given before the kill: they count.
        for line in lines {
            record_ack(&line.unwrap(), &mut acked);
        }
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(
            seen == kill_after,
            "round {round}: child stopped early ({status}): {stderr}"
        );

        processed_total = check_store(dir.path(), &names, &acked, round).await;
    }
    assert!(
        acked.len() as u64 >= rounds(),
        "each round acknowledged at least one append"
    );
    eprintln!(
        "{} rounds, {} acknowledged appends, {processed_total} processed",
        rounds(),
        acked.len()
    );
}

fn spawn_child(dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crash-writer")
}

fn record_ack(line: &str, acked: &mut BTreeMap<u64, String>) {
    let mut parts = line.split(' ');
    let (Some("ack"), Some(seq), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("unexpected line from the child: {line:?}");
    };
    let seq: u64 = seq.parse().unwrap();
    let previous = acked.insert(seq, token.to_owned());
    assert!(previous.is_none(), "sequence {seq} acknowledged twice");
}

/// Reopens the store and checks every promise; returns how many entries were processed.
async fn check_store(
    dir: &std::path::Path,
    names: &CrashNames,
    acked: &BTreeMap<u64, String>,
    round: u64,
) -> usize {
    let store = Store::open(dir, StoreConfig::new(names.node.clone()))
        .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));

    // The input topic: dense offsets, dense sequences, each token once.
    let input = store.read(&names.input, Offset(0), usize::MAX).unwrap();
    let mut tokens = HashMap::new();
    for (i, record) in input.iter().enumerate() {
        assert_eq!(
            record.offset,
            Offset(i as u64),
            "round {round}: offsets have a hole"
        );
        assert_eq!(record.entry.id.origin, names.node);
        assert_eq!(
            record.entry.id.seq,
            Seq(i as u64 + 1),
            "round {round}: sequences have a hole"
        );
        let token = String::from_utf8(record.entry.payload.clone()).unwrap();
        assert!(
            tokens.insert(token, record.entry.id.seq.0).is_none(),
            "round {round}: an entry is stored twice"
        );
    }
    for (seq, token) in acked {
        assert_eq!(
            tokens.get(token),
            Some(seq),
            "round {round}: acknowledged entry {seq} ({token}) is missing or moved"
        );
    }
    let vector = store.vector(&names.input).unwrap();
    assert_eq!(
        vector.get(&names.node),
        Seq(input.len() as u64),
        "round {round}: vector does not match the entries"
    );
    assert_eq!(vector.0.len(), usize::from(!input.is_empty()));

    // The processor: outputs, documents and cursor agree, each input processed once.
    let cursor = store.cursor(&names.consumer, &names.input).unwrap().0 as usize;
    assert!(
        cursor <= input.len(),
        "round {round}: cursor past the input"
    );
    let outputs: Vec<usize> = store
        .read(&names.output, Offset(0), usize::MAX)
        .unwrap()
        .iter()
        .map(|r| {
            String::from_utf8(r.entry.payload.clone())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        outputs,
        (0..cursor).collect::<Vec<_>>(),
        "round {round}: outputs are not exactly the processed inputs"
    );
    let docs: BTreeSet<usize> = store
        .docs(&names.table)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.parse().unwrap())
        .collect();
    assert_eq!(
        docs,
        (0..cursor).collect(),
        "round {round}: documents do not match the cursor"
    );
    assert_eq!(
        store.vector(&names.output).unwrap().get(&names.node),
        Seq(cursor as u64)
    );

    store.close().await.unwrap();
    cursor
}
