//! Several `wmlicense-service serve` processes on one PostgreSQL ledger (SPEC §5.2, §5.4): the
//! device limit holds across replicas under concurrent grants, a retried request ID counts once
//! whichever replica it reaches, and a replica killed mid-request loses no decision it answered.
//! One more test runs one instance on its SQLite ledger.
//!
//! The PostgreSQL tests need `WMLICENSE_TEST_DATABASE_URL` (`scripts/test.sh` starts a throwaway
//! server with `scripts/pg.sh` and sets it); each test creates a database of its own on that
//! server. Without the variable they skip, except on CI (`CI` set), where they fail.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Barrier, Mutex};
use std::time::{Duration, Instant};

use wmlicense_core::crypto::{self, KeyPair, SealedKey};
use wmlicense_core::format::{Header, VERSION};
use wmlicense_core::service::wire::{ErrorBody, GrantAnswer, GrantBody, PATH_GRANT};
use wmlicense_core::service::{
    hex, Grant, GrantRequest, Ledger, LicenseService, NetworkService, ServiceKey, SqliteLedger,
};
use wmlicense_core::Error;

const BIN: &str = env!("CARGO_BIN_EXE_wmlicense-service");
const LISTEN_PREFIX: &str = "wmlicense-service listening on ";

fn never() -> bool {
    false
}

fn random<const N: usize>() -> [u8; N] {
    crypto::random_array().unwrap()
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: one fresh database per test.

/// The test server's URL, or `None` (skip) when there is none and this is not CI.
fn database_url(test: &str) -> Option<String> {
    match std::env::var("WMLICENSE_TEST_DATABASE_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u.trim().to_string()),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{test}: WMLICENSE_TEST_DATABASE_URL is not set and CI is: the replica tests must \
             run on CI (scripts/test.sh starts PostgreSQL with scripts/pg.sh)"
        ),
        _ => {
            eprintln!(
                "SKIPPED {test}: WMLICENSE_TEST_DATABASE_URL is not set (scripts/test.sh sets \
                 it; or: export WMLICENSE_TEST_DATABASE_URL=$(scripts/pg.sh start DIR))"
            );
            None
        }
    }
}

