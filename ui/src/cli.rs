//! The commands that talk to a running node's HTTP API, in the manner of the `nats` CLI:
//! `status`, `services`, `publish`, `tail`, `assets`, `mirror start|stop|status`,
//! `link pause|resume`, `edges list|add|remove|revoke|forget` (HQ). Both binaries parse
//! their command line with `protocol::node::cli` and hand these to [`run`].
//!
//! Which node: `--url http://host:port`, else the `http.listen` of `--config <file>`
//! (and the environment), else the role's default. The token: `--token`, else
//! `TETHER_HTTP__TOKEN`, else the config's `http.token`.
//!
//! IO: HTTP to the node; stdout (results), stderr (errors, progress).

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use protocol::config::Config;
use protocol::node::Role;
use protocol::node::cli::{ApiArgs, ApiCommand, percent as seg};
use serde_json::{Value, json};

/// `println!` that does not panic when stdout is closed (`| head`): the output simply ends.
macro_rules! outln {
    ($($arg:tt)*) => {{
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            stdout_closed();
        }
    }};
}

#[allow(
    clippy::exit,
    reason = "stdout is closed (`| head`): the output ends there"
)]
fn stdout_closed() -> ! {
    std::process::exit(0)
}

/// Runs one command against the running node. Exit codes: 0 done, 1 the node refused or
/// could not be reached, 2 the command cannot be run as given (a usage error found only
/// by asking the node, or a config that names no node).
pub fn run(role: Role, args: ApiArgs) -> ExitCode {
    match run_command(role, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}\n\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed.
#[derive(Debug)]
enum Failure {
    /// Bad arguments (exit code 2).
    Usage(String),
    /// The node refused or could not be reached (exit code 1).
    Failed(String),
}

type Result<T> = std::result::Result<T, Failure>;

/// A node's API.
struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    fn new(role: Role, args: &ApiArgs) -> Result<Api> {
        let config = match (&args.url, &args.config) {
            (Some(_), None) => None,
            _ => Some(
                // The binaries' file, with the mission's sections (read, and left aside).
                Config::load::<mission::Settings>(role, args.config.as_deref())
                    .map_err(|e| Failure::Failed(format!("{e}")))?
                    .0,
            ),
        };
        let base = match (&args.url, &config) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(config)) => {
                let mut addr = config.http.listen;
                if addr.port() == 0 {
                    return Err(Failure::Usage(
                        "the config's http.listen has port 0 (any free port), which names no \
                         node: give --url http://host:port"
                            .to_owned(),
                    ));
                }
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
            (None, None) => default_url(role),
        };
        let token = args
            .token
            .clone()
            .or_else(|| std::env::var("TETHER_HTTP__TOKEN").ok())
            .or_else(|| config.and_then(|c| c.http.token));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .user_agent(concat!("tether-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Api { base, token, agent })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn unreachable(&self, e: &ureq::Error) -> Failure {
        Failure::Failed(format!(
            "cannot reach the node's API at {}: {e} (is the node running? --url or --config \
             names another)",
            self.base
        ))
    }

    /// `GET path`, with the token when there is one (reads need it where one is set).
    fn get_request(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let request = self.agent.get(&self.url(path));
        match &self.token {
            Some(token) => request.header("authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    fn get(&self, path: &str) -> Result<Value> {
        let response = self
            .get_request(path)
            .call()
            .map_err(|e| self.unreachable(&e))?;
        answer(response)
    }

    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = self.url(path);
        let mut request = match method {
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        };
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        // Marks the change as a program's, not a web form's (see ui::access).
        request = request.header(crate::access::REQUESTED_WITH, "tether-cli");
        let response = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .send(body.to_string()),
            None => request.send_empty(),
        }
        .map_err(|e| self.unreachable(&e))?;
        answer(response)
    }
}

fn default_url(role: Role) -> String {
    match role {
        Role::Core => "http://127.0.0.1:8080".to_owned(),
        Role::Edge => "http://127.0.0.1:8081".to_owned(),
    }
}

/// The JSON of a 2xx answer, or the node's error message.
fn answer(mut response: ureq::http::Response<ureq::Body>) -> Result<Value> {
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| Failure::Failed(format!("cannot read the node's answer: {e}")))?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        Ok(value)
    } else {
        let message = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map_or_else(|| value.to_string(), str::to_owned);
        Err(Failure::Failed(format!("{} ({status})", message)))
    }
}

