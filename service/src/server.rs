//! The HTTP API (SPEC §5.4, `service/openapi.json`): grant, release, reset, service key,
//! health, metrics, and the operator's endpoints behind a bearer token.
//!
//! Every decision runs the core's [`Authority`] on a blocking thread (the ledger is
//! synchronous); bad requests are answered with a 4xx JSON body before the ledger is touched.
#![allow(clippy::result_large_err)] // a handler's error is the Response it sends

use crate::ledger::AnyLedger;
use crate::metrics::Metrics;
use crate::net::Cidr;
use crate::ratelimit::RateLimiter;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wmlicense_core::format::MAX_BACKUP_LINEAGES;
use wmlicense_core::service::wire::{
    BadRequest, ErrorBody, GrantAnswer, GrantBody, KeyBody, ReleaseAnswer, ReleaseBody,
    ResetAnswer, ResetBody, MAX_BODY, PATH_GRANT, PATH_HEALTH, PATH_RELEASE, PATH_RESET,
    PATH_SERVICE_KEY,
};
use wmlicense_core::service::{hex, hex_array, Authority, Device};
use wmlicense_core::Error;

pub type Service = Authority<AnyLedger>;

pub struct AppState {
    pub authority: Arc<Service>,
    pub metrics: Metrics,
    /// Per lineage (per device for releases), after authentication.
    pub limiter: RateLimiter<[u8; 16]>,
    /// Per client address, before anything else.
    pub client_limiter: RateLimiter<IpAddr>,
    pub trusted_proxies: Vec<Cidr>,
    pub admin_token: Option<String>,
    pub body_timeout: Duration,
}

/// What [`app`] builds a service's router from.
pub struct Config {
    pub authority: Arc<Service>,
    /// The bearer token of the /v1/admin endpoints (`None`: disabled, 403).
    pub admin_token: Option<String>,
    /// Requests per second per lineage (per device for releases); 0: no limit.
    pub rate_limit: f64,
    pub rate_burst: u32,
    /// Anonymous requests (grant, release, reset) per second per client address; 0: no limit.
    pub client_rate_limit: f64,
    pub client_rate_burst: u32,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Cidr>,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
}

impl Config {
    /// The defaults of `wmlicense-service serve` for `authority`.
    pub fn new(authority: Arc<Service>) -> Config {
        Config {
            authority,
            admin_token: None,
            rate_limit: 10.0,
            rate_burst: 50,
            client_rate_limit: 5.0,
            client_rate_burst: 20,
            trusted_proxies: Vec::new(),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// The peer address of a request's connection (set by the server for each connection).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// What a response says in the metrics and the log line: "ok" or its error code.
#[derive(Clone, Copy)]
struct Outcome(&'static str);

fn json_response<T: Serialize>(status: u16, outcome: &'static str, body: &T) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).unwrap_or_default(),
    )
        .into_response();
    r.extensions_mut().insert(Outcome(outcome));
    r
}

fn ok<T: Serialize>(body: &T) -> Response {
    json_response(200, "ok", body)
}

fn error_response(e: &Error) -> Response {
    let (status, body) = ErrorBody::of(e);
    let code = wmlicense_core::service::wire::error_code(e).1;
    json_response(status, code, &body)
}

fn bad_request(message: impl Into<String>) -> Response {
    json_response(400, "bad_request", &ErrorBody::bad_request(message))
}

fn refusal(status: u16, code: &'static str, message: impl Into<String>) -> Response {
    json_response(
        status,
        code,
        &ErrorBody {
            error: code.into(),
            message: message.into(),
            ..ErrorBody::default()
        },
    )
}

/// The body as JSON of type `T`, or the 4xx to answer instead.
fn parse_body<T: for<'de> Deserialize<'de>>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Response> {
    let bytes = body.map_err(|rej| {
        let status = rej.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            refusal(
                413,
                "payload_too_large",
                format!("request bodies are limited to {MAX_BODY} bytes"),
            )
        } else {
            refusal(status.as_u16(), "bad_request", rej.body_text())
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| bad_request(format!("the body is not the JSON this endpoint takes: {e}")))
}

/// Runs a decision on a blocking thread.
async fn decide<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Service) -> wmlicense_core::Result<T> + Send + 'static,
) -> wmlicense_core::Result<T> {
    let authority = state.authority.clone();
    tokio::task::spawn_blocking(move || f(&authority))
        .await
        .unwrap_or_else(|e| Err(Error::Internal(format!("a decision panicked: {e}"))))
}

/// A handler's refusal: any 4xx/5xx response, so that handlers use `?` on decisions
/// (`wmlicense_core::Error`) and on checks that answer with a response.
pub struct ApiError(Response);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError(error_response(&e))
    }
}

