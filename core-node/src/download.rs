//! Fetching an image by URL, blocking, within limits on size, time and redirects:
//! `http` and `https` through a ureq agent (rustls with ring, the webpki roots), `file`
//! from the local disk.
//!
//! Who named the URL decides where it may lead ([`Reach`]). A URL the operator named (the
//! feed document) may be any of the three, to any address, through the environment's
//! proxy (`HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY`, as curl reads them).
//! A URL a feed named ([`Reach::Feed`]) is `http` or `https` (`file` only when the feed
//! document is itself a local file), and connects only to the addresses
//! [`address::check`] lets through or the operator allows: the agent's resolver drops
//! every other address a name resolves to before a connection is made, for the first
//! request and for every redirect alike, so a name that resolves to `127.0.0.1`, an IP
//! literal in any spelling, or a redirect to an internal address all end in
//! [`DownloadError::Refused`]. Such a download ignores the environment's proxies: a
//! proxy would resolve the name itself, out of the check's sight. HQ's own HTTP address
//! is allowed exactly (IP and port), and a request to it under `/files/` carries HQ's
//! token, which no other origin ever gets (ureq drops `Authorization` at a redirect).
//!
//! An oversized answer is refused by its `Content-Length` before the body is read, and
//! otherwise as soon as one byte more than the limit has arrived: memory never holds more
//! than the limit. [`DownloadError::is_transient`] tells a retry from a give-up.
//!
//! Callers on an async runtime run [`fetch`] in `spawn_blocking`.
//!
//! IO: the network (HTTP, and DNS through the system's resolver), and reading local files
//! named by `file` URLs.

use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::ip_range::IpRange;
use ureq::config::Config as AgentConfig;
use ureq::config::RedirectAuthHeaders;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::address;

/// Where a download may lead, by who named its URL.
#[derive(Debug, Clone)]
pub enum Reach {
    /// A URL the operator named (`pipeline.feed`): `http`, `https` or `file`, any address,
    /// through the environment's proxy if one is set.
    Operator,
    /// A URL a feed document named: what [`Guard`] lets through.
    Feed(Arc<Guard>),
}

/// What a feed's items may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Whether `file` URLs are read: only for the items of a feed document that is
    /// itself a local file (a path or a `file` URL), never a remote one's.
    pub files: bool,
    /// Addresses and ranges allowed although [`address::check`] refuses them
    /// (`pipeline.download_allow`).
    pub allow: Vec<IpRange>,
    /// HQ's own HTTP address, allowed exactly (this IP, this port): the demo feed's
    /// images are served there.
    pub own: Option<SocketAddr>,
    /// The bearer token sent with requests to [`Guard::own`] under `/files/` (HQ's read
    /// token, else its token), and to nothing else.
    pub own_token: Option<String>,
}

/// Limits of one download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes; a body of exactly this size is accepted.
    pub max_bytes: u64,
    /// Time for the whole download, from name resolution to the last byte of the body,
    /// redirects included. Ignored for `file` URLs.
    pub timeout: Duration,
    /// Redirects followed; one more is an error. `0` follows none.
    pub max_redirects: u32,
}

impl Default for Limits {
    /// 50 MiB, 60 s, 5 redirects: a large NASA original over a slow line, and more
    /// redirects than a CDN uses.
    fn default() -> Self {
        Self {
            max_bytes: 50 * 1024 * 1024,
            timeout: Duration::from_secs(60),
            max_redirects: 5,
        }
    }
}

/// Why a download failed. Every message names the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// The URL cannot be read as one.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL leads where this download may not go: an address the classifier refuses
    /// and the operator did not allow, or a `file` URL from a feed that is not local.
    #[error("{url}: refused: {reason}")]
    Refused {
        /// The URL as given.
        url: String,
        /// Why, and what the operator can do about it.
        reason: String,
    },
    /// A scheme other than `http`, `https` or `file`.
    #[error("{url}: scheme {scheme:?} is not supported (only http, https and file)")]
    Scheme {
        /// The URL as given.
        url: String,
        /// Its scheme, lowercase.
        scheme: String,
    },
    /// The body is larger than [`Limits::max_bytes`].
    #[error("{url}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL as given.
        url: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// Not finished within [`Limits::timeout`].
    #[error("{url}: not complete after {timeout:?}")]
    Timeout {
        /// The URL as given.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// The server answered with an error status (after redirects).
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL as given.
        url: String,
        /// The status code, 4xx or 5xx (or a 1xx/3xx that ended the exchange).
        status: u16,
    },
    /// More redirects than [`Limits::max_redirects`].
    #[error("{url}: more than {limit} redirects")]
    TooManyRedirects {
        /// The URL as given.
        url: String,
        /// The limit.
        limit: u32,
    },
    /// No connection, or it broke: name not resolved, refused, reset, TLS failed.
    #[error("{url}: unreachable: {reason}")]
    Unreachable {
        /// The URL as given.
        url: String,
        /// What the network or TLS said.
        reason: String,
    },
    /// A local file could not be read, or the server broke the protocol.
    #[error("{url}: {reason}")]
    Io {
        /// The URL as given.
        url: String,
        /// What failed.
        reason: String,
    },
}

