//! A cleanroomd for crash tests: `serve DATA_DIR` prints `listening ADDR`
//! and serves until killed (the tests kill it with SIGKILL).

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: serve DATA_DIR"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let config = cleanroomd::Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.into(),
            insecure_simulation: true,
            ..Default::default()
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
