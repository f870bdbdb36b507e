//! Who may reach a node over HTTP, and what they may do: the `Host` and browser rules,
//! the operator's and the read-only token, the page's sign-ins, and the limits
//! on requests at once.
//!
//! With `http.token` set, every request but the probes, the page's own files, the OpenAPI
//! document and `/api/v1/sign-in` needs a credential: `Authorization: Bearer <token>`
//! (the CLI, scripts, Prometheus) or the sign-in cookie the page gets by signing in with
//! a token (`HttpOnly`, `SameSite=Strict`: no script can read it and no other site's
//! request carries it; `EventSource` sends it where it could send no header). The read
//! token, and a sign-in with it, read but change nothing. A token never travels
//! in a URL. An address that keeps sending wrong tokens waits ([`Guesses`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// How long a sign-in lasts.
pub const SIGN_IN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The most sign-ins a node keeps; signing in past it ends the oldest.
const MAX_SIGN_INS: usize = 256;

/// The most requests a node works on at once (live-event streams and waiting reads
/// have caps of their own); past it, 429.
pub const MAX_REQUESTS: usize = 256;

/// The most reads that wait for a new entry (`wait_ms`) at once; past it, 429.
pub const MAX_WAITS: usize = 64;

/// Wrong tokens an address may send in a row before it must wait ([`Guesses`]).
pub const WRONG_TOKENS: u32 = 10;

/// How long an address that used up its [`WRONG_TOKENS`] waits for each further try.
pub const WRONG_TOKEN_WAIT: Duration = Duration::from_secs(6);

/// The most addresses [`Guesses`] remembers; past it, the one that would wait least is
/// forgotten.
const MAX_GUESSERS: usize = 4096;

/// What a credential lets a request do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read everything, change nothing (the read-only token).
    Read,
    /// Read and change (the operator's token, or a node without a token).
    Operate,
}

/// What [`guard`] and the sign-in routes need: who may come in and how much they may
/// send. A node's server and an edge's first-run setup ([`crate::setup`]) each have one.
pub(crate) struct Gate {
    /// Its tokens, sign-ins, and room for requests.
    pub(crate) access: Credentials,
    /// `http.hosts`: names the node answers to besides addresses and localhost.
    pub(crate) hosts: Vec<String>,
    /// The largest request body.
    pub(crate) body_limit: usize,
}

impl Gate {
    /// The gate of `config`'s node, for bodies of at most `body_limit` bytes.
    pub(crate) fn new(config: &protocol::config::Config, body_limit: usize) -> Arc<Gate> {
        Arc::new(Gate {
            access: Credentials::new(
                config.node.name.as_str(),
                config.http.token.clone(),
                config.http.read_token.clone(),
            ),
            hosts: config.http.hosts.clone(),
            body_limit,
        })
    }
}

/// The node's credentials and its sign-ins.
pub(crate) struct Credentials {
    token: Option<String>,
    read_token: Option<String>,
    /// The sign-in cookie's name: one per node, so that two nodes on one host (the demo)
    /// keep their sign-ins apart.
    cookie: String,
    signed_in: Mutex<HashMap<String, SignedIn>>,
    /// Who sent wrong tokens lately.
    pub(crate) guesses: Guesses,
    /// Room for requests at once ([`MAX_REQUESTS`]) and waiting reads ([`MAX_WAITS`]).
    pub(crate) requests: Arc<Semaphore>,
    pub(crate) waits: Arc<Semaphore>,
}

struct SignedIn {
    access: Access,
    until: Instant,
}

impl Credentials {
    pub(crate) fn new(node: &str, token: Option<String>, read_token: Option<String>) -> Self {
        Credentials {
            token,
            read_token,
            cookie: format!("tether-sign-in-{node}"),
            signed_in: Mutex::new(HashMap::new()),
            guesses: Guesses::default(),
            requests: Arc::new(Semaphore::new(MAX_REQUESTS)),
            waits: Arc::new(Semaphore::new(MAX_WAITS)),
        }
    }

    /// Whether this node asks for a credential at all.
    pub(crate) fn required(&self) -> bool {
        self.token.is_some()
    }