impl DownloadError {
    /// True if trying again later may succeed: timeouts, connection failures, and the
    /// statuses 408, 429 and 5xx. False for bad URLs, 4xx, too large and local files.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Unreachable { .. } => true,
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Self::BadUrl { .. }
            | Self::Refused { .. }
            | Self::Scheme { .. }
            | Self::TooLarge { .. }
            | Self::TooManyRedirects { .. }
            | Self::Io { .. } => false,
        }
    }

    /// The URL the download was asked for.
    pub fn url(&self) -> &str {
        match self {
            Self::BadUrl { url, .. }
            | Self::Refused { url, .. }
            | Self::Scheme { url, .. }
            | Self::TooLarge { url, .. }
            | Self::Timeout { url, .. }
            | Self::Status { url, .. }
            | Self::TooManyRedirects { url, .. }
            | Self::Unreachable { url, .. }
            | Self::Io { url, .. } => url,
        }
    }
}

/// Downloads `url` (`http`, `https` or `file`) within `limits`, where `reach` lets it go,
/// and returns the body.
///
/// Blocks for at most [`Limits::timeout`] (network) or the time to read the file.
pub fn fetch(url: &str, limits: &Limits, reach: &Reach) -> Result<Vec<u8>, DownloadError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad_url(url, "not an absolute URL (no scheme://)"));
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(bad_url(url, "not an absolute URL (bad scheme)"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => fetch_http(url, limits, reach),
        "file" => match reach {
            Reach::Feed(guard) if !guard.files => Err(DownloadError::Refused {
                url: url.to_owned(),
                reason: "file URLs are followed only from a feed document that is itself a \
                         local file"
                    .to_owned(),
            }),
            _ => fetch_file(url, rest, limits.max_bytes),
        },
        other => Err(DownloadError::Scheme {
            url: url.to_owned(),
            scheme: other.to_owned(),
        }),
    }
}

fn bad_url(url: &str, reason: impl Into<String>) -> DownloadError {
    DownloadError::BadUrl {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

fn fetch_http(url: &str, limits: &Limits, reach: &Reach) -> Result<Vec<u8>, DownloadError> {
    let config = AgentConfig::builder()
        .timeout_global(Some(limits.timeout))
        .max_redirects(limits.max_redirects)
        .http_status_as_error(false)
        .user_agent(concat!("tether-core-node/", env!("CARGO_PKG_VERSION")))
        // The default already; said here because the own origin's token depends on it.
        .redirect_auth_headers(RedirectAuthHeaders::Never);
    let (agent, token) = match reach {
        Reach::Operator => (ureq::Agent::new_with_config(config.build()), None),
        Reach::Feed(guard) => {
            // No proxy: it would resolve the name itself, out of the resolver's check.
            let config = config.proxy(None).build();
            let resolver = CheckedResolver(guard.clone());
            let agent = ureq::Agent::with_parts(config, DefaultConnector::new(), resolver);
            (agent, own_token(url, guard))
        }
    };
    let mut request = agent.get(url).header("accept", "image/*, */*;q=0.5");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().map_err(|err| from_ureq(url, limits, err))?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(DownloadError::Status {
            url: url.to_owned(),
            status,
        });
    }
    let too_large = || DownloadError::TooLarge {
        url: url.to_owned(),
        limit: limits.max_bytes,
    };
    let length = response.body().content_length();
    if length.is_some_and(|length| length > limits.max_bytes) {
        return Err(too_large());
    }
    // Read at most one byte past the limit: that byte proves the body too large.
    let capacity = length.unwrap_or(64 * 1024).min(limits.max_bytes);
    let mut body = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .reader()
        .take(limits.max_bytes.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(|err| from_ureq(url, limits, ureq::Error::from(err)))?;
    if body.len() as u64 > limits.max_bytes {
        return Err(too_large());
    }
    Ok(body)
}

/// The token to send with a request for `url`: HQ's, if `url` is a file on HQ's own
/// address (named by its IP and port, as the demo feed names them).
fn own_token<'a>(url: &str, guard: &'a Guard) -> Option<&'a str> {
    let token = guard.own_token.as_deref()?;
    let own = guard.own?;
    let uri: Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let same = uri.scheme_str() == Some("http")
        && host.parse::<IpAddr>().ok() == Some(own.ip())
        && uri.port_u16().unwrap_or(80) == own.port()
        && uri.path().starts_with("/files/")
        && !uri.path().split('/').any(|segment| segment == "..");
    same.then_some(token)
}

