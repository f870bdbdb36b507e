//! The web tile page in a real headless Chromium (issue 7), against the in-process
//! mission (HQ and `alpha`, each the real node runtime with its services and HTTP
//! server, linked through the emulator): the whole operator journey from the two
//! dashboards, and the page's answer to an API error and to a missing token.
//!
//! Each step waits for what the page shows (polling the browser); nothing is
//! synchronised by sleeping. Screenshots of both dashboards are kept in
//! `target/screenshots/` (`hq.png`, `edge.png`, `edge-token.png`).
//!
//! Needs Debian's `chromium` and `chromium-driver` (see `tools::chromium`): without
//! them the tests skip, unless `TETHER_REQUIRE_TOOLS` is set.

use std::sync::Once;
use std::time::Duration;

use protocol::config::{LogFormat, LogSettings};
use serde_json::Value;
use tests::TempDir;
use tests::emulator::Profile;
use tests::mission::{Mission, MissionConfig};

use crate::support::tools;
use crate::support::webdriver::{Browser, screenshots_dir};

/// How long one step may take (a few seconds on loopback; generous for a busy CI).
const STEP: Duration = Duration::from_secs(30);

/// HQ's services, as its page lists them.
const HQ_SERVICES: [&str; 5] = [
    "asset-broadcast",
    "asset-response",
    "image-download",
    "image-feed",
    "ingest",
];

/// The edge's services.
const EDGE_SERVICES: [&str; 3] = ["asset-request", "asset-viewer", "broadcast-listener"];

/// The token of the second test (16 to 256 visible characters).
const TOKEN: &str = "page-test-token-0123456789";

/// The nodes' log lines reach the page only through the process's logger: installed
/// once for the test binary, narrow enough to keep other tests' output quiet.
fn install_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let settings = LogSettings {
            format: LogFormat::Text,
            filter: "warn,ui=info,core_node=info,edge_node=info,protocol::service=info".to_owned(),
        };
        if let Err(e) = protocol::node::logs::init(&settings) {
            eprintln!("page: the log feed is not installed ({e}); the log panel stays empty");
        }
    });
}