fn run_command(role: Role, args: ApiArgs) -> Result<()> {
    let api = Api::new(role, &args)?;
    let print = |value: &Value, human: &dyn Fn(&Value)| {
        if args.json {
            outln!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            human(value);
        }
    };
    let switch_service = |name: &str, action: &str| {
        let service = api.send("POST", &format!("/services/{}/{action}", seg(name)), None)?;
        print(&service, &|v| {
            print_services(&Value::Array(vec![v.clone()]))
        });
        Ok(())
    };
    let switch_link = |peer: Option<String>, action: &str| {
        let peer = match peer {
            Some(peer) => peer,
            None => {
                let links = api.get("/links")?;
                match links.as_array().map(Vec::as_slice) {
                    Some([one]) => s(&one["peer"]).to_owned(),
                    _ => {
                        return Err(Failure::Usage(format!(
                            "this node has several links or none: name the peer (link {action} <peer>)"
                        )));
                    }
                }
            }
        };
        let link = api.send("POST", &format!("/links/{}/{action}", seg(&peer)), None)?;
        print(&link, &|l| print_links(&Value::Array(vec![l.clone()])));
        Ok(())
    };
    let change_edge = |name: &str, action: &str| {
        let edge = api.send("POST", &format!("/edges/{}/{action}", seg(name)), None)?;
        print(&edge, &|e| print_edges(&Value::Array(vec![e.clone()])));
        Ok(())
    };
    match args.command {
        ApiCommand::Status => {
            let node = api.get("/node")?;
            let links = api.get("/links")?;
            let services = api.get("/services")?;
            let mirror = if node["role"] == "edge" {
                Some(api.get("/mirror")?)
            } else {
                None
            };
            let all = json!({"node": node, "links": links, "services": services, "mirror": mirror});
            print(&all, &|all| {
                let node = &all["node"];
                outln!(
                    "{} ({} {}) at {}",
                    s(&node["name"]),
                    s(&node["role"]),
                    s(&node["version"]),
                    api.base
                );
                print_links(&all["links"]);
                print_services(&all["services"]);
                if !all["mirror"].is_null() {
                    print_mirror(&all["mirror"]);
                }
            });
        }
        ApiCommand::Services => print(&api.get("/services")?, &print_services),
        ApiCommand::Bridge => print(&api.get("/bridge")?, &print_bridge),
        ApiCommand::ServiceStart(name) => switch_service(&name, "start")?,
        ApiCommand::ServiceStop(name) => switch_service(&name, "stop")?,
        ApiCommand::Publish {
            topic,
            text,
            key,
            to,
        } => {
            let mut body = json!({ "payload": text });
            if let Some(key) = key {
                body["key"] = json!(key);
            }
            if let Some(to) = to {
                body["to"] = json!(to);
            }
            let done = api.send(
                "POST",
                &format!("/topics/{}/entries", seg(&topic)),
                Some(body),
            )?;
            print(&done, &|d| {
                outln!(
                    "published {}:{} to {} at offset {}",
                    s(&d["origin"]),
                    d["seq"],
                    s(&d["topic"]),
                    d["offset"]
                );
            });
        }
        ApiCommand::Tail { topic, from } => tail(&api, &topic, from, args.json)?,
        ApiCommand::Assets => print(&api.get("/assets")?, &|assets| {
            for a in assets.as_array().into_iter().flatten() {
                outln!("{}\t{}\t{}", s(&a["id"]), s(&a["state"]), s(&a["title"]));
            }
        }),
        ApiCommand::AssetRequest(id) => {
            let done = api.send("POST", &format!("/assets/{}/request", seg(&id)), None)?;
            print(&done, &|d| {
                outln!("asset {} is {}", s(&d["id"]), s(&d["state"]))
            });
        }
        ApiCommand::MirrorStart { wait } => {
            let m = api.send("POST", "/mirror/start", None)?;
            if wait {
                follow_mirror(&api, Some(&m))?;
            } else {
                print(&m, &print_mirror);
            }
        }
        ApiCommand::MirrorStop => print(&api.send("POST", "/mirror/stop", None)?, &print_mirror),
        ApiCommand::MirrorStatus { follow } => {
            if follow {
                follow_mirror(&api, None)?;
            } else {
                print(&api.get("/mirror")?, &print_mirror);
            }
        }
        ApiCommand::LinkPause(peer) => switch_link(peer, "pause")?,
        ApiCommand::LinkResume(peer) => switch_link(peer, "resume")?,
        ApiCommand::Edges => print(&api.get("/edges")?, &print_edges),
        ApiCommand::EdgeAdd(name) => {
            let edge = api.send("POST", "/edges", Some(json!({ "name": name })))?;
            print(&edge, &|e| print_edges(&Value::Array(vec![e.clone()])));
        }
        ApiCommand::Fleet { query } => {
            let path = if query.is_empty() {
                "/fleet".to_owned()
            } else {
                format!("/fleet?{query}")
            };
            print(&api.get(&path)?, &print_fleet);
        }
        ApiCommand::EnrollCreate { body } => {
            let body: Value = serde_json::from_str(&body).unwrap_or_default();
            let code = api.send("POST", "/enrollments", Some(body))?;
            print(&code, &|c| {
                outln!("{}", s(&c["code"]));
                eprintln!(
                    "code {}: enrolls {} edge(s){} until {}; shown once. On the edge: \
                     edge-node enroll <code> (with link.core set to this core's address)",
                    s(&c["id"]),
                    c["uses"],
                    names_of(c),
                    c["expires_ms"]
                        .as_u64()
                        .map_or_else(|| "-".to_owned(), |ms| when(ms, now_ms())),
                );
            });
        }
        ApiCommand::EnrollList => print(&api.get("/enrollments")?, &print_codes),
        ApiCommand::EnrollRevoke(id) => {
            let code = api.send("POST", &format!("/enrollments/{}/revoke", seg(&id)), None)?;
            print(&code, &|c| print_codes(&Value::Array(vec![c.clone()])));
        }
        ApiCommand::EdgeRemove(name) => change_edge(&name, "remove")?,
        ApiCommand::EdgeRevoke(name) => change_edge(&name, "revoke")?,
        ApiCommand::EdgeForget(name) => {
            let done = api.send("POST", &format!("/edges/{}/forget", seg(&name)), None)?;
            print(&done, &|d| {
                print_edges(&Value::Array(vec![d["edge"].clone()]));
                outln!(
                    "forgotten: {} entries released; if {} returns, what it missed is recorded as a gap",
                    d["released"],
                    s(&d["edge"]["name"])
                );
            });
        }
    }
    Ok(())
}

