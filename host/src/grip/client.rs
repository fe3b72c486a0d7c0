//! The HTTP/1.1 client that carries events to backends: one pool of kept-alive
//! connections per host, a deadline per request, a cap on the response body,
//! and errors sorted by whether the backend can have seen the request.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// How long an idle kept-alive connection to a backend stays open.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// A backend's answer.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No connection could be made: the backend has not seen the request.
    #[error("cannot connect: {0}")]
    Unreachable(String),
    /// No complete answer within the deadline: the backend may have seen it.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer's body was larger than allowed.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// The connection failed after the request was sent (or while it was).
    #[error("{0}")]
    Broken(String),
}

impl Failure {
    /// Whether sending the same request again cannot make the backend see
    /// it twice.
    pub fn retryable(&self) -> bool {
        matches!(self, Failure::Unreachable(_))
    }

    /// The reason label of the backend error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Unreachable(_) => "unreachable",
            Failure::Timeout(_) => "timeout",
            Failure::TooLarge(_) | Failure::Broken(_) => "garbage",
        }
    }
}

/// A pooled HTTP/1.1 client.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    /// A client whose connections connect within `connect_timeout`, keeping
    /// at most `max_idle` idle ones.
    pub fn new(connect_timeout: Duration, max_idle: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(max_idle)
            .build(connector);
        HttpClient { inner }
    }

    /// POSTs `body` to `uri` with `headers`; the answer must be complete
    /// within `deadline` and its body at most `max_body` bytes.
    pub async fn post(
        &self,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
        deadline: Duration,
        max_body: usize,
    ) -> Result<Answer, Failure> {
        let mut req = Request::post(uri).body(Full::new(body)).map_err(|e| Failure::Broken(e.to_string()))?;
        *req.headers_mut() = headers;
        let exchange = async {
            let resp = self.inner.request(req).await.map_err(|e| {
                if e.is_connect() { Failure::Unreachable(source_chain(&e)) } else { Failure::Broken(source_chain(&e)) }
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, max_body).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    Failure::TooLarge(max_body)
                } else {
                    Failure::Broken(format!("reading the answer: {e}"))
                }
            })?;
            Ok(Answer { status: parts.status, headers: parts.headers, body: body.to_bytes() })
        };
        tokio::time::timeout(deadline, exchange).await.map_err(|_| Failure::Timeout(deadline))?
    }
}

/// An error and its causes on one line.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