    /// What `token` grants, if it is one of this node's.
    fn grants(&self, token: &str) -> Option<Access> {
        let is = |mine: &Option<String>| mine.as_ref().is_some_and(|m| same(m, token));
        // Both compared, always: the time taken does not tell which one matched.
        match (is(&self.token), is(&self.read_token)) {
            (true, _) => Some(Access::Operate),
            (false, true) => Some(Access::Read),
            (false, false) => None,
        }
    }

    /// Whether the request offers a token (a bearer), which [`Guesses`] may hold back.
    fn offers_token(headers: &HeaderMap) -> bool {
        headers.contains_key(header::AUTHORIZATION)
    }

    /// What the request's credential grants: everything on a node without a token.
    fn access(&self, headers: &HeaderMap) -> Option<Access> {
        if !self.required() {
            return Some(Access::Operate);
        }
        if let Some(bearer) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return self.grants(bearer.trim());
        }
        let id = cookie(headers, &self.cookie)?;
        let mut signed_in = self.signed_in.lock().unwrap_or_else(|e| e.into_inner());
        let sign_in = signed_in.get(id)?;
        if sign_in.until <= Instant::now() {
            signed_in.remove(id);
            return None;
        }
        Some(sign_in.access)
    }

    /// Signs in with `access`; returns its cookie header.
    fn sign_in(&self, access: Access, secure: bool) -> Result<String, ApiError> {
        let mut id = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| ApiError::unavailable("no randomness for a sign-in; try again"))?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut signed_in = self.signed_in.lock().unwrap_or_else(|e| e.into_inner());
        signed_in.retain(|_, s| s.until > now);
        if signed_in.len() >= MAX_SIGN_INS
            && let Some(oldest) = signed_in
                .iter()
                .min_by_key(|(_, s)| s.until)
                .map(|(id, _)| id.clone())
        {
            signed_in.remove(&oldest);
        }
        signed_in.insert(
            id.clone(),
            SignedIn {
                access,
                until: now + SIGN_IN_LIFETIME,
            },
        );
        Ok(format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.cookie,
            SIGN_IN_LIFETIME.as_secs(),
            if secure { "; Secure" } else { "" }
        ))
    }

    /// Ends the request's sign-in, if it has one; returns the header that clears it.
    fn sign_out(&self, headers: &HeaderMap) -> String {
        if let Some(id) = cookie(headers, &self.cookie) {
            let mut signed_in = self.signed_in.lock().unwrap_or_else(|e| e.into_inner());
            signed_in.remove(id);
        }
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            self.cookie
        )
    }
}

/// Wrong tokens per source address: each address may send [`WRONG_TOKENS`] in a burst,
/// then one more per [`WRONG_TOKEN_WAIT`], and while it must wait every token it offers,
/// right or wrong, gets 429 unchecked, so waiting is the only way to try again. A
/// leaky bucket kept as the time its wrong tries will have drained (GCRA). Signed-in
/// pages (a cookie, not a token) and other addresses are not held back; behind a proxy
/// every client shares the proxy's address.
#[derive(Default)]
pub(crate) struct Guesses {
    drained_at: Mutex<HashMap<IpAddr, Instant>>,
}

impl Guesses {
    /// How long `source` must wait before it may offer a token, if it must.
    fn wait(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let drained_at = self.drained_at.lock().unwrap_or_else(|e| e.into_inner());
        let ahead = drained_at.get(&source)?.checked_duration_since(now)?;
        ahead
            .checked_sub(WRONG_TOKEN_WAIT * (WRONG_TOKENS - 1))
            .filter(|wait| !wait.is_zero())
    }

    /// Counts a wrong token from `source`.
    fn wrong(&self, source: IpAddr, now: Instant) {
        let mut drained_at = self.drained_at.lock().unwrap_or_else(|e| e.into_inner());
        if drained_at.len() >= MAX_GUESSERS && !drained_at.contains_key(&source) {
            drained_at.retain(|_, at| *at > now);
            if drained_at.len() >= MAX_GUESSERS
                && let Some(least) = drained_at
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(ip, _)| *ip)
            {
                drained_at.remove(&least);
            }
        }
        let at = drained_at.entry(source).or_insert(now);
        *at = (*at).max(now) + WRONG_TOKEN_WAIT;
    }
}

