//! The command line of both binaries, `core-node` and `edge-node`: one clap definition
//! ([`command`], clap's builder), which takes the role and holds only that binary's
//! commands.
//!
//! - [`parse`] turns the arguments into an [`Invocation`]: a command for the running node's
//!   HTTP API ([`ApiArgs`], which `ui::cli` runs) or one for the node itself ([`NodeArgs`]:
//!   run it, print its config, `certs`, `append` / `read` / `request` on its stopped store,
//!   `edge-node mirror`; [`super::main_for`] runs those). `--help`, `--version` and
//!   `completions <shell>` are answered here; a usage error is printed here (exit code 2).
//! - Role-specific commands are in their binary only (help, parsing, completions): HQ's
//!   `certs` and `edges`, the edge's `mirror`, `request` and `assets request`. The other
//!   binary's usage error says where they run.
//! - clap's matches stay in this file: the node and `ui::cli` get plain enums
//!   ([`NodeCommand`], [`ApiCommand`]), so only this file knows how the words nest.
//!
//! Why the builder and not the derive: the role decides which commands exist, which
//! derive types cannot say without a set of enums per role, and the derive's proc macro
//! costs more to compile (ARCHITECTURE.md, "Command line").
//!
//! IO: stdout (help, version, completions) and stderr (usage errors) in [`parse`].

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use clap_complete::Shell;

use super::Role;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// A command for the running node, through its HTTP API (`ui::cli` runs it).
    Api(ApiArgs),
    /// Run the node, or a command on its config, certificates or stopped store.
    Node(NodeArgs),
}

/// A command for the node itself, with the config it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeArgs {
    /// `--config`: the node's TOML file (without it: the role's defaults and the
    /// environment).
    pub config: Option<PathBuf>,
    /// What to do.
    pub command: NodeCommand,
}

/// What [`super::main_for`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    /// Run the node until SIGTERM or Ctrl-C.
    Run,
    /// `--print-config`: print the default config, or with `--config` the config as loaded.
    PrintConfig,
    /// `append`, `read` or `request` on the stopped node's store.
    Entries(EntriesCommand),
    /// `certs ...` (HQ).
    Certs(CertsCommand),
    /// `mirror` alone (edge): run the edge until the mirror it starts has ended.
    Mirror,
    /// `enroll [<code>]` (edge): join the fleet: make a key, get a certificate from HQ (at
    /// the config's `link.core`), write both into `link.certs_dir`.
    Enroll {
        /// The code HQ's operator gave; `None`: from `TETHER_ENROLL_CODE`.
        code: Option<String>,
    },
}

/// `append`, `read` and `request`: the node's store, opened while the node is stopped
/// (it is locked while the node runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntriesCommand {
    /// `append <topic> <text>`: append one entry with this text as payload; it crosses the
    /// link when the node runs.
    Append {
        /// The topic.
        topic: String,
        /// The entry's payload.
        text: String,
    },
    /// `read <topic>`: print a topic's entries.
    Read {
        /// The topic.
        topic: String,
    },
    /// `request <asset-id>` (edge): mark an asset as wanted; the request crosses when the
    /// node runs.
    Request {
        /// The asset's id.
        asset: String,
    },
}

/// `core-node certs ...`: the mission CA lives with the core. `dir` is where the CA is
/// (default: the config's `link.certs_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertsCommand {
    /// `certs init`: create the mission CA and the core's certificate in `dir`.
    Init {
        /// `--dir`.
        dir: Option<PathBuf>,
    },
    /// `certs issue <edge>`: issue an edge's certificate with the CA in `dir`, into `out`
    /// (default: `dir`).
    Issue {
        /// The edge's name.
        edge: String,
        /// `--dir`.
        dir: Option<PathBuf>,
        /// `--out`.
        out: Option<PathBuf>,
    },
    /// `certs renew`: issue this core a new certificate and key with the CA in `dir`, into
    /// `out` (default `dir/renewed`), to move into place by hand.
    Renew {
        /// `--dir`.
        dir: Option<PathBuf>,
        /// `--out`.
        out: Option<PathBuf>,
    },
}

/// A command for the running node's HTTP API, with how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiArgs {
    /// `--config`: the node's TOML file, for its `http.listen` and `http.token`.
    pub config: Option<PathBuf>,
    /// `--url`: the node's address, `http://host:port`.
    pub url: Option<String>,
    /// `--token`: the API token.
    pub token: Option<String>,
    /// `--json`: print the API's JSON rather than lines for people.
    pub json: bool,
    /// What to ask.
    pub command: ApiCommand,
}

