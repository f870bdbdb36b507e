//! The mission pipeline with the real binaries (issue 6): `core-node` with its built-in
//! demo feed and `edge-node`, as child processes linked over QUIC on 127.0.0.1, each with
//! its own sled store.
//!
//! - End to end: a feed item at HQ is downloaded, broadcast and listed at the edge; the
//!   operator requests it on the stopped edge (`edge-node request`), HQ answers, the
//!   operator mirrors (`edge-node mirror`), the edge's viewer receives it, and the file
//!   at the edge is byte for byte HQ's original image. The time each step took is
//!   printed (loopback, and through the link emulator's `satcom` profile).
//! - Crashes: HQ and the edge are killed with SIGKILL at random moments while the
//!   pipeline runs, and restarted on the same data; requests are made along the way.
//!   Every other round the edge runs on through HQ's kill and restart: it must hear the
//!   restarted HQ's stateless reset (`link down` with a reset as its reason), link again
//!   and carry on by itself.
//!   Once the edge holds every asset, both stores must show each asset processed exactly
//!   once by every service. `TETHER_MISSION_ROUNDS` (default 5) sets the rounds; the
//!   seed is printed, `TETHER_MISSION_SEED` replays it.
//!
//! Every wait is on a log line (each durable tile is logged as `tile: <text>` with its
//! service and asset), with a timeout; nothing is timed or asserted on time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mission::Response;
use protocol::entry::{NodeName, Offset, Record};
use protocol::log::{ConsumerName, Store, StoreConfig};
use protocol::service::Tile;
use serde_json::Value;
use tests::{Rng, TempDir};

use crate::support::process::{Node, binary, field};

/// The demo feed's items: every one must reach the edge.
const COUNT: usize = core_node::demo_feed::DEFAULT_COUNT;

/// One tile as a node logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Logged {
    service: String,
    text: String,
    asset: String,
}

/// The tile in a log line, if it is one: `... tile: <text> service=<s> title=<t>
/// asset="<id>"`.
fn parse_tile(line: &str) -> Option<Logged> {
    let rest = &line[line.find(" tile: ")? + " tile: ".len()..];
    let (text, fields) = rest.rsplit_once(" service=")?;
    let (service, fields) = fields.split_once(' ')?;
    let (_, asset) = fields.rsplit_once(" asset=")?;
    Some(Logged {
        service: service.to_owned(),
        text: text.to_owned(),
        asset: asset.trim_matches('"').to_owned(),
    })
}

/// A node process, with the lines and the tiles it logged in this run.
struct Proc {
    node: Node,
    what: &'static str,
    lines: Vec<(Instant, String)>,
    tiles: Vec<(Instant, Logged)>,
}

impl Proc {
    fn start(binary_name: &'static str, config: &Path) -> Proc {
        Proc {
            node: Node::start(binary_name, config),
            what: binary_name,
            lines: Vec::new(),
            tiles: Vec::new(),
        }
    }

    /// The next log line; records it if it is a tile. A tile that says an asset failed
    /// ends the test at once: nothing in these scenarios should fail.
    fn next(&mut self, waiting_for: &str) -> (Instant, String) {
        let (at, line) = self
            .node
            .next_line(&format!("{}: {waiting_for}", self.what));
        self.record(at, line)
    }

    /// Takes in the lines written so far.
    fn drain(&mut self) {
        while let Some((at, line)) = self.node.try_next_line() {
            self.record(at, line);
        }
    }

    fn record(&mut self, at: Instant, line: String) -> (Instant, String) {
        if let Some(tile) = parse_tile(&line) {
            assert!(
                !tile.text.starts_with("Download failed") && !tile.text.contains("Not found"),
                "{}: an asset failed: {line}",
                self.what
            );
            self.tiles.push((at, tile));
        }
        self.lines.push((at, line.clone()));
        (at, line)
    }

    /// The first log line of this run for which `check` holds, logged already or waited
    /// for.
    fn line(&mut self, check: impl Fn(&str) -> bool, what: &str) -> (Instant, String) {
        if let Some(found) = self.lines.iter().find(|(_, l)| check(l)) {
            return found.clone();
        }
        loop {
            let (at, line) = self.next(what);
            if check(&line) {
                return (at, line);
            }
        }
    }

