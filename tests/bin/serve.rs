//! A cleanroomd for crash and cluster tests: `serve DATA_DIR [CONFIG.toml]` prints
//! `listening ADDR MEASUREMENT` and serves until killed (the tests kill it with SIGKILL).
//! With a config file, its settings apply (a cluster worker's storage, for one), on a
//! loopback port of the system's choosing, in simulation.

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: serve DATA_DIR [CONFIG.toml]"))?;
    let config = match args.next() {
        Some(path) => cleanroomd::Config::from_file(path.as_ref())?,
        None => cleanroomd::Config::default(),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let config = cleanroomd::Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.into(),
            insecure_simulation: true,
            ..config
        };
        let server = cleanroomd::start(config, true).await?;
        println!(
            "listening {} {}",
            server.addr(),
            server.service().measurement
        );
        std::future::pending::<()>().await;
        Ok(())
    })
}