/// `url` with its database name replaced by `db` (a query string stays).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// A database of one test, dropped at the end.
struct TestDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    fn create(server_url: &str) -> TestDatabase {
        let name = format!("t_{}", hex(&random::<8>()));
        let mut admin = pg_connect(server_url);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {server_url}: {e}"));
        TestDatabase {
            server_url: server_url.to_string(),
            url: with_database(server_url, &name),
            name,
        }
    }

    fn client(&self) -> postgres::Client {
        pg_connect(&self.url)
    }

    /// Devices counted for `lineage`, straight from the ledger's table.
    fn devices(&self, lineage: &[u8; 16]) -> Vec<Vec<u8>> {
        self.client()
            .query(
                "SELECT device FROM devices WHERE lineage_id = $1 ORDER BY device",
                &[&&lineage[..]],
            )
            .unwrap()
            .iter()
            .map(|r| r.get::<_, Vec<u8>>(0))
            .collect()
    }

    fn device_count(&self, lineage: &[u8; 16]) -> i64 {
        self.client()
            .query_one(
                "SELECT COUNT(*) FROM devices WHERE lineage_id = $1",
                &[&&lineage[..]],
            )
            .unwrap()
            .get(0)
    }

    /// The recorded outcome of a request ID, if the ledger has it.
    fn request_outcome(&self, request_id: &[u8; 16]) -> Option<String> {
        self.client()
            .query_opt(
                "SELECT outcome FROM service_requests WHERE request_id = $1",
                &[&&request_id[..]],
            )
            .unwrap()
            .map(|r| r.get(0))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: the server is a throwaway one anyway.
        if let Ok(mut c) = postgres::Client::connect(&self.server_url, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn pg_connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Service processes.

/// Options of `serve` beyond --listen and --data.
#[derive(Clone, Default)]
struct ServeOptions {
    database: Option<String>,
    device_limit: Option<u32>,
    /// --rate-limit (requests per second per lineage; 0: none).
    rate_limit: Option<f64>,
}

struct Replica {
    child: Option<Child>,
    url: String,
    /// host:port
    addr: String,
    dir: PathBuf,
}

impl Replica {
    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a plain kill(2) of our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for it to exit (SIGKILL after `timeout`).
    fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: a plain kill(2) of our own child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > end {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr_log(&self) -> String {
        fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

/// The processes of one test, killed when it ends however it ends; their directories removed
/// unless it failed.
struct Cluster {
    root: PathBuf,
    replicas: Vec<Replica>,
    options: ServeOptions,
}

impl Cluster {
    fn new(tag: &str, options: ServeOptions) -> Cluster {
        let root =
            std::env::temp_dir().join(format!("wmlicense-replicas-{tag}-{}", hex(&random::<6>())));
        fs::create_dir_all(&root).unwrap();
        Cluster {
            root,
            replicas: Vec::new(),
            options,
        }
    }

    /// Starts replica number `self.replicas.len()`; all but the first get a copy of the first
    /// one's keys before they start.
    fn start(&mut self) -> &Replica {
        let n = self.replicas.len();
        let dir = self.root.join(format!("r{n}"));
        fs::create_dir_all(&dir).unwrap();
        if n > 0 {
            copy_keys(&self.replicas[0].dir.join("keys"), &dir.join("keys"));
        }
        let replica = spawn_serve(&dir, &self.options);
        self.replicas.push(replica);
        &self.replicas[n]
    }

    fn url(&self, i: usize) -> &str {
        &self.replicas[i].url
    }

    fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.url.clone()).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            r.kill();
        }
        if std::thread::panicking() {
            for (i, r) in self.replicas.iter().enumerate() {
                eprintln!(
                    "--- replica {i} ({}) stderr:\n{}",
                    r.url,
                    tail(&r.stderr_log(), 40)
                );
            }
            eprintln!("(left {} for inspection)", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn copy_keys(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).unwrap();
    let mut n = 0;
    for e in fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            let dest = to.join(e.file_name());
            fs::copy(e.path(), &dest).unwrap();
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
            n += 1;
        }
    }
    assert!(n > 0, "{} holds no key file", from.display());
}

fn spawn_serve(dir: &Path, o: &ServeOptions) -> Replica {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir);
    if let Some(db) = &o.database {
        cmd.args(["--database", db]);
    }
    if let Some(n) = o.device_limit {
        cmd.args(["--device-limit", &n.to_string()]);
    }
    if let Some(r) = o.rate_limit {
        cmd.args(["--rate-limit", &r.to_string()]);
    }
    // Every client of these tests is on 127.0.0.1: the per-client limit is tests/limits.rs's.
    cmd.args(["--client-rate-limit", "0"]);
    let log = fs::File::create(dir.join("stderr.log")).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // Should this test process die without unwinding, its services die with it.
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Anything after the one line is a bug of the service; keep the pipe drained.
        for l in lines.map_while(|l| l.ok()) {
            eprintln!("unexpected stdout line from wmlicense-service: {l}");
        }
    });
    let line =
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                "wmlicense-service serve --data {} printed no listen line ({other:?}); stderr:\n{}",
                dir.display(),
                tail(&fs::read_to_string(dir.join("stderr.log")).unwrap_or_default(), 40)
            );
            }
        };
    let url = line
        .strip_prefix(LISTEN_PREFIX)
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("unexpected first stdout line: {line:?}")
        })
        .trim()
        .to_string();
    let addr = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http URL: {url}"))
        .trim_end_matches('/')
        .to_string();
    Replica {
        child: Some(child),
        url,
        addr,
        dir: dir.to_path_buf(),
    }
}

// ---------------------------------------------------------------------------------------------
// Backups and devices.

