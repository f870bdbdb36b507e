//! Crash safety of the edge's mirror (issue 5), two ways:
//!
//! - a child (`mirror-apply`) mirrors tree A, then B, then A, ... into one mirror
//!   directory and is killed with SIGKILL at random points of its applies;
//! - a child edge (`mirror-edge`: store, link and mirror) mirrors the volume of an
//!   in-process core over QUIC and is killed with SIGKILL at random moments of its runs
//!   (planning, fetching, applying); each time it holds what the core serves, the core's
//!   volume switches to the other tree. A last run, not killed, must equal the volume.
//!
//! After every kill, what readers see through `current` must be exactly the empty start,
//! tree A or tree B, never a mix, both before and after the mirror is reopened (recovery).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use protocol::mirror::{ChunkParams, Limits, Manifest, Node, ReplicaVolume, SourceVolume};
use protocol::node::{Builder, Role};
use protocol::tls::Ca;
use tests::cluster::{self, name, node_config};
use tests::{Rng, TempDir};

/// How long the network test waits for one line of its child or for the core's watcher.
const PATIENCE: Duration = Duration::from_secs(60);

/// Kill/reopen rounds; `TETHER_MIRROR_KILL_ROUNDS` sets more for a longer soak.
fn rounds() -> u64 {
    std::env::var("TETHER_MIRROR_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

#[test]
fn a_killed_apply_leaves_the_old_or_the_new_tree() {
    let mut rng = Rng::from_env("TETHER_MIRROR_KILL_SEED", "mirror kill test");
    let dir = TempDir::new("mirror-kill").unwrap();
    let (a, b, edge) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("edge"),
    );
    trees(&a, &b, &mut rng);
    let expected = [vec![], describe_tree(&a), describe_tree(&b)];
    assert_ne!(expected[1], expected[2]);

    let mut seen = [0u32; 3];
    for round in 0..rounds() {
        // Each apply prints about 70 lines; this kills anywhere in the first few applies.
        let kill_after = rng.range(1, 250);
        let mut child = Command::new(env!("CARGO_BIN_EXE_mirror-apply"))
            .args([&edge, &a, &b])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mirror-apply");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut read = 0;
        while read < kill_after {
            if lines.next().is_none() {
                break;
            }
            read += 1;
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(
            read, kill_after,
            "round {round}: child stopped early ({status}): {stderr}"
        );

        // What a reader sees now, before any recovery.
        let now = describe_tree(&edge.join("current"));
        let which = expected.iter().position(|e| *e == now);
        assert!(which.is_some(), "round {round}: a mixed tree: {now:?}");
        // And after the mirror is reopened.
        let replica = ReplicaVolume::open(&edge, Limits::default()).unwrap();
        assert_eq!(describe_tree(&replica.current_dir()), now, "round {round}");
        assert_eq!(describe(replica.current()), now, "round {round}");
        seen[which.unwrap_or(0)] += 1;
    }
    eprintln!(
        "{} rounds: empty {}, A {}, B {}",
        rounds(),
        seen[0],
        seen[1],
        seen[2]
    );
    assert!(seen[1] + seen[2] > 0, "no apply ever completed");
}

/// Two trees that share most of their content: B edits a large file, renames a
/// directory, deletes and adds files, and changes a symlink.
fn trees(a: &Path, b: &Path, rng: &mut Rng) {
    let mut big = vec![0u8; 2 << 20];
    rng.fill(&mut big);
    let mut smalls = Vec::new();
    for _ in 0..20 {
        let mut s = vec![0u8; rng.range(0, 20_000) as usize];
        rng.fill(&mut s);
        smalls.push(s);
    }
    for (root, edited) in [(a, false), (b, true)] {
        let mut big = big.clone();
        if edited {
            rng.fill(&mut big[1 << 20..(1 << 20) + 4096]);
        }
        write(root, "media/big.bin", &big);
        let docs = if edited { "papers" } else { "docs" };
        for (i, s) in smalls.iter().enumerate() {
            if edited && i % 5 == 0 {
                continue;
            }
            write(root, &format!("{docs}/s{i:02}"), s);
        }
        if edited {
            write(root, "new/added.txt", b"only in B");
        }
        fs::create_dir_all(root.join("empty")).unwrap();
        let target = if edited { "s01" } else { "s02" };
        symlink(target, root.join(docs).join("link")).unwrap();
    }
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A tree as (path, kind and content hash or link target), scanned from disk.
fn describe_tree(root: &Path) -> Vec<(String, String)> {
    let mut volume = SourceVolume::unwatched(root, ChunkParams::default()).unwrap();
    let snapshot = volume.manifest().unwrap();
    assert!(volume.problems().is_empty(), "{:?}", volume.problems());
    describe(&snapshot.manifest)
}

fn describe(manifest: &Manifest) -> Vec<(String, String)> {
    manifest
        .entries
        .iter()
        .map(|e| {
            let what = match &e.node {
                Node::Dir { .. } => "dir".to_string(),
                Node::File(f) => format!("file {}", f.hash()),
                Node::Symlink { target } => format!("link {target}"),
            };
            (e.path.to_string(), what)
        })
        .collect()
}

/// Kill rounds of the network test; `TETHER_MIRROR_EDGE_KILL_ROUNDS` sets more.
fn edge_rounds() -> u64 {
    std::env::var("TETHER_MIRROR_EDGE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

/// The core of the network test: serving `volume`, listening on 127.0.0.1.
async fn serve_volume(dir: &Path, ca: &Ca, volume: PathBuf) -> cluster::Node {
    let mut config = node_config(Role::Core, "hq", dir.join("hq"), &[]);
    config.mirror.volume = Some(volume);
    let identity = ca.issue(&name("hq"), Role::Core).unwrap();
    let builder = Builder::new(Role::Core, config).identity(identity);
    cluster::Node::start(builder).await.unwrap()
}

/// A running `mirror-edge` child and its stdout lines.
struct EdgeChild {
    child: Child,
    lines: tokio::sync::mpsc::Receiver<String>,
}

impl EdgeChild {
    fn start(data: &Path, certs: &Path, core: SocketAddr) -> EdgeChild {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mirror-edge"))
            .arg(data)
            .arg(certs)
            .arg(core.to_string())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mirror-edge");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        EdgeChild { child, lines }
    }

    /// The next line; `None` once the child closed its stdout (it exited).
    async fn next(&mut self, context: &str) -> Option<String> {
        match tokio::time::timeout(PATIENCE, self.lines.recv()).await {
            Ok(line) => line,
            Err(_) => panic!("{context}: no line from mirror-edge within {PATIENCE:?}"),
        }
    }

    /// SIGKILL by PID (unless it already exited), then its exit status and stderr.
    fn kill(mut self) -> (ExitStatus, String) {
        if self.child.try_wait().unwrap().is_none() {
            self.child.kill().unwrap();
        }
        self.wait()
    }

    /// Waits for its exit; returns its status and stderr.
    fn wait(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stderr)
    }
}

/// Replaces the volume's content by a copy of `tree`.
fn replace_volume(volume: &Path, tree: &Path) {
    for entry in fs::read_dir(volume).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
    }
    copy_tree(tree, volume);
}

/// Copies the tree `from` into the directory `to`, symlinks made in place (the core's
/// watcher must not take a new symlink for a file being written).
fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            symlink(fs::read_link(&source).unwrap(), dest).unwrap();
        } else if kind.is_dir() {
            fs::create_dir(&dest).unwrap();
            copy_tree(&source, &dest);
        } else {
            fs::copy(&source, dest).unwrap();
        }
    }
}