/// A CSS attribute value in double quotes.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The service rows' names and states, as the page shows them.
fn services(browser: &Browser) -> Vec<(String, String)> {
    let rows = browser
        .execute(
            "return [...document.querySelectorAll('#services [data-service]')].map(r => [r.dataset.service, r.dataset.state || '']);",
            &[],
        )
        .unwrap_or(Value::Null);
    rows.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r[0].as_str().unwrap_or_default().to_owned(),
                        r[1].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Opens `url` and waits for the page to be live for a node of `role`.
fn open(browser: &Browser, url: &str, role: &str) {
    browser.goto(url).unwrap();
    browser.wait_for_script(
        &format!("the {role} page is live"),
        STEP,
        &format!(
            "return document.body.dataset.role === '{role}' && document.body.dataset.stream === 'live' \
             && document.getElementById('stream').textContent === 'live';"
        ),
    );
}

/// Starts every service in `names` with its switch, from stopped; waits until all run.
fn start_services(browser: &Browser, names: &[&str]) {
    browser.wait_until("the page lists the services, all stopped", STEP, || {
        let shown = services(browser);
        Ok(names.iter().all(|n| {
            shown
                .iter()
                .any(|(name, state)| name == n && state == "stopped")
        }))
    });
    // Where each row is: a service that starts working must not move the rows below it
    // (a switch that moves under the pointer takes a click meant for another).
    let rows =
        "return [...document.querySelectorAll('#services [data-service]')].map(r => r.offsetTop);";
    let before = browser.execute(rows, &[]).unwrap();
    for name in names {
        browser
            .click_css(&format!(
                "[data-service={}] [data-action=toggle]",
                quoted(name)
            ))
            .unwrap();
    }
    browser.wait_until("every service runs", STEP, || {
        let shown = services(browser);
        Ok(names.iter().all(|n| {
            shown
                .iter()
                .any(|(name, state)| name == n && state == "running")
        }))
    });
    browser.wait_until("the services show their last work", STEP, || {
        browser.check("return [...document.querySelectorAll('#services [data-field=last]')].some(e => e.textContent !== '');")
    });
    let after = browser.execute(rows, &[]).unwrap();
    assert_eq!(
        before, after,
        "the service rows moved as the services started"
    );
    for name in names {
        let switch = browser
            .find(&format!(
                "[data-service={}] [data-action=toggle]",
                quoted(name)
            ))
            .unwrap();
        assert_eq!(
            browser
                .attribute(&switch, "aria-checked")
                .unwrap()
                .as_deref(),
            Some("true"),
            "{name}'s switch shows it on"
        );
    }
}

/// Whether some image in the elements matching `css` has loaded.
fn image_loaded(css: &str) -> String {
    format!(
        "return [...document.querySelectorAll({css:?})].some(i => i.complete && i.naturalWidth > 0);"
    )
}

/// Asserts the page met no script error.
fn assert_no_page_errors(browser: &Browser, page: &str) {
    let errors = browser
        .execute(
            "return window.tether ? window.tether.errors : ['no app'];",
            &[],
        )
        .unwrap();
    assert_eq!(
        errors,
        serde_json::json!([]),
        "script errors on the {page} page"
    );
}

/// Pauses the link to `peer` from the page, sees it paused, resumes it, sees it up.
fn pause_and_resume(browser: &Browser, peer: &str) {
    let link = format!("#links [data-link={}]", quoted(peer));
    browser.wait_for_script(
        &format!("the link to {peer} is up"),
        STEP,
        &format!("return document.querySelector('{link}[data-state=\"up\"]') !== null;"),
    );
    browser
        .click_css(&format!("{link} [data-action=pause]"))
        .unwrap();
    browser.wait_for_script(
        &format!("the link to {peer} shows paused"),
        STEP,
        &format!(
            "const l = document.querySelector('{link}'); return l.dataset.state === 'paused' \
             && l.querySelector('[data-field=state]').textContent === 'paused' \
             && l.querySelector('[data-action=resume]').disabled === false;"
        ),
    );
    browser
        .click_css(&format!("{link} [data-action=resume]"))
        .unwrap();
    browser.wait_for_script(
        &format!("the link to {peer} is up again"),
        STEP,
        &format!(
            "const l = document.querySelector('{link}'); return l.dataset.state === 'up' \
             && l.querySelector('[data-field=state]').textContent === 'up';"
        ),
    );
}

/// Waits until every image in the tiles and assets has loaded or failed (for a clean
/// screenshot).
fn settle_images(browser: &Browser) {
    browser.wait_for_script(
        "the page's images are loaded",
        STEP,
        "return [...document.querySelectorAll('img')].every(i => i.complete);",
    );
}

#[test]
fn an_operator_runs_the_mission_from_the_two_dashboards() {
    let Some((chromium, driver)) = tools::chromium("page") else {
        return;
    };
    install_logs();
    let dir = TempDir::new("page").unwrap();
    let runtime = tests::runtime().unwrap();
    let mut config = MissionConfig::new(dir.path(), Profile::lan());
    config.start_services = false;
    let mission = runtime.block_on(Mission::start(&config)).unwrap();
    let hq = format!("http://{}/", mission.hq_http);
    let edge = format!("http://{}/", mission.alpha_http);
    let browser = Browser::start(&chromium, &driver).unwrap();
    let b = &browser;

    // HQ: start the services from the page; tiles with images come.
    open(b, &hq, "core");
    b.wait_for_script(
        "HQ's header names the node",
        STEP,
        "return document.getElementById('node-name').textContent === 'hq' \
         && document.getElementById('node-role').textContent === 'HQ';",
    );
    start_services(b, &HQ_SERVICES);
    b.wait_for_script(
        "HQ shows a tile whose image loaded",
        STEP,
        &image_loaded("#tiles .tile img.media-image"),
    );
    b.wait_for_script(
        "HQ counts downloads",
        STEP,
        "return Number(document.querySelector('[data-service=\"image-download\"] [data-counter=processed]').textContent) > 0;",
    );
    b.wait_for_script(
        "HQ shows the edge's link up",
        STEP,
        "return document.querySelector('#links [data-link=\"alpha\"][data-state=\"up\"]') !== null;",
    );
    b.wait_for_script(
        "HQ's log panel shows log lines",
        STEP,
        "return document.querySelectorAll('#log .line').length > 0;",
    );
    assert_no_page_errors(b, "HQ");

    // The edge: its services, a broadcast asset with its preview.
    open(b, &edge, "edge");
    start_services(b, &EDGE_SERVICES);
    let mut id = String::new();
    b.wait_until(
        "the edge lists an available asset with its preview",
        STEP,
        || {
            let found = b.execute(
                "const a = [...document.querySelectorAll('#assets .asset[data-state=\"available\"]')]\
                   .find(a => { const p = a.querySelector('img.media-preview'); return p && p.complete && p.naturalWidth > 0; });\
                 return a ? a.dataset.asset : null;",
                &[],
            )?;
            id = found.as_str().unwrap_or_default().to_owned();
            Ok(!id.is_empty())
        },
    );
    let card = format!("#assets [data-asset={}]", quoted(&id));
    // Every state the card shows from now on.
    b.execute(
        "const card = document.querySelector(arguments[0]); window.assetStates = [];\
         new MutationObserver(() => window.assetStates.push(card.dataset.state))\
           .observe(card, { attributes: true, attributeFilter: ['data-state'] });",
        &[Value::from(card.clone())],
    )
    .unwrap();
    // Click it to request it; it is wanted, requested, then ready at HQ.
    b.click_css(&card).unwrap();
    b.wait_for_script(
        "the requested asset is ready at HQ",
        STEP,
        &format!("return document.querySelector('{card}').dataset.state === 'ready';"),
    );
    let states = b.execute("return window.assetStates;", &[]).unwrap();
    let states: Vec<&str> = states
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        matches!(states.first(), Some(&"wanted" | &"requested")),
        "the card went from available to {states:?}"
    );
    assert_eq!(states.last(), Some(&"ready"), "{states:?}");
    let hint = b
        .text(&b.find(&format!("{card} [data-field=hint]")).unwrap())
        .unwrap();
    assert!(
        hint.contains("Mirror"),
        "the ready card says what to do: {hint:?}"
    );

    // Mirror: progress to done, then the asset is received, with its image as a tile.
    b.click_css("#mirror-start").unwrap();
    b.wait_for_script(
        "the mirror is done, at 100 %, with its last success time",
        STEP,
        "return document.getElementById('mirror').dataset.state === 'done' \
         && document.getElementById('mirror-progress').dataset.percent === '100' \
         && document.getElementById('mirror-percent').textContent === '100 %' \
         && document.getElementById('mirror-last-success').hasAttribute('data-ms');",
    );
    let files = b.text(&b.find("#mirror-files").unwrap()).unwrap();
    let (done, todo) = files.split_once(" / ").unwrap_or(("", "?"));
    assert_eq!(done, todo, "all the files are written: {files:?}");
    b.wait_for_script(
        "the asset is received",
        STEP,
        &format!("return document.querySelector('{card}').dataset.state === 'received';"),
    );
    b.wait_for_script(
        "the received image shows as a tile",
        STEP,
        &image_loaded(&format!(
            "#tiles .tile[data-asset={}] img.media-image",
            quoted(&id)
        )),
    );
    b.wait_for_script(
        "the received asset's card shows its image",
        STEP,
        &image_loaded(&format!("{card} img.media-image")),
    );

    // Debug detail in the log panel, on and off.
    b.click_css("#debug-logs").unwrap();
    b.wait_for_script(
        "the switch shows the node's log filter at debug",
        STEP,
        "const s = document.getElementById('debug-logs'); return s.getAttribute('aria-checked') === 'true' \
         && s.dataset.filter === 'debug' && document.getElementById('log-note').textContent === 'filter: debug';",
    );
    assert_eq!(
        protocol::node::logs::control()
            .map(|c| c.filter())
            .as_deref(),
        Some("debug"),
        "the node's log filter"
    );
    b.click_css("#debug-logs").unwrap();
    b.wait_for_script(
        "the log filter is back to what it was",
        STEP,
        "const s = document.getElementById('debug-logs'); return s.getAttribute('aria-checked') === 'false' \
         && s.dataset.filter !== 'debug';",
    );
    assert_ne!(
        protocol::node::logs::control()
            .map(|c| c.filter())
            .as_deref(),
        Some("debug"),
        "the node's log filter is back"
    );

    // The link to HQ: pause, resume.
    pause_and_resume(b, "hq");

    // The demo link: another profile and back; down and up.
    b.wait_for_script(
        "the demo link control shows",
        STEP,
        "return !document.getElementById('demo-panel').hidden \
         && document.querySelectorAll('#demo-profile option').length > 1;",
    );
    b.click_css("#demo-profile option[value=\"lte\"]").unwrap();
    b.wait_for_script(
        "the demo link uses the lte profile",
        STEP,
        "return document.getElementById('demo-profile').dataset.profile === 'lte';",
    );
    b.click_css("#demo-profile option[value=\"lan\"]").unwrap();
    b.wait_for_script(
        "the demo link is back on lan",
        STEP,
        "return document.getElementById('demo-profile').dataset.profile === 'lan';",
    );
    b.click_css("#demo-up").unwrap();
    b.wait_for_script(
        "the demo link is down",
        STEP,
        "return document.getElementById('demo-up').getAttribute('aria-checked') === 'false' \
         && document.getElementById('demo-state').dataset.state === 'down';",
    );
    b.click_css("#demo-up").unwrap();
    b.wait_for_script(
        "the demo link is up",
        STEP,
        "return document.getElementById('demo-up').getAttribute('aria-checked') === 'true' \
         && document.getElementById('demo-state').dataset.state === 'up';",
    );
    pause_and_resume(b, "hq");
    assert_no_page_errors(b, "edge");
    settle_images(b);
    let shots = screenshots_dir();
    let edge_shot = shots.join("edge.png");
    b.screenshot_page(&edge_shot, 1280).unwrap();
    // The same on a tablet held upright: nothing wider than the screen.
    b.set_window_size(820, 1180).unwrap();
    b.wait_for_script(
        "the page fits a tablet's width",
        STEP,
        "return window.innerWidth <= 820 && document.documentElement.scrollWidth <= window.innerWidth;",
    );
    let tablet_shot = shots.join("edge-tablet.png");
    b.screenshot(&tablet_shot).unwrap();
    b.set_window_size(1280, 1000).unwrap();

    // HQ again: pause and resume its link to the edge; the dashboard at the end.
    open(b, &hq, "core");
    pause_and_resume(b, "alpha");
    b.wait_for_script(
        "HQ shows tiles with images",
        STEP,
        &image_loaded("#tiles .tile img.media-image"),
    );
    settle_images(b);
    let tiles = b.find_all("#tiles .tile").unwrap();
    assert!(tiles.len() >= 10, "HQ shows its tiles: {}", tiles.len());
    assert_no_page_errors(b, "HQ");
    let hq_shot = shots.join("hq.png");
    b.screenshot_page(&hq_shot, 1280).unwrap();
    println!(
        "screenshots: {} {} {}",
        hq_shot.display(),
        edge_shot.display(),
        tablet_shot.display()
    );

    // HQ revokes the edge from its card: a first click asks, the second revokes; the
    // card shows the link down and why.
    let card = "#links [data-link=\"alpha\"]";
    let revoke = format!("{card} [data-action=revoke]");
    b.click_css(&revoke).unwrap();
    b.wait_for_script(
        "the revoke button asks to confirm",
        STEP,
        &format!("return document.querySelector('{revoke}').textContent === 'Confirm revoke';"),
    );
    b.click_css(&revoke).unwrap();
    b.wait_for_script(
        "the card shows the edge revoked and its link down",
        STEP,
        &format!(
            "const l = document.querySelector('{card}'); return l.hasAttribute('data-revoked') \
             && l.dataset.state === 'down' \
             && l.querySelector('[data-field=note]').textContent.includes('Certificate revoked') \
             && l.querySelector('[data-action=revoke]').disabled;"
        ),
    );
    assert_no_page_errors(b, "HQ");

    // The node goes away: the page says so, and keeps trying by itself.
    runtime.block_on(mission.stop());
    b.wait_for_script(
        "the page shows it is reconnecting",
        STEP,
        "return document.getElementById('stream').dataset.state === 'reconnecting' \
         && document.getElementById('stream').textContent === 'reconnecting';",
    );
    drop(browser);
}