/// What `ui::cli` asks the running node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCommand {
    /// `status`: the node, its links, services and (edge) mirror.
    Status,
    /// `services [list]`.
    Services,
    /// `bridge`: the bridge to NATS JetStream.
    Bridge,
    /// `services start <name>`.
    ServiceStart(String),
    /// `services stop <name>`.
    ServiceStop(String),
    /// `publish <topic> <text> [--key <key>] [--to <node>]`.
    Publish {
        /// The topic.
        topic: String,
        /// The payload.
        text: String,
        /// The entry's key.
        key: Option<String>,
        /// The one node it is for.
        to: Option<String>,
    },
    /// `tail <topic> [--from <offset>]`: follow a topic (default: from its end).
    Tail {
        /// The topic.
        topic: String,
        /// The first offset to print.
        from: Option<u64>,
    },
    /// `assets [list]`.
    Assets,
    /// `assets request <id>` (edge).
    AssetRequest(String),
    /// `mirror start [--wait]` (edge).
    MirrorStart {
        /// Follow the mirror until it ends.
        wait: bool,
    },
    /// `mirror stop` (edge).
    MirrorStop,
    /// `mirror status [--follow]` (edge).
    MirrorStatus {
        /// Follow the mirror until interrupted.
        follow: bool,
    },
    /// `link pause [<peer>]` (default: the only link).
    LinkPause(Option<String>),
    /// `link resume [<peer>]`.
    LinkResume(Option<String>),
    /// `edges [list]` (HQ).
    Edges,
    /// `edges add <name>` (HQ).
    EdgeAdd(String),
    /// `edges remove <name>` (HQ).
    EdgeRemove(String),
    /// `edges revoke <name>` (HQ).
    EdgeRevoke(String),
    /// `edges forget <name>` (HQ).
    EdgeForget(String),
    /// `enroll create [--uses N] [--expires 1d] [--name NAME]...` (HQ): a new code.
    EnrollCreate {
        /// The request body, JSON.
        body: String,
    },
    /// `enroll list` (HQ).
    EnrollList,
    /// `enroll revoke <id>` (HQ).
    EnrollRevoke(String),
    /// `fleet [--state S] [--name TEXT] [--behind 1h] [--sort COLUMN] [--asc|--desc]
    /// [--limit N]` (HQ): the fleet table.
    Fleet {
        /// The API's query string (`state=down&behind_s=3600`...), checked by the node.
        query: String,
    },
}

/// Reads the command line (`args` includes the program's name, as
/// [`std::env::args_os`] gives it). `Err` when it is answered or refused already: help,
/// version or completions printed (0), or a usage error printed (2).
pub fn parse(role: Role, args: impl IntoIterator<Item = OsString>) -> Result<Invocation, ExitCode> {
    let printed = |e: clap::Error| {
        // Printing fails only on a closed stream; the exit code says what happened.
        let _ = e.print();
        ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
    };
    match try_parse(role, args).map_err(printed)? {
        Parsed::Invocation(invocation) => Ok(invocation),
        Parsed::Completions(shell) => {
            // Written whole, not through clap_complete's writer, which panics on a closed
            // stdout (`| head`).
            let _ = std::io::stdout().write_all(completion_script(role, shell).as_bytes());
            Err(ExitCode::SUCCESS)
        }
    }
}

/// The completion script of `role`'s binary for `shell`.
fn completion_script(role: Role, shell: Shell) -> String {
    let bin = role.binary();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(role), bin, &mut script);
    let script = String::from_utf8_lossy(&script).into_owned();
    if shell != Shell::Bash {
        return script;
    }
    // clap_complete's bash script names a hyphenated binary's states one way where it
    // walks the words (`edge__node__subcmd__mirror`) and another in the cases that
    // complete them (`edge__subcmd__node__subcmd__mirror`), so nothing past the first
    // word completes (clap-rs/clap#6421, open in clap_complete 4.6.12). Our command
    // names have no hyphens, so only the binary's name needs mending.
    script.replace(&bin.replace('-', "__subcmd__"), &bin.replace('-', "__"))
}

/// The definition of `role`'s binary, in the order its help lists the commands.
pub fn command(role: Role) -> Command {
    let (core, edge) = (role == Role::Core, role == Role::Edge);
    let about = match role {
        Role::Core => "The Tether HQ node",
        Role::Edge => "A Tether field node",
    };
    let commands = [
        Some(status(role)),
        Some(services()),
        Some(publish()),
        Some(tail()),
        Some(assets(role)),
        Some(link()),
        Some(bridge()),
        core.then(edges),
        core.then(fleet),
        Some(enroll(role)),
        edge.then(mirror),
        Some(append()),
        Some(read()),
        edge.then(request),
        core.then(certs),
        Some(completions()),
    ];
    Command::new(role.binary())
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .long_about(format!(
            "{about}. Without a command, it runs until SIGTERM or Ctrl-C (a second one \
             exits at once)."
        ))
        .subcommand_value_name("COMMAND")
        .after_help(AFTER_HELP)
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .global(true)
                .value_name("PATH")
                .value_parser(value_parser!(PathBuf))
                .help("Read the config from this TOML file (without it: the defaults)"),
        )
        .arg(flag(
            "print-config",
            "Print the default config, or with --config the config as loaded",
        ))
        .subcommands(commands.into_iter().flatten())
}

const AFTER_HELP: &str = "\
Commands for the running node talk to its HTTP API: at --url, else the http.listen of
--config, else the role's default address; with --token, else TETHER_HTTP__TOKEN, else
the config's http.token. append, read and request open the store of the stopped node
(it is locked while the node runs).

Environment:
  TETHER_<SECTION>__<KEY>  override one config key, e.g. TETHER_NODE__NAME=bravo
  RUST_LOG                 log filter; overrides the config's [log] filter";

fn status(role: Role) -> Command {
    api("status").about(match role {
        Role::Core => "Show the running node: its links and services",
        Role::Edge => "Show the running node: its links, services and mirror",
    })
}

