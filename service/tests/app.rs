//! The service's router driven in-process (tower's `oneshot`, no sockets) over a real SQLite
//! ledger: the lineage cap (422 `too_many_lineages`, nothing recorded), no-op releases that
//! leave the ledger as it was, a grant replayed only while it still holds, the admin gate as
//! one layer over every admin route, and the per-client rate limit (peer address, or
//! X-Forwarded-For from a trusted proxy).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;
use wmlicense_core::crypto;
use wmlicense_core::format::Header;
use wmlicense_core::identity::DeviceIdentity;
use wmlicense_core::service::wire::{GrantBody, ReleaseBody};
use wmlicense_core::service::{
    hex, Authority, GrantRequest, KeyRing, Policy, ReleaseRequest, ServiceKey,
};
use wmlicense_service::ledger::AnyLedger;
use wmlicense_service::{app, Config, Peer, Service};

mod common;
use common::sealed_header as header;

const TOKEN: &str = "test-admin-token-0123456789";

struct Fixture {
    dir: PathBuf,
    authority: Arc<Service>,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let id: [u8; 8] = crypto::random_array().unwrap();
        let dir = std::env::temp_dir().join(format!("wmlicense-app-{tag}-{}", hex(&id)));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = KeyRing::open(&dir.join("keys"), true).unwrap();
        let ledger = AnyLedger::open(&dir, None, 1).unwrap();
        Fixture {
            authority: Arc::new(Authority::new(keys, ledger, Policy::default())),
            dir,
        }
    }

    /// The service's config without any rate limit, with the admin token.
    fn config(&self) -> Config {
        Config {
            admin_token: Some(TOKEN.into()),
            rate_limit: 0.0,
            client_rate_limit: 0.0,
            ..Config::new(self.authority.clone())
        }
    }

    fn key(&self) -> ServiceKey {
        self.authority.current_key()
    }

    fn audit_rows(&self) -> usize {
        self.authority.audit_log(None, u32::MAX).unwrap().len()
    }

    fn request_rows(&self) -> i64 {
        rusqlite_count(&self.dir.join("ledger.db"), "service_requests")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Rows of `table`, read through the ledger's own SQLite (a second connection).
fn rusqlite_count(db: &std::path::Path, table: &str) -> i64 {
    // The core's SQLite ledger has no row count; its audit log does, and the request table is
    // read here through the same library the ledger uses.
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn post(path: &str, body: String, peer: Option<&str>, xff: Option<&str>) -> Request<Body> {
    let mut r = Request::post(path)
        .header("content-type", "application/json")
        .header("content-length", body.len());
    if let Some(x) = xff {
        r = r.header("x-forwarded-for", x);
    }
    let mut r = r.body(Body::from(body)).unwrap();
    if let Some(p) = peer {
        r.extensions_mut()
            .insert(Peer(p.parse::<SocketAddr>().unwrap()));
    }
    r
}

async fn call(router: &axum::Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, v)
}

fn lineages(n: usize) -> Vec<[u8; 16]> {
    let mut v: Vec<[u8; 16]> = (0..n).map(|_| crypto::random_array().unwrap()).collect();
    v.sort();
    v
}

fn grant_json(req: &GrantRequest) -> String {
    serde_json::to_string(&GrantBody::of(req)).unwrap()
}

fn grant_of(h: &Header, dev: &DeviceIdentity) -> GrantRequest {
    GrantRequest {
        request_id: crypto::random_array().unwrap(),
        header: h.clone(),
        device_id: dev.device_id,
        device_public_key: dev.keys.public,
        dry_run: false,
    }
}

#[tokio::test]
async fn a_header_over_1024_lineages_is_refused_before_any_work() {
    let f = Fixture::new("lineages");
    let router = app(f.config());
    let dev = DeviceIdentity::generate().unwrap();
    let h = header(&f.key(), &lineages(1025));
    let (status, body) = call(
        &router,
        post("/v1/grant", grant_json(&grant_of(&h, &dev)), None, None),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "too_many_lineages");
    assert_eq!((f.audit_rows(), f.request_rows()), (0, 0));
    // 1,024 is decided: one device counted for each, in one batch.
    let h = header(&f.key(), &lineages(1024));
    let (status, body) = call(
        &router,
        post("/v1/grant", grant_json(&grant_of(&h, &dev)), None, None),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["devices_used"], 1);
    assert_eq!((f.audit_rows(), f.request_rows()), (1024, 1));
    for l in &h.lineages {
        assert_eq!(f.authority.devices_counted(l).unwrap(), 1);
    }
}

/// 2,000 releases of a device counted nowhere, from one client with no rate limit: each is
/// answered (nothing released), and the ledger gains no row.
#[tokio::test]
async fn no_op_releases_leave_the_ledger_as_it_was() {
    let f = Fixture::new("noop");
    let router = app(f.config());
    let key = f.key();
    let dev = DeviceIdentity::generate().unwrap();
    // One real grant first, so that the ledger is not empty.
    let h = header(&key, &lineages(1));
    let (status, _) = call(
        &router,
        post("/v1/grant", grant_json(&grant_of(&h, &dev)), None, None),
    )
    .await;
    assert_eq!(status, 200);
    let before = (f.audit_rows(), f.request_rows());
    let stranger = DeviceIdentity::generate().unwrap();
    for _ in 0..2000 {
        let rel = ReleaseRequest::new(crypto::random_array().unwrap(), &stranger, &key).unwrap();
        let body = serde_json::to_string(&ReleaseBody::of(&rel)).unwrap();
        let (status, answer) = call(
            &router,
            post("/v1/release", body, Some("127.0.0.1:5000"), None),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["lineages"], serde_json::json!([]));
    }
    assert_eq!((f.audit_rows(), f.request_rows()), before);
}

/// A grant retried with its request ID after its device released its slot is decided anew:
/// the device is counted again (before, the retry answered with the data key while the device
/// was no longer counted).
#[tokio::test]
async fn a_grant_is_replayed_only_while_it_holds() {
    let f = Fixture::new("replay");
    let router = app(f.config());
    let key = f.key();
    let dev = DeviceIdentity::generate().unwrap();
    let h = header(&key, &lineages(1));
    let lineage = h.lineages[0];
    let grant = grant_of(&h, &dev);
    let (status, _) = call(&router, post("/v1/grant", grant_json(&grant), None, None)).await;
    assert_eq!(status, 200);
    // A replay while it holds: the same answer, nothing counted twice.
    let (status, body) = call(&router, post("/v1/grant", grant_json(&grant), None, None)).await;
    assert_eq!(
        (status.as_u16(), body["devices_used"].as_u64()),
        (200, Some(1))
    );
    assert_eq!(f.authority.devices_counted(&lineage).unwrap(), 1);
    let rel = ReleaseRequest::new(crypto::random_array().unwrap(), &dev, &key).unwrap();
    let body = serde_json::to_string(&ReleaseBody::of(&rel)).unwrap();
    let (status, _) = call(&router, post("/v1/release", body, None, None)).await;
    assert_eq!(status, 200);
    assert_eq!(f.authority.devices_counted(&lineage).unwrap(), 0);
    // The retry after the release: decided anew, the device counted again.
    let (status, body) = call(&router, post("/v1/grant", grant_json(&grant), None, None)).await;
    assert_eq!(
        (status.as_u16(), body["devices_used"].as_u64()),
        (200, Some(1))
    );
    assert_eq!(f.authority.devices_counted(&lineage).unwrap(), 1);
    let outcomes: Vec<String> = f
        .authority
        .audit_log(Some(&lineage), 100)
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {}", r.action, r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        ["grant granted", "release released", "grant granted"]
    );
}

