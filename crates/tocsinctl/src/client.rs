//! The connection to `tocsin-ingest serve`, with the bearer token on every call, and the
//! translation of what can go wrong into one readable line and an exit code.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tocsin_proto::v1::component_service_client::ComponentServiceClient;
use tocsin_proto::v1::incident_service_client::IncidentServiceClient;
use tocsin_proto::v1::operations_service_client::OperationsServiceClient;
use tocsin_proto::v1::subscriber_service_client::SubscriberServiceClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

/// Why a command failed. Each variant has its own exit code, so scripts can tell a typo from
/// an outage.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CtlError {
    /// The command line or an input file is wrong; nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached, or said it cannot serve now.
    #[error("{0}")]
    Unreachable(String),
    /// The server refused the token, or the token's role may not do this.
    #[error("{0}")]
    Unauthenticated(String),
    /// The server refused the request for what it asks.
    #[error("{0}")]
    Refused(String),
    /// `watch` saw every delivery settle, and some of them dead: replay them once the cause
    /// is fixed.
    #[error("{0}")]
    DeliveriesDead(String),
}

impl CtlError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused(_) => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable(_) => 3,
            CtlError::Unauthenticated(_) => 4,
            CtlError::DeliveriesDead(_) => 5,
        }
    }

    /// What a status from the server means for the operator.
    pub(crate) fn from_status(status: &Status, endpoint: &str) -> CtlError {
        let message = status.message();
        match status.code() {
            Code::Unauthenticated => CtlError::Unauthenticated(format!(
                "{endpoint} refused the token ({message}); set TOCSIN_TOKEN or --token to a \
                 token from the server's TOCSIN_OPERATOR_TOKENS or TOCSIN_PUBLISHER_TOKENS"
            )),
            Code::PermissionDenied => {
                CtlError::Unauthenticated(format!("the token may not do this: {message}"))
            }
            Code::InvalidArgument | Code::OutOfRange => {
                CtlError::Usage(format!("invalid argument: {message}"))
            }
            Code::Unavailable | Code::DeadlineExceeded => {
                // A connection that breaks mid-call surfaces here with the I/O error inside.
                let cause = io_cause(status).unwrap_or_else(|| message.to_owned());
                CtlError::Unreachable(format!("{endpoint} is unavailable: {cause}"))
            }
            Code::NotFound => CtlError::Refused(format!("not found: {message}")),
            Code::FailedPrecondition => CtlError::Refused(format!("not allowed now: {message}")),
            Code::AlreadyExists => CtlError::Refused(format!("already exists: {message}")),
            Code::Aborted => CtlError::Refused(format!("conflict: {message}")),
            Code::ResourceExhausted => CtlError::Refused(format!("too large: {message}")),
            code => CtlError::Refused(format!("the server answered {code:?}: {message}")),
        }
    }
}

/// The innermost I/O error under a status or transport error, e.g. "Connection refused".
fn io_cause(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut found = None;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            found = Some(match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                _ => io.to_string(),
            });
        }
        source = e.source();
    }
    found
}

/// Refuses an endpoint without `http://` or `https://` before any connection is tried: the
/// URL parser would take `127.0.0.1:50051` for a host and fail later with a riddle.
fn check_scheme(endpoint: &str) -> Result<(), CtlError> {
    match endpoint.split_once("://") {
        None => Err(CtlError::Usage(format!(
            "--endpoint {endpoint} has no scheme; use http://{endpoint} (plaintext) or \
             https://{endpoint} (TLS)"
        ))),
        Some(("http" | "https", _)) => Ok(()),
        Some((scheme, rest)) => Err(CtlError::Usage(format!(
            "--endpoint {endpoint}: the scheme is http:// (plaintext) or https:// (TLS), not \
             {scheme}://; use http://{rest} or https://{rest}"
        ))),
    }
}

/// Whether a failed TLS connection failed because the other end answered in the clear:
/// rustls then finds bytes that are no TLS record ("received corrupt message of type
/// InvalidContentType"). The error is matched by its text because rustls is not a direct
/// dependency, and its types sit under several layers of hyper and tonic.
fn is_plaintext_answer(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("InvalidContentType") || text.contains("corrupt message") {
            return true;
        }
        source = e.source();
    }
    false
}

/// The `http://` twin of an `https://` endpoint.
fn plaintext_twin(endpoint: &str) -> String {
    format!(
        "http://{}",
        endpoint.strip_prefix("https://").unwrap_or(endpoint)
    )
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub(crate) struct BearerToken(AsciiMetadataValue);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, BearerToken>;

/// Where the server is and how to authenticate; connected once per command.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) endpoint: String,
    channel: Channel,
    token: BearerToken,
}

