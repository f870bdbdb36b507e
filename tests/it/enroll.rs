//! Joining the fleet with a code, through the real binaries: HQ's `core-node` makes codes
//! (`enroll create`), an `edge-node enroll <code>` gets its certificate over QUIC and then
//! replicates; bad codes are refused with their reason and admit nothing. The same from an
//! edge's first-run setup page, in a real Chromium.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use tests::TempDir;

use crate::support::process::{Node as Process, binary, field};
use crate::support::tools;
use crate::support::webdriver::{Browser, screenshots_dir};

/// How long one browser step may take.
const STEP: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `binary args` to its end; returns whether it succeeded, its stdout and stderr.
fn run(binary_name: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary(binary_name))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("TETHER_HTTP__TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An edge's config: `name`, dialing the core at `core`, no demo certificates.
fn edge_config(dir: &Path, name: &str, core: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n\
             [link]\ncore = \"{core}\"\ndemo_certs = false\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [pipeline]\nstart_services = false\n\
             [[topics]]\nname = \"NEWS\"\nscope = \"all\"\n",
            dir.join(name).display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn get(url: &str) -> Value {
    let mut answer = ureq::get(url).call().unwrap();
    serde_json::from_reader(answer.body_mut().as_reader()).unwrap()
}

/// HQ with a mission CA whose key it holds (enrollment on), running; returns the process,
/// its link address and its HTTP URL.
fn start_hq(dir: &Path) -> (Process, String, String) {
    let port = tests::fleet::free_port().unwrap();
    let core = format!("127.0.0.1:{port}");
    let hq = dir.join("hq.toml");
    std::fs::write(
        &hq,
        format!(
            "[node]\nname = \"hq\"\ndata_dir = \"{}\"\n\
             [link]\nlisten = \"{core}\"\ndemo_certs = false\nedges = []\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [pipeline]\nstart_services = false\n\
             [[topics]]\nname = \"NEWS\"\nscope = \"all\"\n",
            dir.join("hq").display()
        ),
    )
    .unwrap();
    let hq = hq.display().to_string();
    let (ok, _, err) = run("core-node", &["--config", &hq, "certs", "init"]);
    assert!(ok, "{err}");
    let mut node = Process::start("core-node", Path::new(&hq));
    node.wait_for("enrollment on");
    let http = field(
        &node.wait_for_line(|l| l.contains("HQ serves HTTP"), "HQ serves HTTP"),
        "http=",
    );
    (node, core, format!("http://{http}"))
}

/// A new code from HQ at `url`, made with `core-node enroll create args...`.
fn create_code(url: &str, args: &[&str]) -> String {
    let mut all = vec!["enroll", "create", "--url", url];
    all.extend_from_slice(args);
    let (ok, out, err) = run("core-node", &all);
    assert!(ok, "{err}");
    out.trim().to_owned()
}

#[test]
fn an_edge_enrolls_with_a_code_at_run_time_and_a_bad_code_admits_nothing() {
    let dir = TempDir::new("enroll").unwrap();
    let (mut node, core, url) = start_hq(dir.path());
    let create = |args: &[&str]| create_code(&url, args);
    let code = create(&["--uses", "2"]);
    assert!(code.starts_with("tether1-"), "{code}");

    // alpha enrolls: its key is made here and stays here; HQ admits it at run time.
    let alpha = edge_config(dir.path(), "alpha", &core);
    let (ok, out, err) = run("edge-node", &["--config", &alpha, "enroll", &code]);
    assert!(ok && out.contains("enrolled as alpha"), "{out}{err}");
    let certs = dir.path().join("alpha").join("certs");
    for file in ["alpha.pem", "alpha.key", "ca.pem"] {
        assert!(certs.join(file).exists(), "{file}");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(certs.join("alpha.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the key is the edge's alone");
    node.wait_for("edge enrolled");
    // Again, with the code in the environment: nothing to do (an init step can run it
    // before every start), and no use spent.
    let again = Command::new(binary("edge-node"))
        .args(["--config", &alpha, "enroll"])
        .env("TETHER_ENROLL_CODE", &code)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success() && said.contains("nothing to do"),
        "{said}"
    );

    // ...and replicates.
    let mut edge = Process::start("edge-node", Path::new(&alpha));
    let edge_http = field(
        &edge.wait_for_line(|l| l.contains("serves HTTP"), "serves HTTP"),
        "http=",
    );
    let published = ureq::post(&format!("{url}/api/v1/topics/NEWS/entries"))
        .header("content-type", "application/json")
        .send(json!({ "payload": "welcome" }).to_string())
        .unwrap();
    assert_eq!(published.status().as_u16(), 201);
    let read = get(&format!(
        "http://{edge_http}/api/v1/topics/NEWS/entries?from=0&wait_ms=60000"
    ));
    assert_eq!(read[0]["payload"], "welcome", "{read}");

    // Refused, each with its reason, and nothing admitted or written.
    let refused = |name: &str, code: &str, says: &str| {
        let config = edge_config(dir.path(), name, &core);
        let (ok, out, err) = run("edge-node", &["--config", &config, "enroll", code]);
        assert!(!ok && err.contains(says), "{name}: {out}{err}");
        assert!(
            !dir.path()
                .join(name)
                .join("certs")
                .join(format!("{name}.pem"))
                .exists(),
            "{name} got no certificate"
        );
    };
    // A wrong secret.
    let wrong = format!("{}0{}", &code[..17], &code[18..]);
    let wrong = if wrong == code {
        format!("{}1{}", &code[..17], &code[18..])
    } else {
        wrong
    };
    refused("bravo", &wrong, "no such enrollment code");
    // A name HQ knows already, with a code for any name.
    let (ok, _, err) = run(
        "edge-node",
        &[
            "--config",
            &edge_config(dir.path(), "alpha2", &core),
            "enroll",
            &code,
        ],
    );
    assert!(ok, "{err}");
    let taken = dir.path().join("alpha-again");
    std::fs::create_dir_all(&taken).unwrap();
    let again = edge_config(&taken, "alpha", &core);
    let (ok, _, err) = run("edge-node", &["--config", &again, "enroll", &create(&[])]);
    assert!(
        !ok && err.contains("already knows an edge named alpha"),
        "{err}"
    );
    // Used up: alpha and alpha2 took both uses.
    refused("charlie", &code, "used up");
    // Revoked.
    let revoked = create(&[]);
    let id = &revoked[8..16];
    let (ok, _, err) = run("core-node", &["enroll", "revoke", id, "--url", &url]);
    assert!(ok, "{err}");
    refused("delta", &revoked, "revoked");
    // For another name; and a name only once per code.
    let foxtrot = create(&["--name", "foxtrot", "--uses", "2"]);
    refused("echo", &foxtrot, "is for foxtrot");
    let (ok, _, err) = run(
        "edge-node",
        &[
            "--config",
            &edge_config(dir.path(), "foxtrot", &core),
            "enroll",
            &foxtrot,
        ],
    );
    assert!(ok, "{err}");
    let twice = dir.path().join("foxtrot-again");
    std::fs::create_dir_all(&twice).unwrap();
    let (ok, _, err) = run(
        "edge-node",
        &[
            "--config",
            &edge_config(&twice, "foxtrot", &core),
            "enroll",
            &foxtrot,
        ],
    );
    assert!(!ok && err.contains("enrolled foxtrot already"), "{err}");
    // An edge enrolled but never linked can be revoked: HQ recorded its certificate.
    let (ok, out, err) = run("core-node", &["edges", "revoke", "alpha2", "--url", &url]);
    assert!(ok && out.contains("1 revoked"), "{out}{err}");
    // Another mission's CA: the edge sends nothing to this core.
    let other = format!("{}{}", &code[..code.len() - 64], "ab".repeat(32));
    refused("golf", &other, "mission CA that the enrollment code names");

    // HQ admitted alpha and alpha2 alone; the code shows whom it enrolled.
    let edges = get(&format!("{url}/api/v1/edges"));
    let admitted: Vec<&str> = edges
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["admitted"] == true)
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(admitted, ["alpha", "alpha2", "foxtrot"], "{edges}");
    let (ok, out, err) = run("core-node", &["enroll", "list", "--url", &url]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("code {}", &code[8..16])))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("used, 2 of 2 used") && line.contains("enrolled alpha, alpha2"),
        "{line}"
    );
    drop(edge);
}

