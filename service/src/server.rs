//! The HTTP API (SPEC §5.4, `service/openapi.json`): grant, release, reset, service key,
//! health, metrics, and the operator's endpoints behind a bearer token.
//!
//! Every decision runs the core's [`Authority`] on a blocking thread (the ledger is
//! synchronous); bad requests are answered with a 4xx JSON body before the ledger is touched.
#![allow(clippy::result_large_err)] // a handler's error is the Response it sends

use crate::ledger::AnyLedger;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use wmlicense_core::service::wire::{
    BadRequest, ErrorBody, GrantAnswer, GrantBody, KeyBody, ReleaseAnswer, ReleaseBody,
    ResetAnswer, ResetBody, MAX_BODY, PATH_GRANT, PATH_HEALTH, PATH_RELEASE, PATH_RESET,
    PATH_SERVICE_KEY,
};
use wmlicense_core::service::{hex, hex_array, Authority, Device, LicenseService};
use wmlicense_core::Error;

pub type Service = Authority<AnyLedger>;

pub struct AppState {
    pub authority: Arc<Service>,
    pub metrics: Metrics,
    pub limiter: RateLimiter,
    pub admin_token: Option<String>,
}

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

fn never() -> bool {
    false
}

/// What a rate-limited decision came to.
enum Decided<T> {
    Done(T),
    /// Seconds to wait (429).
    Limited(u64),
}

/// Runs a decision on a blocking thread once `verify` has authenticated the request (a header
/// sealed to this service, a device's proof) and its `keys` (lineages, or the device) are within
/// their rate: unauthenticated requests never use up anybody's rate.
async fn decide_limited<T: Send + 'static>(
    state: &Arc<AppState>,
    keys: Vec<[u8; 16]>,
    verify: impl FnOnce(&Service) -> wmlicense_core::Result<()> + Send + 'static,
    f: impl FnOnce(&Service) -> wmlicense_core::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let st = state.clone();
    let decided = tokio::task::spawn_blocking(move || {
        // Without a rate limit there is nothing to guard: every decision authenticates its
        // request first with the same check (a grant and a reset open the header, a release
        // checks the proof), and `verify` would only do it twice (an X25519 open each).
        if st.limiter.enabled() {
            verify(&st.authority)?;
            if let Some(wait) = keys.iter().filter_map(|k| st.limiter.check(k)).max() {
                return Ok(Decided::Limited(wait));
            }
        }
        f(&st.authority).map(Decided::Done)
    })
    .await
    .unwrap_or_else(|e| Err(Error::Internal(format!("a decision panicked: {e}"))));
    match decided {
        Ok(Decided::Done(t)) => Ok(t),
        Ok(Decided::Limited(wait)) => Err(rate_limited(wait)),
        Err(e) => Err(error_response(&e)),
    }
}

/// 429 with Retry-After when a lineage asks too often.
fn rate_limited(wait: u64) -> Response {
    let mut r = refusal(
        429,
        "rate_limited",
        format!("too many requests for this lineage; retry in {wait} s"),
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
) -> Result<R, Response> {
    let body: B = parse_body(body)?;
    match parse(&body) {
        Err(BadRequest(m)) => Err(bad_request(m)),
        Ok(Err(e)) => Err(error_response(&e)),
        Ok(Ok(r)) => Ok(r),
    }
}

/// A decision about a backup's header: authenticated, then charged to its lineages' rate.
async fn decide_for_header<T: Send + 'static>(
    state: &Arc<AppState>,
    header: &wmlicense_core::format::Header,
    f: impl FnOnce(&Service) -> wmlicense_core::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let h = header.clone();
    decide_limited(
        state,
        header.policy_lineages(),
        move |a| a.verify_header(&h),
        f,
    )
    .await
}

/// The 200 answer of a decision, or its refusal.
fn respond<T, A: Serialize>(
    decided: Result<T, Response>,
    answer: impl FnOnce(&T) -> A,
) -> Response {
    match decided {
        Ok(reply) => ok(&answer(&reply)),
        Err(r) => r,
    }
}

async fn grant(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let req = match request_of(body, GrantBody::parse) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let header = req.header.clone();
    respond(
        decide_for_header(&s, &header, move |a| a.grant(&req, &never)).await,
        GrantAnswer::of,
    )
}

