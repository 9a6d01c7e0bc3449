//! The load generator's HTTP client: raw hyper HTTP/1.1 keep-alive connections.
//!
//! This module owns the [`Endpoint`] (the parsed `--target`, its address, and the headers every
//! request carries: `Host`, `Content-Type`, `Authorization`) and [`Connection`], one keep-alive
//! connection driven by hyper's low-level `client::conn::http1` API: no pool, no retries, no
//! redirects, one request at a time. A connection that fails or times out is dropped by its
//! owner and a new one is opened; what failed is reported as a [`TransportError`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest accepted `--target`.
const TARGET_CHARS_MAX: usize = 256;

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: SocketAddr, reason: String },
    #[error("the connection failed: {0}")]
    Connection(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl TransportError {
    /// The key under which the report counts this failure.
    pub fn result_key(&self) -> &'static str {
        match self {
            TransportError::Connect { .. } => "connect_error",
            TransportError::Connection(_) => "connection_error",
            TransportError::Timeout(_) => "timeout",
        }
    }
}

/// Why `--target` is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("--target must look like http://HOST:PORT, got {0:?}")]
    Malformed(String),
    #[error("--target {0:?}: only plain http:// is supported")]
    NotHttp(String),
    #[error("--target {target:?}: cannot resolve {host}: {reason}")]
    Resolve { target: String, host: String, reason: String },
    #[error("--token is not a valid header value")]
    Token,
}

/// Where the load goes, and the headers every request carries.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `--target` as given, without a trailing `/`.
    pub target: String,
    pub address: SocketAddr,
    host: HeaderValue,
    authorization: Option<HeaderValue>,
    request_timeout: Duration,
}

/// `HOST:PORT` of a `http://HOST:PORT` target (a trailing `/` is allowed, nothing else).
pub fn parse_target(target: &str) -> Result<(String, u16), TargetError> {
    let malformed = || TargetError::Malformed(target.to_owned());
    if target.len() > TARGET_CHARS_MAX {
        return Err(malformed());
    }
    let Some(rest) = target.strip_prefix("http://") else {
        return Err(if target.contains("://") { TargetError::NotHttp(target.to_owned()) } else { malformed() });
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(malformed());
    }
    let (host, port) = authority.rsplit_once(':').ok_or_else(malformed)?;
    let port: u16 = port.parse().map_err(|_| malformed())?;
    let host = host.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || port == 0 {
        return Err(malformed());
    }
    Ok((host.to_owned(), port))
}

impl Endpoint {
    /// Parses and resolves `target`; `token` becomes `Authorization: Bearer TOKEN`.
    pub async fn resolve(
        target: &str,
        token: Option<&str>,
        request_timeout: Duration,
    ) -> Result<Endpoint, TargetError> {
        let (host, port) = parse_target(target)?;
        let resolve_error =
            |reason: String| TargetError::Resolve { target: target.to_owned(), host: host.clone(), reason };
        let mut addresses =
            tokio::net::lookup_host((host.as_str(), port)).await.map_err(|error| resolve_error(error.to_string()))?;
        let address = addresses.next().ok_or_else(|| resolve_error("no address".to_owned()))?;
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let host = HeaderValue::from_str(&authority).map_err(|_| TargetError::Malformed(target.to_owned()))?;
        let authorization = token
            .map(|token| HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| TargetError::Token))
            .transpose()?;
        Ok(Endpoint { target: target.trim_end_matches('/').to_owned(), address, host, authorization, request_timeout })
    }

    /// Opens a keep-alive connection.
    pub async fn connect(&self) -> Result<Connection, TransportError> {
        let connect_error = |reason: String| TransportError::Connect { address: self.address, reason };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.address))
            .await
            .map_err(|_| connect_error(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|error| connect_error(error.to_string()))?;
        stream.set_nodelay(true).map_err(|error| connect_error(error.to_string()))?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|error| connect_error(error.to_string()))?;
        let driver = tokio::spawn(async move {
            // The connection's end (the peer closed it, or it failed) surfaces as an error of
            // the next request on the sender.
            let _ = connection.await;
        });
        Ok(Connection { sender, driver })
    }

    /// A request with the common headers; `body` is JSON.
    fn request(&self, method: Method, path: Uri, body: Option<Bytes>) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body.clone().unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = path;
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        request
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    /// Sends one request and reads the whole answer, within the endpoint's request timeout.
    pub async fn send(
        &mut self,
        endpoint: &Endpoint,
        method: Method,
        path: Uri,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), TransportError> {
        let request = endpoint.request(method, path, body);
        let exchange = async {
            self.sender.ready().await.map_err(|error| TransportError::Connection(error.to_string()))?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|error| TransportError::Connection(error.to_string()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| TransportError::Connection(error.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(endpoint.request_timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout(endpoint.request_timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_http_host_and_port() {
        assert_eq!(parse_target("http://127.0.0.1:8080").unwrap(), ("127.0.0.1".to_owned(), 8080));
        assert_eq!(parse_target("http://localhost:1/").unwrap(), ("localhost".to_owned(), 1));
        assert_eq!(parse_target("http://[::1]:9000").unwrap(), ("::1".to_owned(), 9000));
        assert!(matches!(parse_target("https://127.0.0.1:8080"), Err(TargetError::NotHttp(_))));
        for bad in [
            "127.0.0.1:8080",
            "http://127.0.0.1",
            "http://127.0.0.1:0",
            "http://127.0.0.1:99999",
            "http://:80",
            "http://host:80/v1",
            "http://user@host:80",
            "",
        ] {
            assert!(matches!(parse_target(bad), Err(TargetError::Malformed(_))), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_target_is_a_connect_error() {
        // Bind then drop a listener: its port is (almost certainly) closed now.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let endpoint =
            Endpoint::resolve(&format!("http://127.0.0.1:{port}"), None, Duration::from_secs(1)).await.unwrap();
        let error = endpoint.connect().await.err().expect("nothing listens there");
        assert_eq!(error.result_key(), "connect_error");
        assert!(error.to_string().contains(&port.to_string()), "{error}");
    }
}