impl Server {
    /// Connects to `endpoint` (`http://host:port`, or `https://` for a server with TLS,
    /// verified against the system's CAs and `ca_cert` if given), failing fast with a
    /// readable reason.
    pub(crate) async fn connect(
        endpoint: &str,
        token: Option<&SecretString>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Server, CtlError> {
        check_scheme(endpoint)?;
        let token = token.ok_or_else(|| {
            CtlError::Usage(
                "no token: set TOCSIN_TOKEN or --token to a token from the server's \
                 TOCSIN_OPERATOR_TOKENS (or, to publish and read incidents only, \
                 TOCSIN_PUBLISHER_TOKENS)"
                    .into(),
            )
        })?;
        let header = MetadataValue::try_from(format!("Bearer {}", token.expose_secret()))
            .map_err(|_| CtlError::Usage("the token holds characters a header cannot".into()))?;
        let target = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|_| {
                CtlError::Usage(format!(
                    "--endpoint {endpoint:?} is not a URL like http://127.0.0.1:50051 or \
                     https://tocsin.example:50051"
                ))
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let tls = endpoint.starts_with("https://");
        let target = if tls {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = ca_cert {
                let pem = std::fs::read(path).map_err(|e| {
                    CtlError::Usage(format!(
                        "TOCSIN_CA_CERT: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            target
                .tls_config(tls)
                .map_err(|e| CtlError::Usage(format!("TLS for {endpoint}: {e}")))?
        } else {
            target
        };
        let channel = target.connect().await.map_err(|e| {
            if tls && is_plaintext_answer(&e) {
                return CtlError::Unreachable(format!(
                    "the server at {endpoint} does not speak TLS; use {}",
                    plaintext_twin(endpoint)
                ));
            }
            let cause = io_cause(&e).unwrap_or_else(|| e.to_string());
            CtlError::Unreachable(format!(
                "cannot reach Tocsin at {endpoint}: {cause} (is `tocsin-ingest serve` running \
                 there? set --endpoint or TOCSIN_ENDPOINT)"
            ))
        })?;
        Ok(Server {
            endpoint: endpoint.to_owned(),
            channel,
            token: BearerToken(header),
        })
    }

    pub(crate) fn incidents(&self) -> IncidentServiceClient<Authed> {
        IncidentServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }

    pub(crate) fn subscribers(&self) -> SubscriberServiceClient<Authed> {
        SubscriberServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }

    pub(crate) fn components(&self) -> ComponentServiceClient<Authed> {
        ComponentServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }

    pub(crate) fn operations(&self) -> OperationsServiceClient<Authed> {
        OperationsServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }

    /// Turns a failed call into the operator's error.
    pub(crate) fn fail(&self, status: Status) -> CtlError {
        CtlError::from_status(&status, &self.endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes_an_operator_can_script_on() {
        let cases = [
            (Status::unauthenticated("unknown bearer token"), 4),
            (Status::invalid_argument("title: is required"), 2),
            (Status::unavailable("the event log is unavailable"), 3),
            (Status::not_found("incident x does not exist"), 1),
            (Status::failed_precondition("resolved"), 1),
            (Status::internal("internal error"), 1),
        ];
        for (status, code) in cases {
            let error = CtlError::from_status(&status, "http://127.0.0.1:1");
            assert_eq!(error.exit_code(), code, "{status:?} -> {error}");
            assert!(error.to_string().contains(status.message()), "{error}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_says_where_and_what_to_check() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let token = SecretString::from("0123456789abcdef");
        let error = Server::connect(&endpoint, Some(&token), None)
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), 3);
        let text = error.to_string();
        assert!(
            text.contains(&endpoint) && text.contains("connection refused"),
            "{text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
    }

    #[tokio::test]
    async fn a_missing_token_or_a_bad_endpoint_is_a_usage_error() {
        let error = Server::connect("http://127.0.0.1:1", None, None)
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("TOCSIN_TOKEN"), "{error}");
        let token = SecretString::from("0123456789abcdef");
        let error = Server::connect("not a url", Some(&token), None)
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), 2, "{error}");
    }

    #[tokio::test]
    async fn an_endpoint_without_a_scheme_is_told_which_to_add() {
        let token = SecretString::from("0123456789abcdef");
        let error = Server::connect("127.0.0.1:50051", Some(&token), None)
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert_eq!(
            error.to_string(),
            "--endpoint 127.0.0.1:50051 has no scheme; use http://127.0.0.1:50051 \
             (plaintext) or https://127.0.0.1:50051 (TLS)"
        );
        let error = Server::connect("grpc://tocsin.example:50051", Some(&token), None)
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error
                .to_string()
                .contains("not grpc://; use http://tocsin.example:50051"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn https_to_a_server_that_answers_in_the_clear_says_to_use_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A plaintext HTTP/2 server opens with its SETTINGS frame, which is no TLS record;
        // this one sends one and reads whatever comes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
                let _ = socket.write_all(&settings).await;
                let mut sink = [0u8; 1024];
                while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        });
        let token = SecretString::from("0123456789abcdef");
        let endpoint = format!("https://127.0.0.1:{port}");
        let error = Server::connect(&endpoint, Some(&token), None)
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), 3);
        assert_eq!(
            error.to_string(),
            format!("the server at {endpoint} does not speak TLS; use http://127.0.0.1:{port}")
        );
    }
}
