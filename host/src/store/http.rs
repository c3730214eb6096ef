//! The HTTP client object_store talks to the store with: hyper-util's
//! pooled client over rustls with ring, as towards origins, trusting the
//! system store and `--upstream-ca`. Plain HTTP only with AWS_ALLOW_HTTP.

use std::{error::Error as StdError, time::Duration};

use http_body_util::BodyExt;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{connect::HttpConnector as TcpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use object_store::{
    client::{
        HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
        HttpResponse, HttpResponseBody, HttpService,
    },
    ClientConfigKey, ClientOptions,
};

/// Connecting to the store.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Sending one request (an upload's body included) and getting its
/// response head. A lookup is bounded tighter by its caller.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the store's client; object_store asks once per store.
#[derive(Debug)]
pub struct Connector {
    tls: rustls::ClientConfig,
}

impl Connector {
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Self { tls }
    }
}

impl HttpConnector for Connector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let allow_http = options
            .get_config_value(&ClientConfigKey::AllowHttp)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let tls = HttpsConnectorBuilder::new().with_tls_config(self.tls.clone());
        let tls = if allow_http {
            tls.https_or_http()
        } else {
            tls.https_only()
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(tls.enable_http1().wrap_connector(tcp));
        Ok(HttpClient::new(Service { client }))
    }
}

#[derive(Debug)]
struct Service {
    client: Client<HttpsConnector<TcpConnector>, HttpRequestBody>,
}

#[async_trait::async_trait]
impl HttpService for Service {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| {
                let timeout = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no response within {}s", REQUEST_TIMEOUT.as_secs()),
                );
                HttpError::new(HttpErrorKind::Timeout, timeout)
            })?
            .map_err(|e| {
                let kind = kind(&e);
                HttpError::new(kind, e)
            })?;
        Ok(response.map(|body| {
            HttpResponseBody::new(body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e)))
        }))
    }
}

/// What object_store's retries need to know of a failure: connecting and
/// a connection that closed under a request are retried, others not.
fn kind(error: &hyper_util::client::legacy::Error) -> HttpErrorKind {
    if error.is_connect() {
        return HttpErrorKind::Connect;
    }
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            if e.is_closed() || e.is_incomplete_message() || e.is_canceled() {
                return HttpErrorKind::Request;
            }
            if e.is_timeout() {
                return HttpErrorKind::Timeout;
            }
        }
        if let Some(e) = e.downcast_ref::<std::io::Error>() {
            return match e.kind() {
                std::io::ErrorKind::TimedOut => HttpErrorKind::Timeout,
                _ => HttpErrorKind::Interrupted,
            };
        }
        source = e.source();
    }
    HttpErrorKind::Unknown
}
