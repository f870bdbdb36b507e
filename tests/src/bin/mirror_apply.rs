//! The mirror kill test's child: mirrors two source trees into one edge mirror, A then B
//! then A, forever, until it is killed.
//!
//! Usage: `mirror-apply <mirror-dir> <tree-a> <tree-b>`. Each round begins a mirror of
//! whichever tree `current` does not hold, receives the missing chunks (read and checked
//! from the tree, as the core serves them), and applies it. A line goes to stdout before
//! every step of the apply (`step ...`) and after each one (`applied <root>`), so the
//! parent can kill it at random points of the apply. Stdout is line-buffered: a line is
//! out before the step runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use protocol::mirror::{ApplyStep, ChunkParams, Limits, ReplicaVolume, SourceVolume};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [mirror, a, b] = args.as_slice() else {
        eprintln!("usage: mirror-apply <mirror-dir> <tree-a> <tree-b>");
        return ExitCode::from(2);
    };
    match run(mirror, [a.as_path(), b.as_path()]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mirror: &Path, trees: [&Path; 2]) -> Result<(), String> {
    let mut sources = Vec::new();
    for tree in trees {
        let mut source =
            SourceVolume::unwatched(tree, ChunkParams::default()).map_err(|e| e.to_string())?;
        let snapshot = source.manifest().map_err(|e| e.to_string())?;
        sources.push((source, snapshot));
    }
    let mut replica = ReplicaVolume::open(mirror, Limits::default()).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout();
    loop {
        let holds_a = replica.current().root() == sources[0].1.root;
        let (source, snapshot) = &sources[usize::from(holds_a)];
        let plan = replica
            .begin(snapshot.manifest.clone())
            .map_err(|e| e.to_string())?;
        for chunk in &plan.fetch {
            let bytes = source.read_chunk(&chunk.hash).map_err(|e| e.to_string())?;
            replica
                .receive(&chunk.hash, &bytes)
                .map_err(|e| e.to_string())?;
        }
        replica.sync().map_err(|e| e.to_string())?;
        replica
            .apply_with(&mut |step| {
                let line = match step {
                    ApplyStep::Write { path, bytes } => format!("step write {path} {bytes}"),
                    ApplyStep::Entry(path) => format!("step entry {path}"),
                    other => format!("step {other:?}"),
                };
                writeln!(out, "{line}")
            })
            .map_err(|e| e.to_string())?;
        writeln!(out, "applied {}", snapshot.root).map_err(|e| e.to_string())?;
    }
}