async fn release(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let req = match request_of(body, |b: &ReleaseBody| b.parse().map(Ok)) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let proof = req.clone();
    let decided = decide_limited(
        &s,
        vec![req.device_id],
        move |a| a.verify_release(&proof),
        move |a| a.release(&req, &never),
    )
    .await;
    respond(decided, ReleaseAnswer::of)
}

async fn reset(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let req = match request_of(body, ResetBody::parse) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let header = req.header.clone();
    respond(
        decide_for_header(&s, &header, move |a| a.reset(&req, &never)).await,
        ResetAnswer::of,
    )
}

async fn service_key(State(s): State<Arc<AppState>>) -> Response {
    ok(&KeyBody::of(&s.authority.current_key()))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    ledger: &'static str,
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    let kind = s.authority.ledger().kind();
    match decide(&s, |a| wmlicense_core::service::Ledger::ping(a.ledger())).await {
        Ok(()) => ok(&Health {
            status: "ok",
            ledger: kind,
        }),
        Err(e) => error_response(&e),
    }
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

/// The admin endpoints' gate: the bearer token of `--admin-token-file`.
fn authorize(s: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &s.admin_token else {
        return Err(refusal(
            403,
            "admin_disabled",
            "the admin endpoints are disabled: start the service with --admin-token-file",
        ));
    };
    let given = headers
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
    if same {
        Ok(())
    } else {
        let mut r = refusal(
            401,
            "unauthorized",
            "a valid admin bearer token is required",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(r)
    }
}

fn lineage_of(s: &str) -> Result<[u8; 16], Response> {
    hex_array(s).ok_or_else(|| bad_request("the lineage must be 32 hex digits"))
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

async fn admin_devices(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(lineage): Path<String>,
) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let lineage = match lineage_of(&lineage) {
        Ok(l) => l,
        Err(r) => return r,
    };
    match decide(&s, move |a| a.lineage_devices(&lineage)).await {
        Ok(devices) => ok(&DevicesAnswer {
            lineage: hex(&lineage),
            devices: device_entries(&devices),
            device_limit: s.authority.policy().device_limit,
        }),
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminReleaseBody {
    device_id: String,
    device_public_key: String,
}

async fn admin_release(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(lineage): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let lineage = match lineage_of(&lineage) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let body: AdminReleaseBody = match parse_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (Some(device_id), Some(public_key)) = (
        hex_array(&body.device_id),
        hex_array(&body.device_public_key),
    ) else {
        return bad_request("device_id must be 32 and device_public_key 64 hex digits");
    };
    let device = Device {
        device_id,
        public_key,
    };
    match decide(&s, move |a| a.admin_release(&lineage, &device)).await {
        Ok(released) => ok(&serde_json::json!({ "released": released })),
        Err(e) => error_response(&e),
    }
}

async fn admin_reset(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(lineage): Path<String>,
) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let lineage = match lineage_of(&lineage) {
        Ok(l) => l,
        Err(r) => return r,
    };
    match decide(&s, move |a| a.admin_reset(&lineage)).await {
        Ok(n) => ok(&serde_json::json!({ "devices_freed": n })),
        Err(e) => error_response(&e),
    }
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
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let Ok(Query(q)) = query else {
        return bad_request("query parameters: lineage (32 hex digits), limit (1 to 10000)");
    };
    let lineage = match q.lineage.as_deref().map(lineage_of).transpose() {
        Ok(l) => l,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return bad_request("limit must be 1 to 10000");
    }
    match decide(&s, move |a| a.audit_log(lineage.as_ref(), limit)).await {
        Ok(records) => ok(&serde_json::json!({ "records": audit_entries(&records) })),
        Err(e) => error_response(&e),
    }
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

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(PATH_HEALTH, get(health))
        .route("/metrics", get(metrics))
        .route(PATH_SERVICE_KEY, get(service_key))
        .route(PATH_GRANT, post(grant))
        .route(PATH_RELEASE, post(release))
        .route(PATH_RESET, post(reset))
        .route("/v1/admin/lineages/{lineage}/devices", get(admin_devices))
        .route("/v1/admin/lineages/{lineage}/release", post(admin_release))
        .route("/v1/admin/lineages/{lineage}/reset", post(admin_reset))
        .route("/v1/admin/audit", get(admin_audit))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
