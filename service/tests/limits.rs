//! A real `wmlicense-service` process on 127.0.0.1 as strangers on the internet would use it
//! (SPEC §5.8): connections that send nothing, stop mid-headers or mid-body, or idle after a
//! request are closed after the (short, for the test) timeouts; a declared body over the limit
//! gets 413 before it is sent; the connection cap holds; accept errors are logged and survived;
//! SIGTERM exits 0 at once with an idle keep-alive connection open; and a flood of forged
//! many-lineage headers from 16 addresses is rate-limited before any ledger work.
//!
//! No assertion here depends on how fast the machine is: a read that would hang is bounded by
//! a generous socket timeout (a hang fails the test, a slow machine does not), and the flood's
//! latencies are printed, not asserted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use wmlicense_core::crypto::{self, KeyPair};
use wmlicense_core::format::Header;
use wmlicense_core::service::{hex, Ledger, LicenseService, NetworkService, SqliteLedger};

mod common;
use common::sealed_header as sealed;

const TOKEN: &str = "test-admin-token-0123456789";
/// How long a read may wait for what a timeout of 1 s must bring: a hang, not a slow machine.
const GUARD: Duration = Duration::from_secs(30);

struct Service {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Service {
    fn start(tag: &str, extra: &[&str]) -> Service {
        Service::start_with(tag, extra, None)
    }

