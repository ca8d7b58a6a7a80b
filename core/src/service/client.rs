//! The client of a network License Management Service (SPEC §5.3): blocking `ureq` over HTTP or
//! HTTPS (rustls; the system's roots plus the PEM bundle of `WMLICENSE_CA_FILE`), run on a
//! helper thread so that a cancel ends any network wait within 100 ms.
//!
//! Transient failures (no connection, 5xx, 429) are retried with backoff, with the same request
//! ID, until the request timeout (`WMLICENSE_SERVICE_TIMEOUT_MS`, default 30 s); a refusal is
//! final.

use super::wire::{
    ErrorBody, GrantAnswer, GrantBody, KeyBody, ReleaseAnswer, ReleaseBody, ResetAnswer, ResetBody,
    PATH_GRANT, PATH_RELEASE, PATH_RESET, PATH_SERVICE_KEY,
};
use super::{
    GrantReply, GrantRequest, Interrupt, LicenseService, ReleaseReply, ReleaseRequest, ResetReply,
    ResetRequest, ServiceKey,
};
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time to establish a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole request, retries included (`WMLICENSE_SERVICE_TIMEOUT_MS` overrides).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a network wait looks at the cancel flag.
const POLL: Duration = Duration::from_millis(10);
/// Largest answer read.
const MAX_ANSWER: u64 = 1 << 20;

/// A License Management Service reached over HTTP(S).
pub struct NetworkService {
    base: String,
    agent: ureq::Agent,
    timeout: Duration,
}

/// One HTTP exchange's outcome.
enum Exchange {
    /// A status and body (2xx or a 4xx/5xx with a body).
    Answer(u16, Option<u64>, Vec<u8>),
    /// No answer: the cause.
    Transport(String),
}

impl NetworkService {
    /// A client of the service at `url` (`http://` or `https://`).
    pub fn new(url: &str) -> Result<NetworkService> {
        let lower = url.to_ascii_lowercase();
        let https = lower.starts_with("https://");
        if !https && !lower.starts_with("http://")
            || url.len() <= "https://".len() - (!https) as usize
        {
            return Err(Error::InvalidArg(format!(
                "ServiceUrl must be an http:// or https:// URL, not {url:?}"
            )));
        }
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .redirects(0)
            .user_agent(concat!("wmlicense/", env!("CARGO_PKG_VERSION")));
        if https {
            builder = builder.tls_config(Arc::new(tls_config()?));
        }
        let timeout = std::env::var("WMLICENSE_SERVICE_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .unwrap_or(REQUEST_TIMEOUT);
        Ok(NetworkService {
            base: url.trim_end_matches('/').to_string(),
            agent: builder.build(),
            timeout,
        })
    }

    /// Sends one request, retrying transient failures until the timeout; returns a 2xx body,
    /// or the error a refusal means.
    fn call(&self, path: &str, body: Option<Vec<u8>>, interrupt: Interrupt<'_>) -> Result<Vec<u8>> {
        let url = format!("{}{}", self.base, path);
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let cause = match self.exchange(&url, body.clone(), left, interrupt)? {
                Exchange::Answer(status, _, b) if (200..300).contains(&status) => return Ok(b),
                Exchange::Answer(status, retry_after, b) => {
                    let parsed: Option<ErrorBody> = serde_json::from_slice(&b).ok();
                    let err = parsed.unwrap_or_else(|| ErrorBody {
                        error: "http".into(),
                        message: String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned(),
                        ..ErrorBody::default()
                    });
                    let message = err.message.clone();
                    match err.into_error(status) {
                        Some(e) => return Err(e),
                        None => {
                            if let Some(s) = retry_after {
                                backoff = Duration::from_secs(s).max(backoff);
                            }
                            format!("HTTP {status}: {message}")
                        }
                    }
                }
                Exchange::Transport(cause) => cause,
            };
            let now = Instant::now();
            if now + backoff >= deadline {
                return Err(Error::ServiceUnavailable(format!(
                    "{url}: {cause} (gave up after {} ms)",
                    self.timeout.as_millis()
                )));
            }
            sleep_interruptibly(backoff, interrupt)?;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One attempt, on a helper thread: the worker waits for it in steps of 10 ms and leaves
    /// at once when the operation is cancelled (the helper finishes on its own).
    fn exchange(
        &self,
        url: &str,
        body: Option<Vec<u8>>,
        left: Duration,
        interrupt: Interrupt<'_>,
    ) -> Result<Exchange> {
        let (tx, rx) = mpsc::channel();
        let agent = self.agent.clone();
        let url_owned = url.to_string();
        std::thread::Builder::new()
            .name("wmlicense-http".into())
            .spawn(move || {
                let _ = tx.send(exchange_blocking(&agent, &url_owned, body, left));
            })
            .map_err(|e| Error::Internal(format!("cannot start a network thread: {e}")))?;
        loop {
            if interrupt() {
                return Err(Error::Canceled);
            }
            match rx.recv_timeout(POLL) {
                Ok(x) => return Ok(x),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Ok(Exchange::Transport("the network thread failed".into()))
                }
            }
        }
    }

    fn call_json<A: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<Vec<u8>>,
        interrupt: Interrupt<'_>,
    ) -> Result<A> {
        let b = self.call(path, body, interrupt)?;
        serde_json::from_slice(&b).map_err(|e| self.malformed(path, e))
    }