impl From<Response> for ApiError {
    fn from(r: Response) -> ApiError {
        ApiError(r)
    }
}

type Answer = Result<Response, ApiError>;

/// What a rate-limited decision came to.
enum Decided<T> {
    Done(T),
    /// Seconds to wait (429).
    Limited(u64),
}

/// Runs on a blocking thread: `verify` authenticates the request (opens a header sealed to
/// this service, checks a device's proof: the one X25519 open of the request) and gives what
/// `f` needs of it; then the request's `keys` (lineages, or the device) are charged to their
/// rate (unauthenticated requests never use up anybody's), and `f` decides.
async fn decide_limited<V: Send + 'static, T: Send + 'static>(
    state: &Arc<AppState>,
    keys: Vec<[u8; 16]>,
    verify: impl FnOnce(&Service) -> wmlicense_core::Result<V> + Send + 'static,
    f: impl FnOnce(&Service, V) -> wmlicense_core::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let st = state.clone();
    let decided = tokio::task::spawn_blocking(move || {
        let v = verify(&st.authority)?;
        if let Some(wait) = keys.iter().filter_map(|k| st.limiter.check(k)).max() {
            return Ok(Decided::Limited(wait));
        }
        f(&st.authority, v).map(Decided::Done)
    })
    .await
    .unwrap_or_else(|e| Err(Error::Internal(format!("a decision panicked: {e}"))))?;
    match decided {
        Decided::Done(t) => Ok(t),
        Decided::Limited(wait) => Err(rate_limited(wait, "this lineage").into()),
    }
}

/// 429 with Retry-After when a lineage (or a client) asks too often.
fn rate_limited(wait: u64, who: &str) -> Response {
    let mut r = refusal(
        429,
        "rate_limited",
        format!("too many requests for {who}; retry in {wait} s"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait));
    r
}

/// A request body parsed into a request, or the answer instead: 4xx for a bad body, the
/// decision's code for a request that parses but cannot be decided (a corrupt header).
fn request_of<B: for<'de> Deserialize<'de>, R>(
    body: Result<Bytes, BytesRejection>,
    parse: impl FnOnce(&B) -> Result<Result<R, Error>, BadRequest>,
) -> Result<R, ApiError> {
    let body: B = parse_body(body)?;
    match parse(&body) {
        Err(BadRequest(m)) => Err(bad_request(m).into()),
        Ok(r) => Ok(r?),
    }
}

/// A header naming more lineages than a service decides on (SPEC §5.8): 422 before any work.
fn check_lineages(header: &wmlicense_core::format::Header) -> Result<(), ApiError> {
    let n = header.policy_lineages().len();
    if n > MAX_BACKUP_LINEAGES {
        return Err(refusal(
            422,
            "too_many_lineages",
            format!(
                "the backup names {n} lineages; this service decides on at most \
                 {MAX_BACKUP_LINEAGES}"
            ),
        )
        .into());
    }
    Ok(())
}

/// Charges a request over many lineages to its client: one request per
/// [`LINEAGES_PER_REQUEST`] lineages (the first was taken before the body was read).
fn charge_client(s: &AppState, client: Option<Client>, lineages: usize) {
    if let Some(Client(ip)) = client {
        let extra = lineages.saturating_sub(1) / LINEAGES_PER_REQUEST;
        s.client_limiter.charge(&ip, extra as f64);
    }
}