#[tokio::test]
async fn every_admin_route_is_behind_the_token() {
    let f = Fixture::new("admin");
    let router = app(f.config());
    let l = "0".repeat(32);
    let routes = [
        ("GET", format!("/v1/admin/lineages/{l}/devices")),
        ("POST", format!("/v1/admin/lineages/{l}/release")),
        ("POST", format!("/v1/admin/lineages/{l}/reset")),
        ("GET", "/v1/admin/audit".to_string()),
    ];
    for (method, path) in &routes {
        for auth in [None, Some("Bearer wrong-token-0123456789")] {
            let mut r = Request::builder().method(*method).uri(path);
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let (status, body) = call(&router, r.body(Body::empty()).unwrap()).await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {body}");
            assert_eq!(body["error"], "unauthorized");
        }
    }
    let r = Request::get("/v1/admin/audit")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&router, r).await.0, 200);
    // Without a token file: 403 on each.
    let router = app(Config {
        admin_token: None,
        ..f.config()
    });
    for (method, path) in &routes {
        let r = Request::builder().method(*method).uri(path);
        let (status, _) = call(&router, r.body(Body::empty()).unwrap()).await;
        assert_eq!(status, 403, "{method} {path}");
    }
}

/// The per-client limit counts the peer, or behind a trusted proxy the client it names; it
/// refuses before the body is even parsed (a bad body gets 429, not 400, once over).
#[tokio::test]
async fn the_client_limit_counts_the_peer_or_the_forwarded_client() {
    let f = Fixture::new("client");
    let router = app(Config {
        client_rate_limit: 0.001,
        client_rate_burst: 2,
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..f.config()
    });
    let bad = || "{}".to_string();
    let status = |r: (StatusCode, serde_json::Value)| r.0.as_u16();
    // A direct client: two requests, then 429 (whatever X-Forwarded-For it sends).
    for expected in [400, 400, 429] {
        let r = call(
            &router,
            post(
                "/v1/grant",
                bad(),
                Some("192.0.2.1:1"),
                Some("198.51.100.9"),
            ),
        )
        .await;
        assert_eq!(status(r), expected);
    }
    // Through the proxy: each forwarded client has its own bucket...
    for client in ["198.51.100.1", "198.51.100.2"] {
        for expected in [400, 400, 429] {
            let r = call(
                &router,
                post(
                    "/v1/grant",
                    bad(),
                    Some("10.1.2.3:1"),
                    Some(&format!("203.0.113.5, {client}")),
                ),
            )
            .await;
            assert_eq!(status(r), expected, "{client}");
        }
    }
    // ...and the limited answer says when to come back.
    let resp = router
        .clone()
        .oneshot(post("/v1/grant", bad(), Some("192.0.2.1:1"), None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(f.audit_rows(), 0);
}
