//! The mission pipeline end to end (issue 6), in one process with the real node runtimes,
//! services and HTTP servers, the edge linked through the emulator: a demo feed item at
//! HQ is downloaded over HTTP, broadcast, listed at the edge, requested, answered,
//! mirrored and received, and the bytes at the edge equal the original image.

use std::time::Duration;

use protocol::log::Store;
use serde_json::Value;
use tests::TempDir;
use tests::emulator::Profile;
use tests::mission::{Mission, MissionConfig};

/// How long one step of the pipeline may take on loopback.
const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `store`'s assets table has a document for which `what` holds; returns
/// its id and document.
async fn wait_asset(store: &Store, what: impl Fn(&str, &Value) -> bool) -> (String, Value) {
    let mut changes = store.changes();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let docs = store.docs(&mission::assets()).unwrap();
            if let Some(found) = docs.into_iter().find(|(id, doc)| what(id, doc)) {
                return found;
            }
            changes.changed().await.unwrap();
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "no asset matched within {PATIENCE:?}: {:?}",
            store.docs(&mission::assets()).unwrap()
        )
    })
}

fn state(doc: &Value) -> &str {
    doc.get("state").and_then(Value::as_str).unwrap_or_default()
}

async fn mirror_until_received(mission: &Mission, id: &str) -> Value {
    let mirror = mission.alpha.mirror.as_ref().unwrap();
    mirror.start().unwrap();
    let (_, doc) = wait_asset(&mission.alpha.store, |i, d| {
        i == id && state(d) == "received"
    })
    .await;
    doc
}

