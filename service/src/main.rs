//! `wmlicense-service`: the network License Management Service (SPEC §5.4).
//!
//! ```text
//! wmlicense-service serve --listen ADDR --data DIR [--database URL] [--device-limit N] ...
//! wmlicense-service keys rotate|list --data DIR
//! wmlicense-service lineage show|release|reset ...
//! wmlicense-service audit ...
//! ```

use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use wmlicense_core::service::{hex, hex_array, Authority, Device, KeyRing, Policy};
use wmlicense_service::ledger::AnyLedger;
use wmlicense_service::net::{self, Cidr, Limits};
use wmlicense_service::{app, server, Config};

#[derive(Parser)]
#[command(
    name = "wmlicense-service",
    version,
    about = "wmlicense's License Management Service: decides on which devices a backup may be \
             restored, lets a store release its slot and a backup's owner reset its lineage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// The service keys in DIR/keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Operator: a lineage's devices (show, release one, reset all).
    Lineage {
        #[command(subcommand)]
        command: LineageCommand,
    },
    /// Operator: the newest audit records (grants, refusals, releases, resets).
    Audit {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Only this lineage's records (32 hex digits).
        #[arg(long)]
        lineage: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Args)]
struct LedgerArgs {
    /// The service's data directory (keys in DIR/keys, SQLite ledger in DIR/ledger.db).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// A PostgreSQL ledger (postgres://user@host:port/db) instead of DIR/ledger.db.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0: any free port; the first line on stdout says which).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8750")]
    listen: String,
    #[command(flatten)]
    ledger: LedgerArgs,
    /// Devices one lineage may be restored onto.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    device_limit: u32,
    /// A device counts only for D days after its first grant (default: forever).
    #[arg(long, value_name = "D", value_parser = clap::value_parser!(u32).range(1..))]
    device_window_days: Option<u32>,
    /// One reset of a lineage per D days.
    #[arg(long, value_name = "D", default_value_t = 365)]
    reset_window_days: u32,
    /// Where a refused user can get help (sent with a refusal; the library's ERROR_WITHURL).
    #[arg(long, value_name = "URL")]
    help_url: Option<String>,
    /// File holding the bearer token of the /v1/admin endpoints (disabled without it).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM)...
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// ...and this private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Requests per second per lineage (and per device for releases) before 429; 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 10.0)]
    rate_limit: f64,
    /// Requests a lineage may make at once before the rate applies.
    #[arg(long, value_name = "N", default_value_t = 50)]
    rate_burst: u32,
    /// Anonymous requests (grant, release, reset) per second per client address before 429,
    /// checked before any other work; 0: no limit.
    /// A header of more than 16 lineages counts as one request per 16.
    #[arg(long, value_name = "N", default_value_t = 5.0)]
    client_rate_limit: f64,
    /// Anonymous requests a client may make at once before its rate applies.
    #[arg(long, value_name = "N", default_value_t = 20)]
    client_rate_burst: u32,
    /// A reverse proxy (ADDR/BITS, repeatable) whose X-Forwarded-For names the client that
    /// the per-client rate limit counts.
    #[arg(long, value_name = "CIDR")]
    trusted_proxy: Vec<Cidr>,
    /// Seconds a request's headers may take, and an idle keep-alive connection may wait for
    /// its next request, before the connection is closed.
    #[arg(long, value_name = "S", default_value_t = 10.0, value_parser = seconds)]
    header_timeout: f64,
    /// Seconds a request's body may take to arrive before 408 and the connection closed.
    #[arg(long, value_name = "S", default_value_t = 30.0, value_parser = seconds)]
    body_timeout: f64,
    /// Connections open at once (more wait until one closes).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds SIGTERM waits for requests in flight.
    #[arg(long, value_name = "S", default_value_t = 30.0, value_parser = seconds)]
    drain_timeout: f64,
    /// PostgreSQL connections of this replica.
    #[arg(long, value_name = "N", default_value_t = 16)]
    db_connections: usize,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?}: a number of seconds, more than 0 and at most 86400"
        )),
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new current key (new backups are sealed to it; older keys still serve theirs).
    /// Copy DIR/keys to every replica and restart them.
    Rotate {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// One line per key: key ID, public key (the ServiceKey property), creation time,
    /// "current" for the current one.
    List {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum LineageCommand {
    /// The devices counted for LINEAGE: device ID, device public key, first grant.
    Show {
        #[command(flatten)]
        ledger: LedgerArgs,
        lineage: String,
    },
    /// Stop counting one device (DEVICE: device ID and public key, 96 hex digits, as `show`
    /// prints them without the space) for LINEAGE.
    Release {
        #[command(flatten)]
        ledger: LedgerArgs,
        lineage: String,
        device: String,
    },
    /// Free every device of LINEAGE, whatever its reset window.
    Reset {
        #[command(flatten)]
        ledger: LedgerArgs,
        lineage: String,
    },
}

fn keys_dir(data: &Path) -> PathBuf {
    data.join("keys")
}

fn open_authority(
    args: &LedgerArgs,
    policy: Policy,
    connections: usize,
) -> Result<Authority<AnyLedger>, String> {
    let keys = KeyRing::open(&keys_dir(&args.data), true).map_err(|e| e.to_string())?;
    let ledger = AnyLedger::open(&args.data, args.database.as_deref(), connections)
        .map_err(|e| e.to_string())?;
    Ok(Authority::new(keys, ledger, policy))
}

fn lineage_arg(s: &str) -> Result<[u8; 16], String> {
    hex_array(s).ok_or_else(|| format!("a lineage is 32 hex digits, not {s:?}"))
}

fn print_key_line(k: &wmlicense_core::service::keys::ServiceKeyPair, current: bool) {
    println!(
        "{} {} {}{}",
        hex(&k.key_id),
        hex(&k.keys.public),
        k.created_at,
        if current { " current" } else { "" }
    );
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Keys { command } => match command {
            KeysCommand::Rotate { data } => {
                let mut ring = KeyRing::open(&keys_dir(&data), true).map_err(|e| e.to_string())?;
                let k = ring.rotate().map_err(|e| e.to_string())?;
                print_key_line(&k, true);
                Ok(())
            }
            KeysCommand::List { data } => {
                let ring = KeyRing::open(&keys_dir(&data), true).map_err(|e| e.to_string())?;
                let current = ring.current().key_id;
                for k in ring.all() {
                    print_key_line(k, k.key_id == current);
                }
                Ok(())
            }
        },
        Command::Lineage { command } => match command {
            LineageCommand::Show { ledger, lineage } => {
                let l = lineage_arg(&lineage)?;
                let a = open_authority(&ledger, Policy::default(), 1)?;
                for d in a.lineage_devices(&l).map_err(|e| e.to_string())? {
                    println!(
                        "{} {} {}",
                        hex(d.device.get(..16).unwrap_or(&[])),
                        hex(d.device.get(16..).unwrap_or(&[])),
                        d.first_grant
                    );
                }
                Ok(())
            }
            LineageCommand::Release {
                ledger,
                lineage,
                device,
            } => {
                let l = lineage_arg(&lineage)?;
                let d: [u8; 48] = hex_array(&device.replace(' ', ""))
                    .ok_or("a device is 96 hex digits: device ID and public key")?;
                let device = Device::from_bytes(&d).expect("48 bytes");
                let a = open_authority(&ledger, Policy::default(), 1)?;
                let released = a.admin_release(&l, &device).map_err(|e| e.to_string())?;
                println!("{}", if released { "released" } else { "not counted" });
                Ok(())
            }
            LineageCommand::Reset { ledger, lineage } => {
                let l = lineage_arg(&lineage)?;
                let a = open_authority(&ledger, Policy::default(), 1)?;
                let n = a.admin_reset(&l).map_err(|e| e.to_string())?;
                println!("{n} devices freed");
                Ok(())
            }
        },
        Command::Audit {
            ledger,
            lineage,
            limit,
        } => {
            let l = lineage.as_deref().map(lineage_arg).transpose()?;
            let a = open_authority(&ledger, Policy::default(), 1)?;
            let records = a.audit_log(l.as_ref(), limit).map_err(|e| e.to_string())?;
            for r in server::audit_entries(&records) {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            }
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let addr: std::net::SocketAddr = args
        .listen
        .parse()
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    let admin_token = match &args.admin_token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .map_err(|e| format!("--admin-token-file {}: {e}", f.display()))?
                .trim()
                .to_string();
            if t.len() < 16 {
                return Err("the admin token must be at least 16 characters".into());
            }
            Some(t)
        }
        None => None,
    };
    let policy = Policy {
        device_limit: args.device_limit,
        device_window_days: args.device_window_days,
        reset_window_days: args.reset_window_days,
        help_url: args.help_url.clone(),
    };
    let authority = Arc::new(open_authority(&args.ledger, policy, args.db_connections)?);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(net::tls_acceptor(c, k)?),
        _ => None,
    };
    let router = app(Config {
        admin_token,
        rate_limit: args.rate_limit,
        rate_burst: args.rate_burst,
        client_rate_limit: args.client_rate_limit,
        client_rate_burst: args.client_rate_burst,
        trusted_proxies: args.trusted_proxy.clone(),
        body_timeout: Duration::from_secs_f64(args.body_timeout),
        ..Config::new(authority.clone())
    });
    let limits = Limits {
        header_timeout: Duration::from_secs_f64(args.header_timeout),
        max_connections: args.max_connections as usize,
        drain_timeout: Duration::from_secs_f64(args.drain_timeout),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut out = std::io::stdout();
        let _ = writeln!(out, "wmlicense-service listening on {scheme}://{local}");
        let _ = out.flush();
        tracing::info!(address = %local, scheme, "listening");
        net::serve(listener, router, tls, limits, shutdown_signal()).await;
        Ok::<(), String>(())
    });
    // Every task (and its share of the service) goes with the runtime; the service itself is
    // dropped after it, outside the runtime: the PostgreSQL ledger's blocking client must not
    // be dropped inside one.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(authority);
    served?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wmlicense-service: {e}");
            ExitCode::FAILURE
        }
    }
}