#[test]
fn the_page_asks_for_the_token_and_shows_api_errors() {
    let Some((chromium, driver)) = tools::chromium("page") else {
        return;
    };
    install_logs();
    let dir = TempDir::new("page-token").unwrap();
    let runtime = tests::runtime().unwrap();
    let mut config = MissionConfig::new(dir.path(), Profile::lan());
    config.token = Some(TOKEN.to_owned());
    let mission = runtime.block_on(Mission::start(&config)).unwrap();
    let edge = format!("http://{}/", mission.alpha_http);
    let browser = Browser::start(&chromium, &driver).unwrap();
    let b = &browser;

    // Before signing in the page shows nothing of the node, and asks for the token.
    b.goto(&edge).unwrap();
    b.wait_for_script(
        "the page asks for the token",
        STEP,
        "return !document.getElementById('token-form').hidden \
         && document.getElementById('token-state').dataset.state === 'missing' \
         && document.querySelector('#links [data-link]') === null;",
    );
    let shots = screenshots_dir();
    let shot = shots.join("edge-token.png");
    b.screenshot(&shot).unwrap();

    // A wrong token: the node's refusal, in the banner; still signed out.
    let input = b.find("#token").unwrap();
    b.type_text(&input, "not-the-token-0123456789").unwrap();
    b.click_css("#token-save").unwrap();
    b.wait_for_script(
        "the banner says the token is wrong",
        STEP,
        "const b = document.getElementById('banner'); return !b.hidden && b.dataset.code === 'unauthorized' \
         && document.getElementById('banner-text').textContent.includes('not this node') \
         && document.getElementById('token-state').dataset.state === 'missing';",
    );

    // The right one: signed in, the page fills, and no script can see a credential (the
    // sign-in is an HttpOnly cookie; nothing is kept in the page's storage).
    let input = b.find("#token").unwrap();
    b.clear(&input).unwrap();
    b.type_text(&input, TOKEN).unwrap();
    b.click_css("#token-save").unwrap();
    b.wait_for_script(
        "signed in, the banner gone, the link shown live",
        STEP,
        "return document.getElementById('token-state').dataset.state === 'operate' \
         && document.getElementById('banner').hidden \
         && document.getElementById('stream').dataset.state === 'live' \
         && document.querySelector('#links [data-link=\"hq\"][data-state=\"up\"]') !== null \
         && document.cookie === '' && localStorage.length === 0;",
    );
    pause_and_resume(b, "hq");

    // A delay over the limit: the API's message, in the banner.
    let delay = "[data-service=\"asset-viewer\"] [data-field=delay]";
    b.type_text(&b.find(delay).unwrap(), "4000000").unwrap();
    b.click_css("[data-service=\"asset-viewer\"] [data-action=delay]")
        .unwrap();
    b.wait_for_script(
        "the banner shows why the delay was refused",
        STEP,
        "const b = document.getElementById('banner'); return !b.hidden && b.dataset.code === 'bad-request' \
         && document.getElementById('banner-text').textContent.includes('over the limit');",
    );
    b.click_css("#banner-close").unwrap();
    b.wait_for_script(
        "the banner is dismissed",
        STEP,
        "return document.getElementById('banner').hidden;",
    );
    // A delay within it is set and shown.
    let input = b.find(delay).unwrap();
    b.clear(&input).unwrap();
    b.type_text(&input, "250").unwrap();
    b.click_css("[data-service=\"asset-viewer\"] [data-action=delay]")
        .unwrap();
    b.wait_for_script(
        "the new delay shows",
        STEP,
        "return document.querySelector('[data-service=\"asset-viewer\"] [data-field=\"delay-now\"]').textContent === 'current 250 ms';",
    );
    assert_no_page_errors(b, "edge");
    println!("screenshot: {}", shot.display());

    drop(browser);
    runtime.block_on(mission.stop());
}

