//! For sample and aggregate, trying to learn how long the blocks before it took: works for
//! `busy_ms` milliseconds of its own clock, then publishes `estimate` = [the wall clock minus
//! the monotonic clock, in milliseconds]: where its wall clock started. Were a block's clock
//! the host's, each block would see the blocks before it in that number.
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn run(text: &str) -> cleanroom_guest::Result<()> {
    let p: serde_json::Value = cleanroom_guest::params(text)?;
    let busy = std::time::Duration::from_millis(p["busy_ms"].as_u64().unwrap_or(50));
    let zero = Instant::now();
    while zero.elapsed() < busy {
        std::hint::spin_loop();
    }
    let since = zero.elapsed();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    // The monotonic clock starts at zero when the block's instance is made; `zero` was read
    // just after that, so wall - since is the block's wall-clock origin (to the instant).
    let origin_ms = (wall.as_secs_f64() - since.as_secs_f64()) * 1000.0;
    cleanroom_guest::publish_json("estimate", &[origin_ms])
}
cleanroom_guest::analysis!(run);
