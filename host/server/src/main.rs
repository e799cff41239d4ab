//! `cleanroomd`: run the governance service.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

/// The cleanroom service (runs inside an SEV-SNP guest).
#[derive(Debug, Parser)]
#[command(name = "cleanroomd", version, about)]
struct Args {
    /// TOML configuration (unknown fields are refused). Defaults are embedded.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (overrides the config).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen address (overrides the config), e.g. 127.0.0.1:7878.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// INSECURE: attest with the simulation backend (no SEV-SNP hardware).
    /// Clients refuse its evidence unless told --accept-insecure-simulation.
    #[arg(long)]
    insecure_simulation: bool,
    /// INSECURE: serve plain HTTP instead of attested TLS (simulation on loopback only).
    #[arg(long)]
    plain_http: bool,
    /// The R engine's directory (what scripts/build-r.sh prints): enables R analyses.
    #[arg(long)]
    r_engine: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Upgrading: from this (new) image's data directory, print a hand-over request for the
    /// running image (`POST /v1/upgrade/handover`); start this image afterwards with
    /// `handover = <the answer>` in its config.
    HandoverRequest {
        /// The author's signed upgrade statement for this image (JSON).
        #[arg(long)]
        statement: PathBuf,
    },
    /// Print the API's OpenAPI 3.1 document (generated from the routes and wire types).
    Openapi,
}

#[tokio::main]
async fn main() -> Result<()> {
    cleanroomd::panic::install();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => cleanroomd::Config::from_file(path)?,
        None => cleanroomd::Config::default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.insecure_simulation {
        config.insecure_simulation = true;
    }
    if args.plain_http {
        config.plain_http = true;
    }
    if let Some(dir) = args.r_engine {
        config.r_engine = Some(dir);
    }
    if let Some(Command::Openapi) = &args.command {
        println!("{}", cleanroomd::openapi_document().to_pretty_json()?);
        return Ok(());
    }
    if let Some(Command::HandoverRequest { statement }) = &args.command {
        let statement = serde_json::from_slice(&std::fs::read(statement)?).map_err(|e| {
            anyhow::anyhow!("{}: not an upgrade statement: {e}", statement.display())
        })?;
        let request =
            cleanroomd::upgrade::handover_request(&config, args.insecure_simulation, statement)?;
        println!("{}", serde_json::to_string_pretty(&request)?);
        return Ok(());
    }
    let server = cleanroomd::start(config, args.insecure_simulation).await?;
    let service = server.service();
    eprintln!(
        "cleanroomd listening on {}://{} (measurement {}, enclave key {})",
        if service.tls.is_some() {
            "https"
        } else {
            "http"
        },
        server.addr(),
        service.measurement,
        service.enclave_party()
    );
    wait_for_signal().await;
    eprintln!("cleanroomd: shutting down");
    server.shutdown().await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler works on unix");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