/// HQ's fleet table with many edges: 150 listed, 14 connected, 2 of those gone again.
/// The node pages, filters and sorts; the page shows it, and the link cards give way to
/// the table.
#[test]
fn hq_shows_a_fleet_of_many_edges_in_one_table() {
    let Some((chromium, driver)) = tools::chromium("page") else {
        return;
    };
    let dir = TempDir::new("page-fleet").unwrap();
    let runtime = tests::runtime().unwrap();
    let ca = tests::fleet::make_ca(dir.path()).unwrap();
    let names = tests::fleet::edge_names(150);
    let link = std::net::SocketAddr::from(([127, 0, 0, 1], tests::fleet::free_port().unwrap()));
    let config = tests::fleet::core_config(dir.path(), link, &names).unwrap();
    let mut core = crate::support::process::Node::start("core-node", &config);
    let http = core.wait_for_line(|l| l.contains("HQ serves HTTP"), "HQ serves HTTP");
    let http = crate::support::process::field(&http, "http=");
    let mut edges = runtime.block_on(async {
        let began = std::time::SystemTime::now();
        let mut edges = Vec::new();
        for n in &names[..14] {
            edges.push(
                tests::fleet::start_edge(dir.path(), &ca, n, link)
                    .await
                    .unwrap(),
            );
        }
        tests::fleet::all_connected(&edges, began, STEP * 2)
            .await
            .unwrap();
        edges
    });
    for gone in edges.drain(..2) {
        runtime.block_on(gone.stop()).unwrap();
    }
    let browser = Browser::start(&chromium, &driver).unwrap();
    let b = &browser;
    open(b, &format!("http://{http}/"), "core");
    let rows = "[...document.querySelectorAll('#fleet-rows tr')]";
    b.wait_for_script(
        "the first page of the fleet, with the counts",
        STEP,
        &format!(
            "return {rows}.length === 100 && document.getElementById('fleet-note').textContent \
             === '150 edges: 12 up, 2 down, 136 never' \
             && document.getElementById('fleet-page').textContent === '1–100 of 150' \
             && document.querySelector('#fleet-rows tr').dataset.edge === 'edge0000' \
             && document.getElementById('links-empty').textContent === '14 edge links: see the Fleet table.' \
             && document.querySelector('#links [data-link]') === null;"
        ),
    );
    let shot = screenshots_dir().join("hq-fleet.png");
    b.screenshot_page(&shot, 1400).unwrap();
    b.click_css("#fleet-next").unwrap();
    b.wait_for_script(
        "the second page",
        STEP,
        &format!(
            "return {rows}.length === 50 && document.getElementById('fleet-page').textContent === '101–150 of 150' \
             && document.getElementById('fleet-next').disabled;"
        ),
    );
    // The state filter: only the edges that left.
    b.execute(
        "const s = document.getElementById('fleet-state'); s.value = 'down'; \
         s.dispatchEvent(new Event('change'));",
        &[],
    )
    .unwrap();
    b.wait_for_script(
        "the edges that left",
        STEP,
        &format!(
            "const r = {rows}; return r.length === 2 && r[0].dataset.edge === 'edge0000' \
             && r[1].dataset.edge === 'edge0001' && r.every((t) => t.dataset.state === 'down') \
             && r[0].querySelector('[data-field=\"last-seen\"]').textContent.endsWith('ago');"
        ),
    );
    // A name filter, and the name column sorted Z to A.
    b.execute(
        "const s = document.getElementById('fleet-state'); s.value = ''; \
         s.dispatchEvent(new Event('change'));",
        &[],
    )
    .unwrap();
    b.type_text(&b.find("#fleet-q").unwrap(), "edge000")
        .unwrap();
    b.wait_for_script(
        "ten edges by name",
        STEP,
        &format!("return {rows}.length === 10 && {rows}[0].dataset.edge === 'edge0000';"),
    );
    b.click_css("#fleet-table th[data-sort=\"name\"] button")
        .unwrap();
    b.wait_for_script(
        "sorted Z to A",
        STEP,
        &format!(
            "return {rows}.length === 10 && {rows}[0].dataset.edge === 'edge0009' \
             && document.querySelector('#fleet-table th[data-sort=\"name\"]').getAttribute('aria-sort') === 'descending';"
        ),
    );
    // A code for two edges, shown once, listed; revoked from the list.
    let uses = b.find("#enroll-uses").unwrap();
    b.clear(&uses).unwrap();
    b.type_text(&uses, "2").unwrap();
    b.click_css("#enroll-create").unwrap();
    b.wait_for_script(
        "a new code, shown and listed",
        STEP,
        "const code = document.getElementById('enroll-code-text').textContent; \
         const row = document.querySelector('#enroll-rows tr'); \
         return code.startsWith('tether1-') && row !== null && row.dataset.state === 'active' \
         && code.slice(8, 16) === row.dataset.code && row.textContent.includes('0 of 2');",
    );
    b.click_css("#enroll-rows [data-action=\"revoke-code\"]")
        .unwrap();
    b.wait_for_script(
        "the code revoked",
        STEP,
        "const row = document.querySelector('#enroll-rows tr'); \
         return row.dataset.state === 'revoked' && row.querySelector('button') === null;",
    );
    assert_no_page_errors(b, "HQ fleet");
    // The metrics say the same in totals.
    let metrics = ureq::get(&format!("http://{http}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    for line in [
        "tether_edges{state=\"up\"} 12",
        "tether_edges{state=\"down\"} 2",
        "tether_edges{state=\"never\"} 136",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in /metrics");
    }
    println!("screenshot: {}", shot.display());
    drop(browser);
    drop(edges);
    drop(core);
}