/// An edge with no certificate offers its first-run setup page: in a real Chromium the
/// operator names the edge, corrects HQ's address and gives a code. A wrong code is
/// refused with HQ's reason and leaves nothing behind; the right one enrolls the edge,
/// which then serves its own page on the same address, linked to HQ, and after a restart
/// still dials the HQ it enrolled with.
#[test]
fn an_edge_joins_the_fleet_from_its_first_run_page() {
    let Some((chromium, driver)) = tools::chromium("enroll") else {
        return;
    };
    let dir = TempDir::new("enroll-page").unwrap();
    let (hq, core, url) = start_hq(dir.path());
    let code = create_code(&url, &[]);
    // The config names no HQ that answers: the operator gives the right one on the page.
    let config = edge_config(dir.path(), "alpha", "127.0.0.1:9");
    let mut edge = Process::start("edge-node", Path::new(&config));
    let http = field(
        &edge.wait_for_line(|l| l.contains("first-run setup"), "the first-run setup"),
        "http=",
    );
    let page = format!("http://{http}/");
    let ready = ureq::get(&format!("{page}readyz")).call();
    assert!(
        matches!(ready, Err(ureq::Error::StatusCode(503))),
        "not ready before it enrolls: {ready:?}"
    );
    let certs = dir.path().join("alpha").join("certs");
    // What no page should get through: a form's post, a malformed code or name.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |content_type: &str, body: String| {
        let mut answer = agent
            .post(&format!("{page}api/v1/setup"))
            .header("content-type", content_type)
            .send(body)
            .unwrap();
        let text = answer.body_mut().read_to_string().unwrap();
        (answer.status().as_u16(), text)
    };
    let answers = |name: &str, code: &str| {
        json!({ "name": name, "core": core, "core_name": "hq", "code": code }).to_string()
    };
    let (status, text) = post("application/x-www-form-urlencoded", answers("kilo", &code));
    assert_eq!(status, 403, "{text}");
    let (status, text) = post("application/json", answers("kilo", "tether1-nope"));
    assert!(
        status == 400 && text.contains("not an enrollment code"),
        "{status} {text}"
    );
    let (status, text) = post("application/json", answers("../kilo", &code));
    assert!(
        status == 400 && text.contains("this edge's name"),
        "{status} {text}"
    );
    let (status, text) = post("application/json", "{\"name\": 1}".to_owned());
    assert_eq!(status, 400, "{text}");

    let browser = Browser::start(&chromium, &driver).unwrap();
    let b = &browser;
    b.goto(&page).unwrap();
    b.wait_for_script(
        "the setup form, filled from the config",
        STEP,
        "return document.body.dataset.state === 'ready' \
         && document.getElementById('setup-name').value === 'alpha' \
         && document.getElementById('setup-core').value === '127.0.0.1:9' \
         && document.getElementById('setup-core-name').value === 'hq';",
    );
    let fill = |css: &str, text: &str| {
        let input = b.find(css).unwrap();
        b.clear(&input).unwrap();
        b.type_text(&input, text).unwrap();
    };
    fill("#setup-name", "kilo");
    fill("#setup-core", &core);
    // A wrong secret: HQ's reason on the page, and nothing written here.
    let wrong = format!(
        "{}{}{}",
        &code[..17],
        if &code[17..18] == "0" { "1" } else { "0" },
        &code[18..]
    );
    fill("#setup-code", &wrong);
    b.screenshot(&screenshots_dir().join("edge-setup.png"))
        .unwrap();
    b.click_css("#setup-enroll").unwrap();
    b.wait_for_script(
        "HQ's refusal, on the page",
        STEP,
        "const e = document.getElementById('setup-error'); return !e.hidden \
         && e.dataset.code === 'refused' && e.textContent.includes('no such enrollment code') \
         && document.body.dataset.state === 'ready';",
    );
    for file in ["kilo.pem", "kilo.key", "first-run.toml"] {
        assert!(!certs.join(file).exists(), "{file} after a refusal");
    }
    // The right code: enrolled, and the edge's own page follows on the same address.
    fill("#setup-code", &code);
    b.click_css("#setup-enroll").unwrap();
    b.wait_for_script(
        "the edge's own page, linked to HQ",
        STEP,
        "return document.body.dataset.role === 'edge' \
         && document.getElementById('node-name').textContent === 'kilo' \
         && document.querySelector('#links [data-link=\"hq\"][data-state=\"up\"]') !== null;",
    );
    b.screenshot(&screenshots_dir().join("edge-enrolled.png"))
        .unwrap();
    drop(browser);
    for file in ["kilo.pem", "kilo.key", "ca.pem", "first-run.toml"] {
        assert!(certs.join(file).exists(), "{file}");
    }
    let listed = get(&format!("{url}/api/v1/enrollments"));
    assert!(listed.to_string().contains("kilo"), "{listed}");

    // Restarted, it is kilo, dialing the HQ it enrolled with, and asks nothing.
    drop(edge.kill());
    let mut edge = Process::start("edge-node", Path::new(&config));
    let line = edge.wait_for_line(
        |l| l.contains("serves HTTP") || l.contains("first-run setup:"),
        "the edge serves HTTP",
    );
    assert!(line.contains("serves HTTP"), "{line}");
    edge.wait_for_line(
        |l| l.contains("link up") && l.contains("peer=hq"),
        "the link to HQ up again",
    );
    drop((edge, hq));
}