/// The address a request came from, as [`guard`] leaves it for the handlers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source(pub(crate) IpAddr);

/// The address a request came from (unspecified when the server does not say, so that
/// all such requests share one allowance).
fn source(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| {
            addr.ip()
        })
}

/// 429 for an address that sent too many wrong tokens.
fn too_many_wrong(source: IpAddr, wait: Duration) -> Response {
    let seconds = wait.as_secs() + 1;
    let mut response = too_many(format!(
        "{source} sent {WRONG_TOKENS} wrong tokens: try again in {seconds} s"
    ));
    if let Ok(value) = seconds.to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The value of the cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

use protocol::tls::same_secret as same;

/// `/api/v1/sign-in`: sign in with a token (a cookie), see what this browser may do, sign
/// out.
pub(crate) fn routes<S>(gate: Arc<Gate>) -> Router<S> {
    Router::new()
        .route(
            "/sign-in",
            axum::routing::get(sign_in_state)
                .post(sign_in)
                .delete(sign_out),
        )
        .with_state(gate)
}

/// What a request may do, as `GET /sign-in` and signing in answer it.
#[derive(Debug, Serialize)]
struct SignInView {
    /// Whether this node asks for a token.
    token_required: bool,
    /// What this request may do: `operate`, `read`, or nothing (`null`: sign in).
    access: Option<Access>,
}

async fn sign_in_state(State(app): State<Arc<Gate>>, request: Request) -> Json<SignInView> {
    Json(SignInView {
        token_required: app.access.required(),
        access: app.access.access(request.headers()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

async fn sign_in(
    State(app): State<Arc<Gate>>,
    axum::Extension(Source(from)): axum::Extension<Source>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(sign_in) = body?;
    if !app.access.required() {
        return Err(ApiError::conflict(
            "this node has no token (it listens on loopback or runs without one): no need to \
             sign in",
        ));
    }
    if let Some(wait) = app.access.guesses.wait(from, Instant::now()) {
        return Ok(too_many_wrong(from, wait));
    }
    let Some(access) = app.access.grants(sign_in.token.trim()) else {
        tracing::warn!(%from, "a sign-in with a wrong token was refused");
        app.access.guesses.wrong(from, Instant::now());
        return Err(ApiError::unauthorized(
            "that is not this node's token (http.token) nor its read-only token \
             (http.read_token)",
        ));
    };
    // Behind a TLS-terminating proxy (an Ingress, EZUA's gateway) the cookie is kept to
    // HTTPS.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = app.access.sign_in(access, secure)?;
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(SignInView {
            token_required: true,
            access: Some(access),
        }),
    )
        .into_response())
}

async fn sign_out(State(app): State<Arc<Gate>>, headers: HeaderMap) -> Response {
    let clear = app.access.sign_out(&headers);
    (
        StatusCode::NO_CONTENT,
        [
            (header::SET_COOKIE, clear),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// Paths anyone may ask for: the probes, the page's own files (they hold no data, and
/// the page must load to offer its sign-in), the API's description, and signing in.
fn public(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/"
            | "/ui/app.js"
            | "/ui/setup.js"
            | "/ui/style.css"
            | "/api/v1/openapi.json"
            | "/api/v1/sign-in"
    )
}

/// Every request passes here first: refuses a `Host` the node does not answer to, a
/// request from another site's page, a change a cross-site form could make, a request
/// without the credential it needs, and more requests at once than [`MAX_REQUESTS`].
pub(crate) async fn guard(
    State(app): State<Arc<Gate>>,
    mut request: Request,
    next: Next,
) -> Response {
    let from = source(&request);
    request.extensions_mut().insert(Source(from));
    let path = request.uri().path();
    let probe = matches!(path, "/healthz" | "/readyz");
    if probe {
        return next.run(request).await;
    }
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    let forbidden = |why: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden", why);
    if let Some(why) = unknown_host(request.headers(), &app.hosts) {
        return forbidden(why).into_response();
    }
    if let Some(why) = from_another_site(request.headers(), safe) {
        return forbidden(why).into_response();
    }
    if !safe && let Some(why) = a_form_could_send(request.headers()) {
        return forbidden(why).into_response();
    }
    // A body announced larger than the node takes is refused before it is read.
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > app.body_limit as u64
    {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!(
                "a body of {length} bytes is over the {} this node takes (one entry of at \
                 most store.max_entry_bytes, as base64 in JSON)",
                app.body_limit
            ),
        )
        .into_response();
    }
    if !public(path) {
        let needs = if safe { Access::Read } else { Access::Operate };
        let offers_token = Credentials::offers_token(request.headers());
        if offers_token && let Some(wait) = app.access.guesses.wait(from, Instant::now()) {
            return too_many_wrong(from, wait);
        }
        match app.access.access(request.headers()) {
            None => {
                if offers_token {
                    tracing::warn!(%from, "a request with a wrong token was refused");
                    app.access.guesses.wrong(from, Instant::now());
                }
                return ApiError::unauthorized(
                    "this node needs its token: send `Authorization: Bearer <token>` (the \
                     node's http.token or http.read_token, TETHER_HTTP__TOKEN), or sign in on \
                     the node's page",
                )
                .into_response();
            }
            Some(has) if has < needs => {
                return forbidden(
                    "the read-only token reads but changes nothing; changes need the \
                     operator's token (http.token)"
                        .to_owned(),
                )
                .into_response();
            }
            Some(_) => {}
        }
    }
    let Ok(_permit) = app.access.requests.clone().try_acquire_owned() else {
        return too_many(format!(
            "this node is working on {MAX_REQUESTS} requests already; try again in a moment"
        ))
        .into_response();
    };
    next.run(request).await
}

/// 429 with `message`, and when to try again.
pub(crate) fn too_many(message: String) -> Response {
    (
        [(header::RETRY_AFTER, "1")],
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too-many-requests", message),
    )
        .into_response()
}

/// Why the request's `Host` is not one this node answers to, if it is not: IP addresses
/// and `localhost` always are (a page can rebind only a name of its own to the node's
/// address), other names only when `http.hosts` lists them.
pub(crate) fn unknown_host(headers: &HeaderMap, hosts: &[String]) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.strip_prefix('[') {
        Some(_) => return None, // an IPv6 address
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    let name = name.to_ascii_lowercase();
    let known = name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || hosts.contains(&name);
    (!known).then(|| {
        format!(
            "this node does not answer to the host name {name:?}: if people or a proxy reach \
             it by that name, add it to http.hosts (TETHER_HTTP__HOSTS)"
        )
    })
}

/// Why a request comes from a page on another site, if it does: browsers say so in
/// `Sec-Fetch-Site`, and send `Origin` with every cross-origin change (a form posted by
/// another site, a script's fetch), which must then name this node as the `Host` does.
/// Clients that are not browsers (the CLI, Prometheus, curl) send neither.
fn from_another_site(headers: &HeaderMap, safe: bool) -> Option<String> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    if text("sec-fetch-site") == Some("cross-site") {
        return Some(
            "a page of another site sent this request (Sec-Fetch-Site: cross-site); \
             use this node's own page, the CLI or the API directly"
                .to_owned(),
        );
    }
    if safe {
        return None;
    }
    let origin = text(header::ORIGIN.as_str())?;
    let host = text(header::HOST.as_str()).unwrap_or("");
    let from = origin
        .split_once("://")
        .map_or(origin, |(_, authority)| authority);
    (!from.eq_ignore_ascii_case(host)).then(|| {
        format!(
            "a change from the page at {origin}, which is not this node ({host}): refused, so \
             that no other site can act through an operator's browser"
        )
    })
}

/// The header that marks a change as sent by a program, not by a form.
pub const REQUESTED_WITH: &str = "x-requested-with";

/// Why a change could have come from an HTML form, if it could: a form sends only
/// url-encoded, multipart or plain-text bodies and no headers of its own, while a JSON
/// body or a custom header makes a browser ask the node first (a preflight this node
/// never grants to another site).
fn a_form_could_send(headers: &HeaderMap) -> Option<String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    (!json && !headers.contains_key(REQUESTED_WITH)).then(|| {
        "a change must carry a JSON body (Content-Type: application/json) or the header \
         X-Requested-With, so that no web form can make it"
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abcdefgh", "abcdefgh"));
        assert!(!same("abcdefgh", "abcdefgx"));
        assert!(!same("abcdefgh", "abcdefg"));
    }

    #[test]
    fn each_credential_grants_its_access() {
        let c = Credentials::new(
            "hq",
            Some("operator-token-0123".into()),
            Some("reader-token-01234".into()),
        );
        let bearer = |t: &str| headers(&[("authorization", &format!("Bearer {t}"))]);
        assert_eq!(
            c.access(&bearer("operator-token-0123")),
            Some(Access::Operate)
        );
        assert_eq!(c.access(&bearer("reader-token-01234")), Some(Access::Read));
        assert_eq!(c.access(&bearer("operator-token-012")), None);
        assert_eq!(c.access(&headers(&[])), None);
        let set = c.sign_in(Access::Read, false).unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let pair = set.split(';').next().unwrap();
        let with = headers(&[("cookie", &format!("theme=dark; {pair}"))]);
        assert_eq!(c.access(&with), Some(Access::Read));
        let other = headers(&[("cookie", "tether-sign-in-hq=00ff")]);
        assert_eq!(c.access(&other), None);
        c.sign_out(&with);
        assert_eq!(c.access(&with), None);
        let open = Credentials::new("alpha", None, None);
        assert_eq!(open.access(&headers(&[])), Some(Access::Operate));
    }

    #[test]
    fn sign_ins_are_bounded() {
        let c = Credentials::new("hq", Some("operator-token-0123".into()), None);
        for _ in 0..MAX_SIGN_INS + 10 {
            c.sign_in(Access::Operate, false).unwrap();
        }
        assert_eq!(c.signed_in.lock().unwrap().len(), MAX_SIGN_INS);
    }

    #[test]
    fn an_address_that_sends_wrong_tokens_waits_and_earns_tries_back() {
        let g = Guesses::default();
        let (one, two) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..WRONG_TOKENS {
            assert_eq!(g.wait(one, t0), None);
            g.wrong(one, t0);
        }
        assert_eq!(g.wait(one, t0), Some(WRONG_TOKEN_WAIT));
        assert_eq!(g.wait(two, t0), None, "another address is not held back");
        let later = t0 + WRONG_TOKEN_WAIT;
        assert_eq!(g.wait(one, later), None, "one more try after one wait");
        g.wrong(one, later);
        assert_eq!(g.wait(one, later), Some(WRONG_TOKEN_WAIT));
        let rested = later + WRONG_TOKEN_WAIT * WRONG_TOKENS;
        for _ in 0..WRONG_TOKENS {
            assert_eq!(
                g.wait(one, rested),
                None,
                "a rested address has its tries back"
            );
            g.wrong(one, rested);
        }
        assert!(g.wait(one, rested).is_some());
    }

    #[test]
    fn guessers_are_bounded() {
        let g = Guesses::default();
        let now = Instant::now();
        for i in 0..MAX_GUESSERS as u32 + 10 {
            g.wrong(IpAddr::V4(Ipv4Addr::from(i)), now);
        }
        assert_eq!(g.drained_at.lock().unwrap().len(), MAX_GUESSERS);
    }

    #[test]
    fn only_json_or_the_custom_header_passes_as_a_change() {
        for form in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
        ] {
            assert!(a_form_could_send(&headers(&[("content-type", form)])).is_some());
        }
        assert!(a_form_could_send(&headers(&[])).is_some());
        let json = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert!(a_form_could_send(&json).is_none());
        assert!(a_form_could_send(&headers(&[("x-requested-with", "cli")])).is_none());
    }
}