fn services() -> Command {
    let switch = |name, about| {
        Command::new(name)
            .about(about)
            .arg(word("name", "The service"))
    };
    api("services")
        .about("List the running node's services with state and counters, or switch one")
        .subcommands([
            Command::new("list").about("The services with state and counters (the default)"),
            switch("start", "Start a service (remembered across restarts)"),
            switch("stop", "Stop a service (remembered across restarts)"),
        ])
}

fn publish() -> Command {
    api("publish")
        .about("Append an entry through the running node")
        .args([word("topic", "The topic"), word("text", "The payload")])
        .arg(option("key", "KEY", "The entry's key"))
        .arg(option("to", "NODE", "The one node the entry is for"))
}

fn tail() -> Command {
    let from = option(
        "from",
        "OFFSET",
        "Start at this offset (default: the topic's end)",
    );
    api("tail")
        .about("Print a topic's entries as they come (Ctrl-C stops)")
        .arg(word("topic", "The topic"))
        .arg(from.value_parser(value_parser!(u64)))
}

/// `assets`; an edge also has `assets request`.
fn assets(role: Role) -> Command {
    let list = Command::new("list").about("The assets table: id, state, title (the default)");
    let assets = api("assets").subcommand(list);
    match role {
        Role::Core => assets.about("List the running node's assets table"),
        Role::Edge => assets
            .about("List the running node's assets table, or request an asset")
            .subcommand(
                Command::new("request")
                    .about("Ask HQ for a broadcast asset")
                    .arg(word("id", "The asset's id")),
            ),
    }
}

/// `bridge`: the bridge to NATS JetStream.
fn bridge() -> Command {
    api("bridge").about(
        "The bridge to NATS JetStream: connected or not, and each topic's way in or out (lag, \
         carried, refused, last error)",
    )
}

fn link() -> Command {
    let peer = || Arg::new("peer").help("The peer (default: the only one)");
    api("link")
        .about("Pause or resume a link of the running node")
        .subcommand_required(true)
        .subcommands([
            Command::new("pause")
                .about("Pause a link: nothing crosses it until it is resumed")
                .arg(peer()),
            Command::new("resume")
                .about("Resume a paused link")
                .arg(peer()),
        ])
}

/// HQ's `edges`.
fn edges() -> Command {
    let change = |name, about| {
        let edge = word("name", "The edge's node name");
        Command::new(name).about(about).arg(edge)
    };
    api("edges")
        .about("List the edges HQ admits, connected or not, with their certificates; change one")
        .subcommands([
            Command::new("list")
                .about("The edges: admitted or not, connected, certificates (the default)"),
            change("add", "Admit an edge"),
            change("remove", "Remove an edge from the list and close its link"),
            change(
                "revoke",
                "Revoke every certificate the edge presented, and close its link",
            ),
            change(
                "forget",
                "Remove an edge and release what HQ kept for it; if it returns, what it \
                 missed is recorded as a gap",
            ),
        ])
}

/// The edge's `mirror`: alone, a command for the node; with a word, for its API.
fn mirror() -> Command {
    let wait = flag(
        "wait",
        "Follow the mirror's progress on stderr until it ends (exit code 1 if it failed)",
    );
    let follow = flag("follow", "Follow its progress on stderr (Ctrl-C stops)").short('f');
    Command::new("mirror")
        .about(
            "Mirror HQ's mission volume: alone, run the node until a mirror it starts is \
             done; start, stop and status drive the running node's mirror",
        )
        .long_about(
            "Mirror HQ's mission volume into mirror.dir (readers use <mirror.dir>/current).\n\n\
             Alone, `mirror` runs the node (not its services), starts a mirror at once, \
             prints its progress on stderr, and exits when it is done (0) or failed (1, the \
             previous version is kept). Ctrl-C stops it cleanly (1); the mirror resumes the \
             next time the node runs, with or without `mirror`.",
        )
        .subcommands([
            api("start")
                .about("Press Mirror on the running node")
                .arg(wait),
            api("stop").about("Stop the running node's mirror"),
            api("status")
                .about("The running node's mirror: state, progress, last success")
                .arg(follow),
        ])
}

fn append() -> Command {
    Command::new("append")
        .about("Append an entry to the stopped node's store; it crosses the link when it runs")
        .args([word("topic", "The topic"), word("text", "The payload")])
}

fn read() -> Command {
    Command::new("read")
        .about(
            "Print a topic's entries from the stopped node's store: offset, origin:sequence, \
             time, payload",
        )
        .arg(word("topic", "The topic"))
}

/// The edge's `request`.
fn request() -> Command {
    Command::new("request")
        .about(
            "Mark a broadcast asset as wanted in the stopped node's store: the node asks HQ \
             for it when it runs, and a mirror brings it",
        )
        .arg(word("asset-id", "The asset's id"))
}

