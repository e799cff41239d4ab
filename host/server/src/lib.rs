//! `cleanroomd`: the governance service inside the enclave.
//!
//! Owners upload sealed datasets and sign policies; researchers upload
//! modules and submit runs; a run executes only with a grant from every
//! input's owner, and its outputs leave only as the owners' rules allow,
//! encrypted to the researcher, with a receipt signed by the enclave. Every
//! step is in a hash-chained audit log.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut config = cleanroomd::Config::default();
//! config.listen = "127.0.0.1:0".parse()?;
//! let server = cleanroomd::start(config, false).await?;
//! println!("listening on {}", server.addr());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod api;
pub use api::openapi_document;
pub mod app;
pub mod audit;
mod auth;
pub mod blobs;
mod boot;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod events;
mod http;
pub mod ledger;
pub mod modules;
pub mod panic;
pub mod pipelines;
pub mod previews;
mod refusals;
pub mod runs;
pub mod store;
pub mod store_pg;
pub mod tables;
pub mod tls;
pub mod upgrade;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

pub use app::Service;
pub use clock::now;
pub use config::Config;

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    service: Arc<Service>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service state.
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Stop accepting, finish in-flight requests, return.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}

/// Open the data directory, bind, and serve in the background.
pub async fn start(config: Config, allow_simulation: bool) -> anyhow::Result<Server> {
    let listen = config.listen;
    let (service, rx) = tokio::task::block_in_place(|| Service::open(config, allow_simulation))?;
    runs::start(service.clone(), rx)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(http::serve(service.clone(), listener, stopped));
    Ok(Server {
        addr,
        service,
        stop,
        task,
    })
}