/// The system's resolver, then the guard: the addresses a name resolves to that the
/// download may not reach are dropped; none left is a [`Refusal`]. ureq calls it before
/// every connection it makes, redirects included, and with an IP literal as well.
#[derive(Debug)]
struct CheckedResolver(Arc<Guard>);

impl Resolver for CheckedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &AgentConfig,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let resolved = DefaultResolver::default().resolve(uri, config, timeout)?;
        let mut kept = self.empty();
        let mut refused = None;
        for addr in resolved.iter() {
            let checked = if Some(*addr) == self.0.own {
                Ok(())
            } else {
                address::check(addr.ip(), &self.0.allow)
            };
            match checked {
                Ok(()) => kept.push(*addr),
                Err(refusal) => {
                    refused.get_or_insert(refusal);
                }
            }
        }
        match refused {
            Some(refusal) if kept.is_empty() => Err(ureq::Error::Other(Box::new(Refusal {
                uri: uri.to_string(),
                host: uri.host().unwrap_or_default().to_owned(),
                refusal,
            }))),
            _ => Ok(kept),
        }
    }
}

/// Why the resolver gave no address: the first refused one, and the URL it was for (a
/// redirect's, maybe).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.reason_for(None))]
struct Refusal {
    uri: String,
    host: String,
    refusal: address::Refusal,
}

impl Refusal {
    /// What [`DownloadError::Refused`] says for a download of `url`: the address, and
    /// the redirect that led there if one did.
    fn reason_for(&self, url: Option<&str>) -> String {
        let authority = |text: &str| {
            let uri: Option<Uri> = text.parse().ok();
            uri.and_then(|u| u.authority().map(|a| a.as_str().to_ascii_lowercase()))
        };
        let redirected = match url {
            Some(url) if authority(url) != authority(&self.uri) => {
                format!("redirected to {}, where ", self.uri)
            }
            _ => String::new(),
        };
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let what = if host.parse::<IpAddr>().ok() == Some(self.refusal.addr) {
            self.refusal.to_string()
        } else {
            format!(
                "{host} resolves to {}, {}",
                self.refusal.addr,
                self.refusal.kind()
            )
        };
        format!("{redirected}{what}; the operator can allow it with pipeline.download_allow")
    }
}

fn from_ureq(url: &str, limits: &Limits, err: ureq::Error) -> DownloadError {
    let url = url.to_owned();
    match err {
        ureq::Error::Other(other) if other.is::<Refusal>() => {
            let reason = match other.downcast_ref::<Refusal>() {
                Some(refusal) => refusal.reason_for(Some(&url)),
                None => other.to_string(),
            };
            DownloadError::Refused { url, reason }
        }
        ureq::Error::Timeout(_) => DownloadError::Timeout {
            url,
            timeout: limits.timeout,
        },
        ureq::Error::Io(err) if err.kind() == io::ErrorKind::TimedOut => DownloadError::Timeout {
            url,
            timeout: limits.timeout,
        },
        ureq::Error::TooManyRedirects => DownloadError::TooManyRedirects {
            url,
            limit: limits.max_redirects,
        },
        ureq::Error::StatusCode(status) => DownloadError::Status { url, status },
        ureq::Error::BodyExceedsLimit(_) => DownloadError::TooLarge {
            url,
            limit: limits.max_bytes,
        },
        ureq::Error::BadUri(reason) => DownloadError::BadUrl { url, reason },
        ureq::Error::Http(err) => DownloadError::BadUrl {
            url,
            reason: err.to_string(),
        },
        ureq::Error::HostNotFound => DownloadError::Unreachable {
            url,
            reason: "host not found".to_owned(),
        },
        ureq::Error::Io(err) => DownloadError::Unreachable {
            url,
            reason: err.to_string(),
        },
        err @ (ureq::Error::ConnectionFailed
        | ureq::Error::Tls(_)
        | ureq::Error::Rustls(_)
        | ureq::Error::ConnectProxyFailed(_)
        | ureq::Error::TlsRequired) => DownloadError::Unreachable {
            url,
            reason: err.to_string(),
        },
        other => DownloadError::Io {
            url,
            reason: other.to_string(),
        },
    }
}