/// `enroll`: at HQ, the codes (through its API); at an edge, joining with one.
fn enroll(role: Role) -> Command {
    match role {
        Role::Core => api("enroll")
            .about("Make, list and revoke the codes edges join the fleet with")
            .subcommand_required(true)
            .subcommands([
                Command::new("create")
                    .about("A new code; printed once (HQ keeps only its hash)")
                    .args([
                        option("uses", "N", "How many edges it may enroll (default 1)")
                            .value_parser(value_parser!(u32)),
                        option(
                            "expires",
                            "DURATION",
                            "How long it is valid (default 1d, at most 30d)",
                        )
                        .value_parser(|text: &str| {
                            crate::config::positive_duration(&crate::config::Scalar::Text(
                                text.to_owned(),
                            ))
                        }),
                        option(
                            "name",
                            "NAME",
                            "Only for this edge name (repeat for several); without: any name HQ \
                             does not know yet",
                        )
                        .action(ArgAction::Append),
                    ]),
                Command::new("list").about("The codes: state, uses, the edges they enrolled"),
                Command::new("revoke")
                    .about("Revoke a code: it enrolls no one from now on")
                    .arg(word("id", "The code's id (its first 8 hex digits)")),
            ]),
        Role::Edge => {
            Command::new("enroll")
                .about(
                    "Join the fleet with a code from HQ: make this edge's key (it never leaves \
                 it) and get its certificate from HQ at link.core",
                )
                .long_about(
                    "Join the fleet with a code from HQ: make this edge's key (it never leaves \
                 it) and get its certificate from HQ at link.core. The code comes from the \
                 argument or, better (it stays out of shell history and ps), from \
                 TETHER_ENROLL_CODE. An edge that holds a certificate already has nothing \
                 to do and exits 0, so this can run before every start.",
                )
                .arg(Arg::new("code").help(
                    "The code HQ's operator gave (tether1-...); default: $TETHER_ENROLL_CODE",
                ))
        }
    }
}

/// HQ's `fleet`: the fleet table, its filters and sort as the API's (`GET /fleet`).
fn fleet() -> Command {
    let behind = option(
        "behind",
        "DURATION",
        "Only edges behind by at least this long (\"30s\", \"1h\", \"2d\")",
    )
    .value_parser(|text: &str| {
        crate::config::positive_duration(&crate::config::Scalar::Text(text.to_owned()))
    });
    api("fleet")
        .about(
            "Every edge in one table: state, last seen, round trip, backlog, behind, gaps, expiry",
        )
        .args([
            option(
                "state",
                "STATE",
                "Only edges in this state: up, paused, down, never, released, revoked, removed",
            ),
            option("name", "TEXT", "Only edges whose name contains this"),
            behind,
            option(
                "sort",
                "COLUMN",
                "Sort by name (default), state, since, last_seen, rtt, backlog, behind, gaps or \
                 expiry",
            ),
            flag(
                "asc",
                "Smallest first (the default for name, state, last_seen, expiry)",
            ),
            flag("desc", "Biggest first (the default for the others)").conflicts_with("asc"),
            option("limit", "N", "At most this many rows (default 1000)")
                .value_parser(value_parser!(u64)),
        ])
}

/// HQ's `certs`.
fn certs() -> Command {
    let dir = || {
        option(
            "dir",
            "DIR",
            "Where the CA is (default: the config's link.certs_dir)",
        )
    };
    let out = |default| option("out", "DIR", default);
    Command::new("certs")
        .about("Create the mission CA and issue certificates (the CA lives with the core)")
        .long_about(
            "Create the mission CA and issue certificates (the CA lives with the core). With \
             link.demo_certs (the default), a node creates what is missing at start.",
        )
        .subcommand_required(true)
        .subcommands([
            Command::new("init")
                .about(
                    "Create the mission CA (ca.pem, ca.key) and this core's certificate \
                     (<name>.pem, <name>.key); refuses to replace a CA",
                )
                .arg(dir().help("Where to create the CA (default: the config's link.certs_dir)")),
            Command::new("issue")
                .about("Issue an edge's certificate and key, with ca.pem, for its link.certs_dir")
                .long_about(
                    "Issue an edge's certificate and key, written with ca.pem, for its \
                     link.certs_dir. Also to replace a revoked or expiring one: into a new \
                     --out, then copy over the old files.",
                )
                .arg(word("edge", "The edge's node name"))
                .arg(dir())
                .arg(out(
                    "Where to write the files (default: the CA's directory)",
                )),
            Command::new("renew")
                .about(
                    "Issue this core a new certificate and key, to move into link.certs_dir \
                     (no restart needed)",
                )
                .arg(dir())
                .arg(out("Where to write the files (default: <DIR>/renewed)")),
        ])
}

fn completions() -> Command {
    let shell = word("shell", "The shell").value_parser(value_parser!(Shell));
    Command::new("completions")
        .about("Print shell completions for this binary")
        .arg(shell)
}

/// A command for the running node's API, with the options saying how to reach it (after
/// any word of the command).
fn api(name: &'static str) -> Command {
    Command::new(name)
        .next_help_heading("API options")
        .arg(
            option(
                "url",
                "http://HOST:PORT",
                "The node's HTTP address (default: --config's \
                 http.listen, else the role's default)",
            )
            .global(true),
        )
        .arg(
            option(
                "token",
                "TOKEN",
                "The API token (default: TETHER_HTTP__TOKEN, else the \
                 config's http.token)",
            )
            .global(true),
        )
        .arg(flag("json", "Print the API's JSON").global(true))
}

/// `text` percent-encoded for a URL's path segment or query value (all but unreserved
/// characters).
pub fn percent(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A required positional argument.
fn word(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name).required(true).help(help)
}

/// `--name <VALUE>`.
fn option(name: &'static str, value: &'static str, help: &'static str) -> Arg {
    Arg::new(name).long(name).value_name(value).help(help)
}

/// `--name`, on or off.
fn flag(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .action(ArgAction::SetTrue)
        .help(help)
}

/// What a successful parse asks for.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Invocation(Invocation),
    Completions(Shell),
}