    fn malformed(&self, path: &str, e: impl std::fmt::Display) -> Error {
        Error::ServiceUnavailable(format!(
            "{}{path}: the answer is not what the License Management Service API defines: {e}",
            self.base
        ))
    }
}

fn exchange_blocking(
    agent: &ureq::Agent,
    url: &str,
    body: Option<Vec<u8>>,
    left: Duration,
) -> Exchange {
    let left = left.max(Duration::from_millis(1));
    let sent = match body {
        Some(b) => agent
            .post(url)
            .timeout(left)
            .set("Content-Type", "application/json")
            .send_bytes(&b),
        None => agent.get(url).timeout(left).call(),
    };
    let resp = match sent {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Exchange::Transport(t.to_string()),
    };
    let status = resp.status();
    let retry_after = resp
        .header("Retry-After")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s.min(60));
    let mut buf = Vec::new();
    use std::io::Read;
    match resp.into_reader().take(MAX_ANSWER).read_to_end(&mut buf) {
        Ok(_) => Exchange::Answer(status, retry_after, buf),
        Err(e) => Exchange::Transport(format!("reading the answer: {e}")),
    }
}

fn sleep_interruptibly(d: Duration, interrupt: Interrupt<'_>) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupt() {
            return Err(Error::Canceled);
        }
        std::thread::sleep(POLL.min(end.saturating_duration_since(Instant::now())));
    }
    if interrupt() {
        return Err(Error::Canceled);
    }
    Ok(())
}

/// The system's root certificates plus those of `WMLICENSE_CA_FILE`.
fn tls_config() -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(file) = std::env::var_os("WMLICENSE_CA_FILE").filter(|f| !f.is_empty()) {
        let bad = |e: &dyn std::fmt::Display| {
            Error::InvalidArg(format!(
                "WMLICENSE_CA_FILE {}: not a PEM certificate bundle: {e}",
                std::path::Path::new(&file).display()
            ))
        };
        let mut n = 0;
        for cert in CertificateDer::pem_file_iter(&file).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad(&"no certificate in it"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn json<T: serde::Serialize>(v: &T) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(v).expect("a request body serializes"))
}

impl LicenseService for NetworkService {
    fn is_remote(&self) -> bool {
        true
    }

    fn service_key(&self, interrupt: Interrupt<'_>) -> Result<ServiceKey> {
        let k: KeyBody = self.call_json(PATH_SERVICE_KEY, None, interrupt)?;
        k.parse().map_err(|e| self.malformed(PATH_SERVICE_KEY, e.0))
    }

    fn grant(&self, req: &GrantRequest, interrupt: Interrupt<'_>) -> Result<GrantReply> {
        let a: GrantAnswer = self.call_json(PATH_GRANT, json(&GrantBody::of(req)), interrupt)?;
        a.parse().map_err(|e| self.malformed(PATH_GRANT, e.0))
    }

    fn release(&self, req: &ReleaseRequest, interrupt: Interrupt<'_>) -> Result<ReleaseReply> {
        let a: ReleaseAnswer =
            self.call_json(PATH_RELEASE, json(&ReleaseBody::of(req)), interrupt)?;
        a.parse().map_err(|e| self.malformed(PATH_RELEASE, e.0))
    }

    fn reset(&self, req: &ResetRequest, interrupt: Interrupt<'_>) -> Result<ResetReply> {
        let a: ResetAnswer = self.call_json(PATH_RESET, json(&ResetBody::of(req)), interrupt)?;
        a.parse().map_err(|e| self.malformed(PATH_RESET, e.0))
    }
}