/// A version 2 backup header over one fresh lineage, sealed to `key` (what a real backup's
/// header is, without its licenses: the service only ever sees the header).
fn sealed_header(key: &ServiceKey) -> (Header, [u8; 32]) {
    let data_key: [u8; 32] = random();
    let lineage: [u8; 16] = random();
    let mut h = Header {
        version: VERSION,
        backup_id: random(),
        lineage_id: lineage,
        source_device_id: random(),
        created_at: 1_700_000_000,
        license_count: 1,
        service_key_id: key.key_id,
        chunk_size: 4096,
        lineages: vec![lineage],
        sealed_data_key: SealedKey {
            encapped: [0; 32],
            ciphertext: [0; 48],
        },
    };
    h.seal_data_key(&key.public_key, &data_key).unwrap();
    (h, data_key)
}

/// A restoring device: its own key pair and ID, asking for `header` under a fresh request ID.
struct Client {
    keys: KeyPair,
    request: GrantRequest,
}

impl Client {
    fn new(header: &Header) -> Client {
        let keys = KeyPair::generate().unwrap();
        let request = GrantRequest {
            request_id: random(),
            header: header.clone(),
            device_id: random(),
            device_public_key: keys.public,
            dry_run: false,
        };
        Client { keys, request }
    }

    fn device_bytes(&self) -> Vec<u8> {
        self.request.device().to_bytes()
    }

    /// Checks that a granted answer holds the backup's data key sealed to this device.
    fn check_grant(&self, grant: &Grant, data_key: &[u8; 32]) {
        check_grant(&self.request, &self.keys, grant, data_key)
    }
}

fn check_grant(request: &GrantRequest, keys: &KeyPair, grant: &Grant, data_key: &[u8; 32]) {
    match grant {
        Grant::DataKey(sealed) => assert_eq!(
            &request.open_grant(&keys.secret, sealed).unwrap(),
            data_key,
            "the grant does not hold the backup's data key"
        ),
        other => panic!("expected the data key, got {other:?}"),
    }
}

fn service_key(url: &str) -> ServiceKey {
    NetworkService::new(url)
        .unwrap()
        .service_key(&never)
        .unwrap_or_else(|e| panic!("GET service key from {url}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP client: one request per connection, no retry, so that "answered" means exactly
// that a whole HTTP answer arrived.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Raw {
    Granted(u32),
    Refused(u32),
    /// 429 or 5xx: a transient failure, to be retried.
    Transient(u16),
    /// No whole answer arrived (connection refused, reset, cut).
    NoAnswer(String),
}

fn raw_grant(addr: &str, req: &GrantRequest) -> Raw {
    let body = serde_json::to_vec(&GrantBody::of(req)).unwrap();
    let (status, answer) = match http_post(addr, PATH_GRANT, &body) {
        Ok(x) => x,
        Err(e) => return Raw::NoAnswer(e.to_string()),
    };
    match status {
        200 => {
            let a: GrantAnswer = serde_json::from_slice(&answer)
                .unwrap_or_else(|e| panic!("a 200 answer that is not a grant: {e}: {answer:?}"));
            assert_eq!(a.grant, "data_key");
            Raw::Granted(a.devices_used)
        }
        429 | 500..=599 => Raw::Transient(status),
        _ => {
            let e: ErrorBody = serde_json::from_slice(&answer)
                .unwrap_or_else(|e| panic!("HTTP {status} without an error body: {e}"));
            assert_eq!(
                e.error, "restore_limit",
                "HTTP {status}: unexpected refusal: {}",
                e.message
            );
            Raw::Refused(e.devices_used.unwrap_or(0))
        }
    }
}

/// [`raw_grant`], retrying transient answers (429, 5xx) for up to 30 s: a decision.
fn raw_grant_decided(addr: &str, req: &GrantRequest) -> Raw {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match raw_grant(addr, req) {
            Raw::Transient(_) if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(100))
            }
            r => return r,
        }
    }
}