fn try_parse(role: Role, args: impl IntoIterator<Item = OsString>) -> Result<Parsed, clap::Error> {
    let mut command = command(role);
    let matches = match command.try_get_matches_from_mut(args) {
        Ok(matches) => matches,
        Err(e) => {
            let elsewhere = runs_elsewhere(role, &e);
            return Err(elsewhere.map_or(e, |why| command.error(ErrorKind::InvalidSubcommand, why)));
        }
    };
    let config = matches.get_one::<PathBuf>("config").cloned();
    let print_config = matches.get_flag("print-config");
    let node = |config, command| Parsed::Invocation(Invocation::Node(NodeArgs { config, command }));
    match matches.subcommand() {
        None if print_config => Ok(node(config, NodeCommand::PrintConfig)),
        None => Ok(node(config, NodeCommand::Run)),
        Some(_) if print_config => Err(command.error(
            ErrorKind::ArgumentConflict,
            "--print-config goes without a command",
        )),
        // A command in the definition that `invocation` does not read is a bug, which the
        // unit tests catch; still a refusal rather than a panic.
        Some((name, sub)) => invocation(name, sub, config).ok_or_else(|| {
            command.error(
                ErrorKind::InvalidSubcommand,
                format!("`{name}` is not implemented"),
            )
        }),
    }
}

/// Where a command of the other binary runs, if `e` is about one.
fn runs_elsewhere(role: Role, e: &clap::Error) -> Option<&'static str> {
    let Some(ContextValue::String(word)) = e.get(ContextKind::InvalidSubcommand) else {
        return None;
    };
    match (role, word.as_str()) {
        (Role::Core, "mirror") => Some(
            "`mirror` runs on an edge, which mirrors the core's volume: run `edge-node \
             mirror` there",
        ),
        (Role::Core, "request") => {
            Some("`request` runs at an edge: HQ answers requests, it does not make them")
        }
        (Role::Edge, "certs") => Some(
            "`certs` runs on the core, which holds the mission CA: run `core-node certs issue \
             <this edge's name>` there, and copy the files it writes into this edge's \
             link.certs_dir",
        ),
        (Role::Edge, "edges") => Some(
            "`edges` runs on the core, which keeps the list of edges: run `core-node edges` there",
        ),
        (Role::Edge, "fleet") => Some(
            "`fleet` runs on the core, which sees every edge: run `core-node fleet` there; \
             `status` shows this edge's link",
        ),
        _ => None,
    }
}