    /// The first log line after the first `from` lines of this run for which `check`
    /// holds, logged already or waited for until `deadline`.
    fn line_after(
        &mut self,
        from: usize,
        deadline: Instant,
        check: impl Fn(&str) -> bool,
        what: &str,
    ) -> (usize, Instant, String) {
        if let Some(i) = (from..self.lines.len()).find(|&i| check(&self.lines[i].1)) {
            let (at, line) = self.lines[i].clone();
            return (i, at, line);
        }
        loop {
            let (at, line) = self
                .node
                .next_line_by(deadline, &format!("{}: {what}", self.what));
            let (at, line) = self.record(at, line);
            if check(&line) {
                return (self.lines.len() - 1, at, line);
            }
        }
    }

    /// The first tile of this run for which `check` holds, logged already or waited for.
    fn tile(&mut self, check: impl Fn(&Logged) -> bool, what: &str) -> (Instant, Logged) {
        if let Some(found) = self.tiles.iter().find(|(_, t)| check(t)) {
            return found.clone();
        }
        loop {
            self.next(what);
            if let Some(found) = self.tiles.last().filter(|(_, t)| check(t)) {
                return found.clone();
            }
        }
    }

    /// Waits until `done` holds for the tiles of this run.
    fn until(&mut self, done: impl Fn(&[(Instant, Logged)]) -> bool, what: &str) {
        while !done(&self.tiles) {
            self.next(what);
        }
    }

    /// SIGTERM once the node handles it (it does before it logs `node ready`); the node
    /// must stop cleanly.
    fn stop(mut self) {
        self.line(|l| l.contains("node ready"), "node ready");
        self.node.signal("TERM");
        let (status, log) = self.node.exit();
        assert!(
            status.success(),
            "{} exited with {status}:\n{log}",
            self.what
        );
    }
}