/// POSTs `body`; the status and body of a complete answer, or an error.
fn http_post(addr: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Error as IoError, ErrorKind};
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let cut = || IoError::new(ErrorKind::UnexpectedEof, "incomplete HTTP answer");
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(cut)?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| cut())?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(cut)?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
    }
    let mut rest = buf[end + 4..].to_vec();
    if chunked {
        rest = dechunk(&rest).ok_or_else(cut)?;
    } else if let Some(n) = length {
        if rest.len() < n {
            return Err(cut());
        }
        rest.truncate(n);
    }
    Ok((status, rest))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrent grants through the library's client.

/// Runs every client's grant at once (one thread each), client `i` on `urls[i % len]`; the
/// number granted (each checked to hold the data key) and refused (`Error::RestoreFraud`).
fn grant_all(clients: &[Client], urls: &[String], data_key: &[u8; 32]) -> (usize, usize) {
    let barrier = Barrier::new(clients.len());
    let granted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (i, c) in clients.iter().enumerate() {
            let url = &urls[i % urls.len()];
            let (barrier, granted, refused) = (&barrier, &granted, &refused);
            s.spawn(move || {
                let svc = NetworkService::new(url).unwrap();
                barrier.wait();
                match svc.grant(&c.request, &never) {
                    Ok(reply) => {
                        c.check_grant(&reply.grant, data_key);
                        granted.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(Error::RestoreFraud { device_limit, .. }) => {
                        assert!(device_limit > 0);
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => panic!("client {i} on {url}: unexpected error: {e}"),
                }
            });
        }
    });
    (granted.into_inner(), refused.into_inner())
}

fn start_replicas(tag: &str, db: &TestDatabase, n: usize, options: ServeOptions) -> Cluster {
    let mut cluster = Cluster::new(
        tag,
        ServeOptions {
            database: Some(db.url.clone()),
            ..options
        },
    );
    for _ in 0..n {
        cluster.start();
    }
    // Every replica serves the same key.
    let key = service_key(cluster.url(0));
    for i in 1..n {
        assert_eq!(
            service_key(cluster.url(i)),
            key,
            "replica {i} has other keys"
        );
    }
    cluster
}

