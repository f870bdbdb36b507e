//! The crash test's child: appends and processes entries in a loop until it is killed.
//!
//! Usage: `crash-writer <store-dir>`. Eight producers append to `crash.in`; after each
//! acknowledged append, a line `ack <seq> <token>` goes to stdout. A processor consumes
//! `crash.in` and, per entry, appends its offset to `crash.out` and writes a document,
//! committing its cursor in the same transaction. The parent kills this process with
//! SIGKILL at random moments and checks the store after each kill.

use std::io::Write;
use std::process::ExitCode;

use protocol::entry::{Append, Offset};
use protocol::log::{Store, StoreConfig, Txn};
use tests::CrashNames;

const PRODUCERS: usize = 8;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: crash-writer <store-dir>");
        return ExitCode::from(2);
    };
    let runtime = match tests::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(dir.into())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(dir: std::path::PathBuf) -> Result<(), String> {
    let names = CrashNames::get();
    let store =
        Store::open(&dir, StoreConfig::new(names.node.clone())).map_err(|e| e.to_string())?;
    for topic in names.topics() {
        store.create_topic(topic).await.map_err(|e| e.to_string())?;
    }
    let pid = std::process::id();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PRODUCERS {
        let (store, topic) = (store.clone(), names.input.clone());
        tasks.spawn(async move {
            for i in 0u64.. {
                let token = format!("{pid}-{p}-{i}");
                let done = store
                    .append(&topic, Append::new(token.clone()))
                    .await
                    .map_err(|e| e.to_string())?;
                // Written only after the append is acknowledged (durable).
                let mut out = std::io::stdout().lock();
                writeln!(out, "ack {} {token}", done.seq).map_err(|e| e.to_string())?;
            }
            Ok(())
        });
    }
    let mut consumer = store
        .consumer(names.consumer.clone(), names.input.clone())
        .map_err(|e| e.to_string())?;
    tasks.spawn(async move {
        loop {
            let batch = consumer.poll(16).await.map_err(|e| e.to_string())?;
            let mut txn = Txn::new();
            let mut next = consumer.position();
            for record in &batch {
                let offset = record.offset.0.to_string();
                txn.append(&names.output, Append::new(offset.clone()));
                txn.put(
                    &names.table,
                    &offset,
                    serde_json::json!({ "seq": record.entry.id.seq.0 }),
                );
                next = Offset(record.offset.0 + 1);
            }
            consumer
                .commit(txn, next)
                .await
                .map_err(|e| e.to_string())?;
        }
    });
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(()),
    }
}