    /// `nofile`: the process's limit of open files.
    fn start_with(tag: &str, extra: &[&str], nofile: Option<u64>) -> Service {
        let id: [u8; 8] = crypto::random_array().unwrap();
        let dir = std::env::temp_dir().join(format!("wmlicense-limits-{tag}-{}", hex(&id)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wmlicense-service"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join("data"))
            .arg("--admin-token-file")
            .arg(dir.join("token"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit and prctl are async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    if let Some(n) = nofile {
                        let l = libc::rlimit {
                            rlim_cur: n,
                            rlim_max: n,
                        };
                        if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    #[cfg(target_os = "linux")]
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start wmlicense-service");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("wmlicense-service listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Service {
            child: Some(child),
            addr: url.parse().unwrap(),
            dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(GUARD)).unwrap();
        s
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// SIGTERM; the exit status, or `None` when it had not exited after `wait`.
    fn terminate(&mut self, wait: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + wait;
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

    fn audit_len(&self) -> usize {
        let mut s = self.connect();
        let (status, body) = request(
            &mut s,
            &format!(
                "GET /v1/admin/audit?limit=10000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \
                 {TOKEN}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["records"].as_array().unwrap().len()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- service stderr:\n{}", self.stderr());
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Reads one response (status, body) off `s`: headers, then a Content-Length body.
fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => panic!(
                "connection closed before a whole response: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(_) => buf.push(byte[0]),
            Err(e) => panic!("no response: {e}"),
        }
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

fn request(s: &mut TcpStream, req: &str) -> (u16, String) {
    s.write_all(req.as_bytes()).unwrap();
    read_response(s)
}

/// Waits for the server to close `s` (end of file or reset): a hang fails the test.
fn assert_closed_by_server(s: &mut TcpStream, what: &str) {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: the connection was not closed: {e}"),
    }
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["error"].as_str().unwrap().to_string()
}

#[test]
fn a_silent_connection_is_closed() {
    let svc = Service::start("silent", &["--header-timeout", "1"]);
    let mut s = svc.connect();
    assert_closed_by_server(&mut s, "a connection that sends nothing");
}

#[test]
fn a_connection_stuck_mid_headers_is_closed() {
    let svc = Service::start("headers", &["--header-timeout", "1"]);
    let mut s = svc.connect();
    s.write_all(b"POST /v1/grant HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .unwrap();
    assert_closed_by_server(&mut s, "a connection stuck mid-headers");
}

#[test]
fn a_connection_stuck_mid_body_gets_408_and_is_closed() {
    let svc = Service::start("body", &["--body-timeout", "1"]);
    let mut s = svc.connect();
    s.write_all(
        b"POST /v1/grant HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"request_id\"",
    )
    .unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(
        (status, error_code(&body).as_str()),
        (408, "request_timeout")
    );
    assert_closed_by_server(&mut s, "a connection stuck mid-body");
    assert_eq!(svc.audit_len(), 0);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let svc = Service::start("idle", &["--header-timeout", "1"]);
    let mut s = svc.connect();
    let (status, _) = request(&mut s, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    // Kept alive: a second request on it is answered...
    let (status, _) = request(&mut s, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    // ...and then, idle, it is closed.
    assert_closed_by_server(&mut s, "an idle keep-alive connection");
}

#[test]
fn a_declared_length_over_the_limit_gets_413_at_once() {
    // Default timeouts: the 413 must not wait for the body (nor for a body timeout).
    let svc = Service::start("413", &[]);
    let mut s = svc.connect();
    s.write_all(
        b"POST /v1/grant HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100000000\r\n\r\n{",
    )
    .unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(
        (status, error_code(&body).as_str()),
        (413, "payload_too_large")
    );
    assert_closed_by_server(&mut s, "a connection whose body was refused");
}

/// With a cap of two connections and two silent ones open, a third is not served until one
/// of the two closes; then it is.
#[test]
fn the_connection_cap_holds() {
    let svc = Service::start("cap", &["--max-connections", "2", "--header-timeout", "60"]);
    let a = svc.connect();
    let b = svc.connect();
    // Both accepted (each a permit) before the third comes: a served request on each proves it.
    let mut third = svc.connect();
    third
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    match third.read(&mut byte) {
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("a third connection was served over the cap of two: {other:?}"),
    }
    drop(a);
    third.set_read_timeout(Some(GUARD)).unwrap();
    let mut rest = Vec::new();
    third.read_to_end(&mut rest).unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(b);
}

/// Out of file descriptors, accepting fails: each failure is logged, and the service serves
/// again once connections close.
#[test]
fn accept_errors_are_logged_and_survived() {
    let svc = Service::start_with(
        "emfile",
        &["--header-timeout", "1", "--max-connections", "10000"],
        Some(64),
    );
    let conns: Vec<TcpStream> = (0..100).map(|_| svc.connect()).collect();
    // The service closes the ones it accepted after the header timeout; then it accepts the
    // others, which it could not while out of descriptors.
    for mut c in conns {
        assert_closed_by_server(&mut c, "a silent connection");
    }
    assert!(
        svc.stderr().contains("cannot accept a connection"),
        "no accept error logged:\n{}",
        svc.stderr()
    );
    let mut s = svc.connect();
    let (status, _) = request(
        &mut s,
        "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
}

/// SIGTERM with an idle keep-alive connection open: exit 0 without waiting for the drain
/// timeout (30 s) the idle connection would otherwise hold it for.
#[test]
fn sigterm_exits_zero_with_an_idle_keep_alive_connection() {
    let mut svc = Service::start("sigterm", &["--drain-timeout", "60"]);
    let mut s = svc.connect();
    let (status, _) = request(&mut s, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    let status = svc
        .terminate(Duration::from_secs(30))
        .expect("SIGTERM: still running after 30 s with an idle connection (drain is 60 s)");
    assert!(status.success(), "SIGTERM: exited with {status}");
    assert_closed_by_server(&mut s, "the idle connection at shutdown");
}

fn grant_request(h: &Header) -> String {
    let dev = KeyPair::generate().unwrap();
    let body = serde_json::json!({
        "request_id": hex(&crypto::random_array::<16>().unwrap()),
        "header": hex(&h.to_bytes()),
        "device_id": hex(&crypto::random_array::<16>().unwrap()),
        "device_public_key": hex(&dev.public),
    })
    .to_string();
    format!(
        "POST /v1/grant HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A connection from `ip` (a loopback address of the test's choosing).
fn connect_from(ip: std::net::Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::from((ip, 0)).into())?;
    sock.connect(&to.into())?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(GUARD))?;
    Ok(s)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// 16 clients, each from its own loopback address, send grants of forged headers naming 1,024
/// fresh lineages each (anyone can: the service key is public) while an honest client grants
/// and checks health. The flooders are rate-limited (429) before any ledger work: the ledger
/// holds exactly the audit rows of the requests that were decided, none of the 429s; the
/// honest client is never refused. Latencies are printed (`--nocapture`), not asserted.
#[test]
fn a_forged_header_flood_is_limited_before_the_ledger() {
    let svc = Service::start("flood", &[]);
    let key = NetworkService::new(&svc.url())
        .unwrap()
        .service_key(&|| false)
        .unwrap();
    let addr = svc.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..16u8)
        .map(|i| {
            let key = key.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let ip = std::net::Ipv4Addr::new(127, 0, 0, 2 + i);
                let (mut decided, mut limited) = (0usize, 0usize);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut lineages: Vec<[u8; 16]> =
                        (0..1024).map(|_| crypto::random_array().unwrap()).collect();
                    lineages.sort();
                    let req = grant_request(&sealed(&key, &lineages));
                    let mut s = connect_from(ip, addr).expect("connect from 127.0.0.x");
                    let (status, body) = request(&mut s, &req);
                    match status {
                        200 => decided += 1,
                        429 => limited += 1,
                        _ => panic!("a forged grant answered {status}: {body}"),
                    }
                }
                (decided, limited)
            })
        })
        .collect();
    let (mut grant_ms, mut health_ms) = (Vec::new(), Vec::new());
    let mut honest_grants = 0;
    // 30 grants over at least 4.5 s: within the default client limit (a burst of 20, then 5
    // a second) however slow the machine is.
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(150));
        let lineage: [u8; 16] = crypto::random_array().unwrap();
        let req = grant_request(&sealed(&key, &[lineage]));
        let t = Instant::now();
        let mut s = svc.connect();
        let (status, body) = request(&mut s, &req);
        grant_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200, "the honest grant: {body}");
        honest_grants += 1;
        let t = Instant::now();
        let mut s = svc.connect();
        let (status, _) = request(
            &mut s,
            "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        health_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut decided, mut limited) = (0, 0);
    for f in flooders {
        let (d, l) = f.join().unwrap();
        decided += d;
        limited += l;
    }
    println!(
        "flood: 16 clients, {decided} forged grants decided, {limited} refused with 429; honest \
         grant p50 {:.1} ms p99 {:.1} ms, health p50 {:.1} ms p99 {:.1} ms",
        percentile(&mut grant_ms, 0.5),
        percentile(&mut grant_ms, 0.99),
        percentile(&mut health_ms, 0.5),
        percentile(&mut health_ms, 0.99),
    );
    assert!(limited > 0, "no flooder was rate-limited");
    // Each decided forged grant wrote 1,024 audit rows, each honest one 1; a 429 wrote none.
    let ledger = SqliteLedger::open(&svc.dir.join("data").join("ledger.db")).unwrap();
    let rows = ledger.audit_log(None, u32::MAX).unwrap().len();
    assert_eq!(rows, decided * 1024 + honest_grants);
}