fn limit(n: u32) -> ServeOptions {
    ServeOptions {
        device_limit: Some(n),
        ..ServeOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// 48 devices grant one backup at once through 3 replicas: exactly the limit (4) are granted,
/// the 44 others refused, and the ledger holds 4 devices.
#[test]
fn replicas_never_grant_more_than_the_limit() {
    let Some(server) = database_url("replicas_never_grant_more_than_the_limit") else {
        return;
    };
    let db = TestDatabase::create(&server);
    let cluster = start_replicas("limit", &db, 3, limit(4));
    let (header, data_key) = sealed_header(&service_key(cluster.url(0)));
    let lineage = header.lineage_id;
    let clients: Vec<Client> = (0..48).map(|_| Client::new(&header)).collect();

    let (granted, refused) = grant_all(&clients, &cluster.urls(), &data_key);
    assert_eq!((granted, refused), (4, 44), "granted, refused");
    assert_eq!(db.device_count(&lineage), 4, "devices in the ledger");

    // The granted ones are the ones counted, and are granted again for free on any replica.
    let counted = db.devices(&lineage);
    let again: Vec<&Client> = clients
        .iter()
        .filter(|c| counted.contains(&c.device_bytes()))
        .collect();
    assert_eq!(again.len(), 4);
    for (i, c) in again.iter().enumerate() {
        let svc = NetworkService::new(cluster.url(i % 3)).unwrap();
        let mut request = c.request.clone();
        request.request_id = random();
        let reply = svc.grant(&request, &never).unwrap();
        check_grant(&request, &c.keys, &reply.grant, &data_key);
        assert_eq!((reply.devices.used, reply.devices.limit), (4, 4));
    }
    assert_eq!(db.device_count(&lineage), 4);
}

/// One request (one request ID) sent 10 times to each of 3 replicas, all at once: one decision,
/// one device counted; every answer is the same grant.
#[test]
fn a_retried_request_counts_once_across_replicas() {
    let Some(server) = database_url("a_retried_request_counts_once_across_replicas") else {
        return;
    };
    let db = TestDatabase::create(&server);
    let cluster = start_replicas("retry", &db, 3, limit(2));
    let (header, data_key) = sealed_header(&service_key(cluster.url(0)));
    let lineage = header.lineage_id;

    // One device counted already: the retried request takes the last slot.
    let first = Client::new(&header);
    NetworkService::new(cluster.url(0))
        .unwrap()
        .grant(&first.request, &never)
        .unwrap();

    let c = Client::new(&header);
    let urls = cluster.urls();
    let barrier = Barrier::new(30);
    let answers = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..30 {
            let (url, barrier, answers, c) = (&urls[i % 3], &barrier, &answers, &c);
            s.spawn(move || {
                let svc = NetworkService::new(url).unwrap();
                barrier.wait();
                let reply = svc
                    .grant(&c.request, &never)
                    .unwrap_or_else(|e| panic!("send {i} to {url}: {e}"));
                c.check_grant(&reply.grant, &data_key);
                answers.lock().unwrap().push(reply.devices);
            });
        }
    });
    let answers = answers.into_inner().unwrap();
    assert_eq!(answers.len(), 30);
    for d in &answers {
        assert_eq!(
            (d.used, d.limit),
            (2, 2),
            "every answer reports 2 of 2 devices"
        );
    }
    assert_eq!(db.device_count(&lineage), 2, "devices in the ledger");
    let mut pg = db.client();
    let decisions: i64 = pg
        .query_one(
            "SELECT COUNT(*) FROM service_requests WHERE request_id = $1",
            &[&&c.request.request_id[..]],
        )
        .unwrap()
        .get(0);
    assert_eq!(decisions, 1, "one recorded decision for the request ID");

    // The lineage is full: a new device is refused, on every replica.
    for url in &urls {
        let other = Client::new(&header);
        match NetworkService::new(url)
            .unwrap()
            .grant(&other.request, &never)
        {
            Err(Error::RestoreFraud {
                devices_used,
                device_limit,
                ..
            }) => assert_eq!((devices_used, device_limit), (2, 2)),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(db.device_count(&lineage), 2);
}

/// Grants hammer replica 1 while it is SIGKILLed. Every grant it answered is in the ledger (and
/// every refusal recorded as one); the requests it did not answer, re-sent with their request
/// IDs to replica 2, leave exactly as many devices as grants answered, never more than the
/// limit.
#[test]
fn killing_a_replica_mid_request_loses_nothing() {
    let Some(server) = database_url("killing_a_replica_mid_request_loses_nothing") else {
        return;
    };
    const LIMIT: u32 = 24;
    const THREADS: usize = 12;
    let db = TestDatabase::create(&server);
    let mut cluster = start_replicas(
        "kill",
        &db,
        2,
        ServeOptions {
            // Hundreds of grants of one lineage: the per-lineage rate limit would turn most
            // into 429s.
            rate_limit: Some(0.0),
            ..limit(LIMIT)
        },
    );
    let (header, data_key) = sealed_header(&service_key(cluster.url(0)));
    let lineage = header.lineage_id;
    let addr1 = cluster.replicas[0].addr.clone();
    let addr2 = cluster.replicas[1].addr.clone();

    // Each thread sends grants of new devices to replica 1, one after another, until one gets
    // no answer (the replica is gone) or it has sent 40.
    let answered = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<(Client, Raw)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let (header, addr1, answered, stop, results) =
                (&header, &addr1, &answered, &stop, &results);
            s.spawn(move || {
                for _ in 0..40 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let c = Client::new(header);
                    let r = raw_grant(addr1, &c.request);
                    let gone = matches!(r, Raw::NoAnswer(_));
                    if !gone {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    results.lock().unwrap().push((c, r));
                    if gone {
                        break;
                    }
                }
            });
        }
        // Kill it while requests are in flight: once some grants were answered (a random
        // number of them, then after a random few milliseconds, so that runs cut requests at
        // different stages), and before the lineage is full.
        let [r1, r2] = random::<2>();
        let threshold = LIMIT as usize / 4 + usize::from(r1) % (LIMIT as usize / 2);
        let t0 = Instant::now();
        while answered.load(Ordering::SeqCst) < threshold && t0.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(u64::from(r2) * 16));
        cluster.replicas[0].signal(libc::SIGKILL);
        stop.store(true, Ordering::SeqCst);
    });
    cluster.replicas[0].kill();
    let results = results.into_inner().unwrap();

    let mut granted = 0usize;
    let mut unanswered = Vec::new();
    let counted = db.devices(&lineage);
    for (c, r) in &results {
        match r {
            Raw::Granted(_) => {
                granted += 1;
                assert!(
                    counted.contains(&c.device_bytes()),
                    "a grant replica 1 answered is not in the ledger"
                );
                assert_eq!(
                    db.request_outcome(&c.request.request_id).as_deref(),
                    Some("granted")
                );
            }
            Raw::Refused(_) => assert_eq!(
                db.request_outcome(&c.request.request_id).as_deref(),
                Some("refused"),
                "a refusal replica 1 answered is not recorded"
            ),
            Raw::Transient(_) | Raw::NoAnswer(_) => unanswered.push(c),
        }
    }
    assert!(
        granted > 0,
        "replica 1 answered no grant before it was killed"
    );
    assert!(
        !unanswered.is_empty(),
        "the kill cut no request (all {} answered)",
        results.len()
    );
    eprintln!(
        "replica 1 answered {} requests ({granted} grants) and left {} unanswered; ledger: {} \
         devices",
        results.len() - unanswered.len(),
        unanswered.len(),
        counted.len()
    );
    // Some unanswered requests may have been decided before the kill: that is the retry's job.
    assert!(counted.len() >= granted);
    assert!(counted.len() <= LIMIT as usize);

    // Re-send the unanswered requests, with their request IDs, to replica 2.
    for c in &unanswered {
        match raw_grant_decided(&addr2, &c.request) {
            Raw::Granted(_) => granted += 1,
            Raw::Refused(_) => {}
            other => panic!("replica 2 did not decide a re-sent request: {other:?}"),
        }
    }
    assert_eq!(
        db.device_count(&lineage) as usize,
        granted,
        "devices in the ledger == grants answered"
    );
    assert!(granted <= LIMIT as usize);

    // Re-sending the answered ones to replica 2 gets the same decisions and counts nothing.
    let before = db.device_count(&lineage);
    for (c, r) in &results {
        if let Raw::Granted(_) | Raw::Refused(_) = r {
            let again = raw_grant_decided(&addr2, &c.request);
            assert_eq!(
                std::mem::discriminant(&again),
                std::mem::discriminant(r),
                "replica 2 decided a request again otherwise"
            );
            if let Raw::Granted(_) = again {
                let svc = NetworkService::new(cluster.url(1)).unwrap();
                let reply = svc.grant(&c.request, &never).unwrap();
                c.check_grant(&reply.grant, &data_key);
            }
        }
    }
    assert_eq!(db.device_count(&lineage), before);

    // New devices on replica 2 fill the lineage up to the limit and no further.
    loop {
        let c = Client::new(&header);
        match raw_grant_decided(&addr2, &c.request) {
            Raw::Granted(_) => granted += 1,
            Raw::Refused(used) => {
                assert_eq!(used, LIMIT);
                break;
            }
            other => panic!("replica 2: {other:?}"),
        }
        assert!(granted <= LIMIT as usize, "more grants than the limit");
    }
    assert_eq!(granted, LIMIT as usize);
    assert_eq!(db.device_count(&lineage), i64::from(LIMIT));
}