/// Reads the subcommand `name` from its matches. clap has checked them against
/// [`command`]: required words are there, and only this role's commands parse.
fn invocation(name: &str, m: &ArgMatches, config: Option<PathBuf>) -> Option<Parsed> {
    let text = |m: &ArgMatches, id| m.get_one::<String>(id).cloned().unwrap_or_default();
    let dir = |m: &ArgMatches, id| m.get_one::<String>(id).map(PathBuf::from);
    let name_of = |m| text(m, "name");
    let node = |command| {
        Parsed::Invocation(Invocation::Node(NodeArgs {
            config: config.clone(),
            command,
        }))
    };
    // The API options are on the command, or for `mirror`'s words on the word.
    let api_at = |options: &ArgMatches, command| {
        Parsed::Invocation(Invocation::Api(ApiArgs {
            config: config.clone(),
            url: options.get_one::<String>("url").cloned(),
            token: options.get_one::<String>("token").cloned(),
            json: options.get_flag("json"),
            command,
        }))
    };
    let api = |command| api_at(m, command);
    let sub = m.subcommand();
    Some(match (name, sub) {
        ("status", _) => api(ApiCommand::Status),
        ("services", Some(("start", s))) => api(ApiCommand::ServiceStart(name_of(s))),
        ("services", Some(("stop", s))) => api(ApiCommand::ServiceStop(name_of(s))),
        ("services", _) => api(ApiCommand::Services),
        ("publish", _) => api(ApiCommand::Publish {
            topic: text(m, "topic"),
            text: text(m, "text"),
            key: m.get_one::<String>("key").cloned(),
            to: m.get_one::<String>("to").cloned(),
        }),
        ("tail", _) => api(ApiCommand::Tail {
            topic: text(m, "topic"),
            from: m.get_one::<u64>("from").copied(),
        }),
        ("assets", Some(("request", s))) => api(ApiCommand::AssetRequest(text(s, "id"))),
        ("assets", _) => api(ApiCommand::Assets),
        ("bridge", _) => api(ApiCommand::Bridge),
        ("link", Some(("pause", s))) => {
            api(ApiCommand::LinkPause(s.get_one::<String>("peer").cloned()))
        }
        ("link", Some(("resume", s))) => {
            api(ApiCommand::LinkResume(s.get_one::<String>("peer").cloned()))
        }
        ("edges", Some(("add", s))) => api(ApiCommand::EdgeAdd(name_of(s))),
        ("edges", Some(("remove", s))) => api(ApiCommand::EdgeRemove(name_of(s))),
        ("edges", Some(("revoke", s))) => api(ApiCommand::EdgeRevoke(name_of(s))),
        ("edges", Some(("forget", s))) => api(ApiCommand::EdgeForget(name_of(s))),
        ("edges", _) => api(ApiCommand::Edges),
        ("enroll", Some(("create", s))) => {
            let mut body = serde_json::Map::new();
            if let Some(uses) = s.get_one::<u32>("uses") {
                body.insert("uses".into(), (*uses).into());
            }
            if let Some(expires) = s.get_one::<std::time::Duration>("expires") {
                body.insert("expires_in_s".into(), expires.as_secs().into());
            }
            if let Some(names) = s.get_many::<String>("name") {
                body.insert("names".into(), names.cloned().collect::<Vec<_>>().into());
            }
            api_at(
                s,
                ApiCommand::EnrollCreate {
                    body: serde_json::Value::Object(body).to_string(),
                },
            )
        }
        ("enroll", Some(("list", s))) => api_at(s, ApiCommand::EnrollList),
        ("enroll", Some(("revoke", s))) => api_at(s, ApiCommand::EnrollRevoke(text(s, "id"))),
        ("enroll", _) if m.try_contains_id("code").is_ok() => node(NodeCommand::Enroll {
            code: m.get_one::<String>("code").cloned(),
        }),
        ("fleet", _) => {
            let mut query = Vec::new();
            for (key, id) in [("state", "state"), ("q", "name"), ("sort", "sort")] {
                if let Some(v) = m.get_one::<String>(id) {
                    query.push(format!("{key}={}", percent(v)));
                }
            }
            if let Some(behind) = m.get_one::<std::time::Duration>("behind") {
                query.push(format!("behind_s={}", behind.as_secs()));
            }
            if m.get_flag("asc") {
                query.push("order=asc".to_owned());
            }
            if m.get_flag("desc") {
                query.push("order=desc".to_owned());
            }
            if let Some(limit) = m.get_one::<u64>("limit") {
                query.push(format!("limit={limit}"));
            }
            api(ApiCommand::Fleet {
                query: query.join("&"),
            })
        }
        ("mirror", Some(("start", s))) => api_at(
            s,
            ApiCommand::MirrorStart {
                wait: s.get_flag("wait"),
            },
        ),
        ("mirror", Some(("stop", s))) => api_at(s, ApiCommand::MirrorStop),
        ("mirror", Some(("status", s))) => api_at(
            s,
            ApiCommand::MirrorStatus {
                follow: s.get_flag("follow"),
            },
        ),
        ("mirror", None) => node(NodeCommand::Mirror),
        ("append", _) => node(NodeCommand::Entries(EntriesCommand::Append {
            topic: text(m, "topic"),
            text: text(m, "text"),
        })),
        ("read", _) => node(NodeCommand::Entries(EntriesCommand::Read {
            topic: text(m, "topic"),
        })),
        ("request", _) => node(NodeCommand::Entries(EntriesCommand::Request {
            asset: text(m, "asset-id"),
        })),
        ("certs", Some(("issue", s))) => node(NodeCommand::Certs(CertsCommand::Issue {
            edge: text(s, "edge"),
            dir: dir(s, "dir"),
            out: dir(s, "out"),
        })),
        ("certs", Some(("renew", s))) => node(NodeCommand::Certs(CertsCommand::Renew {
            dir: dir(s, "dir"),
            out: dir(s, "out"),
        })),
        ("certs", Some(("init", s))) => node(NodeCommand::Certs(CertsCommand::Init {
            dir: dir(s, "dir"),
        })),
        ("completions", _) => Parsed::Completions(*m.get_one::<Shell>("shell")?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(role: Role, args: &[&str]) -> Result<Parsed, clap::Error> {
        let bin = std::iter::once(role.binary());
        try_parse(role, bin.chain(args.iter().copied()).map(OsString::from))
    }

    fn node(role: Role, args: &[&str]) -> NodeArgs {
        match parse(role, args) {
            Ok(Parsed::Invocation(Invocation::Node(node))) => node,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn api(role: Role, args: &[&str]) -> ApiArgs {
        match parse(role, args) {
            Ok(Parsed::Invocation(Invocation::Api(api))) => api,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    /// The usage error's message; panics if the arguments parse.
    fn refused(role: Role, args: &[&str]) -> String {
        match parse(role, args) {
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
                e.to_string()
            }
            Ok(parsed) => panic!("{args:?} parsed: {parsed:?}"),
        }
    }

    #[test]
    fn the_definition_is_valid() {
        for role in [Role::Core, Role::Edge] {
            command(role).debug_assert();
        }
    }

    /// Every command path in the definition, with its required words filled in.
    fn every_command(command: &Command, path: &[String], out: &mut Vec<Vec<String>>) {
        for sub in command.get_subcommands().filter(|c| c.get_name() != "help") {
            let mut args = path.to_vec();
            args.push(sub.get_name().to_owned());
            let words = sub.get_positionals().filter(|a| a.is_required_set());
            args.extend(words.map(|a| match a.get_id().as_str() {
                "shell" => "zsh".to_owned(),
                _ => "x".to_owned(),
            }));
            out.push(args.clone());
            every_command(sub, &args, out);
        }
    }

    #[test]
    fn every_command_in_the_definition_is_read() {
        for role in [Role::Core, Role::Edge] {
            let mut all = Vec::new();
            every_command(&command(role), &[], &mut all);
            assert!(all.len() >= 20, "{all:?}");
            for args in all {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let required = ["link"] == args[..]
                    || ["certs"] == args[..]
                    || (role == Role::Core && ["enroll"] == args[..]);
                match parse(role, &args) {
                    Ok(_) => assert!(!required, "{args:?}"),
                    Err(e) => assert!(required, "{role} {args:?}: {e}"),
                }
            }
        }
    }

    /// The top-level commands a binary's `--help` lists.
    fn listed(role: Role) -> Vec<String> {
        let help = command(role).render_help().to_string();
        let commands = help
            .split_once("Commands:\n")
            .and_then(|(_, rest)| rest.split_once("\n\n"))
            .map_or("", |(commands, _)| commands);
        commands
            .lines()
            .filter_map(|l| l.strip_prefix("  ")?.split_whitespace().next())
            .filter(|word| !word.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn core_node_help_lists_its_commands() {
        assert_eq!(
            listed(Role::Core),
            [
                "status",
                "services",
                "publish",
                "tail",
                "assets",
                "link",
                "bridge",
                "edges",
                "fleet",
                "enroll",
                "append",
                "read",
                "certs",
                "completions",
                "help"
            ]
        );
        let help = command(Role::Core).render_long_help().to_string();
        assert!(
            help.contains("The Tether HQ node. Without a command, it runs"),
            "{help}"
        );
        assert!(help.contains("--print-config") && help.contains("TETHER_<SECTION>__<KEY>"));
        let assets = command(Role::Core)
            .find_subcommand_mut("assets")
            .map(|c| c.render_help());
        assert!(!assets.unwrap().to_string().contains("request"));
    }

    #[test]
    fn edge_node_help_lists_its_commands() {
        assert_eq!(
            listed(Role::Edge),
            [
                "status",
                "services",
                "publish",
                "tail",
                "assets",
                "link",
                "bridge",
                "enroll",
                "mirror",
                "append",
                "read",
                "request",
                "completions",
                "help"
            ]
        );
        let help = command(Role::Edge).render_help().to_string();
        assert!(help.contains("A Tether field node"), "{help}");
    }

    #[test]
    fn running_printing_and_the_node_commands() {
        let run = |config: Option<&str>, command| NodeArgs {
            config: config.map(PathBuf::from),
            command,
        };
        let core = |args: &[&str]| node(Role::Core, args);
        let edge = |args: &[&str]| node(Role::Edge, args);
        assert_eq!(core(&[]), run(None, NodeCommand::Run));
        for args in [
            &["-c", "node.toml"][..],
            &["--config", "node.toml"],
            &["--config=node.toml"],
        ] {
            assert_eq!(core(args), run(Some("node.toml"), NodeCommand::Run));
        }
        assert_eq!(
            core(&["--print-config"]),
            run(None, NodeCommand::PrintConfig)
        );
        assert_eq!(
            edge(&["--print-config", "-c", "node.toml"]),
            run(Some("node.toml"), NodeCommand::PrintConfig)
        );
        assert_eq!(edge(&["mirror"]), run(None, NodeCommand::Mirror));
        assert_eq!(
            edge(&["mirror", "-c", "node.toml"]),
            run(Some("node.toml"), NodeCommand::Mirror)
        );
        assert_eq!(
            edge(&["request", "A-1", "--config", "node.toml"]),
            run(
                Some("node.toml"),
                NodeCommand::Entries(EntriesCommand::Request {
                    asset: "A-1".into()
                })
            )
        );
        assert_eq!(
            core(&["append", "MESSAGES", "hello"]),
            run(
                None,
                NodeCommand::Entries(EntriesCommand::Append {
                    topic: "MESSAGES".into(),
                    text: "hello".into()
                })
            )
        );
        assert_eq!(
            edge(&["-c", "node.toml", "read", "MESSAGES"]),
            run(
                Some("node.toml"),
                NodeCommand::Entries(EntriesCommand::Read {
                    topic: "MESSAGES".into()
                })
            )
        );

        for (role, args) in [
            (Role::Core, &["--config"][..]),
            (Role::Core, &["-c", "a", "-c", "b"]),
            (Role::Core, &["--verbose"]),
            (Role::Core, &["node.toml"]),
            (Role::Edge, &["mirror", "now"]),
            (Role::Edge, &["--print-config", "mirror"]),
            (Role::Edge, &["--print-config=x"]),
            (Role::Edge, &["request"]),
            (Role::Edge, &["mirror", "--json"]),
            (Role::Core, &["read"]),
            (Role::Core, &["append", "MESSAGES"]),
        ] {
            refused(role, args);
        }
        assert_eq!(
            parse(Role::Core, &["--help"]).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
        let version = parse(Role::Edge, &["--version"]).unwrap_err();
        assert_eq!(version.exit_code(), 0);
        assert_eq!(
            version.to_string(),
            format!("edge-node {}\n", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn certs_commands() {
        let certs = |args: &[&str]| match node(Role::Core, args) {
            NodeArgs {
                command: NodeCommand::Certs(command),
                config,
            } => (config, command),
            other => panic!("{other:?}"),
        };
        let dir = |d: &str| Some(PathBuf::from(d));
        assert_eq!(
            certs(&["certs", "init"]),
            (None, CertsCommand::Init { dir: None })
        );
        assert_eq!(
            certs(&["certs", "init", "--dir", "d", "-c", "x.toml"]),
            (dir("x.toml"), CertsCommand::Init { dir: dir("d") })
        );
        assert_eq!(
            certs(&["certs", "issue", "bravo", "--dir=d", "--out", "o"]).1,
            CertsCommand::Issue {
                edge: "bravo".into(),
                dir: dir("d"),
                out: dir("o")
            }
        );
        assert_eq!(
            certs(&["certs", "renew", "--out", "o"]).1,
            CertsCommand::Renew {
                dir: None,
                out: dir("o")
            }
        );
        for args in [
            &["certs"][..],
            &["certs", "issue"],
            &["certs", "rotate"],
            &["certs", "init", "x"],
            &["certs", "init", "--out", "o"],
            &["--dir", "d"],
            &["--print-config", "certs", "init"],
            &["certs", "init", "--dir"],
        ] {
            refused(Role::Core, args);
        }
    }

    #[test]
    fn api_commands_take_their_options_after_any_word() {
        let args = api(
            Role::Core,
            &[
                "edges",
                "revoke",
                "alpha",
                "--token",
                "t",
                "--url",
                "http://h:1",
                "-c",
                "x",
            ],
        );
        assert_eq!(
            args,
            ApiArgs {
                config: Some(PathBuf::from("x")),
                url: Some("http://h:1".into()),
                token: Some("t".into()),
                json: false,
                command: ApiCommand::EdgeRevoke("alpha".into()),
            }
        );
        let command = |role, args: &[&str]| api(role, args).command;
        assert_eq!(
            command(Role::Core, &["edges", "--token", "t"]),
            ApiCommand::Edges
        );
        assert_eq!(
            command(
                Role::Core,
                &[
                    "fleet", "--behind", "1h", "--state", "down", "--name", "a b", "--desc"
                ]
            ),
            ApiCommand::Fleet {
                query: "state=down&q=a%20b&behind_s=3600&order=desc".into()
            }
        );
        assert_eq!(
            command(Role::Core, &["fleet"]),
            ApiCommand::Fleet {
                query: String::new()
            }
        );
        assert!(refused(Role::Core, &["fleet", "--behind", "soon"]).contains("--behind"));
        assert!(refused(Role::Edge, &["fleet"]).contains("core-node fleet"));
        assert!(api(Role::Edge, &["services", "--json", "list"]).json);
        assert_eq!(
            command(Role::Edge, &["services", "stop", "ingest"]),
            ApiCommand::ServiceStop("ingest".into())
        );
        assert_eq!(
            command(
                Role::Edge,
                &["mirror", "start", "--wait", "--url", "http://h:1"]
            ),
            ApiCommand::MirrorStart { wait: true }
        );
        assert_eq!(
            command(Role::Edge, &["mirror", "status", "-f"]),
            ApiCommand::MirrorStatus { follow: true }
        );
        assert_eq!(
            command(
                Role::Edge,
                &[
                    "publish", "MESSAGES", "all good", "--key", "k", "--to", "hq"
                ]
            ),
            ApiCommand::Publish {
                topic: "MESSAGES".into(),
                text: "all good".into(),
                key: Some("k".into()),
                to: Some("hq".into())
            }
        );
        assert_eq!(
            command(Role::Core, &["tail", "MESSAGES", "--from", "0"]),
            ApiCommand::Tail {
                topic: "MESSAGES".into(),
                from: Some(0)
            }
        );
        assert_eq!(
            command(Role::Edge, &["link", "pause"]),
            ApiCommand::LinkPause(None)
        );
        assert_eq!(
            command(Role::Edge, &["assets", "request", "A-1"]),
            ApiCommand::AssetRequest("A-1".into())
        );
        for (role, args) in [
            (Role::Edge, &["services", "fly"][..]),
            (Role::Core, &["edges", "forget"]),
            (Role::Core, &["tail", "MESSAGES", "--from", "end"]),
            (Role::Edge, &["link"]),
            (Role::Edge, &["link", "pause", "hq", "again"]),
        ] {
            refused(role, args);
        }
    }

    #[test]
    fn the_other_binarys_commands_say_where_they_run() {
        for (role, args, says) in [
            (
                Role::Edge,
                &["certs", "init"][..],
                "`certs` runs on the core",
            ),
            (Role::Edge, &["edges"], "run `core-node edges` there"),
            (Role::Core, &["mirror"], "run `edge-node mirror` there"),
            (Role::Core, &["mirror", "start"], "`mirror` runs on an edge"),
            (Role::Core, &["request", "A-1"], "`request` runs at an edge"),
            (
                Role::Core,
                &["assets", "request", "A-1"],
                "`request` runs at an edge",
            ),
        ] {
            let message = refused(role, args);
            assert!(message.contains(says), "{args:?}: {message}");
        }
    }

    #[test]
    fn completions_for_each_binary() {
        assert_eq!(
            parse(Role::Edge, &["completions", "bash"]).unwrap(),
            Parsed::Completions(Shell::Bash)
        );
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let edge = completion_script(Role::Edge, shell);
            assert!(
                edge.contains("mirror") && !edge.contains("certs"),
                "{shell}"
            );
            let core = completion_script(Role::Core, shell);
            assert!(
                core.contains("certs") && !core.contains("mirror"),
                "{shell}"
            );
        }
        // bash: the state reached by walking `edge-node mirror` has its case.
        let bash = completion_script(Role::Edge, Shell::Bash);
        assert!(bash.contains("cmd=\"edge__node__subcmd__mirror\""));
        assert!(
            bash.contains("\n        edge__node__subcmd__mirror)\n"),
            "{bash}"
        );
    }
}
