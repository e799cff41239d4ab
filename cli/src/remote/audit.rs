//! The audit log: verify it offline, watch it live.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use cleanroom_proto::PartyId;
use cleanroom_proto::audit::{AuditEntry, SignedHead, verify_log};

use super::Conn;
use super::attest::{Trust, verify_server};

/// `cleanroom audit verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// Verify a saved log (JSON from `cleanroom audit export` or GET /v1/audit) instead of fetching it.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The enclave signing key (hex) the head must be signed by. Without it,
    /// the key is taken from fresh, verified attestation of --server.
    #[arg(long)]
    enclave_key: Option<PartyId>,
    /// Save the fetched log here (to verify again later, offline).
    #[arg(long)]
    save: Option<PathBuf>,
    #[command(flatten)]
    trust: Trust,
}

pub(crate) fn verify(conn: &Conn, args: VerifyArgs) -> Result<()> {
    let client = conn.client()?;
    let log: serde_json::Value = match &args.file {
        Some(path) => serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        )?,
        None => client.get_public("/v1/audit")?,
    };
    if let Some(path) = &args.save {
        std::fs::write(path, serde_json::to_vec_pretty(&log)?)?;
    }
    let enclave = match args.enclave_key {
        Some(k) => k,
        None => PartyId(verify_server(&client, &args.trust)?.keys.signing_public_key),
    };
    let entries: Vec<AuditEntry> =
        serde_json::from_value(log["entries"].clone()).context("malformed audit entries")?;
    let head: SignedHead =
        serde_json::from_value(log["head"].clone()).context("malformed audit head")?;
    verify_log(&entries, &head, Some(&enclave))
        .map_err(|e| anyhow!("the audit log does not verify: {e}"))?;
    let value = serde_json::json!({ "verified": true, "entries": entries.len(), "head": head });
    conn.print(&value, || {
        let mut out = format!(
            "audit log verified: {} entries, hash-chained, head signed by enclave {}\n",
            entries.len(),
            enclave.short()
        );
        for e in &entries {
            out.push_str(&format!(
                "  #{:<4} {:<20} {:<40} {}\n",
                e.seq,
                e.action,
                e.subject,
                e.actor
                    .map(|a| a.short())
                    .unwrap_or_else(|| "enclave".into())
            ));
        }
        out.trim_end().to_string()
    });
    Ok(())
}

/// `cleanroom audit watch`: live events that concern you.
pub(crate) fn watch(conn: &Conn) -> Result<()> {
    conn.client()?.events(|event| {
        let e = &event["entry"];
        println!(
            "#{} {} {} {}",
            e["seq"],
            e["action"].as_str().unwrap_or("?"),
            e["subject"].as_str().unwrap_or("?"),
            e["detail"]
        );
        Ok(true)
    })
}