/// One instance on its SQLite ledger: 16 devices at once, exactly the limit granted; SIGTERM
/// then exits 0.
#[test]
fn sqlite_instance_never_grants_more_than_the_limit() {
    let mut cluster = Cluster::new("sqlite", limit(4));
    cluster.start();
    let url = cluster.url(0).to_string();
    let (header, data_key) = sealed_header(&service_key(&url));
    let clients: Vec<Client> = (0..16).map(|_| Client::new(&header)).collect();

    let (granted, refused) = grant_all(&clients, &[url], &data_key);
    assert_eq!((granted, refused), (4, 12), "granted, refused");

    let status = cluster.replicas[0]
        .terminate(Duration::from_secs(20))
        .expect("SIGTERM: the service did not exit within 20 s");
    assert!(
        status.success(),
        "SIGTERM: the service exited with {status}"
    );
    let ledger = SqliteLedger::open(&cluster.replicas[0].dir.join("ledger.db")).unwrap();
    assert_eq!(
        ledger.devices(&header.lineage_id, i64::MIN).unwrap().len(),
        4
    );
}

#[test]
fn with_database_replaces_the_database_name() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/wmlicense", "t_1"),
        "postgres://postgres@127.0.0.1:5432/t_1"
    );
    assert_eq!(
        with_database("postgres://u:p@h:1/db?sslmode=disable", "t_2"),
        "postgres://u:p@h:1/t_2?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:1", "t_3"), "postgres://h:1/t_3");
}

