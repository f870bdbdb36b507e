//! Joining the fleet with a code, through the real binaries: HQ's `core-node` makes codes
//! (`enroll create`), an `edge-node enroll <code>` gets its certificate over QUIC and then
//! replicates; bad codes are refused with their reason and admit nothing.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use tests::TempDir;

use crate::support::process::{Node as Process, binary, field};

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

#[test]
fn an_edge_enrolls_with_a_code_at_run_time_and_a_bad_code_admits_nothing() {
    let dir = TempDir::new("enroll").unwrap();
    let port = tests::fleet::free_port().unwrap();
    let core = format!("127.0.0.1:{port}");
    let hq = dir.path().join("hq.toml");
    std::fs::write(
        &hq,
        format!(
            "[node]\nname = \"hq\"\ndata_dir = \"{}\"\n\
             [link]\nlisten = \"{core}\"\ndemo_certs = false\nedges = []\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [pipeline]\nstart_services = false\n\
             [[topics]]\nname = \"NEWS\"\nscope = \"all\"\n",
            dir.path().join("hq").display()
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
    let url = format!("http://{http}");
    let create = |args: &[&str]| {
        let mut all = vec!["enroll", "create", "--url", &url];
        all.extend_from_slice(args);
        let (ok, out, err) = run("core-node", &all);
        assert!(ok, "{err}");
        out.trim().to_owned()
    };
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