/// Two trees for the network test; B rewrites half of A's large file (so a mirror from
/// one to the other fetches a few dozen chunks), renames a directory, edits, deletes and
/// adds files, and changes a symlink.
fn network_trees(a: &Path, b: &Path, rng: &mut Rng) {
    trees(a, b, rng);
    let mut half = vec![0u8; 1 << 20];
    rng.fill(&mut half);
    let big = b.join("media/big.bin");
    let mut bytes = fs::read(&big).unwrap();
    bytes.truncate(1 << 20);
    bytes.extend_from_slice(&half);
    fs::write(big, bytes).unwrap();
    let mut edited = vec![0u8; 300_000];
    rng.fill(&mut edited);
    write(b, "papers/s03", &edited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_mirroring_over_quic_shows_the_old_or_the_new_tree() {
    let mut rng = Rng::from_env("TETHER_MIRROR_EDGE_KILL_SEED", "edge mirror kill test");
    let dir = TempDir::new("mirror-edge-kill").unwrap();
    let path = |p: &str| dir.path().join(p);
    network_trees(&path("a"), &path("b"), &mut rng);
    let templates = [path("a"), path("b")];
    let expected = [
        vec![],
        describe_tree(&templates[0]),
        describe_tree(&templates[1]),
    ];
    let ca = Ca::create("mirror kill test").unwrap();
    let certs = path("certs");
    ca.save(&certs).unwrap();
    ca.issue(&name("alpha"), Role::Edge)
        .unwrap()
        .save(&certs)
        .unwrap();
    let volume = path("volume");
    fs::create_dir(&volume).unwrap();
    copy_tree(&templates[0], &volume);
    // The core serves A first; each time the edge holds what the core serves, the core
    // switches to the other tree, so every mirror has an old and a new state.
    let mut serving = 1;
    let core = serve_volume(dir.path(), &ca, volume.clone()).await;
    let (core_addr, source) = (core.addr().unwrap(), core.source.as_ref().unwrap());
    let (data, current) = (path("alpha"), path("alpha/mirror/current"));

    let (mut seen, mut switches, mut cut) = ([0u32; 3], 0, 0);
    for round in 0..edge_rounds() {
        let context = format!("round {round}");
        // A few dozen lines make one mirror: kills land before, during and after runs.
        let kill_after = rng.range(1, 40);
        let mut child = EdgeChild::start(&data, &certs, core_addr);
        let (mut read, mut done) = (0, false);
        while read < kill_after && !done {
            let Some(line) = child.next(&context).await else {
                let (status, stderr) = child.kill();
                panic!("{context}: mirror-edge exited ({status}): {stderr}");
            };
            read += 1;
            done = line.starts_with("done");
        }
        cut += u64::from(!done);
        let (status, stderr) = child.kill();
        assert!(
            status.success() || status.signal() == Some(9),
            "{context}: mirror-edge failed ({status}): {stderr}"
        );

        // What a reader sees now, before any recovery, and (every other round, so that
        // the next child also recovers from kills itself) after the mirror is reopened.
        let now = describe_tree(&current);
        let which = expected.iter().position(|e| *e == now);
        let Some(which) = which else {
            panic!("{context}: a mixed tree: {now:?}");
        };
        if round % 2 == 1 {
            let replica = ReplicaVolume::open(&data.join("mirror"), Limits::default()).unwrap();
            assert_eq!(describe(replica.current()), now, "{context}");
            assert_eq!(describe_tree(&replica.current_dir()), now, "{context}");
        }
        seen[which] += 1;
        if which == serving {
            serving = 3 - serving;
            replace_volume(&volume, &templates[serving - 1]);
            source.settled(PATIENCE).await.unwrap();
            switches += 1;
        }
    }

    // A last run, not killed, completes and equals the core's volume.
    let mut child = EdgeChild::start(&data, &certs, core_addr);
    let mut done = false;
    // Until it closes its stdout: it exits by itself once the mirror is done.
    while let Some(line) = child.next("last run").await {
        done |= line.starts_with("done");
    }
    let (status, stderr) = child.wait();
    assert!(done && status.success(), "last run: {status}: {stderr}");
    assert_eq!(describe_tree(&current), expected[serving], "last run");
    assert_eq!(describe_tree(&current), describe_tree(&volume), "last run");
    eprintln!(
        "{} rounds, {cut} killed before the end of a mirror: empty {}, A {}, B {}; the core \
         switched trees {switches} times",
        edge_rounds(),
        seen[0],
        seen[1],
        seen[2]
    );
}