/// A string field, or `-`.
fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn print_links(links: &Value) {
    for l in links.as_array().into_iter().flatten() {
        let rtt = l["rtt_ms"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"));
        outln!(
            "link {}: {}, rtt {rtt}, backlog {}, sent {} B, received {} B{}",
            s(&l["peer"]),
            s(&l["state"]),
            l["backlog"],
            l["bytes_out"],
            l["bytes_in"],
            if l["paused_by_peer"] == true {
                " (paused by the peer)"
            } else {
                ""
            }
        );
    }
}

fn print_bridge(bridge: &Value) {
    let servers: Vec<&str> = bridge["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    match bridge["connected"] == true {
        true => outln!("NATS {}: connected", servers.join(", ")),
        false => outln!(
            "NATS {}: not connected ({})",
            servers.join(", "),
            bridge["error"].as_str().unwrap_or("connecting")
        ),
    }
    for m in bridge["mappings"].as_array().into_iter().flatten() {
        // `out` and `in` for the bridge, `backbone out` and `backbone in` between cores.
        let direction = m["direction"].as_str().unwrap_or_default();
        let out = direction.ends_with("out");
        let via = if direction.starts_with("backbone") {
            "backbone: "
        } else {
            ""
        };
        let way = match out {
            true => format!(
                "{} -> stream {} ({})",
                s(&m["topic"]),
                s(&m["stream"]),
                s(&m["subjects"])
            ),
            false => format!(
                "stream {} ({}) -> {}",
                s(&m["stream"]),
                s(&m["subjects"]),
                s(&m["topic"])
            ),
        };
        let lag = match out {
            true => format!(", {} waiting (oldest {} ms)", m["lag_entries"], m["lag_ms"]),
            false => format!(", {} refused", m["refused"]),
        };
        outln!(
            "{via}{way}: {}, {} carried{lag}{}",
            s(&m["state"]),
            m["carried"],
            m["last_error"]
                .as_str()
                .map_or_else(String::new, |e| format!("; last error: {e}"))
        );
    }
}

fn print_edges(edges: &Value) {
    for e in edges.as_array().into_iter().flatten() {
        let certificates = e["certificates"].as_array().map_or(&[][..], Vec::as_slice);
        let revoked = certificates
            .iter()
            .filter(|c| !c["revoked_ms"].is_null())
            .count();
        let latest = certificates.last().map_or_else(String::new, |c| {
            format!(", latest serial {}", s(&c["serial"]))
        });
        outln!(
            "edge {}: {} ({}), {}, {} certificate(s), {revoked} revoked{latest}{}",
            s(&e["name"]),
            if e["admitted"] == true {
                "admitted"
            } else {
                "refused"
            },
            s(&e["listing"]),
            if e["connected"] == true {
                "connected"
            } else {
                "not connected"
            },
            certificates.len(),
            if e["forgotten_ms"].is_null() {
                ""
            } else {
                ", forgotten"
            }
        );
    }
}

/// ` for alpha, bravo` when a code is for names.
fn names_of(code: &Value) -> String {
    let names: Vec<&str> = code["names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The enrollment codes, a line each.
fn print_codes(codes: &Value) {
    for c in codes.as_array().into_iter().flatten() {
        let enrolled: Vec<&str> = c["enrolled"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .collect();
        outln!(
            "code {}: {}, {} of {} used{}{}, expires {}",
            s(&c["id"]),
            s(&c["state"]),
            enrolled.len(),
            c["uses"],
            names_of(c),
            if enrolled.is_empty() {
                String::new()
            } else {
                format!(", enrolled {}", enrolled.join(", "))
            },
            c["expires_ms"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), |ms| when(ms, now_ms())),
        );
    }
}

/// The fleet table: one line per edge, columns aligned, then the counts.
fn print_fleet(fleet: &Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let ago = |ms: &Value| {
        ms.as_u64().map_or_else(
            || "-".to_owned(),
            |ms| format!("{} ago", age(Duration::from_millis(now.saturating_sub(ms)))),
        )
    };
    let mut rows = vec![
        [
            "EDGE",
            "STATE",
            "LAST SEEN",
            "RTT",
            "TO EDGE",
            "FROM EDGE",
            "BEHIND",
            "GAPS",
            "CERT EXPIRES",
            "CLOCK",
        ]
        .map(str::to_owned),
    ];
    for e in fleet["edges"].as_array().into_iter().flatten() {
        let backlog = |b: &Value| match (b["entries"].as_u64(), b["bytes"].as_u64()) {
            (Some(entries), Some(bytes)) => format!("{entries} ({bytes} B)"),
            _ => "-".to_owned(),
        };
        let clock = match (e["clock_offset_ms"].as_i64(), e["clock_skewed"].as_bool()) {
            (Some(ms), Some(true)) => format!(
                "{}{} OFF",
                if ms > 0 { "+" } else { "-" },
                age(Duration::from_millis(ms.unsigned_abs()))
            ),
            (Some(_), _) => "ok".to_owned(),
            _ => "-".to_owned(),
        };
        let expiry = e["certificate_expiry_ms"].as_u64().map_or_else(
            || "-".to_owned(),
            |ms| {
                if ms > now {
                    format!("in {}", age(Duration::from_millis(ms - now)))
                } else {
                    "expired".to_owned()
                }
            },
        );
        let behind = e["behind_ms"].as_u64().unwrap_or(0);
        rows.push([
            s(&e["name"]).to_owned(),
            // Linked to another core of HQ: "at <core>".
            match e["core"].as_str() {
                Some(core) => format!("at {core}"),
                None => s(&e["state"]).to_owned(),
            },
            if e["state"] == "up" || e["state"] == "paused" {
                "now".to_owned()
            } else {
                ago(&e["last_seen_ms"])
            },
            e["rtt_ms"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms")),
            backlog(&e["backlog_out"]),
            backlog(&e["backlog_in"]),
            if behind == 0 {
                "-".to_owned()
            } else {
                age(Duration::from_millis(behind))
            },
            e["gaps"].to_string(),
            expiry,
            clock,
        ]);
    }
    let widths: Vec<usize> = (0..10)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        outln!("{}", line.join("  ").trim_end());
    }
    let states: Vec<String> = fleet["states"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["edges"].as_u64().unwrap_or(0) > 0)
        .map(|c| format!("{} {}", c["edges"], s(&c["state"])))
        .collect();
    outln!(
        "{} of {} edges shown ({} matched); {}",
        fleet["edges"].as_array().map_or(0, Vec::len),
        fleet["total"],
        fleet["matched"],
        if states.is_empty() {
            "none known".to_owned()
        } else {
            states.join(", ")
        }
    );
}

fn print_services(services: &Value) {
    for s_ in services.as_array().into_iter().flatten() {
        let error = s_["error"]
            .as_str()
            .map_or_else(String::new, |e| format!(": {e}"));
        outln!(
            "{:<18} {:<8} processed {:>6}  failed {:>4}  restarts {}{error}",
            s(&s_["name"]),
            s(&s_["state"]),
            s_["processed"],
            s_["failed"],
            s_["restarts"]
        );
    }
}

fn bytes(v: &Value) -> String {
    let n = v.as_f64().unwrap_or(0.0);
    match n {
        n if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n:.0} B"),
    }
}

/// The mirror in one line: state, a bar, percent, files, bytes, rate and time left.
fn mirror_line(m: &Value) -> String {
    let width = 30;
    let filled = ((percent(m) / 100.0) * f64::from(width)).round() as usize;
    format!(
        "mirror {:<11} [{}{}] {}",
        s(&m["state"]),
        "#".repeat(filled),
        "-".repeat(width as usize - filled.min(width as usize)),
        mirror_figures(m)
    )
}

/// What follows the mirror's bar: percent, files, bytes, rate and time left.
fn mirror_figures(m: &Value) -> String {
    let eta = m["eta_ms"]
        .as_u64()
        .map_or_else(String::new, |ms| format!(", {}s left", ms / 1000));
    format!(
        "{:5.1} %  files {}/{}  {} / {}  {}/s{eta}",
        percent(m),
        m["files_done"],
        m["files_todo"],
        bytes(&m["bytes_done"]),
        bytes(&m["bytes_todo"]),
        bytes(&m["rate_bytes_per_second"]),
    )
}

fn percent(m: &Value) -> f64 {
    m["percent"].as_f64().unwrap_or(0.0).clamp(0.0, 100.0)
}

fn print_mirror(m: &Value) {
    outln!("{}", mirror_line(m));
    if let Some(ms) = m["last_success_ms"].as_u64() {
        outln!(
            "last successful mirror: {} (version {})",
            when(ms, crate::views::millis(std::time::SystemTime::now())),
            m["last_success_version"]
        );
    }
    if let Some(e) = m["last_error"].as_str() {
        outln!("last error: {e}");
    }
    outln!("on the link: {}", bytes(&m["bytes_on_link"]));
}

/// The mirror's progress on stderr while it is followed. On a terminal, one bar redrawn
/// in place (indicatif: cut to the terminal's width, at most 20 draws a second);
/// otherwise (a pipe, a log file, the tests) a line per sample, as `mirror status`
/// prints it, because indicatif draws nothing where stderr is not a terminal.
enum Progress {
    Bar(ProgressBar),
    Lines,
}

/// The bar's layout: as [`mirror_line`], with the figures cut to fit.
const BAR_TEMPLATE: &str = "mirror {prefix:<11} [{bar:30}] {wide_msg}";

impl Progress {
    fn on_stderr() -> Progress {
        let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
        if bar.is_hidden() {
            return Progress::Lines;
        }
        let style = ProgressStyle::with_template(BAR_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#>-");
        bar.set_style(style);
        Progress::Bar(bar)
    }

    fn show(&self, m: &Value) {
        match self {
            Progress::Bar(bar) => {
                // Each call may draw; the bar's position last, so the last draw is whole.
                bar.set_prefix(s(&m["state"]).to_owned());
                bar.set_message(mirror_figures(m));
                bar.set_position((percent(m) * 10.0).round() as u64);
            }
            Progress::Lines => eprintln!("{}", mirror_line(m)),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Leaves the last state drawn, as it was (`finish` would show 100 %).
        if let Progress::Bar(bar) = self {
            bar.abandon();
        }
    }
}

/// Follows the mirror through the live events: until the mirror started after `start`
/// (the answer to the start) ends, or forever.
fn follow_mirror(api: &Api, start: Option<&Value>) -> Result<()> {
    let mut response = api
        .get_request("/events?tiles=0&logs=false")
        .header("accept", "text/event-stream")
        .call()
        .map_err(|e| api.unreachable(&e))?;
    if !response.status().is_success() {
        return answer(response).map(|_| ());
    }
    let progress = Progress::on_stderr();
    let mut event = String::new();
    let reader = BufReader::new(response.body_mut().as_reader());
    let mut seen_running = false;
    for line in reader.lines() {
        let line = line.map_err(|e| Failure::Failed(format!("the event stream broke: {e}")))?;
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ")
            && event == "mirror"
        {
            let m: Value = serde_json::from_str(data).unwrap_or_default();
            progress.show(&m);
            let state = s(&m["state"]);
            seen_running |= matches!(state, "planning" | "running") || m["started"] == true;
            let Some(start) = start else { continue };
            // A mirror that ran between two samples shows only by its start time.
            let ran = seen_running || m["started_ms"] != start["started_ms"];
            if ran && m["started"] == false {
                drop(progress);
                return match state {
                    "done" => Ok(()),
                    _ => Err(Failure::Failed(format!(
                        "the mirror ended {state}: {}",
                        s(&m["last_error"])
                    ))),
                };
            }
        }
    }
    Err(Failure::Failed(
        "the node closed the event stream".to_owned(),
    ))
}

/// Prints a topic's entries from `from` (default: the end) and follows it.
fn tail(api: &Api, topic: &str, from: Option<u64>, json_out: bool) -> Result<()> {
    let info = api.get(&format!("/topics/{}", seg(topic)))?;
    let mut next = from.unwrap_or_else(|| info["next"].as_u64().unwrap_or(0));
    loop {
        let entries = api.get(&format!(
            "/topics/{}/entries?from={next}&limit=1000&wait_ms=30000",
            seg(topic)
        ))?;
        for e in entries.as_array().into_iter().flatten() {
            next = e["offset"].as_u64().map_or(next, |o| o + 1);
            if json_out {
                outln!("{e}");
            } else {
                let payload = e["payload"].as_str().map_or_else(
                    || format!("base64:{}", s(&e["payload_base64"])),
                    str::to_owned,
                );
                outln!(
                    "[{}] {}:{} {payload}",
                    e["offset"],
                    s(&e["origin"]),
                    e["seq"]
                );
            }
        }
        let _ = std::io::stdout().flush();
    }
}

/// A moment as people read it: UTC date and time, and how long ago (`now` is the time in
/// milliseconds since the Unix epoch).
fn when(ms: u64, now: u64) -> String {
    let (secs, days) = (ms / 1000, ms / 86_400_000);
    let (year, month, day) = protocol::calendar::civil_from_days(days);
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let relative = if ms > now {
        format!("in {}", age(Duration::from_millis(ms - now)))
    } else {
        format!("{} ago", age(Duration::from_millis(now - ms)))
    };
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} UTC, {relative}")
}

/// A length of time as people say it: `5 s`, `3 min`, `2 h 5 min`, `4 days`.
fn age(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs / 60 % 60),
        _ => format!("{} days", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_in_one_line() {
        let m = json!({
            "state": "running", "percent": 50.0, "files_done": 1, "files_todo": 3,
            "bytes_done": 1_500_000, "bytes_todo": 3_000_000, "rate_bytes_per_second": 250_000,
            "eta_ms": 6_000,
        });
        assert_eq!(
            mirror_line(&m),
            "mirror running     [###############---------------]  50.0 %  files 1/3  \
             1.5 MB / 3.0 MB  250.0 kB/s, 6s left"
        );
        // The terminal's bar shows the same figures after indicatif's bar.
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    #[test]
    fn moments_read_as_people_read_them() {
        // 2026-12-06 19:10:22 UTC, and 2000-02-29 (a leap day) at midnight.
        let ms = 1_796_584_222_000;
        assert_eq!(when(ms, ms + 5_000), "2026-12-06 19:10:22 UTC, 5 s ago");
        assert_eq!(
            when(951_782_400_000, 951_782_400_000 + 3 * 86_400_000),
            "2000-02-29 00:00:00 UTC, 3 days ago"
        );
        assert_eq!(
            when(ms, ms + 3_720_000),
            "2026-12-06 19:10:22 UTC, 1 h 2 min ago"
        );
    }
}