/// Every decision on the PostgreSQL ledger, for a backup of two lineages: grants count the
/// device for both (with the count after), the limit refuses, a dry run decides without
/// recording, a retried request ID gets its first answer, a release frees both lineages (and
/// its retry answers the same), a reset frees every slot once; the ledger's rows hold exactly
/// what was decided (the request records and the audit lines).
#[test]
fn every_decision_on_postgresql() {
    use wmlicense_core::identity::DeviceIdentity;
    use wmlicense_core::service::{ReleaseRequest, ResetRequest};
    let Some(server) = database_url("every_decision_on_postgresql") else {
        return;
    };
    let db = TestDatabase::create(&server);
    let cluster = start_replicas("decisions", &db, 1, limit(2));
    let svc = NetworkService::new(cluster.url(0)).unwrap();
    let key = service_key(cluster.url(0));
    let (mut header, data_key) = sealed_header(&key);
    let (a, b) = (header.lineage_id, random::<16>());
    let mut lineages = vec![a, b];
    lineages.sort();
    header.lineages = lineages.clone();
    header.seal_data_key(&key.public_key, &data_key).unwrap();
    let devices: Vec<DeviceIdentity> = (0..3)
        .map(|_| DeviceIdentity::generate().unwrap())
        .collect();
    let req = |d: &DeviceIdentity, dry_run: bool| GrantRequest {
        request_id: random(),
        header: header.clone(),
        device_id: d.device_id,
        device_public_key: d.keys.public,
        dry_run,
    };
    let first = req(&devices[0], false);
    for (i, r) in [first.clone(), req(&devices[1], false)].iter().enumerate() {
        let reply = svc.grant(r, &never).unwrap();
        assert_eq!((reply.devices.used, reply.devices.limit), (i as u32 + 1, 2));
        let Grant::DataKey(sealed) = reply.grant else {
            panic!("expected the data key")
        };
        assert_eq!(
            r.open_grant(&devices[i].keys.secret, &sealed).unwrap(),
            data_key
        );
    }
    // The same request again: the same answer, counted once.
    assert_eq!(svc.grant(&first, &never).unwrap().devices.used, 2);
    // Device 0 again under a new request ID: counted already, granted for free.
    assert_eq!(
        svc.grant(&req(&devices[0], false), &never)
            .unwrap()
            .devices
            .used,
        2
    );
    let third = req(&devices[2], false);
    assert!(matches!(
        svc.grant(&third, &never),
        Err(Error::RestoreFraud {
            devices_used: 2,
            device_limit: 2,
            ..
        })
    ));
    assert_eq!(
        db.request_outcome(&third.request_id).as_deref(),
        Some("refused")
    );
    let dry = req(&devices[2], true);
    assert!(matches!(
        svc.grant(&dry, &never),
        Err(Error::RestoreFraud { .. })
    ));
    assert_eq!(db.request_outcome(&dry.request_id), None);
    assert!(matches!(
        svc.grant(&req(&devices[0], true), &never).unwrap().grant,
        Grant::VerifyKey(_)
    ));
    for l in [&a, &b] {
        assert_eq!(db.device_count(l), 2);
    }
    // Release device 0 from both lineages; the retry answers the same and frees nothing more.
    let rel = ReleaseRequest::new(random(), &devices[0], &key).unwrap();
    let reply = svc.release(&rel, &never).unwrap();
    assert_eq!(
        (reply.lineages.clone(), reply.devices.used),
        (lineages.clone(), 1)
    );
    assert_eq!(svc.release(&rel, &never).unwrap().lineages, lineages);
    assert_eq!(
        svc.grant(&req(&devices[2], false), &never)
            .unwrap()
            .devices
            .used,
        2
    );
    // Reset: 2 devices freed in each lineage, once.
    let reset = ResetRequest {
        request_id: random(),
        header: header.clone(),
    };
    assert_eq!(svc.reset(&reset, &never).unwrap().devices_freed, 4);
    assert_eq!(svc.reset(&reset, &never).unwrap().devices_freed, 4);
    let again = ResetRequest {
        request_id: random(),
        header: header.clone(),
    };
    assert!(matches!(
        svc.reset(&again, &never),
        Err(Error::TooManyResets(_))
    ));
    for l in [&a, &b] {
        assert_eq!(db.device_count(l), 0);
    }
    // The audit lines, as written: one per lineage and decision (a refused reset: of the first
    // lineage too soon).
    let rows = db
        .client()
        .query(
            "SELECT action, outcome, detail, device IS NULL, request_id IS NULL FROM audit
             WHERE lineage_id = $1 ORDER BY id",
            &[&&lineages[0][..]],
        )
        .unwrap();
    let lines: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want = [
        ("grant", "granted"),
        ("grant", "granted"),
        ("grant", "granted"),
        ("grant", "refused"),
        ("dry-run", "refused"),
        ("dry-run", "granted"),
        ("release", "released"),
        ("grant", "granted"),
        ("reset", "reset"),
        ("reset", "too-many-resets"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(x, y)| (x.to_string(), y.to_string()))
        .collect();
    assert_eq!(lines, want);
    let detail: String = rows[0].get(2);
    assert_eq!(
        detail,
        format!("0 of 2 devices before; backup {}", hex(&header.backup_id))
    );
    assert!(!rows[0].get::<_, bool>(3) && !rows[0].get::<_, bool>(4));
    assert_eq!(rows[8].get::<_, String>(2), "2 devices freed");
    assert!(rows[8].get::<_, bool>(3));
}

/// A replica on PostgreSQL, after serving grants, with an idle keep-alive connection open:
/// SIGTERM exits 0 (not an abort from dropping the database client inside the runtime), and
/// without waiting out the drain timeout for the idle connection.
#[test]
fn sigterm_exits_zero_on_postgresql_with_an_idle_connection() {
    let Some(server) = database_url("sigterm_exits_zero_on_postgresql_with_an_idle_connection")
    else {
        return;
    };
    let db = TestDatabase::create(&server);
    let mut cluster = start_replicas("sigterm", &db, 1, limit(4));
    let (header, data_key) = sealed_header(&service_key(cluster.url(0)));
    let clients: Vec<Client> = (0..4).map(|_| Client::new(&header)).collect();
    assert_eq!(grant_all(&clients, &cluster.urls(), &data_key), (4, 0));
    let mut idle = TcpStream::connect(&cluster.replicas[0].addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 12];
    idle.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    // The default drain timeout is 30 s: an exit within 20 s did not wait for the idle one.
    let status = cluster.replicas[0]
        .terminate(Duration::from_secs(20))
        .expect("SIGTERM: the replica did not exit within 20 s");
    assert!(
        status.success(),
        "SIGTERM: the replica exited with {status}:\n{}",
        tail(&cluster.replicas[0].stderr_log(), 20)
    );
    assert_eq!(db.device_count(&header.lineage_id), 4);
}
