//! Tries to reach the network (params: an address like 127.0.0.1:8080).
fn run(params: &str) -> cleanroom_guest::Result<()> {
    std::net::TcpStream::connect(params).map_err(|e| format!("connect {params}: {e}"))?;
    Ok(())
}
cleanroom_guest::analysis!(run);