/// How many lineages of a header cost one request of the client's rate (a header of the most
/// lineages a service decides on, 1,024, costs 64 requests).
pub const LINEAGES_PER_REQUEST: usize = 16;

async fn grant(
    State(s): State<Arc<AppState>>,
    client: Option<Extension<Client>>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let req = request_of(body, GrantBody::parse)?;
    check_lineages(&req.header)?;
    charge_client(&s, client.map(|c| c.0), req.header.policy_lineages().len());
    let header = req.header.clone();
    let reply = decide_limited(
        &s,
        req.header.policy_lineages(),
        move |a| a.open_data_key(&header),
        move |a, key| a.grant_opened(&req, &key),
    )
    .await?;
    Ok(ok(&GrantAnswer::of(&reply)))
}

async fn release(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Answer {
    let req = request_of(body, |b: &ReleaseBody| b.parse().map(Ok))?;
    let proof = req.clone();
    let reply = decide_limited(
        &s,
        vec![req.device_id],
        move |a| a.verify_release(&proof),
        move |a, ()| a.release_verified(&req),
    )
    .await?;
    let mut r = ok(&ReleaseAnswer::of(&reply));
    if reply.lineages.is_empty() {
        // Nothing recorded in the ledger (SPEC §5.8): counted here.
        r.extensions_mut().insert(Outcome("not_counted"));
    }
    Ok(r)
}

async fn reset(
    State(s): State<Arc<AppState>>,
    client: Option<Extension<Client>>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let req = request_of(body, ResetBody::parse)?;
    check_lineages(&req.header)?;
    charge_client(&s, client.map(|c| c.0), req.header.policy_lineages().len());
    let header = req.header.clone();
    let reply = decide_limited(
        &s,
        req.header.policy_lineages(),
        move |a| a.open_data_key(&header).map(drop),
        move |a, ()| a.reset_verified(&req),
    )
    .await?;
    Ok(ok(&ResetAnswer::of(&reply)))
}

async fn service_key(State(s): State<Arc<AppState>>) -> Response {
    ok(&KeyBody::of(&s.authority.current_key()))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    ledger: &'static str,
}

async fn health(State(s): State<Arc<AppState>>) -> Answer {
    let kind = s.authority.ledger().kind();
    decide(&s, |a| wmlicense_core::service::Ledger::ping(a.ledger())).await?;
    Ok(ok(&Health {
        status: "ok",
        ledger: kind,
    }))
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let mut r = (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response();
    r.extensions_mut().insert(Outcome("ok"));
    r
}

/// The admin endpoints' gate (one route layer over all of them): the bearer token of
/// `--admin-token-file`.
async fn require_admin(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = &s.admin_token else {
        return refusal(
            403,
            "admin_disabled",
            "the admin endpoints are disabled: start the service with --admin-token-file",
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time in the token's length.
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        let mut r = refusal(
            401,
            "unauthorized",
            "a valid admin bearer token is required",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(req).await
}

fn lineage_of(s: &str) -> Result<[u8; 16], ApiError> {
    hex_array(s).ok_or_else(|| bad_request("the lineage must be 32 hex digits").into())
}

#[derive(Serialize)]
pub struct DeviceEntry {
    device_id: String,
    device_public_key: String,
    first_grant: i64,
}

#[derive(Serialize)]
struct DevicesAnswer {
    lineage: String,
    devices: Vec<DeviceEntry>,
    device_limit: u32,
}

pub fn device_entries(records: &[wmlicense_core::service::DeviceRecord]) -> Vec<DeviceEntry> {
    records
        .iter()
        .map(|d| DeviceEntry {
            device_id: hex(d.device.get(..16).unwrap_or(&[])),
            device_public_key: hex(d.device.get(16..).unwrap_or(&[])),
            first_grant: d.first_grant,
        })
        .collect()
}

async fn admin_devices(State(s): State<Arc<AppState>>, Path(lineage): Path<String>) -> Answer {
    let lineage = lineage_of(&lineage)?;
    let devices = decide(&s, move |a| a.lineage_devices(&lineage)).await?;
    Ok(ok(&DevicesAnswer {
        lineage: hex(&lineage),
        devices: device_entries(&devices),
        device_limit: s.authority.policy().device_limit,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminReleaseBody {
    device_id: String,
    device_public_key: String,
}

async fn admin_release(
    State(s): State<Arc<AppState>>,
    Path(lineage): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let lineage = lineage_of(&lineage)?;
    let body: AdminReleaseBody = parse_body(body)?;
    let (Some(device_id), Some(public_key)) = (
        hex_array(&body.device_id),
        hex_array(&body.device_public_key),
    ) else {
        return Err(bad_request("device_id must be 32 and device_public_key 64 hex digits").into());
    };
    let device = Device {
        device_id,
        public_key,
    };
    let released = decide(&s, move |a| a.admin_release(&lineage, &device)).await?;
    Ok(ok(&serde_json::json!({ "released": released })))
}

async fn admin_reset(State(s): State<Arc<AppState>>, Path(lineage): Path<String>) -> Answer {
    let lineage = lineage_of(&lineage)?;
    let n = decide(&s, move |a| a.admin_reset(&lineage)).await?;
    Ok(ok(&serde_json::json!({ "devices_freed": n })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    lineage: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct AuditEntry {
    at: i64,
    action: String,
    lineage: Option<String>,
    device_id: Option<String>,
    device_public_key: Option<String>,
    request_id: Option<String>,
    outcome: String,
    detail: String,
}

pub fn audit_entries(records: &[wmlicense_core::service::AuditRecord]) -> Vec<AuditEntry> {
    records
        .iter()
        .map(|r| AuditEntry {
            at: r.at,
            action: r.action.clone(),
            lineage: r.lineage_id.map(|l| hex(&l)),
            device_id: r.device.as_ref().map(|d| hex(d.get(..16).unwrap_or(&[]))),
            device_public_key: r.device.as_ref().map(|d| hex(d.get(16..).unwrap_or(&[]))),
            request_id: r.request_id.map(|l| hex(&l)),
            outcome: r.outcome.clone(),
            detail: r.detail.clone(),
        })
        .collect()
}

async fn admin_audit(
    State(s): State<Arc<AppState>>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let Ok(Query(q)) = query else {
        return Err(
            bad_request("query parameters: lineage (32 hex digits), limit (1 to 10000)").into(),
        );
    };
    let lineage = q.lineage.as_deref().map(lineage_of).transpose()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(bad_request("limit must be 1 to 10000").into());
    }
    let records = decide(&s, move |a| a.audit_log(lineage.as_ref(), limit)).await?;
    Ok(ok(
        &serde_json::json!({ "records": audit_entries(&records) }),
    ))
}

async fn not_found(State(s): State<Arc<AppState>>, req: Request) -> Response {
    let r = refusal(
        404,
        "not_found",
        format!("no endpoint {} {}", req.method(), req.uri().path()),
    );
    s.metrics.record("unmatched", 404, "not_found", 0.0);
    tracing::info!(method = %req.method(), endpoint = "unmatched", status = 404, outcome = "not_found", ms = 0.0, "request");
    r
}

/// One log line and the metrics of every matched request. Never a key: only method, route,
/// status, outcome and time.
async fn track(
    State(s): State<Arc<AppState>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let endpoint = matched.map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && resp.extensions().get::<Outcome>().is_none()
    {
        resp = refusal(
            405,
            "method_not_allowed",
            format!("{endpoint} does not take {method}"),
        );
    }
    let status = resp.status().as_u16();
    let outcome = resp.extensions().get::<Outcome>().map_or(
        if resp.status().is_success() {
            "ok"
        } else {
            "error"
        },
        |o| o.0,
    );
    let secs = start.elapsed().as_secs_f64();
    s.metrics.record(&endpoint, status, outcome, secs);
    tracing::info!(method = %method, endpoint = %endpoint, status, outcome, ms = secs * 1e3, "request");
    resp
}

/// The client a request comes from: the peer address, or behind a trusted proxy the last
/// address of `X-Forwarded-For` that is not one of the trusted proxies.
fn client_of(req: &Request, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = req.extensions().get::<Peer>()?.0.ip();
    if !trusted.iter().any(|c| c.contains(peer)) {
        return Some(peer);
    }
    let mut client = peer;
    for v in req.headers().get_all("x-forwarded-for").iter().rev() {
        let Ok(v) = v.to_str() else {
            return Some(client);
        };
        for hop in v.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                return Some(client);
            };
            client = ip;
            if !trusted.iter().any(|c| c.contains(ip)) {
                return Some(ip);
            }
        }
    }
    Some(client)
}

/// The per-client rate limit of the anonymous decisions, before anything else is done for
/// them (parsing, X25519, the ledger).
async fn limit_client(State(s): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    if let Some(ip) = client_of(&req, &s.trusted_proxies) {
        if let Some(wait) = s.client_limiter.check(&ip) {
            return rate_limited(wait, "this client");
        }
        req.extensions_mut().insert(Client(ip));
    }
    next.run(req).await
}

/// The client a request was charged to (see [`limit_client`]).
#[derive(Clone, Copy, Debug)]
struct Client(IpAddr);

/// The whole body, read before any handler runs: a declared `Content-Length` over the limit is
/// refused at once (413, before a byte of the body is read), and a body that does not arrive
/// within the body timeout ends the request (408) and its connection.
async fn read_body(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        // Answered at once; what the client sends meanwhile is read and dropped for a moment
        // (at most 1 MiB, 2 s), so that closing does not reset the connection before the
        // client has read the answer.
        let body = req.into_body();
        tokio::spawn(async move {
            let drain = axum::body::to_bytes(body, 1 << 20);
            let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        });
        return closing(refusal(
            413,
            "payload_too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
        ));
    }
    let (parts, body) = req.into_parts();
    let bytes =
        match tokio::time::timeout(s.body_timeout, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return closing(refusal(
                    413,
                    "payload_too_large",
                    format!("request bodies are limited to {MAX_BODY} bytes"),
                ))
            }
            Err(_) => {
                return closing(refusal(
                    408,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        s.body_timeout.as_secs_f64()
                    ),
                ))
            }
        };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// `r` with `Connection: close`: the rest of the request is not read.
fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The HTTP API over `config`'s service: every route, its limits and its metrics.
pub fn app(config: Config) -> Router {
    let state = Arc::new(AppState {
        authority: config.authority,
        metrics: Metrics::default(),
        limiter: RateLimiter::new(config.rate_limit, config.rate_burst),
        client_limiter: RateLimiter::new(config.client_rate_limit, config.client_rate_burst),
        trusted_proxies: config.trusted_proxies,
        admin_token: config.admin_token,
        body_timeout: config.body_timeout,
    });
    let anonymous = Router::new()
        .route(PATH_GRANT, post(grant))
        .route(PATH_RELEASE, post(release))
        .route(PATH_RESET, post(reset))
        .route_layer(middleware::from_fn_with_state(state.clone(), limit_client));
    let admin = Router::new()
        .route("/v1/admin/lineages/{lineage}/devices", get(admin_devices))
        .route("/v1/admin/lineages/{lineage}/release", post(admin_release))
        .route("/v1/admin/lineages/{lineage}/reset", post(admin_reset))
        .route("/v1/admin/audit", get(admin_audit))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .route(PATH_HEALTH, get(health))
        .route("/metrics", get(metrics))
        .route(PATH_SERVICE_KEY, get(service_key))
        .merge(anonymous)
        .merge(admin)
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), read_body))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
