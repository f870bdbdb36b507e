//! The HTTP API, the CLI and `/metrics` of the real node binaries (HQ with a bearer
//! token and a read-only one, an edge without), linked over QUIC on loopback: who may
//! read and change what (tokens, the page's sign-in, forms); every endpoint with good and
//! bad input (a 4xx with a useful message, never a 5xx, nothing changed); the OpenAPI
//! document checked against both running nodes by schemathesis; the metrics read by
//! Prometheus' own text-format parser.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::TempDir;

use crate::support::process::{Node, PATIENCE, binary, field};
use crate::support::tools;

const TOKEN: &str = "test-token-0123456789abcdef";

/// HQ's read-only token.
const READ_TOKEN: &str = "read-token-0123456789abcdef";

/// HQ and `alpha`, running, linked.
struct Pair {
    dir: TempDir,
    hq: Node,
    alpha: Node,
    hq_url: String,
    alpha_url: String,
    alpha_config: PathBuf,
}

impl Pair {
    fn start() -> Pair {
        let dir = TempDir::new("api").unwrap();
        let hq_toml = dir.path().join("hq.toml");
        std::fs::write(
            &hq_toml,
            format!(
                "[node]\nname = \"hq\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
                 token = \"{TOKEN}\"\nread_token = \"{READ_TOKEN}\"\n[link]\nlisten = \"127.0.0.1:0\"\n\
                 [pipeline]\nfeed_every = \"300ms\"\nfeed_batch = 2\n",
                dir.path().join("hq").display()
            ),
        )
        .unwrap();
        let mut hq = Node::start("core-node", &hq_toml);
        let ready = hq.wait_for_line(|l| l.contains("node ready"), "node ready");
        let http = hq.wait_for_line(|l| l.contains("HQ serves HTTP"), "HQ serves HTTP");
        let alpha_config = dir.path().join("alpha.toml");
        std::fs::write(
            &alpha_config,
            format!(
                "[node]\nname = \"alpha\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
                 [link]\ncore = \"{}\"\ncerts_dir = \"{}\"\n",
                dir.path().join("alpha").display(),
                field(&ready, "link="),
                dir.path().join("hq/certs").display()
            ),
        )
        .unwrap();
        let mut alpha = Node::start("edge-node", &alpha_config);
        let alpha_http = alpha.wait_for_line(
            |l| l.contains("the edge serves HTTP"),
            "the edge serves HTTP",
        );
        alpha.wait_for("link up");
        Pair {
            hq,
            alpha,
            hq_url: format!("http://{}", field(&http, "http=")),
            alpha_url: format!("http://{}", field(&alpha_http, "http=")),
            alpha_config,
            dir,
        }
    }

    /// Waits, through the edge's tiles, for its first broadcast asset; returns its id.
    fn first_asset(&self) -> String {
        let tile = wait_tile(&self.alpha_url, |t| t["service"] == "broadcast-listener");
        tile["asset"].as_str().unwrap().to_owned()
    }

    fn stop(self) {
        for node in [self.alpha, self.hq] {
            node.signal("TERM");
            let (status, log) = node.exit();
            assert!(status.success(), "node stopped with {status}:\n{log}");
        }
        drop(self.dir);
    }
}

/// One answer: status and body (JSON where it is).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    text: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `method url` with an optional bearer token and raw body (sent as JSON).
fn call(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    let agent = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match method {
        "GET" => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        _ => {
            let mut r = match method {
                "PUT" => agent.put(url),
                _ => agent.post(url),
            };
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            match body {
                Some(body) => r
                    .header("content-type", "application/json")
                    .send(body.to_owned()),
                // What a program sends with a change that has no body (ui::access).
                None => r.header("x-requested-with", "api-test").send_empty(),
            }
        }
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let bytes = response.body_mut().read_to_vec().unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, body, text }
}

/// `GET url` with HQ's token (the edge has none and takes any).
fn get(url: &str) -> Value {
    let a = call("GET", url, Some(TOKEN), None);
    assert_eq!(a.status, 200, "GET {url}: {}", a.text);
    a.body
}

/// Asserts a refusal: this 4xx, a JSON error whose message contains `says`.
fn refused(answer: &Answer, status: u16, says: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.text);
    let message = answer.body["error"]["message"].as_str().unwrap_or_else(|| {
        panic!("{what}: no JSON error in {:?}", answer.text);
    });
    assert!(
        answer.body["error"]["code"].is_string(),
        "{what}: {}",
        answer.text
    );
    assert!(
        message.contains(says),
        "{what}: message {message:?} does not say {says:?}"
    );
}

/// Waits, with the entries long poll, for a tile of the node at `base` for which
/// `check` holds.
fn wait_tile(base: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    let mut from = 0;
    while Instant::now() < deadline {
        let entries = get(&format!(
            "{base}/api/v1/topics/TILES/entries?from={from}&wait_ms=5000"
        ));
        for e in entries.as_array().unwrap() {
            from = e["offset"].as_u64().unwrap() + 1;
            let tile: Value = serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
            if check(&tile) {
                return tile;
            }
        }
    }
    panic!("no such tile at {base} within {PATIENCE:?}");
}

/// Waits, with the entries long poll on the assets table's change feed, until the
/// edge's asset `id` is in `state`.
fn wait_asset_state(base: &str, id: &str, state: &str) {
    let deadline = Instant::now() + PATIENCE;
    let mut from = 0;
    loop {
        let asset = get(&format!("{base}/api/v1/assets/{id}"));
        if asset["state"] == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "asset {id} is {} after {PATIENCE:?}, not {state}",
            asset["state"]
        );
        let entries = get(&format!(
            "{base}/api/v1/topics/_table.assets/entries?from={from}&wait_ms=5000"
        ));
        if let Some(last) = entries.as_array().unwrap().last() {
            from = last["offset"].as_u64().unwrap() + 1;
        }
    }
}