/// HQ's config: the demo feed at `feed_every`, `feed_batch` items a time; HTTP and the
/// link on the given addresses.
fn hq_config(dir: &Path, link: &str, http: &str, feed_every: &str, feed_batch: u32) -> PathBuf {
    let path = dir.join("hq.toml");
    let text = format!(
        "[node]\nname = \"hq\"\ndata_dir = \"{}\"\n\
         [http]\nlisten = \"{http}\"\n\
         [link]\nlisten = \"{link}\"\n\
         [pipeline]\nfeed_every = \"{feed_every}\"\nfeed_batch = {feed_batch}\n",
        dir.join("hq").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The edge's config: it dials `core` with the certificates HQ made for its listed edges
/// (demo mode).
fn edge_config(dir: &Path, core: &str) -> PathBuf {
    let path = dir.join("alpha.toml");
    let text = format!(
        "[node]\nname = \"alpha\"\ndata_dir = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [link]\ncore = \"{core}\"\ncerts_dir = \"{}\"\n",
        dir.join("alpha").display(),
        dir.join("hq/certs").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts HQ; returns it with the addresses of its link and its HTTP server.
fn start_hq(config: &Path) -> (Proc, String, String) {
    let mut hq = Proc::start("core-node", config);
    let (_, ready) = hq.line(|l| l.contains("node ready"), "node ready");
    let (_, http) = hq.line(|l| l.contains("HQ serves HTTP"), "HQ serves HTTP");
    (hq, field(&ready, "link="), field(&http, "http="))
}

/// `edge-node request <id>` on the stopped edge.
fn request(config: &Path, id: &str) {
    let out = Command::new(binary("edge-node"))
        .args(["request", id, "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("asset {id} is wanted")),
        "edge-node request {id}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens a stopped node's store.
fn open(data: &Path, name: &str) -> Store {
    Store::open(
        data.join("store"),
        StoreConfig::new(NodeName::new(name).unwrap()),
    )
    .unwrap()
}

/// Closes a store, so that its node can open it again.
fn close(store: Store) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(store.close()).unwrap();
}

fn read(store: &Store, topic: &str) -> Vec<Record> {
    store
        .read(&mission::topic(topic), Offset(0), usize::MAX)
        .unwrap()
}

fn key(record: &Record) -> String {
    String::from_utf8(record.entry.key.clone().unwrap_or_default()).unwrap()
}

/// How many times each key occurs in `topic`.
fn keys(store: &Store, topic: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in read(store, topic) {
        *counts.entry(key(&record)).or_default() += 1;
    }
    counts
}

fn state(doc: &Value) -> &str {
    doc.get("state").and_then(Value::as_str).unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

// ---------------------------------------------------------------------------------------
// End to end.

/// The moments one asset went through the pipeline (each when its log line was written),
/// for the closing note's figures.
struct Moments {
    /// HQ: "New in the feed", "Downloaded", "Broadcast to the field".
    fed: Instant,
    downloaded: Instant,
    broadcast: Instant,
    /// The edge: "Available".
    listed: Instant,
    /// The edge, started again after the operator's `edge-node request`: its start,
    /// "Requested from HQ", its link up, "Ready at HQ".
    request_start: Instant,
    requested: Instant,
    request_link_up: Instant,
    ready: Instant,
    /// `edge-node mirror`: its start, its link up, "mirror done", its exit.
    mirror_start: Instant,
    mirror_link_up: Instant,
    mirrored: Instant,
    mirror_exit: Instant,
    /// The edge, started again: its start, "Received".
    receive_start: Instant,
    received: Instant,
}

impl Moments {
    fn print(&self, link: &str, id: &str) {
        let d = |from: Instant, to: Instant| to.saturating_duration_since(from);
        // What a running, linked edge would take: the edge's restarts and dials are the
        // artefacts of doing each step on a stopped node.
        let ready_after = self.requested.max(self.request_link_up);
        let pipeline = d(self.fed, self.listed)
            + d(ready_after, self.ready)
            + d(self.mirror_link_up, self.mirrored)
            + d(self.receive_start, self.received);
        eprintln!(
            "pipeline timings ({link}, asset {id}):\n\
             \x20 feed -> listed at the edge: {} (feed -> downloaded {}, -> broadcast {}, -> listed at the edge {})\n\
             \x20 request -> ready at the edge: {} with the link up (edge start -> requested {}, -> link up {}, -> ready {})\n\
             \x20 mirror: {} from link up to done (`edge-node mirror` start -> link up {}, -> done {}, -> exit {})\n\
             \x20 edge start -> received: {}\n\
             \x20 pipeline without the operator's steps and the edge's restarts (sum of the first of each): {}; \
             wall time feed -> received, operator included: {}",
            ms(d(self.fed, self.listed)),
            ms(d(self.fed, self.downloaded)),
            ms(d(self.downloaded, self.broadcast)),
            ms(d(self.broadcast, self.listed)),
            ms(d(ready_after, self.ready)),
            ms(d(self.request_start, self.requested)),
            ms(d(self.request_start, self.request_link_up)),
            ms(d(self.request_start, self.ready)),
            ms(d(self.mirror_link_up, self.mirrored)),
            ms(d(self.mirror_start, self.mirror_link_up)),
            ms(d(self.mirror_start, self.mirrored)),
            ms(d(self.mirror_start, self.mirror_exit)),
            ms(d(self.receive_start, self.received)),
            ms(pipeline),
            ms(d(self.fed, self.received)),
        );
    }
}

/// The whole pipeline with the real binaries; `profile`: through the link emulator with
/// that profile, else straight over loopback. Returns after checking the bytes.
fn end_to_end(profile: Option<&str>, feed_every: &str, feed_batch: u32) {
    let dir = TempDir::new("mission-e2e").unwrap();
    let hq_data = dir.path().join("hq");
    let alpha_data = dir.path().join("alpha");
    let hq_toml = hq_config(
        dir.path(),
        "127.0.0.1:0",
        "127.0.0.1:0",
        feed_every,
        feed_batch,
    );
    let (mut hq, link, _) = start_hq(&hq_toml);
    // Through the emulator: the edge dials the relay, which forwards to HQ.
    let relay = profile.map(|profile| {
        let mut relay = Node::spawn(Command::new(env!("CARGO_BIN_EXE_emulator")).args([
            "--listen",
            "127.0.0.1:0",
            "--to",
            &link,
            "--profile",
            profile,
        ]));
        let line = relay.wait_for_line(|l| l.starts_with("link: "), "the relay's address");
        let address = line.split_whitespace().nth(1).unwrap().to_owned();
        (relay, address)
    });
    let core = relay.as_ref().map_or(&link, |(_, address)| address);
    let edge_toml = edge_config(dir.path(), core);

    // An asset fed after the edge's link is up: its time to the edge is the pipeline's,
    // not the time the edge took to connect.
    let mut edge = Proc::start("edge-node", &edge_toml);
    let (link_up, _) = edge.line(|l| l.contains("link up"), "link up");
    let mut count = 0;
    let (id, fed, listed) = loop {
        let (at, tile) = edge.tile(
            |t| t.service == "broadcast-listener" && t.text.starts_with("Available"),
            "an asset listed",
        );
        edge.tiles.retain(|(_, t)| t.asset != tile.asset);
        count += 1;
        let (fed, _) = hq.tile(
            |t| t.service == "image-feed" && t.asset == tile.asset,
            "the asset's feed tile",
        );
        if fed >= link_up || count == COUNT {
            break (tile.asset, fed, at);
        }
    };
    let for_id = |service: &'static str, text: &'static str| {
        let id = id.clone();
        move |t: &Logged| t.service == service && t.asset == id && t.text.starts_with(text)
    };
    let (downloaded, _) = hq.tile(for_id("image-download", "Downloaded"), "downloaded");
    let (broadcast, _) = hq.tile(for_id("asset-broadcast", "Broadcast"), "broadcast");

    // The operator requests it on the stopped edge, and starts it again.
    edge.stop();
    request(&edge_toml, &id);
    let request_start = Instant::now();
    let mut edge = Proc::start("edge-node", &edge_toml);
    let (requested, _) = edge.tile(for_id("asset-request", "Requested from HQ"), "requested");
    let (ready, _) = edge.tile(for_id("asset-viewer", "Ready at HQ"), "ready at HQ");
    let (request_link_up, _) = edge.line(|l| l.contains("link up"), "link up");
    edge.stop();

    // Mirrors, then starts the edge, whose viewer finds the file in the mirror.
    let mirror_start = Instant::now();
    let mut mirror = Node::spawn(
        Command::new(binary("edge-node"))
            .args(["mirror", "--config"])
            .arg(&edge_toml),
    );
    let (mirror_link_up, _) = mirror.wait_for_stamped(|l| l.contains("link up"), "link up");
    let (mirrored, _) = mirror.wait_for_stamped(
        |l| l.contains("protocol::link::mirror: mirror done"),
        "mirror done",
    );
    let (status, log) = mirror.exit();
    let mirror_exit = Instant::now();
    assert!(status.success(), "edge-node mirror: {status}\n{log}");
    assert!(log.contains("mirror: done in"), "{log}");
    let receive_start = Instant::now();
    let mut edge = Proc::start("edge-node", &edge_toml);
    let (received, _) = edge.tile(for_id("asset-viewer", "Received"), "received");
    edge.stop();
    hq.stop();
    if let Some((relay, _)) = relay {
        relay.signal("TERM");
        let (status, log) = relay.exit();
        assert!(status.success(), "link: {status}\n{log}");
    }
    Moments {
        fed,
        downloaded,
        broadcast,
        listed,
        request_start,
        requested,
        request_link_up,
        ready,
        mirror_start,
        mirror_link_up,
        mirrored,
        mirror_exit,
        receive_start,
        received,
    }
    .print(profile.unwrap_or("loopback"), &id);

    // The file at the edge is HQ's original image, byte for byte.
    let hq_store = open(&hq_data, "hq");
    let hq_doc = hq_store.doc(&mission::assets(), &id).unwrap().unwrap();
    close(hq_store);
    let href = hq_doc["href"].as_str().unwrap();
    let original_name = href.rsplit('/').next().unwrap();
    let file = hq_doc["file"].as_str().unwrap();
    let original = std::fs::read(hq_data.join("demo-feed").join(original_name)).unwrap();
    let mirrored = std::fs::read(alpha_data.join("mirror/current/assets").join(file)).unwrap();
    assert!(
        original.len() > 1000,
        "a real image: {} bytes",
        original.len()
    );
    assert!(
        original == mirrored,
        "the bytes at the edge ({} bytes) differ from HQ's original ({} bytes)",
        mirrored.len(),
        original.len()
    );
    let edge_store = open(&alpha_data, "alpha");
    let edge_doc = edge_store.doc(&mission::assets(), &id).unwrap().unwrap();
    close(edge_store);
    assert_eq!(state(&edge_doc), "received", "{edge_doc}");
    assert_eq!(edge_doc["path"], format!("{}/{file}", mission::VOLUME_DIR));
}

#[test]
fn end_to_end_with_the_real_binaries_over_quic() {
    end_to_end(None, "100ms", 2);
}

#[test]
fn end_to_end_with_the_real_binaries_over_satcom() {
    // Slower: the edge's first dial takes a few round trips of 600 ms, and the asset to
    // time must be fed after it.
    end_to_end(Some("satcom"), "500ms", 1);
}

// ---------------------------------------------------------------------------------------
// Crashes.

/// How long an edge that runs on through HQ's kill may take to hear the restarted HQ's
/// reset and link again, from the kill: a failure bound well below QUIC's idle timeout
/// (60 s), which would end the dead link anyway, and above a keep-alive interval (15 s,
/// the edge's next packet on a quiet link) plus a debug HQ's start on a loaded machine.
const RESET_BOUND: Duration = Duration::from_secs(40);

fn kill_rounds() -> u64 {
    std::env::var("TETHER_MISSION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// What a stopped HQ's store holds of the pipeline; checks on the way that nothing was
/// processed twice so far.
struct HqProgress {
    /// Tiles still to come: feed, download and broadcast of each asset not yet there,
    /// and a response to each request not yet answered.
    left: usize,
}

fn hq_progress(data: &Path, when: &str) -> HqProgress {
    let store = open(data, "hq");
    let mut counts = Vec::new();
    for topic in [
        mission::IMAGE_FEED,
        mission::IMAGE_DOWNLOAD,
        mission::ASSET_BROADCAST,
        mission::ASSET_REQUEST,
        mission::ASSET_RESPONSE,
    ] {
        let keys = keys(&store, topic);
        let twice: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{when}: HQ's {topic} repeats {twice:?}");
        counts.push(keys.len());
    }
    close(store);
    let [feed, downloads, broadcasts, requests, responses] = counts[..] else {
        unreachable!()
    };
    assert!(downloads <= feed && broadcasts <= downloads && responses <= requests);
    HqProgress {
        left: 3 * COUNT - feed - downloads - broadcasts + requests - responses,
    }
}

/// What a stopped edge's store holds of the pipeline; checks that nothing arrived or
/// was processed twice so far.
struct EdgeProgress {
    /// Asset id to state.
    assets: BTreeMap<String, String>,
    /// Tiles still to come: each asset not yet listed, and the request and the answer
    /// of each asset the operator asked for.
    left: usize,
}

fn edge_progress(data: &Path, requested: &[String], when: &str) -> EdgeProgress {
    let store = open(data, "alpha");
    for topic in [
        mission::ASSET_BROADCAST,
        mission::ASSET_REQUEST,
        mission::ASSET_RESPONSE,
    ] {
        let keys = keys(&store, topic);
        let twice: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "{when}: the edge's {topic} repeats {twice:?}"
        );
    }
    let assets: BTreeMap<String, String> = store
        .docs(&mission::assets())
        .unwrap()
        .into_iter()
        .map(|(id, doc)| (id, state(&doc).to_owned()))
        .collect();
    close(store);
    let mut left = COUNT - assets.len();
    for id in requested {
        left += match assets.get(id).map(String::as_str) {
            Some("wanted") => 2,
            Some("requested") => 1,
            Some("ready" | "received") => 0,
            other => panic!("{when}: requested asset {id} is {other:?} at the edge"),
        };
    }
    EdgeProgress { assets, left }
}

/// Waits for `n` more tiles from now, or the `left` tiles this run still has to log
/// if fewer (`left` counts from the run's start).
fn more_tiles(node: &mut Proc, n: usize, left: usize, what: &str) {
    node.drain();
    let target = node.tiles.len() + n.min(left.saturating_sub(node.tiles.len()));
    node.until(
        |tiles| tiles.len() >= target,
        &format!("{what}: tile {target}"),
    );
}

#[test]
fn crash_of_either_node_in_the_middle_of_the_pipeline_loses_no_asset_and_repeats_none() {
    let mut rng = Rng::from_env("TETHER_MISSION_SEED", "mission crash test");
    let rounds = kill_rounds();
    let dir = TempDir::new("mission-crash").unwrap();
    let (hq_data, alpha_data) = (dir.path().join("hq"), dir.path().join("alpha"));

    // One item every 400 ms: the pipeline stays busy through most rounds (about 10 s of
    // HQ's time for the 24 items).
    let (every, batch) = ("400ms", 1);
    let first = hq_config(dir.path(), "127.0.0.1:0", "127.0.0.1:0", every, batch);
    let (mut hq, link, http) = start_hq(&first);
    // A restarted HQ listens where the first one did: the edge dials that link port, and
    // the IMAGE_FEED entries name the demo images by URL, HTTP port included. The ports
    // are the kernel's choice at the first start; UDP knows no TIME_WAIT and the HTTP
    // listener sets SO_REUSEADDR, so only another process taking the port in the moment
    // between a kill and the restart could refuse it (the restart then fails, loudly).
    let hq_toml = hq_config(dir.path(), &link, &http, every, batch);
    let edge_toml = edge_config(dir.path(), &link);
    let mut edge = Proc::start("edge-node", &edge_toml);

    let mut requested: Vec<String> = Vec::new();
    let (mut hq_left, mut edge_left) = (3 * COUNT, COUNT);
    let mut edge_assets = BTreeMap::new();
    let (mut edge_kills, mut resets) = (0, 0);
    for round in 0..rounds {
        // The edge, after a few more tiles: every other round stopped cleanly so that
        // the operator requests an asset it heard of, else killed.
        let n = rng.range(1, 4) as usize;
        more_tiles(&mut edge, n, edge_left, &format!("round {round}, edge"));
        if round % 2 == 0 {
            edge.stop();
            let progress = edge_progress(&alpha_data, &requested, "after a stop");
            let available: Vec<&String> = progress
                .assets
                .iter()
                .filter(|(id, state)| *state == "available" && !requested.contains(id))
                .map(|(id, _)| id)
                .collect();
            if !available.is_empty() {
                let id = available[rng.range(0, available.len() as u64 - 1) as usize].clone();
                request(&edge_toml, &id);
                requested.push(id);
            }
        } else {
            drop(edge.node.kill());
            edge_kills += 1;
        }
        let progress = edge_progress(&alpha_data, &requested, &format!("round {round}: edge"));
        (edge_left, edge_assets) = (progress.left, progress.assets);
        edge = Proc::start("edge-node", &edge_toml);

        // HQ, after a few more of its tiles, the edge linked to it.
        let n = rng.range(1, 12) as usize;
        more_tiles(&mut hq, n, hq_left, &format!("round {round}, HQ"));
        // Every other round the edge runs on through HQ's crash, linked to it: the
        // restarted HQ must reset the link of its previous run at the edge's next
        // packet, and the edge redial at once and go on (the next round waits for its
        // tiles). Else the edge is killed too, amid what it was doing with what HQ sent
        // last.
        let edge_stays = round % 2 == 0;
        let mark = if edge_stays {
            edge.line(|l| l.contains("link up"), "link up before HQ's kill");
            edge.drain();
            edge.lines.len()
        } else {
            0
        };
        drop(hq.node.kill());
        let killed = Instant::now();
        hq_left = hq_progress(&hq_data, &format!("round {round}: HQ killed")).left;
        if edge_stays {
            hq = Proc::start("core-node", &hq_toml);
            let (restarted, _) = hq.line(|l| l.contains("node ready"), "node ready");
            // Bounded well below QUIC's idle timeout (60 s), which would end the dead
            // link anyway (as "no packet from the peer").
            let deadline = killed + RESET_BOUND;
            let (i, down, line) = edge.line_after(
                mark,
                deadline,
                |l| l.contains("link down") || l.contains("link closed"),
                "link down after HQ's kill",
            );
            // `link closed` would be the session ending for another reason than the
            // connection's loss (a lost connection taken for a protocol violation).
            assert!(
                line.contains("link down") && line.contains("reason=reset"),
                "round {round}: the edge lost its link to the killed HQ for another reason \
                 than the restarted HQ's reset: {line}"
            );
            let (_, up, _) = edge.line_after(
                i + 1,
                deadline,
                |l| l.contains("link up"),
                "link up to the restarted HQ",
            );
            resets += 1;
            eprintln!(
                "round {round}: the edge ran on through HQ's kill; link down {} after HQ's \
                 restart, up again {} later",
                ms(down.saturating_duration_since(restarted)),
                ms(up.saturating_duration_since(down))
            );
        } else {
            drop(edge.node.kill());
            edge_kills += 1;
            let progress = edge_progress(&alpha_data, &requested, "after HQ's kill");
            (edge_left, edge_assets) = (progress.left, progress.assets);
            hq = Proc::start("core-node", &hq_toml);
            hq.line(|l| l.contains("node ready"), "node ready");
            edge = Proc::start("edge-node", &edge_toml);
        }
        eprintln!(
            "round {round}: {} of {} HQ tiles to come, {} edge tiles to come, {} requests",
            hq_left,
            3 * COUNT,
            edge_left,
            requested.len()
        );
    }

    // Both run until the edge has heard of every asset and has HQ's answer to every
    // request: the tiles of this run bring what the store did not hold yet.
    let before = &edge_assets;
    edge.until(
        |tiles| {
            let mut listed: BTreeSet<&str> = before.keys().map(String::as_str).collect();
            let mut ready: BTreeSet<&str> = before
                .iter()
                .filter(|(_, s)| *s == "ready")
                .map(|(id, _)| id.as_str())
                .collect();
            for (_, t) in tiles {
                if t.service == "broadcast-listener" {
                    listed.insert(&t.asset);
                } else if t.text.starts_with("Ready at HQ") {
                    ready.insert(&t.asset);
                }
            }
            listed.len() == COUNT && requested.iter().all(|id| ready.contains(id.as_str()))
        },
        "every asset listed and every request answered",
    );
    edge.stop();

    // The operator mirrors; the edge's viewer then receives each requested asset at its
    // start, and is killed once amid that.
    let mut mirror = Node::spawn(
        Command::new(binary("edge-node"))
            .args(["mirror", "--config"])
            .arg(&edge_toml),
    );
    mirror.wait_for("mirror: done in");
    let (status, log) = mirror.exit();
    assert!(status.success(), "edge-node mirror: {status}\n{log}");
    let mut edge = Proc::start("edge-node", &edge_toml);
    let n = rng.range(0, requested.len() as u64) as usize;
    more_tiles(&mut edge, n, requested.len(), "receiving");
    drop(edge.node.kill());
    let before = edge_progress(&alpha_data, &requested, "killed while receiving").assets;
    let mut edge = Proc::start("edge-node", &edge_toml);
    edge.until(
        |tiles| {
            requested.iter().all(|id| {
                before[id] == "received"
                    || tiles
                        .iter()
                        .any(|(_, t)| t.asset == *id && t.text == "Received")
            })
        },
        "every requested asset received",
    );
    edge.stop();
    hq.stop();
    check_exactly_once(&hq_data, &alpha_data, &requested);
    eprintln!(
        "{rounds} rounds: HQ killed {rounds} times ({resets} with the edge running on, \
         reset and redialed), the edge {} times, {} requests; every asset exactly once",
        edge_kills + 1,
        requested.len()
    );
}

/// Every asset exactly once through every service, on both stopped nodes.
fn check_exactly_once(hq_data: &Path, alpha_data: &Path, requested: &[String]) {
    let once = |ids: &BTreeSet<String>| -> BTreeMap<String, usize> {
        ids.iter().map(|id| (id.clone(), 1)).collect()
    };
    let requested: BTreeSet<String> = requested.iter().cloned().collect();

    let hq = open(hq_data, "hq");
    let feed = keys(&hq, mission::IMAGE_FEED);
    let ids: BTreeSet<String> = feed.keys().cloned().collect();
    assert_eq!(ids.len(), COUNT, "HQ's feed: {feed:?}");
    assert_eq!(feed, once(&ids), "IMAGE_FEED");
    assert_eq!(
        keys(&hq, mission::IMAGE_DOWNLOAD),
        once(&ids),
        "IMAGE_DOWNLOAD"
    );
    for record in read(&hq, mission::IMAGE_DOWNLOAD) {
        let outcome: Value = serde_json::from_slice(&record.entry.payload).unwrap();
        assert!(
            outcome.get("file").is_some(),
            "a failed download: {outcome}"
        );
    }
    assert_eq!(
        keys(&hq, mission::ASSET_BROADCAST),
        once(&ids),
        "ASSET_BROADCAST"
    );
    assert_eq!(
        keys(&hq, mission::ASSET_REQUEST),
        once(&requested),
        "ASSET_REQUEST"
    );
    assert_eq!(
        keys(&hq, mission::ASSET_RESPONSE),
        once(&requested),
        "ASSET_RESPONSE"
    );
    for record in read(&hq, mission::ASSET_RESPONSE) {
        let response: Response = mission::decode(&record.entry.payload).unwrap();
        assert!(matches!(response, Response::Ready { .. }), "{response:?}");
        assert_eq!(
            record.entry.to.as_ref().map(NodeName::as_str),
            Some("alpha")
        );
    }
    for (id, doc) in hq.docs(&mission::assets()).unwrap() {
        assert!(ids.contains(&id), "HQ's table has {id}, not in the feed");
        assert_eq!(state(&doc), "broadcast", "{id} at HQ: {doc}");
        let by = if requested.contains(&id) {
            serde_json::json!(["alpha"])
        } else {
            Value::Null
        };
        assert_eq!(
            doc.get("requested_by").cloned().unwrap_or(Value::Null),
            by,
            "{id}"
        );
    }
    let tiles = tile_counts(&hq);
    for id in &ids {
        for service in ["image-feed", "image-download", "asset-broadcast"] {
            assert_eq!(
                tiles.get(&(service, id.clone())),
                Some(&1),
                "{service} tiles of {id} at HQ"
            );
        }
        let responses = usize::from(requested.contains(id));
        assert_eq!(
            tiles
                .get(&("asset-response", id.clone()))
                .copied()
                .unwrap_or(0),
            responses,
            "asset-response tiles of {id}"
        );
    }
    // Every service's cursor is past the last entry of its input.
    for (service, topic) in [
        ("image-download", mission::IMAGE_FEED),
        ("asset-broadcast", mission::IMAGE_DOWNLOAD),
        ("asset-response", mission::ASSET_REQUEST),
    ] {
        let topic = mission::topic(topic);
        let cursor = hq
            .cursor(&ConsumerName::new(service).unwrap(), &topic)
            .unwrap();
        assert_eq!(
            Some(cursor),
            hq.topic(&topic).map(|t| t.next),
            "{service}'s cursor at HQ"
        );
    }
    close(hq);

    let edge = open(alpha_data, "alpha");
    assert_eq!(
        keys(&edge, mission::ASSET_BROADCAST),
        once(&ids),
        "the edge's ASSET_BROADCAST"
    );
    assert_eq!(
        keys(&edge, mission::ASSET_REQUEST),
        once(&requested),
        "the edge's ASSET_REQUEST"
    );
    assert_eq!(
        keys(&edge, mission::ASSET_RESPONSE),
        once(&requested),
        "the edge's ASSET_RESPONSE"
    );
    let assets: BTreeMap<String, String> = edge
        .docs(&mission::assets())
        .unwrap()
        .into_iter()
        .map(|(id, doc)| (id, state(&doc).to_owned()))
        .collect();
    let expected: BTreeMap<String, String> = ids
        .iter()
        .map(|id| {
            let state = if requested.contains(id) {
                "received"
            } else {
                "available"
            };
            (id.clone(), state.to_owned())
        })
        .collect();
    assert_eq!(assets, expected, "the edge's assets");
    let tiles = tile_counts(&edge);
    for id in &ids {
        assert_eq!(
            tiles.get(&("broadcast-listener", id.clone())),
            Some(&1),
            "listed tiles of {id}"
        );
        // Asked for: "Requested from HQ"; then "Ready at HQ" and "Received".
        let asked = usize::from(requested.contains(id));
        for (service, n) in [("asset-request", asked), ("asset-viewer", 2 * asked)] {
            assert_eq!(
                tiles.get(&(service, id.clone())).copied().unwrap_or(0),
                n,
                "{service} tiles of {id} at the edge"
            );
        }
    }
    for (service, topic) in [
        ("broadcast-listener", mission::ASSET_BROADCAST),
        ("asset-viewer", mission::ASSET_RESPONSE),
    ] {
        let topic = mission::topic(topic);
        let cursor = edge
            .cursor(&ConsumerName::new(service).unwrap(), &topic)
            .unwrap();
        assert_eq!(
            Some(cursor),
            edge.topic(&topic).map(|t| t.next),
            "{service}'s cursor at the edge"
        );
    }
    close(edge);
}

/// How many tiles each service logged about each asset.
fn tile_counts(store: &Store) -> BTreeMap<(&'static str, String), usize> {
    let services = [
        "image-feed",
        "image-download",
        "asset-broadcast",
        "asset-response",
        "ingest",
        "broadcast-listener",
        "asset-request",
        "asset-viewer",
    ];
    let mut counts = BTreeMap::new();
    for record in store.read(&Tile::topic(), Offset(0), usize::MAX).unwrap() {
        let tile = Tile::decode(&record.entry.payload).unwrap();
        let service = services
            .into_iter()
            .find(|s| *s == tile.service)
            .unwrap_or_else(|| panic!("a tile of an unknown service: {tile:?}"));
        *counts
            .entry((service, tile.asset.unwrap_or_default()))
            .or_default() += 1;
    }
    counts
}