/// Reads the file named by a `file://` URL (`rest` is what follows `file://`).
fn fetch_file(url: &str, rest: &str, max_bytes: u64) -> Result<Vec<u8>, DownloadError> {
    let path = file_path(url, rest)?;
    let io_error = |what: &str, err: io::Error| DownloadError::Io {
        url: url.to_owned(),
        reason: format!("{what} {}: {err}", path.display()),
    };
    let too_large = || DownloadError::TooLarge {
        url: url.to_owned(),
        limit: max_bytes,
    };
    let not_regular = || DownloadError::Io {
        url: url.to_owned(),
        reason: format!("{} is not a regular file", path.display()),
    };
    // Checked before opening: opening a FIFO would block until a writer comes.
    let metadata = std::fs::metadata(&path).map_err(|err| io_error("cannot read", err))?;
    if !metadata.is_file() {
        return Err(not_regular());
    }
    let file = File::open(&path).map_err(|err| io_error("cannot open", err))?;
    // Checked again on the open file, in case the path was replaced in between.
    let metadata = file
        .metadata()
        .map_err(|err| io_error("cannot read", err))?;
    if !metadata.is_file() {
        return Err(not_regular());
    }
    if metadata.len() > max_bytes {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(|err| io_error("cannot read", err))?;
    // The file may have grown since it was measured.
    if body.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok(body)
}

/// The local path of a `file` URL: `file:///abs/path` or `file://localhost/abs/path`,
/// percent-escapes decoded, any query or fragment dropped.
fn file_path(url: &str, rest: &str) -> Result<PathBuf, DownloadError> {
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let path = match rest.find('/') {
        Some(0) => rest,
        Some(slash) if rest[..slash].eq_ignore_ascii_case("localhost") => &rest[slash..],
        Some(_) => return Err(bad_url(url, "a file URL with a host other than localhost")),
        None => return Err(bad_url(url, "a file URL needs an absolute path")),
    };
    let bytes = percent_decode(path).ok_or_else(|| bad_url(url, "bad percent-escape"))?;
    if bytes.contains(&0) {
        return Err(bad_url(url, "a NUL byte in the path"));
    }
    Ok(path_from_bytes(bytes))
}

#[cfg(unix)]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

/// Decodes `%XX` escapes; `None` if one is malformed.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::sync::{Mutex, mpsc};
    use std::thread::{self, JoinHandle};

    use super::*;

    /// What a test server saw of one connection: the request's path (empty if none came)
    /// and its `Authorization` header.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Seen {
        path: String,
        authorization: Option<String>,
    }

    /// A tiny HTTP/1.1 server on 127.0.0.1 (or another loopback address) for one test:
    /// each connection gets one answer from `respond(path, stream)`, in the order they
    /// were accepted, and is noted in `seen`. Stops when dropped.
    struct Server {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
        thread: Option<JoinHandle<()>>,
    }

    impl Server {
        fn start(respond: impl Fn(&str, &mut TcpStream) + Send + 'static) -> Self {
            Self::start_on(Ipv4Addr::LOCALHOST, respond).unwrap()
        }

        fn start_on(
            ip: Ipv4Addr,
            respond: impl Fn(&str, &mut TcpStream) + Send + 'static,
        ) -> io::Result<Self> {
            let listener = TcpListener::bind((ip, 0))?;
            let addr = listener.local_addr()?;
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            let thread = thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let request = read_request(&stream);
                    let path = request.as_ref().map(|r| r.path.clone()).unwrap_or_default();
                    if path == "/stop" {
                        return;
                    }
                    log.lock().unwrap().push(request.unwrap_or(Seen {
                        path: String::new(),
                        authorization: None,
                    }));
                    respond(&path, &mut stream);
                }
            });
            Ok(Self {
                addr,
                seen,
                thread: Some(thread),
            })
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn port(&self) -> u16 {
            self.addr.port()
        }

        /// The connections it accepted so far (but the markers of
        /// [`Server::seen_before_now`]).
        fn seen(&self) -> Vec<Seen> {
            let seen = self.seen.lock().unwrap();
            seen.iter()
                .filter(|s| s.path != "/marker")
                .cloned()
                .collect()
        }

        /// The connections it accepted before this call. Connections are answered in the
        /// order they were accepted, so once a request of the test's own is answered,
        /// every connection made before it is noted (one could still wait in the accept
        /// queue otherwise).
        fn seen_before_now(&self) -> Vec<Seen> {
            let marker = fetch(&self.url("/marker"), &limits(), &Reach::Operator);
            assert!(marker.is_ok(), "{marker:?}");
            self.seen()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Ok(mut stream) = TcpStream::connect(self.addr) {
                let _ = stream.write_all(b"GET /stop HTTP/1.1\r\n\r\n");
            }
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Reads a request's head: its path and `Authorization` header.
    fn read_request(stream: &TcpStream) -> Option<Seen> {
        let mut reader = BufReader::new(stream);
        let mut first = String::new();
        reader.read_line(&mut first).ok()?;
        let mut authorization = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("authorization")
            {
                authorization = Some(value.trim().to_owned());
            }
        }
        let path = first.split_whitespace().nth(1)?.to_owned();
        Some(Seen {
            path,
            authorization,
        })
    }

    /// A feed's reach with 127.0.0.1 allowed, and `file` URLs: what most tests here need.
    fn local() -> Reach {
        Reach::Feed(Arc::new(Guard {
            files: true,
            allow: vec!["127.0.0.1".parse().unwrap()],
            ..Guard::default()
        }))
    }

    /// A feed's reach with nothing allowed but `own`, and its token.
    fn guarded(own: Option<SocketAddr>, allow: &[&str]) -> Reach {
        Reach::Feed(Arc::new(Guard {
            files: false,
            allow: allow.iter().map(|r| r.parse().unwrap()).collect(),
            own,
            own_token: Some("the-own-token-0123".to_owned()),
        }))
    }

    fn png(stream: &mut TcpStream) {
        answer(stream, "200 OK", "content-type: image/png\r\n", &[7; 100]);
    }

    fn answer(stream: &mut TcpStream, status: &str, headers: &str, body: &[u8]) {
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    }

    fn limits() -> Limits {
        Limits {
            max_bytes: 1000,
            timeout: Duration::from_secs(10),
            max_redirects: 2,
        }
    }

    /// A directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("tether-download-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_body_is_fetched() {
        let server = Server::start(|path, stream| match path {
            "/a.png" => answer(stream, "200 OK", "content-type: image/png\r\n", &[7; 1000]),
            "/moved" => answer(stream, "302 Found", "location: /a.png\r\n", b""),
            _ => answer(stream, "404 Not Found", "", b"no"),
        });
        assert_eq!(
            fetch(&server.url("/a.png"), &limits(), &local()).unwrap(),
            vec![7; 1000]
        );
        assert_eq!(
            fetch(&server.url("/moved"), &limits(), &local())
                .unwrap()
                .len(),
            1000
        );
        // The operator's own URL (the feed document) reaches any address.
        let operator = fetch(&server.url("/a.png"), &limits(), &Reach::Operator).unwrap();
        assert_eq!(operator.len(), 1000);
    }

    #[test]
    fn an_address_not_allowed_is_refused_before_any_connection() {
        let server = Server::start(|_, stream| png(stream));
        let url = server.url("/a.png");
        let err = fetch(&url, &limits(), &guarded(None, &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{url}: refused: 127.0.0.1 is a loopback address; the operator can allow it \
                 with pipeline.download_allow"
            )
        );
        assert!(matches!(err, DownloadError::Refused { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert_eq!(err.url(), url);
        // Another range allowed is not this one.
        let err = fetch(&url, &limits(), &guarded(None, &["10.0.0.0/8", "::1"])).unwrap_err();
        assert!(matches!(err, DownloadError::Refused { .. }), "{err:?}");
        assert_eq!(server.seen_before_now(), []);
        // Allowed by address or by range, it is fetched.
        for allow in ["127.0.0.1", "127.0.0.0/8", "0.0.0.0/0"] {
            let body = fetch(&url, &limits(), &guarded(None, &[allow]));
            assert_eq!(body.map(|b| b.len()), Ok(100), "{allow}");
        }
    }

    #[test]
    fn every_spelling_of_a_loopback_address_is_refused() {
        let server = Server::start(|_, stream| png(stream));
        let port = server.port();
        // Each reaches this machine if connected to; all are checked as resolved.
        for (host, reason) in [
            (
                "[::ffff:127.0.0.1]",
                "::ffff:127.0.0.1 is a loopback address (the IPv4-mapped form of 127.0.0.1)",
            ),
            (
                "[::ffff:7f00:1]",
                "::ffff:127.0.0.1 is a loopback address (the IPv4-mapped form of 127.0.0.1)",
            ),
            ("[::1]", "::1 is a loopback address"),
            ("0.0.0.0", "0.0.0.0 is an unspecified address"),
            ("[::]", ":: is an unspecified address"),
            ("127.1", "127.1 resolves to 127.0.0.1, a loopback address"),
            (
                "2130706433",
                "2130706433 resolves to 127.0.0.1, a loopback address",
            ),
            (
                "0x7f000001",
                "0x7f000001 resolves to 127.0.0.1, a loopback address",
            ),
            ("localhost", "localhost resolves to "),
        ] {
            let url = format!("http://{host}:{port}/a.png");
            let err = fetch(&url, &limits(), &guarded(None, &[])).unwrap_err();
            assert!(
                matches!(err, DownloadError::Refused { .. }),
                "{url}: {err:?}"
            );
            assert!(err.to_string().contains(reason), "{url}: {err}");
        }
        assert_eq!(server.seen_before_now(), []);
    }

    #[test]
    fn a_redirect_to_an_address_not_allowed_is_refused() {
        // The target listens on 127.0.0.2: were the redirect followed, it would see it.
        let Ok(target) = Server::start_on(Ipv4Addr::new(127, 0, 0, 2), |_, stream| png(stream))
        else {
            panic!("this test needs 127.0.0.2, on the loopback interface on Linux");
        };
        let location = target.url("/a.png");
        let server = Server::start(move |path, stream| match path {
            "/moved" => answer(
                stream,
                "302 Found",
                &format!("location: {location}\r\n"),
                b"",
            ),
            _ => png(stream),
        });
        let url = server.url("/moved");
        let err = fetch(&url, &limits(), &guarded(None, &["127.0.0.1/32"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{url}: refused: redirected to {}, where 127.0.0.2 is a loopback address; the \
                 operator can allow it with pipeline.download_allow",
                target.url("/a.png")
            )
        );
        assert!(!err.is_transient());
        assert_eq!(target.seen_before_now(), []);
        assert_eq!(server.seen().len(), 1, "the redirect was asked for");
        // Allowed too, the redirect is followed.
        let body = fetch(&url, &limits(), &guarded(None, &["127.0.0.1", "127.0.0.2"]));
        assert_eq!(body.map(|b| b.len()), Ok(100));
    }

    #[test]
    fn the_own_address_is_allowed_exactly_and_alone_gets_the_token() {
        let other = Server::start(|_, stream| png(stream));
        let to_other = other.url("/files/b.png");
        let own = Server::start(move |path, stream| match path {
            "/files/away" => answer(
                stream,
                "302 Found",
                &format!("location: {to_other}\r\n"),
                b"",
            ),
            _ => png(stream),
        });
        let reach = guarded(Some(own.addr), &[]);
        let bearer = Some("Bearer the-own-token-0123".to_owned());
        assert_eq!(
            fetch(&own.url("/files/a.png"), &limits(), &reach).map(|b| b.len()),
            Ok(100)
        );
        assert_eq!(
            fetch(&own.url("/a.png"), &limits(), &reach).map(|b| b.len()),
            Ok(100)
        );
        assert_eq!(
            own.seen(),
            [
                Seen {
                    path: "/files/a.png".to_owned(),
                    authorization: bearer.clone()
                },
                // Outside /files/, no token.
                Seen {
                    path: "/a.png".to_owned(),
                    authorization: None
                },
            ]
        );
        // The same IP on another port is not the own address.
        let err = fetch(&other.url("/files/b.png"), &limits(), &reach).unwrap_err();
        assert!(
            err.to_string()
                .contains("refused: 127.0.0.1 is a loopback address"),
            "{err}"
        );
        assert_eq!(other.seen_before_now(), []);
        // A redirect away from the own address leaves the token behind.
        let both = guarded(Some(own.addr), &["127.0.0.1"]);
        assert_eq!(
            fetch(&own.url("/files/away"), &limits(), &both).map(|b| b.len()),
            Ok(100)
        );
        assert_eq!(
            own.seen()[2],
            Seen {
                path: "/files/away".to_owned(),
                authorization: bearer
            }
        );
        assert_eq!(
            other.seen(),
            [Seen {
                path: "/files/b.png".to_owned(),
                authorization: None
            }]
        );
        // Named by a name rather than by its IP, it gets no token either.
        let named = format!("http://localhost:{}/files/a.png", own.port());
        let _ = fetch(&named, &limits(), &both);
        assert!(
            own.seen()[3..].iter().all(|s| s.authorization.is_none()),
            "{:?}",
            own.seen()
        );
    }

    #[test]
    fn a_file_url_from_a_feed_that_is_not_local_is_refused() {
        let dir = TempDir::new("remote-file");
        let path = dir.0.join("secret.png");
        std::fs::write(&path, [1; 10]).unwrap();
        let url = format!("file://{}", path.display());
        let err = fetch(&url, &limits(), &guarded(None, &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{url}: refused: file URLs are followed only from a feed document that is \
                 itself a local file"
            )
        );
        assert!(!err.is_transient());
        assert_eq!(fetch(&url, &limits(), &local()).map(|b| b.len()), Ok(10));
        assert_eq!(
            fetch(&url, &limits(), &Reach::Operator).map(|b| b.len()),
            Ok(10)
        );
    }

    #[test]
    fn a_body_without_length_is_fetched() {
        let server = Server::start(|_, stream| {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(&[1; 900]);
        });
        assert_eq!(
            fetch(&server.url("/x"), &limits(), &local()).unwrap().len(),
            900
        );
    }

    #[test]
    fn client_errors_are_permanent_and_server_errors_transient() {
        let server = Server::start(|path, stream| match path {
            "/gone" => answer(stream, "404 Not Found", "", b"<html>not here</html>"),
            "/busy" => answer(stream, "503 Service Unavailable", "", b""),
            "/broken" => answer(stream, "500 Internal Server Error", "", b"oops"),
            _ => answer(stream, "429 Too Many Requests", "", b""),
        });
        let url = server.url("/gone");
        let err = fetch(&url, &limits(), &local()).unwrap_err();
        assert_eq!(
            err,
            DownloadError::Status {
                url: url.clone(),
                status: 404
            }
        );
        assert_eq!(err.to_string(), format!("{url}: HTTP status 404"));
        assert!(!err.is_transient());
        for path in ["/busy", "/broken", "/slow-down"] {
            let err = fetch(&server.url(path), &limits(), &local()).unwrap_err();
            assert!(matches!(err, DownloadError::Status { .. }), "{err}");
            assert!(err.is_transient(), "{err}");
        }
    }

    #[test]
    fn too_large_by_content_length_is_refused_before_the_body() {
        // The server announces a large body but sends none: only the header can refuse it.
        let (sent, body_sent) = mpsc::channel();
        let server = Server::start(move |_, stream| {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n");
            let _ = stream.flush();
            let _ = sent.send(());
            // Wait for the client to go away; a read returns when it closes.
            let _ = stream.read(&mut [0; 16]);
        });
        let url = server.url("/huge");
        let err = fetch(&url, &limits(), &local()).unwrap_err();
        assert_eq!(
            err,
            DownloadError::TooLarge {
                url: url.clone(),
                limit: 1000
            }
        );
        assert_eq!(
            err.to_string(),
            format!("{url}: larger than the limit of 1000 bytes")
        );
        assert!(!err.is_transient());
        body_sent.recv().unwrap();
    }

    #[test]
    fn too_large_without_content_length_stops_past_the_limit() {
        let (done, finished) = mpsc::channel();
        let server = Server::start(move |_, stream| {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
            // Up to 64 MiB, in chunks; the client gives up long before, and a write fails.
            let chunk = [0u8; 64 * 1024];
            let mut written = 0u64;
            for _ in 0..1024 {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                written += chunk.len() as u64;
            }
            let _ = done.send(written);
        });
        let err = fetch(&server.url("/endless"), &limits(), &local()).unwrap_err();
        assert!(
            matches!(err, DownloadError::TooLarge { limit: 1000, .. }),
            "{err}"
        );
        let written = finished.recv().unwrap();
        assert!(written < 64 * 1024 * 1024, "the client stopped reading");
    }

    #[test]
    fn exactly_the_limit_is_accepted() {
        let server = Server::start(|_, stream| {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(&[3; 1000]);
        });
        assert_eq!(
            fetch(&server.url("/x"), &limits(), &local()).unwrap().len(),
            1000
        );
        let mut small = limits();
        small.max_bytes = 999;
        let err = fetch(&server.url("/x"), &small, &local()).unwrap_err();
        assert!(
            matches!(err, DownloadError::TooLarge { limit: 999, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_redirect_chain_over_the_limit_is_refused() {
        let server = Server::start(|path, stream| {
            let n: u32 = path.trim_start_matches("/r/").parse().unwrap_or(0);
            answer(
                stream,
                "302 Found",
                &format!("location: /r/{}\r\n", n + 1),
                b"",
            );
        });
        let url = server.url("/r/0");
        let err = fetch(&url, &limits(), &local()).unwrap_err();
        assert_eq!(
            err,
            DownloadError::TooManyRedirects {
                url: url.clone(),
                limit: 2
            }
        );
        assert_eq!(err.to_string(), format!("{url}: more than 2 redirects"));
        assert!(!err.is_transient());
    }

    #[test]
    fn a_server_too_slow_times_out() {
        let (release, released) = mpsc::channel::<()>();
        let server = Server::start(move |_, stream| {
            // Hold the connection without answering until the test lets go.
            let _ = released.recv();
            answer(stream, "200 OK", "", b"late");
        });
        let mut short = limits();
        short.timeout = Duration::from_millis(300);
        let url = server.url("/slow");
        let err = fetch(&url, &short, &local()).unwrap_err();
        drop(release);
        assert_eq!(
            err,
            DownloadError::Timeout {
                url: url.clone(),
                timeout: Duration::from_millis(300)
            }
        );
        assert_eq!(err.to_string(), format!("{url}: not complete after 300ms"));
        assert!(err.is_transient());
    }

    #[test]
    fn a_body_too_slow_times_out() {
        let (release, released) = mpsc::channel::<()>();
        let server = Server::start(move |_, stream| {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf");
            let _ = stream.flush();
            let _ = released.recv();
        });
        let mut short = limits();
        short.timeout = Duration::from_millis(300);
        let err = fetch(&server.url("/stall"), &short, &local()).unwrap_err();
        drop(release);
        assert!(matches!(err, DownloadError::Timeout { .. }), "{err}");
    }

    #[test]
    fn a_closed_port_is_unreachable_and_transient() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/x.png");
        let err = fetch(&url, &limits(), &local()).unwrap_err();
        assert!(matches!(err, DownloadError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("{url}: unreachable: ")),
            "{err}"
        );
        assert!(err.is_transient());
    }

    #[test]
    fn a_broken_connection_is_transient() {
        let server = Server::start(|_, stream| {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf");
        });
        let err = fetch(&server.url("/cut"), &limits(), &local()).unwrap_err();
        assert!(err.is_transient(), "{err:?}");
    }

    #[test]
    fn a_file_url_is_read() {
        let dir = TempDir::new("file");
        let path = dir.0.join("a b.png");
        std::fs::write(&path, [9; 1000]).unwrap();
        let escaped = path.to_str().unwrap().replace(' ', "%20");
        assert_eq!(
            fetch(&format!("file://{escaped}"), &limits(), &local()).unwrap(),
            [9; 1000]
        );
        let localhost = format!("file://localhost{escaped}");
        assert_eq!(fetch(&localhost, &limits(), &local()).unwrap().len(), 1000);
        let mut small = limits();
        small.max_bytes = 10;
        let err = fetch(&format!("file://{escaped}"), &small, &local()).unwrap_err();
        assert!(
            matches!(err, DownloadError::TooLarge { limit: 10, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_is_a_permanent_error() {
        let dir = TempDir::new("missing");
        let url = format!("file://{}/nothing.png", dir.0.display());
        let err = fetch(&url, &limits(), &local()).unwrap_err();
        assert!(matches!(err, DownloadError::Io { .. }), "{err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("{url}: cannot read ")), "{text}");
        assert!(text.contains("nothing.png"), "{text}");
        assert!(!err.is_transient());
    }

    #[test]
    fn a_directory_is_not_a_file() {
        let dir = TempDir::new("dir");
        let url = format!("file://{}", dir.0.display());
        let err = fetch(&url, &limits(), &local()).unwrap_err();
        assert!(err.to_string().ends_with("is not a regular file"), "{err}");
    }

    #[test]
    fn bad_urls_and_schemes_are_refused() {
        let err = fetch("ftp://example.org/a.png", &limits(), &local()).unwrap_err();
        assert_eq!(
            err,
            DownloadError::Scheme {
                url: "ftp://example.org/a.png".to_owned(),
                scheme: "ftp".to_owned()
            }
        );
        assert_eq!(
            err.to_string(),
            r#"ftp://example.org/a.png: scheme "ftp" is not supported (only http, https and file)"#
        );
        assert!(!err.is_transient());
        for url in [
            "a.png",
            "/etc/passwd",
            "://x",
            "file://server/share/a.png",
            "file://relative",
            "file:///a%zz",
            "file:///a%00b",
            "http://",
            "http://exa mple.org/",
        ] {
            let err = fetch(url, &limits(), &local()).unwrap_err();
            assert!(matches!(err, DownloadError::BadUrl { .. }), "{url}: {err}");
            assert!(!err.is_transient());
            assert_eq!(err.url(), url);
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%20b%2F%c3%a9").unwrap(), b"/a b/\xc3\xa9");
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%g0"), None);
    }
}
