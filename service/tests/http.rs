//! The HTTP API of a real `wmlicense-service` process on 127.0.0.1: `service/openapi.json`
//! kept true, bad bodies answered with a 4xx JSON error and no trace in the ledger, the admin
//! token, the rate limit, a grant/release/reset round trip through the library's client, and a
//! SIGTERM that drains and exits 0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wmlicense_core::crypto::{self, KeyPair};
use wmlicense_core::format::Header;
use wmlicense_core::identity::DeviceIdentity;
use wmlicense_core::service::wire::{
    PATH_GRANT, PATH_HEALTH, PATH_RELEASE, PATH_RESET, PATH_SERVICE_KEY,
};
use wmlicense_core::service::{
    hex, GrantRequest, LicenseService, NetworkService, ReleaseRequest, ResetRequest, ServiceKey,
};
use wmlicense_core::Error;

mod common;
use common::sealed_header as header;

const TOKEN: &str = "test-admin-token-0123456789";

struct Service {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Service {
    fn start(tag: &str, extra: &[&str]) -> Service {
        let id: [u8; 8] = crypto::random_array().unwrap();
        let dir = std::env::temp_dir().join(format!("wmlicense-http-{tag}-{}", hex(&id)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        let token = dir.join("token");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wmlicense-service"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join("data"))
            .arg("--admin-token-file")
            .arg(&token)
            // Many requests from one address here: tests/limits.rs is about the client limit.
            .args(["--client-rate-limit", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wmlicense-service");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("wmlicense-service listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Service { child, url, dir }
    }

    fn key(&self) -> ServiceKey {
        NetworkService::new(&self.url)
            .unwrap()
            .service_key(&|| false)
            .unwrap()
    }

    /// `(status, body)` of one request; `token`: the admin bearer token to send.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> (u16, String) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let mut req = agent.request(method, &format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let r = match body {
            Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
            None => req.call(),
        };
        match r {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    fn audit_len(&self) -> usize {
        let (s, b) = self.send("GET", "/v1/admin/audit?limit=10000", None, Some(TOKEN));
        assert_eq!(s, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        v["records"].as_array().unwrap().len()
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        std::fs::remove_dir_all(&self.dir).ok();
        std::mem::forget(self);
        status
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn grant_body(h: &Header, dev: &KeyPair) -> String {
    serde_json::json!({
        "request_id": hex(&crypto::random_array::<16>().unwrap()),
        "header": hex(&h.to_bytes()),
        "device_id": hex(&crypto::random_array::<16>().unwrap()),
        "device_public_key": hex(&dev.public),
    })
    .to_string()
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON error body: {body}: {e}"));
    assert!(v["message"].is_string(), "{body}");
    v["error"].as_str().expect("an error code").to_string()
}

fn openapi() -> serde_json::Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json"))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every documented route answers (not 404/405), with a documented status; the paths the
/// library's client uses are documented; every error code the service can send is in the
/// Error schema's list.
#[test]
fn openapi_file_is_true() {
    let spec = openapi();
    let svc = Service::start("openapi", &[]);
    let paths = spec["paths"].as_object().unwrap();
    for p in [
        PATH_GRANT,
        PATH_HEALTH,
        PATH_RELEASE,
        PATH_RESET,
        PATH_SERVICE_KEY,
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} is not in openapi.json");
    }
    let codes: Vec<String> = spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    for (path, ops) in paths {
        let concrete = path.replace("{lineage}", &"0".repeat(32));
        for (method, op) in ops.as_object().unwrap() {
            let documented: Vec<u16> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            let body = (method == "post").then_some(&b"{}"[..]);
            let (status, text) = svc.send(&method.to_uppercase(), &concrete, body, Some(TOKEN));
            assert!(
                documented.contains(&status),
                "{method} {path} answered {status}, documented {documented:?}: {text}"
            );
            if status >= 400 {
                let code = error_code(&text);
                assert!(codes.contains(&code), "{code} is not in the Error schema");
                assert!(!["not_found", "method_not_allowed"].contains(&code.as_str()));
            }
        }
    }
    // An undocumented path is a JSON 404.
    let (status, text) = svc.send("GET", "/v1/nothing", None, None);
    assert_eq!((status, error_code(&text).as_str()), (404, "not_found"));
    // The library's error mapping knows every code of the service's decisions.
    for code in [
        "restore_limit",
        "too_many_resets",
        "backup_corrupt",
        "proof_invalid",
        "request_id_reused",
        "refused",
        "rate_limited",
        "unavailable",
    ] {
        assert!(codes.contains(&code.to_string()), "{code}");
    }
    assert!(svc.stop().success());
}

/// Bad bodies: a 4xx with a JSON error body, and the ledger does not hear of them (no audit
/// record, no device); a good request afterwards is recorded (so the check can fail).
#[test]
fn bad_bodies_get_4xx_and_leave_the_ledger_untouched() {
    let svc = Service::start("bad", &[]);
    let key = svc.key();
    let lineage = [0x42; 16];
    let h = header(&key, &[lineage]);
    let dev = KeyPair::generate().unwrap();
    let good: serde_json::Value = serde_json::from_str(&grant_body(&h, &dev)).unwrap();
    let with = |k: &str, v: serde_json::Value| {
        let mut b = good.clone();
        b[k] = v;
        b.to_string()
    };
    let mut altered = h.clone();
    altered.created_at += 1;
    let mut other_key = h.clone();
    other_key.service_key_id = [9; 16];
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (PATH_GRANT, b"".to_vec(), 400, "bad_request"),
        (PATH_GRANT, b"not json".to_vec(), 400, "bad_request"),
        (PATH_GRANT, b"[1,2]".to_vec(), 400, "bad_request"),
        (PATH_GRANT, b"{}".to_vec(), 400, "bad_request"),
        (
            PATH_GRANT,
            with("extra", 1.into()).into_bytes(),
            400,
            "bad_request",
        ),
        (
            PATH_GRANT,
            with("request_id", "zz".into()).into_bytes(),
            400,
            "bad_request",
        ),
        (
            PATH_GRANT,
            with("device_public_key", "00".into()).into_bytes(),
            400,
            "bad_request",
        ),
        (
            PATH_GRANT,
            with("dry_run", "yes".into()).into_bytes(),
            400,
            "bad_request",
        ),
        (
            PATH_GRANT,
            with("header", "0g".into()).into_bytes(),
            400,
            "bad_request",
        ),
        (
            PATH_GRANT,
            with("header", "00".into()).into_bytes(),
            422,
            "backup_corrupt",
        ),
        (
            PATH_GRANT,
            with("header", hex(&h.to_bytes()[..100]).into()).into_bytes(),
            422,
            "backup_corrupt",
        ),
        (
            PATH_GRANT,
            with("header", hex(&altered.to_bytes()).into()).into_bytes(),
            422,
            "backup_corrupt",
        ),
        (
            PATH_GRANT,
            with("header", hex(&other_key.to_bytes()).into()).into_bytes(),
            422,
            "backup_corrupt",
        ),
        (PATH_GRANT, vec![b' '; 70_000], 413, "payload_too_large"),
        (
            PATH_RELEASE,
            b"{\"request_id\":1}".to_vec(),
            400,
            "bad_request",
        ),
        (
            PATH_RESET,
            b"{\"request_id\":\"00\",\"header\":\"00\"}".to_vec(),
            400,
            "bad_request",
        ),
        (
            PATH_RESET,
            format!(
                "{{\"request_id\":\"{}\",\"header\":\"{}\"}}",
                "0".repeat(32),
                hex(&altered.to_bytes())
            )
            .into_bytes(),
            422,
            "backup_corrupt",
        ),
    ];
    for (path, body, status, code) in &cases {
        let (s, text) = svc.send("POST", path, Some(body), None);
        assert_eq!(
            (s, error_code(&text).as_str()),
            (*status, *code),
            "{path} {}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
    }
    // A release whose proof is not the device's: refused, nothing recorded.
    let thief = DeviceIdentity::generate().unwrap();
    let mut forged = ReleaseRequest::new([1; 16], &thief, &key).unwrap();
    forged.device_public_key = dev.public;
    let body =
        serde_json::to_vec(&wmlicense_core::service::wire::ReleaseBody::of(&forged)).unwrap();
    let (s, text) = svc.send("POST", PATH_RELEASE, Some(&body), None);
    assert_eq!((s, error_code(&text).as_str()), (422, "refused"));

    assert_eq!(svc.audit_len(), 0, "a bad request reached the ledger");
    let (s, text) = svc.send(
        "GET",
        &format!("/v1/admin/lineages/{}/devices", hex(&lineage)),
        None,
        Some(TOKEN),
    );
    assert_eq!(s, 200);
    assert!(text.contains("\"devices\":[]"), "{text}");
    // The good request is recorded.
    let (s, text) = svc.send("POST", PATH_GRANT, Some(good.to_string().as_bytes()), None);
    assert_eq!(s, 200, "{text}");
    assert_eq!(svc.audit_len(), 1);
    assert!(svc.stop().success());
}

/// The admin endpoints want the token; a service without a token file has them disabled.
#[test]
fn admin_endpoints_need_the_token() {
    let svc = Service::start("admin", &[]);
    let path = "/v1/admin/audit";
    assert_eq!(svc.send("GET", path, None, None).0, 401);
    assert_eq!(
        svc.send("GET", path, None, Some("wrong-token-0123456789xx"))
            .0,
        401
    );
    assert_eq!(svc.send("GET", path, None, Some(TOKEN)).0, 200);
    assert_eq!(
        svc.send("GET", &format!("{path}?limit=0"), None, Some(TOKEN))
            .0,
        400
    );
    assert_eq!(
        svc.send("GET", "/v1/admin/lineages/xyz/devices", None, Some(TOKEN))
            .0,
        400
    );
    drop(svc);
    // Without --admin-token-file: 403 whatever is sent.
    let id: [u8; 8] = crypto::random_array().unwrap();
    let dir = std::env::temp_dir().join(format!("wmlicense-http-notoken-{}", hex(&id)));
    let mut child = Command::new(env!("CARGO_BIN_EXE_wmlicense-service"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    let r = ureq::get(&format!("{url}{path}"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call();
    assert!(matches!(r, Err(ureq::Error::Status(403, _))));
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(dir).ok();
}

/// A lineage asking faster than its rate gets 429 with Retry-After; another lineage does not.
#[test]
fn per_lineage_rate_limit() {
    let svc = Service::start("rate", &["--rate-limit", "0.5", "--rate-burst", "2"]);
    let key = svc.key();
    let dev = KeyPair::generate().unwrap();
    let h = header(&key, &[[1; 16]]);
    // Requests that do not authenticate (a header not sealed by this service's key) use up
    // nobody's rate: they are refused as corrupt, never 429.
    let mut forged = h.clone();
    forged.created_at += 1;
    for _ in 0..5 {
        let (s, text) = svc.send(
            "POST",
            PATH_GRANT,
            Some(grant_body(&forged, &dev).as_bytes()),
            None,
        );
        assert_eq!((s, error_code(&text).as_str()), (422, "backup_corrupt"));
    }
    for _ in 0..2 {
        assert_eq!(
            svc.send(
                "POST",
                PATH_GRANT,
                Some(grant_body(&h, &dev).as_bytes()),
                None
            )
            .0,
            200
        );
    }
    let agent = ureq::AgentBuilder::new().build();
    match agent
        .post(&format!("{}{PATH_GRANT}", svc.url))
        .send_string(&grant_body(&h, &dev))
    {
        Err(ureq::Error::Status(429, r)) => {
            let wait: u64 = r.header("Retry-After").unwrap().parse().unwrap();
            assert!((1..=2).contains(&wait), "{wait}");
            assert_eq!(error_code(&r.into_string().unwrap()), "rate_limited");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    let other = header(&key, &[[2; 16]]);
    assert_eq!(
        svc.send(
            "POST",
            PATH_GRANT,
            Some(grant_body(&other, &dev).as_bytes()),
            None
        )
        .0,
        200
    );
    assert!(svc.stop().success());
}

/// The library's client against the service: grant (with the device count), the limit with
/// its help URL, a dry run, release with proof, reset once, and the /metrics that counted it.
#[test]
fn client_round_trip() {
    let svc = Service::start(
        "client",
        &[
            "--device-limit",
            "2",
            "--help-url",
            "https://help.example/limit",
        ],
    );
    let client = NetworkService::new(&svc.url).unwrap();
    let never = || false;
    let key = client.service_key(&never).unwrap();
    let lineage = [0x77; 16];
    let h = header(&key, &[lineage]);
    let devices: Vec<DeviceIdentity> = (0..3)
        .map(|_| DeviceIdentity::generate().unwrap())
        .collect();
    let req = |d: &DeviceIdentity, dry_run: bool| GrantRequest {
        request_id: crypto::random_array().unwrap(),
        header: h.clone(),
        device_id: d.device_id,
        device_public_key: d.keys.public,
        dry_run,
    };
    for (i, d) in devices[..2].iter().enumerate() {
        let r = req(d, false);
        let reply = client.grant(&r, &never).unwrap();
        assert_eq!((reply.devices.used, reply.devices.limit), (i as u32 + 1, 2));
        let wmlicense_core::service::Grant::DataKey(sealed) = reply.grant else {
            panic!()
        };
        assert_eq!(r.open_grant(&d.keys.secret, &sealed).unwrap(), [7; 32]);
    }
    match client.grant(&req(&devices[2], false), &never) {
        Err(Error::RestoreFraud {
            help_url,
            devices_used: 2,
            device_limit: 2,
            ..
        }) => {
            assert_eq!(help_url.as_deref(), Some("https://help.example/limit"))
        }
        other => panic!("expected the limit, got {other:?}"),
    }
    assert!(matches!(
        client.grant(&req(&devices[2], true), &never),
        Err(Error::RestoreFraud { .. })
    ));
    let reply = client.grant(&req(&devices[0], true), &never).unwrap();
    assert!(matches!(
        reply.grant,
        wmlicense_core::service::Grant::VerifyKey(_)
    ));
    // Release device 0: the slot is free for device 2.
    let rel = ReleaseRequest::new(crypto::random_array().unwrap(), &devices[0], &key).unwrap();
    let reply = client.release(&rel, &never).unwrap();
    assert_eq!(reply.lineages, vec![lineage]);
    assert_eq!(reply.devices.used, 1);
    assert_eq!(
        client.release(&rel, &never).unwrap().lineages,
        vec![lineage]
    );
    client.grant(&req(&devices[2], false), &never).unwrap();
    // Reset once; the second is refused.
    let reset = ResetRequest {
        request_id: crypto::random_array().unwrap(),
        header: h.clone(),
    };
    assert_eq!(client.reset(&reset, &never).unwrap().devices_freed, 2);
    let again = ResetRequest {
        request_id: crypto::random_array().unwrap(),
        header: h.clone(),
    };
    assert!(matches!(
        client.reset(&again, &never),
        Err(Error::TooManyResets(_))
    ));
    let (s, metrics) = svc.send("GET", "/metrics", None, None);
    assert_eq!(s, 200);
    assert!(metrics.contains("wmlicense_requests_total{endpoint=\"/v1/grant\",status=\"403\",outcome=\"restore_limit\"} 2"), "{metrics}");
    assert!(metrics.contains("wmlicense_request_duration_seconds_count{endpoint=\"/v1/grant\"}"));
    assert!(svc.stop().success());
}