/// Checks that the edge's mirrored file is byte for byte HQ's original demo image.
fn assert_same_image(mission: &Mission, edge_doc: &Value, id: &str) {
    let hq_doc = mission
        .hq
        .store
        .doc(&mission::assets(), id)
        .unwrap()
        .unwrap();
    let href = hq_doc["href"].as_str().unwrap();
    let original_name = href.rsplit('/').next().unwrap();
    let original = mission
        .hq
        .config
        .node
        .data_dir
        .join("demo-feed")
        .join(original_name);
    let path = edge_doc["path"].as_str().unwrap();
    let mirrored = mission
        .alpha
        .mirror
        .as_ref()
        .unwrap()
        .current_dir()
        .join(path);
    let (original, mirrored) = (
        std::fs::read(original).unwrap(),
        std::fs::read(mirrored).unwrap(),
    );
    assert!(original.len() > 1000, "a real image");
    assert!(
        original == mirrored,
        "the bytes at the edge differ from HQ's original"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_image_reaches_the_field_when_requested_and_mirrored() {
    let dir = TempDir::new("pipeline").unwrap();
    let mission = Mission::start(&MissionConfig::new(dir.path(), Profile::lan()))
        .await
        .unwrap();
    let (id, doc) = wait_asset(&mission.alpha.store, |_, d| state(d) == "available").await;
    assert!(
        doc["preview"].as_str().is_some_and(|p| !p.is_empty()),
        "{doc}"
    );
    assert!(doc["size"].as_u64().is_some_and(|s| s > 0), "{doc}");

    let now = edge_node::services::request(&mission.alpha.store, &id)
        .await
        .unwrap();
    assert_eq!(now, "wanted");
    let (_, ready) = wait_asset(&mission.alpha.store, |i, d| i == id && state(d) == "ready").await;
    let path = ready["path"].as_str().unwrap();
    assert!(path.starts_with(&format!("assets/{id}.")), "{path}");
    let received = mirror_until_received(&mission, &id).await;
    assert_same_image(&mission, &received, &id);

    // A second request of a received asset changes nothing.
    let again = edge_node::services::request(&mission.alpha.store, &id)
        .await
        .unwrap();
    assert_eq!(again, "received");
    // An unknown asset is refused with a clear error.
    let err = edge_node::services::request(&mission.alpha.store, "nope")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no asset \"nope\""), "{err}");
    mission.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_made_while_the_link_is_down_is_answered_when_it_returns() {
    let dir = TempDir::new("pipeline").unwrap();
    let mission = Mission::start(&MissionConfig::new(dir.path(), Profile::lan()))
        .await
        .unwrap();
    let (id, _) = wait_asset(&mission.alpha.store, |_, d| state(d) == "available").await;
    mission.link.down();
    edge_node::services::request(&mission.alpha.store, &id)
        .await
        .unwrap();
    wait_asset(&mission.alpha.store, |i, d| {
        i == id && state(d) == "requested"
    })
    .await;
    mission.link.up();
    wait_asset(&mission.alpha.store, |i, d| i == id && state(d) == "ready").await;
    let received = mirror_until_received(&mission, &id).await;
    assert_same_image(&mission, &received, &id);
    mission.stop().await;
}

/// One feed item pointing at `href`.
fn item(nasa_id: &str, title: serde_json::Value, href: &str) -> serde_json::Value {
    serde_json::json!({
        "data": [{ "nasa_id": nasa_id, "title": title, "media_type": "image" }],
        "links": [{ "href": href, "rel": "preview", "render": "image" }],
    })
}

async fn wait_service(
    services: &protocol::service::Services,
    name: &str,
    what: impl Fn(&protocol::service::ServiceStatus) -> bool,
) -> protocol::service::ServiceStatus {
    let mut watch = services.watch();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(s) = services.status(name).filter(|s| what(s)) {
                return s;
            }
            watch.changed().await.unwrap();
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{name} never matched: {:?}", services.status(name)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_feeds_and_downloads_fail_their_item_with_the_reason_and_the_rest_goes_on() {
    let dir = TempDir::new("pipeline").unwrap();
    let files = dir.path().join("files");
    let demo = core_node::demo_feed::generate(&files, "unused", 1).unwrap();
    std::fs::write(files.join("notes.txt"), "not a picture at all\n").unwrap();
    std::fs::write(files.join("big.png"), vec![7u8; 3 << 20]).unwrap();
    let url = |name: &str| format!("file://{}", files.join(name).display());

    let feed = dir.path().join("feed.json");
    std::fs::write(&feed, "{ this is not JSON").unwrap();
    let mut config = MissionConfig::new(dir.path(), Profile::lan());
    config.feed = Some(feed.display().to_string());
    config.feed_batch = 10;
    config.max_download_bytes = Some(1 << 20);
    // The unreachable item is on this machine: allowed, so that it fails as unreachable.
    config.download_allow = vec!["127.0.0.1".parse().unwrap()];
    let mission = Mission::start(&config).await.unwrap();
    let hq = &mission.hq;
    let status = wait_service(&hq.services, "image-feed", |s| s.last_problem.is_some()).await;
    let problem = status.last_problem.unwrap();
    assert!(
        problem.contains("not JSON") && problem.contains("line 1"),
        "{problem}"
    );

    let document = serde_json::json!({ "collection": { "items": [
        item("GOOD-1", "A good one".into(), &url(&demo.files[0])),
        item("NOTES", "Not an image".into(), &url("notes.txt")),
        item("BIG", "Too large".into(), &url("big.png")),
        item("BADTYPE", 42.into(), &url(&demo.files[0])),
        item("../../x", "An id that tries to escape".into(), &url(&demo.files[0])),
        item("GONE", "Unreachable".into(), "http://127.0.0.1:1/gone.png"),
    ]}});
    std::fs::write(&feed, document.to_string()).unwrap();

    // The bad item is reported with its index and field; the valid ones are used.
    let status = wait_service(&hq.services, "image-feed", |s| s.failed >= 1).await;
    let problem = status.last_problem.unwrap();
    assert!(
        problem.contains("item 3") && problem.contains("data[0].title"),
        "{problem}"
    );
    let failed = |id: &'static str, reason: &'static str| async move {
        let (_, doc) = wait_asset(&hq.store, |i, d| i == id && state(d) != "listed").await;
        assert_eq!(state(&doc), "download-failed", "{id}: {doc}");
        let error = doc["error"].as_str().unwrap();
        assert!(error.contains(reason), "{id}: {error}");
    };
    failed("NOTES", "not an image").await;
    failed("BIG", "larger than the limit").await;
    failed("GONE", "unreachable").await;
    let downloads = wait_service(&hq.services, "image-download", |s| s.failed == 3).await;
    assert_eq!(downloads.state, protocol::service::ServiceState::Running);

    // The good item and the escaping id reach the edge; the id became a safe name.
    let (_, _) = wait_asset(&mission.alpha.store, |i, _| i == "GOOD-1").await;
    let (escaped, _) = wait_asset(&mission.alpha.store, |i, _| i.contains("_x-")).await;
    assert!(
        !escaped.contains('/') && !escaped.starts_with('.'),
        "{escaped}"
    );
    let downloaded: Vec<String> = std::fs::read_dir(mission::downloads_dir(&hq.config))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        downloaded.iter().any(|f| f.starts_with(&escaped)),
        "{downloaded:?}"
    );
    assert!(!dir.path().join("x.png").exists() && !dir.path().join("hq/x.png").exists());

    // A request that is not one gets an answer HQ cannot name an asset in; the edge's
    // viewer refuses that answer and goes on. A request for an asset HQ does not have
    // gets a "not found" answer, not silence.
    let topic = mission::topic(mission::ASSET_REQUEST);
    let garbage = protocol::entry::Append::new("not a request");
    mission.alpha.store.append(&topic, garbage).await.unwrap();
    let request = protocol::entry::Append::new(r#"{"asset":"NO-SUCH-ASSET"}"#);
    mission.alpha.store.append(&topic, request).await.unwrap();
    let (_, doc) = wait_asset(&mission.alpha.store, |i, _| i == "NO-SUCH-ASSET").await;
    assert_eq!(state(&doc), "not-found", "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("no such asset"),
        "{doc}"
    );
    let viewer = wait_service(&mission.alpha.services, "asset-viewer", |s| s.failed >= 1).await;
    assert_eq!(viewer.restarts, 0, "{viewer:?}");
    mission.stop().await;
}

/// Waits until HQ's `loads` table has the document `id` in `state`.
async fn wait_load(store: &Store, id: &str, state: &str) -> Value {
    let table = protocol::log::TableName::new("loads").unwrap();
    let mut changes = store.changes();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let doc = store.doc(&table, id).unwrap();
            if let Some(doc) = doc.filter(|d| d["state"] == state) {
                return doc;
            }
            changes.changed().await.unwrap();
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("load {id} never {state}: {:?}", store.doc(&table, id)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_dropped_into_ingest_becomes_an_asset_once_complete() {
    use std::io::Write as _;
    let dir = TempDir::new("pipeline").unwrap();
    let files = dir.path().join("files");
    let demo = core_node::demo_feed::generate(&files, "unused", 1).unwrap();
    let image = std::fs::read(files.join(&demo.files[0])).unwrap();
    let mut config = MissionConfig::new(dir.path(), Profile::lan());
    // No feed items get in the way: an empty feed document.
    let feed = dir.path().join("feed.json");
    std::fs::write(&feed, r#"{"collection":{"items":[]}}"#).unwrap();
    config.feed = Some(feed.display().to_string());
    let mission = Mission::start(&config).await.unwrap();
    let hq = &mission.hq;
    let ingest = mission::ingest_dir(&hq.config);

    // Half the file, seen as `ready`; then the rest: the asset is the whole file.
    let mut file = std::fs::File::create(ingest.join("drop.png")).unwrap();
    file.write_all(&image[..image.len() / 2]).unwrap();
    file.flush().unwrap();
    wait_load(&hq.store, "drop.png", "ready").await;
    file.write_all(&image[image.len() / 2..]).unwrap();
    drop(file);
    let load = wait_load(&hq.store, "drop.png", "archived").await;
    assert_eq!(load["size"], image.len(), "{load}");
    let id = load["asset"].as_str().unwrap().to_owned();
    let (_, doc) = wait_asset(&mission.alpha.store, |i, _| i == id).await;
    assert_eq!(doc["size"], image.len(), "{doc}");
    assert_eq!(doc["hash"], blake3_hex(&image), "{doc}");
    assert!(ingest.join("archive/drop.png").exists());

    // Not an image: errored with the reason, moved aside, the service goes on.
    std::fs::write(ingest.join("notes.txt"), "meeting at noon\n").unwrap();
    let load = wait_load(&hq.store, "notes.txt", "errored").await;
    assert!(
        load["error"].as_str().unwrap().contains("not an image"),
        "{load}"
    );
    assert!(ingest.join("errored/notes.txt").exists());
    let status = wait_service(&hq.services, "ingest", |s| s.failed == 1).await;
    assert_eq!(status.processed, 1, "{status:?}");
    mission.stop().await;
}

fn blake3_hex(bytes: &[u8]) -> String {
    protocol::mirror::Hash::of(bytes).to_string()
}

/// A tiny HTTP server for the download tests, on one loopback address: `/moved` redirects
/// to `location`, any other path answers `image`. It notes each connection's request
/// line, in the order it accepted them, and stops when dropped.
struct ImageServer {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ImageServer {
    fn start(ip: [u8; 4], image: Vec<u8>, location: Option<String>) -> std::io::Result<Self> {
        use std::io::{BufRead as _, Write as _};
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::from(ip), 0))?;
        let addr = listener.local_addr()?;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = std::io::BufReader::new(&stream);
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                // The rest of the head.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = first
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                if path == "/stop" {
                    return;
                }
                log.lock().unwrap().push(path.clone());
                let head = match (&location, path.as_str()) {
                    (Some(to), "/moved") => {
                        format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\n")
                    }
                    _ => format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {}\r\n",
                        image.len()
                    ),
                };
                let _ = stream.write_all(format!("{head}connection: close\r\n\r\n").as_bytes());
                if !path.ends_with("/moved") {
                    let _ = stream.write_all(&image);
                }
            }
        });
        Ok(ImageServer {
            addr,
            seen,
            thread: Some(thread),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The paths asked for before this call: the server answers connections in the
    /// order it accepted them, so once the test's own request is answered, every earlier
    /// connection is noted.
    fn seen_before_now(&self) -> Vec<String> {
        let marker = ureq::get(&self.url("/marker")).call();
        assert!(marker.is_ok(), "{marker:?}");
        let seen = self.seen.lock().unwrap().clone();
        seen.into_iter().filter(|p| p != "/marker").collect()
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        use std::io::Write as _;
        if let Ok(mut stream) = std::net::TcpStream::connect(self.addr) {
            let _ = stream.write_all(b"GET /stop HTTP/1.1\r\n\r\n");
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts a mission whose HQ reads a local feed document of `items`, allowing `allow`.
async fn mission_with_feed(dir: &std::path::Path, items: Vec<Value>, allow: &[&str]) -> Mission {
    let feed = dir.join("feed.json");
    let document = serde_json::json!({ "collection": { "items": items } });
    std::fs::write(&feed, document.to_string()).unwrap();
    let mut config = MissionConfig::new(dir, Profile::lan());
    config.feed = Some(feed.display().to_string());
    config.feed_batch = 10;
    config.download_allow = allow.iter().map(|a| a.parse().unwrap()).collect();
    Mission::start(&config).await.unwrap()
}

/// Waits until HQ is done with asset `id`; returns its state and error.
async fn outcome(mission: &Mission, id: &str) -> (String, String) {
    let (_, doc) = wait_asset(&mission.hq.store, |i, d| i == id && state(d) != "listed").await;
    let error = doc["error"].as_str().unwrap_or_default().to_owned();
    (state(&doc).to_owned(), error)
}

/// A demo image's bytes, to serve.
fn an_image(dir: &std::path::Path) -> Vec<u8> {
    let files = dir.join("files");
    let demo = core_node::demo_feed::generate(&files, "unused", 1).unwrap();
    std::fs::read(files.join(&demo.files[0])).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_from_an_address_the_config_does_not_allow_fails_with_the_reason() {
    let dir = TempDir::new("pipeline").unwrap();
    let server = ImageServer::start([127, 0, 0, 1], an_image(dir.path()), None).unwrap();
    let direct = server.url("/a.png");
    let mapped = format!("http://[::ffff:127.0.0.1]:{}/a.png", server.addr.port());
    let items = vec![
        item("DIRECT", "On 127.0.0.1".into(), &direct),
        item("MAPPED", "On 127.0.0.1, IPv4-mapped".into(), &mapped),
    ];
    let mission = mission_with_feed(dir.path(), items, &[]).await;
    let how = "; the operator can allow it with pipeline.download_allow";
    assert_eq!(
        outcome(&mission, "DIRECT").await,
        (
            "download-failed".to_owned(),
            format!("DIRECT: {direct}: refused: 127.0.0.1 is a loopback address{how}")
        )
    );
    assert_eq!(
        outcome(&mission, "MAPPED").await,
        (
            "download-failed".to_owned(),
            format!(
                "MAPPED: {mapped}: refused: ::ffff:127.0.0.1 is a loopback address (the \
                 IPv4-mapped form of 127.0.0.1){how}"
            )
        )
    );
    // Both failed for good (a refusal is not transient); IMAGE_DOWNLOAD says why too.
    let downloads = wait_service(&mission.hq.services, "image-download", |s| s.failed == 2).await;
    assert_eq!(downloads.processed, 0, "{downloads:?}");
    let outcomes = mission
        .hq
        .store
        .read(
            &mission::topic(mission::IMAGE_DOWNLOAD),
            protocol::entry::Offset(0),
            10,
        )
        .unwrap();
    assert_eq!(outcomes.len(), 2);
    for record in outcomes {
        let outcome: Value = serde_json::from_slice(&record.entry.payload).unwrap();
        let error = outcome["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(": refused: ") && error.ends_with(how),
            "{outcome}"
        );
    }
    assert_eq!(server.seen_before_now(), Vec::<String>::new());
    mission.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_an_address_not_allowed_fails_and_an_allowed_address_downloads() {
    let dir = TempDir::new("pipeline").unwrap();
    let image = an_image(dir.path());
    // Every address is on this machine's loopback: 127.0.0.1 is allowed, 127.0.0.2 not.
    let target = ImageServer::start([127, 0, 0, 2], image.clone(), None)
        .expect("this test needs 127.0.0.2 on the loopback interface (Linux has 127/8)");
    let server = ImageServer::start([127, 0, 0, 1], image, Some(target.url("/b.png"))).unwrap();
    let items = vec![
        item(
            "ALLOWED",
            "On 127.0.0.1, allowed".into(),
            &server.url("/a.png"),
        ),
        item(
            "MOVED",
            "Redirected to 127.0.0.2".into(),
            &server.url("/moved"),
        ),
        item("OTHER", "On 127.0.0.2".into(), &target.url("/c.png")),
    ];
    let mission = mission_with_feed(dir.path(), items, &["127.0.0.1/32"]).await;
    let (state, error) = outcome(&mission, "ALLOWED").await;
    assert!(
        ["downloaded", "broadcast"].contains(&state.as_str()),
        "{state}: {error}"
    );
    let how = "; the operator can allow it with pipeline.download_allow";
    assert_eq!(
        outcome(&mission, "MOVED").await,
        (
            "download-failed".to_owned(),
            format!(
                "MOVED: {}: refused: redirected to {}, where 127.0.0.2 is a loopback \
                 address{how}",
                server.url("/moved"),
                target.url("/b.png")
            )
        )
    );
    assert_eq!(
        outcome(&mission, "OTHER").await,
        (
            "download-failed".to_owned(),
            format!(
                "OTHER: {}: refused: 127.0.0.2 is a loopback address{how}",
                target.url("/c.png")
            )
        )
    );
    // The allowed one reaches the field like any other.
    wait_asset(&mission.alpha.store, |i, _| i == "ALLOWED").await;
    let mut asked = server.seen_before_now();
    asked.sort();
    assert_eq!(asked, ["/a.png", "/moved"]);
    assert_eq!(target.seen_before_now(), Vec::<String>::new());
    mission.stop().await;
}