#[test]
fn the_api_answers_every_endpoint_and_refuses_bad_input_with_a_reason() {
    let pair = Pair::start();
    let (hq, alpha) = (pair.hq_url.clone(), pair.alpha_url.clone());
    let api = |base: &str, path: &str| format!("{base}/api/v1{path}");

    // The node.
    let node = get(&api(&hq, "/node"));
    assert_eq!(
        (node["name"].as_str(), node["role"].as_str()),
        (Some("hq"), Some("core"))
    );
    assert_eq!(node["token_required"], true);
    assert_eq!(get(&api(&alpha, "/node"))["token_required"], false);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(call("GET", &format!("{hq}{path}"), None, None).status, 200);
    }
    let page = call("GET", &format!("{alpha}/"), None, None);
    assert!(
        page.status == 200 && page.text.contains("<html"),
        "the page: {}",
        page.text
    );
    let doc = get(&api(&hq, "/openapi.json"));
    assert_eq!(doc["openapi"], "3.0.3");

    // Services: list, one, stop and start with the token; without it, nothing changes.
    let services = get(&api(&hq, "/services"));
    assert!(
        services
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "image-feed")
    );
    assert_eq!(get(&api(&hq, "/services/image-feed"))["state"], "running");
    refused(
        &call("POST", &api(&hq, "/services/image-feed/stop"), None, None),
        401,
        "needs its token",
        "stop without the token",
    );
    refused(
        &call(
            "POST",
            &api(&hq, "/services/image-feed/stop"),
            Some("wrong-token-0123456789"),
            None,
        ),
        401,
        "needs its token",
        "stop with a wrong token",
    );
    assert_eq!(
        get(&api(&hq, "/services/image-feed"))["state"],
        "running",
        "a refused stop changed nothing"
    );
    let stopped = call(
        "POST",
        &api(&hq, "/services/image-feed/stop"),
        Some(TOKEN),
        None,
    );
    assert_eq!(
        (stopped.status, stopped.body["state"].as_str()),
        (200, Some("stopped")),
        "{}",
        stopped.text
    );
    let delayed = call(
        "POST",
        &api(&hq, "/services/image-feed/delay"),
        Some(TOKEN),
        Some(r#"{"delay_ms": 250}"#),
    );
    assert_eq!(delayed.body["delay_ms"], 250, "{}", delayed.text);
    refused(
        &call(
            "POST",
            &api(&hq, "/services/image-feed/delay"),
            Some(TOKEN),
            Some(r#"{"delay_ms": "soon"}"#),
        ),
        400,
        "JSON body",
        "a delay of the wrong type",
    );
    refused(
        &call(
            "POST",
            &api(&hq, "/services/image-feed/delay"),
            Some(TOKEN),
            Some("{not json"),
        ),
        400,
        "JSON body",
        "bad JSON",
    );
    refused(
        &call(
            "POST",
            &api(&hq, "/services/image-feed/delay"),
            Some(TOKEN),
            Some(r#"{"delay_ms": 99999999}"#),
        ),
        400,
        "over the limit",
        "a delay too long",
    );
    let started = call(
        "POST",
        &api(&hq, "/services/image-feed/start"),
        Some(TOKEN),
        None,
    );
    assert_eq!(started.body["state"], "running", "{}", started.text);
    refused(
        &call("POST", &api(&hq, "/services/nope/start"), Some(TOKEN), None),
        404,
        "services: ",
        "an unknown service",
    );
    refused(
        &call("GET", &api(&alpha, "/services/nope"), None, None),
        404,
        "no service named",
        "an unknown service",
    );

    // Topics: list, one, publish, read by offset and by time; bad names and bodies.
    let topics = get(&api(&alpha, "/topics"));
    assert!(
        topics
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "MESSAGES")
    );
    let before = get(&api(&alpha, "/topics/MESSAGES"))["next"]
        .as_u64()
        .unwrap();
    let published = call(
        "POST",
        &api(&alpha, "/topics/MESSAGES/entries"),
        None,
        Some(
            r#"{"payload": "hello HQ", "key": "k1", "headers": [{"name": "kind", "value": "greeting"}]}"#,
        ),
    );
    assert_eq!(published.status, 201, "{}", published.text);
    assert_eq!(published.body["origin"], "alpha");
    let binary = call(
        "POST",
        &api(&alpha, "/topics/MESSAGES/entries"),
        None,
        Some(r#"{"payload_base64": "/wCA"}"#),
    );
    assert_eq!(binary.status, 201, "{}", binary.text);
    let read = get(&api(
        &alpha,
        &format!("/topics/MESSAGES/entries?from={before}"),
    ));
    assert_eq!(read[0]["payload"], "hello HQ");
    assert_eq!(read[0]["key"], "k1");
    assert_eq!(
        read[0]["headers"][0],
        json!({"name": "kind", "value": "greeting"})
    );
    assert_eq!(
        read[1]["payload_base64"], "/wCA",
        "bytes that are not text come back as base64"
    );
    let stamp = read[0]["timestamp_ms"].as_u64().unwrap();
    let by_time = get(&api(
        &alpha,
        &format!(
            "/topics/MESSAGES/entries?since_ms={stamp}&until_ms={}",
            stamp + 1
        ),
    ));
    assert!(
        by_time
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["payload"] == "hello HQ"),
        "{by_time}"
    );
    // It crossed the link to HQ (MESSAGES is scope all): a long poll sees it arrive.
    let at_hq = get(&api(&hq, "/topics/MESSAGES/entries?from=0&wait_ms=20000"));
    assert!(
        !at_hq.as_array().unwrap().is_empty(),
        "the message reached HQ"
    );
    for (body, says) in [
        (
            r#"{"payload": "a", "payload_base64": "YQ=="}"#,
            "exactly one",
        ),
        (r#"{}"#, "exactly one"),
        (r#"{"payload": 5}"#, "JSON body"),
        (r#"{"payload": "a", "to": null}"#, "JSON body"),
        (r#"{"payload": "a", "to": "Not A Node"}"#, "not a node name"),
        (r#"{"payload_base64": "***"}"#, "not base64"),
        (r#"{"payload": "a", "colour": "red"}"#, "JSON body"),
    ] {
        refused(
            &call(
                "POST",
                &api(&alpha, "/topics/MESSAGES/entries"),
                None,
                Some(body),
            ),
            400,
            says,
            body,
        );
    }
    let big = format!(r#"{{"payload": "{}"}}"#, "x".repeat(1_100_000));
    let too_big = call(
        "POST",
        &api(&alpha, "/topics/MESSAGES/entries"),
        None,
        Some(&big),
    );
    assert!(
        (400..500).contains(&too_big.status),
        "an entry over the limit: {}",
        too_big.status
    );
    refused(
        &call(
            "POST",
            &api(&alpha, "/topics/_gaps/entries"),
            None,
            Some(r#"{"payload": "x"}"#),
        ),
        409,
        "own topic",
        "a system topic",
    );
    refused(
        &call(
            "POST",
            &api(&alpha, "/topics/TILES/entries"),
            None,
            Some(r#"{"payload": "x"}"#),
        ),
        409,
        "own topic",
        "the tiles topic",
    );
    // What HQ's own services feed takes nothing from the API: an IMAGE_FEED entry would
    // have the downloader fetch any URL into a file name of the sender's choosing.
    for fed in ["IMAGE_FEED", "IMAGE_DOWNLOAD"] {
        refused(
            &call(
                "POST",
                &api(&hq, &format!("/topics/{fed}/entries")),
                Some(TOKEN),
                Some(
                    r#"{"payload": "{\"id\": \"../volume/x\", \"href\": \"file:///etc/passwd\"}"}"#,
                ),
            ),
            409,
            "fed by this node's own services",
            fed,
        );
    }
    refused(
        &call("GET", &api(&alpha, "/topics/NOPE/entries"), None, None),
        404,
        "GET /api/v1/topics",
        "an unknown topic",
    );
    refused(
        &call("GET", &api(&alpha, "/topics/bad%20name"), None, None),
        400,
        "not a topic name",
        "a bad topic name",
    );
    refused(
        &call(
            "GET",
            &api(&alpha, "/topics/MESSAGES/entries?limit=0"),
            None,
            None,
        ),
        400,
        "at least 1",
        "limit 0",
    );
    refused(
        &call(
            "GET",
            &api(&alpha, "/topics/MESSAGES/entries?limit=5000"),
            None,
            None,
        ),
        400,
        "page with",
        "limit too big",
    );
    refused(
        &call(
            "GET",
            &api(&alpha, "/topics/MESSAGES/entries?from=-1"),
            None,
            None,
        ),
        400,
        "query string",
        "a negative offset",
    );
    refused(
        &call(
            "GET",
            &api(&alpha, "/topics/MESSAGES/entries?wait_ms=600000"),
            None,
            None,
        ),
        400,
        "longest wait",
        "a wait too long",
    );
    assert_eq!(
        get(&api(&alpha, "/topics/MESSAGES"))["next"]
            .as_u64()
            .unwrap(),
        before + 2,
        "the refused publishes added nothing"
    );

    // Tiles, assets, a request at the edge, the mirror, the image through /files.
    let id = pair.first_asset();
    let tiles = get(&api(&alpha, "/tiles?limit=5"));
    assert!(!tiles.as_array().unwrap().is_empty());
    assert!(
        get(&api(&hq, "/assets"))
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str())
    );
    assert_eq!(
        get(&api(&alpha, &format!("/assets/{id}")))["state"],
        "available"
    );
    refused(
        &call("GET", &api(&alpha, "/assets/nope"), None, None),
        404,
        "GET /api/v1/assets",
        "an unknown asset",
    );
    refused(
        &call("POST", &api(&alpha, "/assets/nope/request"), None, None),
        404,
        "only broadcast assets",
        "requesting an unknown asset",
    );
    refused(
        &call(
            "POST",
            &api(&hq, &format!("/assets/{id}/request")),
            Some(TOKEN),
            None,
        ),
        409,
        "at an edge",
        "requesting at HQ",
    );
    let requested = call(
        "POST",
        &api(&alpha, &format!("/assets/{id}/request")),
        None,
        None,
    );
    assert_eq!(
        requested.body,
        json!({"id": id, "state": "wanted"}),
        "{}",
        requested.text
    );
    wait_asset_state(&alpha, &id, "ready");
    refused(
        &call("GET", &api(&hq, "/mirror"), Some(TOKEN), None),
        409,
        "runs at an edge",
        "the mirror at HQ",
    );
    refused(
        &call("POST", &api(&hq, "/mirror/start"), Some(TOKEN), None),
        409,
        "runs at an edge",
        "starting a mirror at HQ",
    );
    let mirror = call("POST", &api(&alpha, "/mirror/start"), None, None);
    assert_eq!(mirror.status, 200, "{}", mirror.text);
    wait_asset_state(&alpha, &id, "received");
    let m = get(&api(&alpha, "/mirror"));
    assert_eq!(
        (m["state"].as_str(), m["started"].as_bool()),
        (Some("done"), Some(false)),
        "{m}"
    );
    assert!(
        m["last_success_ms"].as_u64().is_some() && m["bytes_on_link"].as_u64() > Some(0),
        "{m}"
    );
    assert_eq!(
        call("POST", &api(&alpha, "/mirror/stop"), None, None).status,
        200
    );
    let image = call(
        "GET",
        &format!("{alpha}/files/mirror/assets/{id}.png"),
        None,
        None,
    );
    assert_eq!(image.status, 200, "the mirrored image is served");
    for escape in [
        "/files/mirror/../../hq.toml",
        "/files/mirror/%2e%2e/%2e%2e/hq.toml",
        "/files/mirror/assets/..%2f..%2f..%2fhq.toml",
    ] {
        let url = format!("{alpha}{escape}");
        let answer = call_raw_path(&url);
        assert_eq!(answer.0, 400, "{escape}: {}", answer.1);
        assert!(
            answer.1.contains("inside its directory"),
            "{escape}: {}",
            answer.1
        );
    }
    assert_eq!(
        call(
            "GET",
            &format!("{alpha}/files/mirror/assets/nope.png"),
            None,
            None
        )
        .status,
        404
    );

    // Served files run nothing on the node's origin: sandboxed, never sniffed, and
    // anything but a raster image is a download.
    let downloads = pair.dir.path().join("hq/downloads");
    std::fs::write(
        downloads.join("evil.html"),
        "<script>fetch('/api/v1/links')</script>",
    )
    .unwrap();
    std::fs::write(
        downloads.join("evil.svg"),
        "<svg><script>alert(1)</script></svg>",
    )
    .unwrap();
    let headers = |url: &str| {
        let response = agent()
            .get(url)
            .header("authorization", format!("Bearer {TOKEN}"))
            .call()
            .unwrap();
        let header = |name: &str| {
            let value = response.headers().get(name);
            value.and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
        };
        let status = response.status().as_u16();
        (
            status,
            header("content-security-policy"),
            header("x-content-type-options"),
            header("content-disposition"),
        )
    };
    for file in ["evil.html", "evil.svg"] {
        let (status, csp, sniff, disposition) = headers(&format!("{hq}/files/downloads/{file}"));
        assert_eq!(status, 200, "{file}");
        assert!(csp.starts_with("sandbox"), "{file}: {csp}");
        assert_eq!(
            (sniff.as_str(), disposition.as_str()),
            ("nosniff", "attachment")
        );
    }
    let (status, csp, sniff, disposition) =
        headers(&format!("{alpha}/files/mirror/assets/{id}.png"));
    assert_eq!(status, 200);
    assert!(
        csp.starts_with("sandbox") && sniff == "nosniff",
        "{csp} {sniff}"
    );
    assert_eq!(disposition, "", "a raster image shows inline");

    // Links: list, one, pause and resume (the peer sees it), unknown peers.
    let links = get(&api(&alpha, "/links"));
    assert_eq!(links[0]["peer"], "hq");
    assert_eq!(links[0]["state"], "up");
    // Another site cannot pause the link through an operator's browser: a form posted
    // from elsewhere (its Origin), or any request a browser marks cross-site.
    let own = alpha.strip_prefix("http://").unwrap();
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let (status, raw) = post_raw(&api(&alpha, "/links/hq/pause"), name, value);
        assert_eq!(status, 403, "{name}: {value}: {raw}");
        assert!(
            raw.contains("another site") || raw.contains("not this node"),
            "{raw}"
        );
    }
    assert_eq!(get(&api(&alpha, "/links/hq"))["paused_here"], false);
    // A page that rebinds its own name to the node's address (DNS rebinding) gets
    // nothing: the node answers only to addresses, localhost and http.hosts; probes
    // answer whatever the Host.
    let port = own.rsplit_once(':').unwrap().1;
    for (host, path, status) in [
        (format!("evil.example:{port}"), "/api/v1/node", 403),
        (format!("evil.example:{port}"), "/", 403),
        (format!("evil.example:{port}"), "/healthz", 200),
        (format!("localhost:{port}"), "/api/v1/node", 200),
        (own.to_owned(), "/api/v1/node", 200),
    ] {
        let (got, raw) = get_with_host(own, path, &host);
        assert_eq!(got, status, "{host}{path}: {raw}");
        if status == 403 {
            assert!(raw.contains("http.hosts"), "{raw}");
        }
    }
    let (status, raw) = raw_request(
        own,
        &format!(
            "POST /api/v1/links/hq/resume HTTP/1.1\r\nHost: {own}\r\nOrigin: http://{own}\r\n\
             X-Requested-With: tether-page\r\nContent-Length: 0"
        ),
    );
    assert_eq!(status, 200, "the node's own page: {raw}");
    let paused = call("POST", &api(&alpha, "/links/hq/pause"), None, None);
    assert_eq!(paused.body["state"], "paused", "{}", paused.text);
    // The pause crosses the link as a control message: HQ's live events show it.
    read_events(&api(&hq, "/events?tiles=0&logs=false"), None, |seen| {
        seen.iter().any(|(e, _, v)| {
            e == "links"
                && v.as_array()
                    .is_some_and(|l| l.iter().any(|l| l["paused_by_peer"] == true))
        })
    });
    assert_eq!(
        call("POST", &api(&alpha, "/links/hq/resume"), None, None).body["state"],
        "up"
    );
    refused(
        &call("GET", &api(&alpha, "/links/bravo"), None, None),
        404,
        "links: hq",
        "an unknown peer",
    );
    refused(
        &call("POST", &api(&hq, "/links/bravo/pause"), Some(TOKEN), None),
        404,
        "no link",
        "pausing an unknown peer",
    );

    // HQ's edges: the list, one, add and remove at run time, refusals with reasons.
    let edges = get(&api(&hq, "/edges"));
    let listed = &edges.as_array().unwrap()[0];
    assert_eq!(
        (
            &listed["name"],
            &listed["admitted"],
            &listed["listing"],
            &listed["connected"]
        ),
        (
            &json!("alpha"),
            &json!(true),
            &json!("config"),
            &json!(true)
        ),
        "{edges}"
    );
    assert_eq!(listed["certificates"].as_array().unwrap().len(), 1);
    assert!(listed["certificates"][0]["revoked_ms"].is_null());
    assert_eq!(get(&api(&hq, "/edges/alpha"))["name"], "alpha");
    refused(
        &call(
            "POST",
            &api(&hq, "/edges"),
            None,
            Some(r#"{"name": "bravo"}"#),
        ),
        401,
        "needs its token",
        "adding an edge without the token",
    );
    let added = call(
        "POST",
        &api(&hq, "/edges"),
        Some(TOKEN),
        Some(r#"{"name": "bravo"}"#),
    );
    assert_eq!(
        (&added.body["listing"], &added.body["admitted"]),
        (&json!("added"), &json!(true)),
        "{}",
        added.text
    );
    refused(
        &call("POST", &api(&hq, "/edges/bravo/revoke"), Some(TOKEN), None),
        409,
        "has presented no certificate",
        "revoking an edge that never connected",
    );
    let removed = call("POST", &api(&hq, "/edges/bravo/remove"), Some(TOKEN), None);
    assert_eq!(removed.body["listing"], "not-listed", "{}", removed.text);
    for (method, path, body, status, says, what) in [
        (
            "GET",
            "/edges/charlie",
            None,
            404,
            "no edge charlie",
            "an unknown edge",
        ),
        (
            "POST",
            "/edges/charlie/forget",
            None,
            404,
            "no edge charlie",
            "forgetting an unknown edge",
        ),
        (
            "GET",
            "/edges/Bad",
            None,
            400,
            "not an edge name",
            "a bad name",
        ),
        (
            "POST",
            "/edges",
            Some(r#"{"name": "hq"}"#),
            409,
            "own name",
            "the core's own name",
        ),
        (
            "POST",
            "/edges",
            Some(r#"{"name": 7}"#),
            400,
            "name",
            "a name of the wrong type",
        ),
        (
            "POST",
            "/edges",
            Some(r#"{"name": "x", "y": 1}"#),
            400,
            "unknown field",
            "an unknown field",
        ),
    ] {
        refused(
            &call(method, &api(&hq, path), Some(TOKEN), body),
            status,
            says,
            what,
        );
    }
    refused(
        &call("GET", &api(&alpha, "/edges"), None, None),
        409,
        "the core keeps the list of edges",
        "the edges of an edge",
    );

    // The log filter, at run time.
    assert_eq!(get(&api(&alpha, "/log"))["filter"], "info");
    let debug = call(
        "PUT",
        &api(&alpha, "/log"),
        None,
        Some(r#"{"filter": "debug"}"#),
    );
    assert_eq!(debug.body["filter"], "debug", "{}", debug.text);
    refused(
        &call(
            "PUT",
            &api(&alpha, "/log"),
            None,
            Some(r#"{"filter": "loud"}"#),
        ),
        400,
        "not a log filter",
        "a bad filter",
    );
    assert_eq!(
        get(&api(&alpha, "/log"))["filter"],
        "debug",
        "a refused filter changed nothing"
    );
    refused(
        &call(
            "PUT",
            &api(&hq, "/log"),
            None,
            Some(r#"{"filter": "debug"}"#),
        ),
        401,
        "needs its token",
        "a filter without the token",
    );

    // Not in the demo: no demo link. Unknown endpoints.
    refused(
        &call("GET", &api(&alpha, "/demo-link"), None, None),
        404,
        "not running in the demo",
        "the demo link",
    );
    refused(
        &call(
            "POST",
            &api(&alpha, "/demo-link"),
            None,
            Some(r#"{"up": false}"#),
        ),
        404,
        "not running in the demo",
        "the demo link",
    );
    refused(
        &call("GET", &api(&alpha, "/nothing/here"), None, None),
        404,
        "openapi.json",
        "an unknown endpoint",
    );

    // Live events: the node first, then states and tiles; a client that resumes after a
    // tile gets only the tiles after it.
    let events = read_events(&api(&alpha, "/events?tiles=3&logs=false"), None, |seen| {
        ["node", "services", "links", "mirror", "tile"]
            .iter()
            .all(|n| seen.iter().any(|(e, _, _)| e == n))
    });
    assert_eq!(events[0].0, "node");
    let last_tile = events
        .iter()
        .filter(|(e, _, _)| e == "tile")
        .map(|(_, id, _)| id.clone())
        .next_back()
        .unwrap();
    let first: u64 = last_tile.parse().unwrap();
    let resumed = read_events(
        &api(&alpha, "/events?logs=false"),
        Some(&(first - 1).to_string()),
        |seen| seen.iter().any(|(e, _, _)| e == "tile"),
    );
    let tile_ids: Vec<u64> = resumed
        .iter()
        .filter(|(e, _, _)| e == "tile")
        .map(|(_, id, _)| id.parse().unwrap())
        .collect();
    assert_eq!(
        tile_ids.first(),
        Some(&first),
        "resumes right after Last-Event-ID: {tile_ids:?}"
    );
    let bad = call_with_header(&api(&alpha, "/events"), "last-event-id", "yesterday");
    assert_eq!(bad, 400, "a Last-Event-ID that is not an offset");

    // Live-event streams are capped: one past the cap gets 429 with a reason, the rest of
    // the API goes on, and a stream that closes makes room again.
    let own = alpha.strip_prefix("http://").unwrap().to_owned();
    let open_stream = || {
        use std::io::{BufRead as _, Write as _};
        let mut stream = std::net::TcpStream::connect(&own).unwrap();
        write!(
            stream,
            "GET /api/v1/events?logs=false&tiles=0 HTTP/1.1\r\nHost: {own}\r\n\r\n"
        )
        .unwrap();
        let mut status = String::new();
        std::io::BufReader::new(stream.try_clone().unwrap())
            .read_line(&mut status)
            .unwrap();
        (status, stream)
    };
    let mut streams: Vec<_> = (0..32).map(|_| open_stream()).collect();
    assert!(
        streams.iter().all(|(status, _)| status.contains(" 200 ")),
        "{:?}",
        streams.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    let (status, _) = open_stream();
    assert!(
        status.contains(" 429 "),
        "one stream past the cap: {status}"
    );
    assert_eq!(call("GET", &api(&alpha, "/node"), None, None).status, 200);
    drop(streams.pop());
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, stream) = open_stream();
        if status.contains(" 200 ") {
            streams.push((status, stream));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no room after a stream closed: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(streams);

    pair.stop();
}

#[test]
fn with_a_token_nothing_is_read_or_changed_without_it() {
    let pair = Pair::start();
    let (hq, alpha) = (pair.hq_url.clone(), pair.alpha_url.clone());
    let api = |base: &str, path: &str| format!("{base}/api/v1{path}");
    let stop_feed = api(&hq, "/services/image-feed/stop");
    let feed_state = || get(&api(&hq, "/services/image-feed"))["state"].clone();

    // Reads need a credential; the probes, the page's own files and the API's description
    // do not (kubelet probes, and the page must load to offer its sign-in).
    for path in [
        "/api/v1/node",
        "/api/v1/topics/MESSAGES/entries",
        "/metrics",
    ] {
        refused(
            &call("GET", &format!("{hq}{path}"), None, None),
            401,
            "needs its token",
            path,
        );
        let read = call("GET", &format!("{hq}{path}"), Some(READ_TOKEN), None);
        assert_eq!(
            read.status, 200,
            "{path} with the read token: {}",
            read.text
        );
    }
    for path in [
        "/healthz",
        "/readyz",
        "/",
        "/ui/app.js",
        "/api/v1/openapi.json",
    ] {
        let open = call("GET", &format!("{hq}{path}"), None, None);
        assert_eq!(open.status, 200, "{path} without a token: {}", open.text);
    }
    let picture = format!("{hq}/files/demo-feed/tether-demo-0001.png");
    assert_eq!(call("GET", &picture, None, None).status, 401, "a file");
    assert_eq!(call("GET", &picture, Some(READ_TOKEN), None).status, 200);

    // The read token changes nothing.
    refused(
        &call("POST", &stop_feed, Some(READ_TOKEN), None),
        403,
        "read-only token",
        "a stop with the read token",
    );
    assert_eq!(feed_state(), "running", "a refused stop changed nothing");

    // The page's sign-in: a wrong token is refused; the right one sets an HttpOnly,
    // SameSite=Strict cookie that then reads, changes, and carries the live events.
    let sign_in_url = api(&hq, "/sign-in");
    let whoami = call("GET", &sign_in_url, None, None);
    assert_eq!(
        (
            whoami.body["token_required"].clone(),
            whoami.body["access"].clone()
        ),
        (json!(true), Value::Null),
        "{}",
        whoami.text
    );
    refused(
        &call(
            "POST",
            &sign_in_url,
            None,
            Some(r#"{"token": "not-the-token-0123456789"}"#),
        ),
        401,
        "not this node's token",
        "a sign-in with a wrong token",
    );
    let sign_in = |token: &str| {
        let mut response = agent()
            .post(&sign_in_url)
            .header("content-type", "application/json")
            .send(json!({ "token": token }).to_string())
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let set = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body: Value = serde_json::from_reader(response.body_mut().as_reader()).unwrap();
        (set, body)
    };
    let (set, body) = sign_in(TOKEN);
    assert_eq!(body["access"], "operate");
    for attribute in [
        "tether-sign-in-hq=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    let with_cookie = |method: &str, url: &str, content_type: Option<&str>| {
        let (host, path) = split_url(url);
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}");
        if let Some(t) = content_type {
            head.push_str(&format!("\r\nContent-Type: {t}\r\nContent-Length: 2"));
            raw_exchange(host, &head, "{}")
        } else {
            head.push_str("\r\nX-Requested-With: api-test\r\nContent-Length: 0");
            raw_request(host, &head)
        }
    };
    assert_eq!(with_cookie("GET", &api(&hq, "/node"), None).0, 200);
    let hq_addr = hq.strip_prefix("http://").unwrap();
    let (status, events) = raw_request_until(
        hq_addr,
        &format!(
            "GET /api/v1/events?logs=false&tiles=0 HTTP/1.1\r\nHost: {hq_addr}\r\nCookie: {cookie}"
        ),
        "event: node",
    );
    assert_eq!(status, 200, "the live events with the sign-in: {events}");
    // A change a form could send is refused even with a sign-in.
    let (status, text) = with_cookie("POST", &stop_feed, Some("text/plain"));
    assert!(status == 403 && text.contains("web form"), "{text}");
    assert_eq!(feed_state(), "running");
    let (status, text) = with_cookie("POST", &stop_feed, None);
    assert_eq!(status, 200, "a stop with the sign-in: {text}");
    assert_eq!(feed_state(), "stopped");
    let started = call(
        "POST",
        &api(&hq, "/services/image-feed/start"),
        Some(TOKEN),
        None,
    );
    assert_eq!(started.status, 200, "{}", started.text);
    // Signing out ends the sign-in.
    assert_eq!(with_cookie("DELETE", &sign_in_url, None).0, 204);
    assert_eq!(with_cookie("GET", &api(&hq, "/node"), None).0, 401);
    // A sign-in with the read token reads and changes nothing.
    let (set, body) = sign_in(READ_TOKEN);
    assert_eq!(body["access"], "read");
    let cookie = set.split(';').next().unwrap().to_owned();
    let (host, path) = split_url(&stop_feed);
    let (status, _) = raw_request(
        host,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nX-Requested-With: t\r\n\
             Content-Length: 0"
        ),
    );
    assert_eq!(status, 403, "a change from a read-only sign-in");
    assert_eq!(feed_state(), "running");

    // On the edge, which has no token: a change a cross-site form could make (no Origin,
    // as some browsers send none, a form's content type) is refused; nothing pauses.
    let pause = api(&alpha, "/links/hq/pause");
    let (status, text) = post_raw(&pause, "Sec-Fetch-Mode", "navigate");
    assert!(status == 403 && text.contains("web form"), "{text}");
    let link = get(&api(&alpha, "/links/hq"));
    assert_eq!(link["paused_here"], false, "a refused pause paused nothing");

    // A body announced over the limit: 413 with a reason before any of it is read (only
    // the head is sent); the node goes on.
    let own = alpha.strip_prefix("http://").unwrap();
    let (status, text) = raw_request(
        own,
        &format!(
            "POST /api/v1/topics/MESSAGES/entries HTTP/1.1\r\nHost: {own}\r\n\
             Content-Type: application/json\r\nContent-Length: {}",
            2 << 20
        ),
    );
    assert!(
        status == 413 && text.contains("over the") && text.contains("max_entry_bytes"),
        "{text}"
    );

    // Reads that wait for an entry are capped: one past the cap gets 429, the rest of the
    // API goes on, and an entry answers every waiting read.
    let next = get(&api(&alpha, "/topics/MESSAGES"))["next"]
        .as_u64()
        .unwrap();
    let wait = api(
        &alpha,
        &format!("/topics/MESSAGES/entries?from={next}&wait_ms=60000"),
    );
    let own = alpha.strip_prefix("http://").unwrap().to_owned();
    let (_, wait_path) = split_url(&wait);
    let waiting: Vec<_> = (0..ui::access::MAX_WAITS)
        .map(|_| {
            use std::io::Write as _;
            let mut stream = std::net::TcpStream::connect(&own).unwrap();
            write!(
                stream,
                "GET {wait_path} HTTP/1.1\r\nHost: {own}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            stream
        })
        .collect();
    // The node counts them (`tether_http_waiting_reads`): once all wait, one more is refused.
    let deadline = Instant::now() + PATIENCE;
    let gauge = format!("tether_http_waiting_reads {}", ui::access::MAX_WAITS);
    while !call("GET", &format!("{alpha}/metrics"), None, None)
        .text
        .lines()
        .any(|l| l == gauge)
    {
        assert!(Instant::now() < deadline, "the reads never all waited");
    }
    let short = api(
        &alpha,
        &format!("/topics/MESSAGES/entries?from={next}&wait_ms=1"),
    );
    refused(
        &call("GET", &short, None, None),
        429,
        "reads are waiting",
        "one wait past the cap",
    );
    assert_eq!(call("GET", &api(&alpha, "/node"), None, None).status, 200);
    let sent = call(
        "POST",
        &api(&alpha, "/topics/MESSAGES/entries"),
        None,
        Some(r#"{"payload": "wake up"}"#),
    );
    assert_eq!(sent.status, 201, "{}", sent.text);
    for mut reader in waiting {
        use std::io::Read as _;
        reader.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut answer = String::new();
        reader.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.contains("wake up"),
            "{answer}"
        );
    }

    // An address that keeps sending wrong tokens waits: after its allowance every token it
    // offers, the right one too, gets 429 unchecked; a page already signed in goes on.
    let node = api(&hq, "/node");
    let mut wrong = 0;
    let held = loop {
        let answer = call("GET", &node, Some("guess-0123456789abcdef"), None);
        if answer.status != 401 {
            break answer;
        }
        wrong += 1;
        assert!(
            wrong <= 2 * ui::access::WRONG_TOKENS,
            "wrong tokens never held back"
        );
    };
    // One wrong sign-in came before; the allowance may have earned a try back since.
    assert!(
        (ui::access::WRONG_TOKENS - 1..=ui::access::WRONG_TOKENS + 1).contains(&wrong),
        "{wrong} wrong tokens before the wait"
    );
    refused(
        &held,
        429,
        "wrong tokens: try again in",
        "a guess past the allowance",
    );
    refused(
        &call("GET", &node, Some(TOKEN), None),
        429,
        "wrong tokens",
        "the right token while the address waits",
    );
    refused(
        &call(
            "POST",
            &sign_in_url,
            None,
            Some(&json!({ "token": TOKEN }).to_string()),
        ),
        429,
        "wrong tokens",
        "a sign-in while the address waits",
    );
    let (host, path) = split_url(&node);
    let (status, _) = raw_request(
        host,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}"),
    );
    assert_eq!(status, 200, "a signed-in page goes on");

    pair.stop();
}

/// Sends `head` and reads the answer until it contains `until` (a stream that does not
/// end by itself); returns the status and what was read.
fn raw_request_until(addr: &str, head: &str, until: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "{head}\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(until) {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    (status_of(&text), text)
}

#[test]
fn a_read_of_a_whole_time_range_stays_within_a_memory_bound() {
    // HQ alone, its MESSAGES topic holding 96 MiB in entries of 512 KiB.
    let dir = TempDir::new("api-read-bound").unwrap();
    let toml = dir.path().join("hq.toml");
    std::fs::write(
        &toml,
        format!(
            "[node]\nname = \"hq\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [link]\nlisten = \"127.0.0.1:0\"\n[pipeline]\nstart_services = false\n",
            dir.path().join("hq").display()
        ),
    )
    .unwrap();
    let mut hq = Node::start("core-node", &toml);
    let http = hq.wait_for_line(|l| l.contains("HQ serves HTTP"), "HQ serves HTTP");
    let base = format!("http://{}/api/v1", field(&http, "http="));
    let entries = format!("{base}/topics/MESSAGES/entries");
    let body = json!({ "payload": "x".repeat(512 << 10) }).to_string();
    for _ in 0..192 {
        let sent = call("POST", &entries, None, Some(&body));
        assert_eq!(sent.status, 201, "{}", sent.text);
    }
    // The peak resident memory (VmHWM) before and after reading every entry's time range:
    // what the read adds is bounded by its byte budget, not by what the topic holds.
    let peak = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", hq.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib << 10
    };
    let before = peak();
    let read = call(
        "GET",
        &format!("{entries}?since_ms=0&from=0&limit=1000"),
        None,
        None,
    );
    assert_eq!(read.status, 200);
    let got = read.body.as_array().unwrap().len();
    let grew = peak().saturating_sub(before);
    println!(
        "whole-range read: {got} entries in {} KiB; peak resident memory +{} MiB",
        read.text.len() >> 10,
        grew >> 20
    );
    assert!(
        (1..192).contains(&got),
        "the read stops at its byte budget: {got}"
    );
    assert!(
        grew < 48 << 20,
        "a whole-range read raised the node's peak memory by {} MiB",
        grew >> 20
    );
    hq.signal("TERM");
    let (status, log) = hq.exit();
    assert!(status.success(), "{log}");
}

/// Sends `head` (a request line and headers, without the final blank line) to `addr`
/// as written, with `Connection: close`; returns the status and the whole answer.
fn raw_request(addr: &str, head: &str) -> (u16, String) {
    raw_exchange(addr, head, "")
}

/// Sends `head`, `Connection: close` and `body`; returns the status and the whole answer.
fn raw_exchange(addr: &str, head: &str, body: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "{head}\r\nConnection: close\r\n\r\n{body}").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    (status_of(&response), response)
}

/// The status code of a raw HTTP answer (0 if it has none).
fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `url` split into the server's address and the path.
fn split_url(url: &str) -> (&str, &str) {
    let rest = url.strip_prefix("http://").unwrap();
    rest.split_at(rest.find('/').unwrap())
}

/// GET `path` from the server at `addr`, naming `host` in the request.
fn get_with_host(addr: &str, path: &str, host: &str) -> (u16, String) {
    raw_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {host}"))
}

/// POST without a body, with one more header, as a browser would send it.
fn post_raw(url: &str, name: &str, value: &str) -> (u16, String) {
    let (host, path) = split_url(url);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{name}: {value}\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nContent-Length: 0"
    );
    raw_request(host, &head)
}

/// GET with the path sent as written (no client-side normalisation of `..`).
fn call_raw_path(url: &str) -> (u16, String) {
    let (host, path) = split_url(url);
    raw_request(host, &format!("GET {path} HTTP/1.1\r\nHost: {host}"))
}

fn call_with_header(url: &str, name: &str, value: &str) -> u16 {
    agent()
        .get(url)
        .header(name, value)
        .call()
        .unwrap()
        .status()
        .as_u16()
}

/// Reads server-sent events from `url` until `enough` holds: (event, id, data).
fn read_events(
    url: &str,
    last_event_id: Option<&str>,
    enough: impl Fn(&[(String, String, Value)]) -> bool,
) -> Vec<(String, String, Value)> {
    use std::io::BufRead as _;
    let mut request = agent()
        .get(url)
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let mut response = request.call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let reader = std::io::BufReader::new(response.body_mut().as_reader());
    let (mut seen, mut event, mut id, mut data) =
        (Vec::new(), String::new(), String::new(), String::new());
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_owned();
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = v.to_owned();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = v.to_owned();
        } else if line.is_empty() && !event.is_empty() {
            let value = serde_json::from_str(&data).unwrap_or(Value::Null);
            seen.push((std::mem::take(&mut event), std::mem::take(&mut id), value));
            if enough(&seen) {
                return seen;
            }
        }
    }
    panic!("the event stream ended before it had everything: {seen:?}");
}

#[test]
fn the_openapi_document_matches_what_both_nodes_do() {
    let Some(python) = tools::python("openapi", &["schemathesis"]) else {
        return;
    };
    let st = python.with_file_name("schemathesis");
    let pair = Pair::start();
    let config = tools::root().join("tests/api/schemathesis.toml");
    for (base, token) in [(&pair.hq_url, Some(TOKEN)), (&pair.alpha_url, None)] {
        let mut command = Command::new(&st);
        command
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(format!("{base}/api/v1/openapi.json"))
            .args(["--url", &format!("{base}/api/v1")])
            .args([
                "--exclude-path",
                "/events",
                "--checks",
                "all",
                "--max-examples",
                "25",
            ])
            .args(["--seed", "1", "--request-timeout", "20"])
            .env("NO_COLOR", "1")
            .current_dir(pair.dir.path());
        // What a program sends with a change (forms are refused: ui::access).
        command.args(["-H", "X-Requested-With: schemathesis"]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let out = command.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis against {base} failed ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    pair.stop();
}

#[test]
fn metrics_pass_prometheus_own_parser_and_its_naming_rules() {
    let Some(python) = tools::python("metrics", &["prometheus_client"]) else {
        return;
    };
    let pair = Pair::start();
    pair.first_asset();
    for base in [&pair.hq_url, &pair.alpha_url] {
        let answer = call("GET", &format!("{base}/metrics"), Some(READ_TOKEN), None);
        assert_eq!(answer.status, 200);
        let text = answer.text;
        for family in [
            "tether_node_info",
            "tether_appends_total",
            "tether_link_up",
            "tether_link_bytes_total",
            "tether_link_entries_total",
            "tether_link_backlog_entries",
            "tether_service_processed_total",
            "tether_service_state",
            "tether_http_requests_total",
            "tether_certificate_expiry_time_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing at {base}"
            );
        }
        let check = python_check(&python, &text);
        assert!(check.0, "{base}/metrics: {}", check.1);
    }
    let edge = call("GET", &format!("{}/metrics", pair.alpha_url), None, None).text;
    assert!(
        edge.contains("tether_mirror_state{state=\"idle\"} 1"),
        "{edge}"
    );
    assert!(edge.contains("tether_link_up{peer=\"hq\"} 1"), "{edge}");
    let core = call(
        "GET",
        &format!("{}/metrics", pair.hq_url),
        Some(READ_TOKEN),
        None,
    )
    .text;
    assert!(
        core.contains("tether_edges_revoked_certificates 0"),
        "{core}"
    );
    pair.stop();
}

/// Parses `text` with prometheus_client's parser and checks the conventions: the prefix,
/// counters ending in `_total`, a HELP for every family, no family twice.
fn python_check(python: &Path, text: &str) -> (bool, String) {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
seen = set()
problems = []
for family in text_string_to_metric_families(text):
    name = family.name
    if family.type == "counter":
        # The parser strips `_total` from a counter's family name: the samples carry it.
        if not all(s.name.endswith("_total") for s in family.samples):
            problems.append(f"counter {name} has samples without _total")
    if not name.startswith("tether_"):
        problems.append(f"{name}: no tether_ prefix")
    if not family.documentation:
        problems.append(f"{name}: no HELP")
    if name in seen:
        problems.append(f"{name}: twice")
    seen.add(name)
    for s in family.samples:
        if s.value != s.value:
            problems.append(f"{s.name}: NaN")
if len(seen) < 15:
    problems.append(f"only {len(seen)} families")
print("\n".join(problems) or f"{len(seen)} families ok")
sys.exit(1 if problems else 0)
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_cli_drives_a_running_node_through_its_api() {
    let pair = Pair::start();
    let cli = |bin: &str, args: &[&str], url: &str| {
        let out = Command::new(binary(bin))
            .args(args)
            .args(["--url", url])
            .env_remove("TETHER_HTTP__TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (hq, alpha) = (pair.hq_url.clone(), pair.alpha_url.clone());
    let (code, out, err) = cli("edge-node", &["status"], &alpha);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("alpha (edge")
            && out.contains("link hq: up")
            && out.contains("broadcast-listener"),
        "{out}"
    );
    // A config whose port is "any" cannot name the node: the CLI says so.
    let out = Command::new(binary("edge-node"))
        .args(["services", "--config"])
        .arg(&pair.alpha_config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--url"), "{err}");

    let id = pair.first_asset();
    let (code, out, err) = cli("edge-node", &["assets", "request", &id], &alpha);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), format!("asset {id} is wanted"));
    let (code, _, err) = cli("edge-node", &["assets", "request", "nope"], &alpha);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("only broadcast assets can be requested"),
        "{err}"
    );
    wait_asset_state(&alpha, &id, "ready");
    let (code, _, err) = cli("edge-node", &["mirror", "start", "--wait"], &alpha);
    assert_eq!(code, Some(0), "mirror start --wait: {err}");
    assert!(err.contains("mirror done"), "progress on stderr: {err}");
    let (_, out, _) = cli("edge-node", &["assets"], &alpha);
    assert!(out.contains(&format!("{id}\treceived")), "{out}");

    // Publish at the edge; tail at HQ sees it cross.
    let (code, out, err) = cli(
        "edge-node",
        &["publish", "MESSAGES", "status green"],
        &alpha,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("published alpha:1 to MESSAGES"), "{out}");
    // `tail` follows the topic: read its first line, then stop it (by its PID).
    let mut tail = Command::new(binary("core-node"))
        .args([
            "tail", "MESSAGES", "--from", "0", "--url", &hq, "--token", TOKEN,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let first = std::io::BufRead::lines(std::io::BufReader::new(stdout)).next();
    tail.kill().unwrap();
    tail.wait().unwrap();
    let first = first.unwrap().unwrap();
    assert!(first.contains("alpha:1 status green"), "{first}");

    // Changes at HQ need its token.
    let (code, _, err) = cli("core-node", &["services", "stop", "ingest"], &hq);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("needs its token") && err.contains("401"),
        "{err}"
    );
    let (code, out, err) = cli(
        "core-node",
        &["services", "stop", "ingest", "--token", TOKEN],
        &hq,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ingest") && out.contains("stopped"), "{out}");
    let (code, out, err) = cli("edge-node", &["link", "pause"], &alpha);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("link hq: paused"), "{out}");
    let (code, out, _) = cli("edge-node", &["link", "resume"], &alpha);
    assert_eq!(code, Some(0));
    assert!(out.contains("link hq: up"), "{out}");
    let (code, _, err) = cli("edge-node", &["services", "fly"], &alpha);
    assert_eq!(code, Some(2), "a bad command is a usage error: {err}");
    let (code, _, err) = cli("edge-node", &["status"], "http://127.0.0.1:9");
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot reach the node's API"), "{err}");

    // HQ revokes the edge: its link closes at once, and the edge's log says why. Reads
    // at HQ need its token too.
    let (code, _, err) = cli("core-node", &["edges"], &hq);
    assert_eq!(code, Some(1));
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = cli("core-node", &["edges", "--token", TOKEN], &hq);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("edge alpha: admitted (config), connected, 1 certificate(s), 0 revoked"),
        "{out}"
    );
    let (code, _, err) = cli("core-node", &["edges", "revoke", "alpha"], &hq);
    assert_eq!(code, Some(1));
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = cli(
        "core-node",
        &["edges", "revoke", "alpha", "--token", TOKEN],
        &hq,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 certificate(s), 1 revoked"), "{out}");
    let mut pair = pair;
    let line = pair
        .alpha
        .wait_for_line(|l| l.contains("link down"), "the link's end");
    assert!(line.contains("(revoked)"), "{line}");
    let (code, _, err) = cli("core-node", &["edges", "forget"], &hq);
    assert_eq!(code, Some(2), "{err}");
    pair.stop();
}
