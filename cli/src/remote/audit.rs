//! The audit log: verify it offline, watch it live.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use cleanroom_proto::PartyId;
use cleanroom_proto::audit::{
    AuditItem, AuditPage, ConsistencyAnswer, SignedHead, verify_consistency, verify_items,
};

use super::Conn;
use super::attest::verify_server;
use crate::failure::Failure;

/// `cleanroom audit verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// Verify a saved log (written by `--save`) instead of fetching it.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The enclave signing key (hex) the head must be signed by. Without it,
    /// the key is taken from fresh, verified attestation of --server.
    #[arg(long)]
    enclave_key: Option<PartyId>,
    /// Save the fetched log here (to verify again later, offline).
    #[arg(long)]
    save: Option<PathBuf>,
}

/// A party's view of the whole log: every link, the entries that concern it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedLog {
    pub(crate) items: Vec<AuditItem>,
    pub(crate) head: SignedHead,
}

/// Fetch the whole log, page by page, as the signer may see it.
pub(crate) fn fetch_log(client: &super::client::Client) -> Result<SavedLog> {
    let mut items: Vec<AuditItem> = Vec::new();
    loop {
        let page: AuditPage =
            client.signed("GET", &format!("/v1/audit?from={}", items.len()), b"")?;
        items.extend(page.items);
        if page.next.is_none() {
            return Ok(SavedLog {
                items,
                head: page.head,
            });
        }
    }
}

pub(crate) fn verify(conn: &Conn, args: VerifyArgs) -> Result<()> {
    // A saved log checked against a given enclave key needs no server at all.
    let client = match (&args.file, &args.enclave_key) {
        (Some(_), Some(_)) => None,
        _ => Some(conn.client()?),
    };
    let online = || client.as_ref().expect("a client unless offline");
    let log: SavedLog = match &args.file {
        Some(path) => serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        )
        .context("malformed saved audit log")?,
        None => fetch_log(online())?,
    };
    if let Some(path) = &args.save {
        std::fs::write(path, serde_json::to_vec_pretty(&log)?)?;
    }
    let enclave = match args.enclave_key {
        Some(k) => k,
        None => PartyId(
            verify_server(online(), &conn.trust)?
                .keys
                .signing_public_key,
        ),
    };
    verify_items(&log.items, &log.head, Some(&enclave))
        .context(Failure::verification("the audit log does not verify"))?;
    if args.file.is_none() {
        check_against_last_head(conn, online(), &enclave, &log)?;
    }
    let visible = log.items.iter().filter(|i| i.entry.is_some()).count();
    let value = serde_json::json!({
        "verified": true, "entries": log.items.len(), "visible": visible, "head": log.head,
    });
    conn.print(&value, || {
        let mut out = format!(
            "audit log verified: {} entries ({visible} concern you, the rest are hashes), \
             Merkle tree of size {} signed by enclave {}\n",
            log.items.len(),
            log.head.size,
            enclave.short()
        );
        for e in log.items.iter().filter_map(|i| i.entry.as_ref()) {
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

/// The heads this key verified, per enclave (its signing key: the same across restarts and
/// addresses), kept beside the key file
/// (`<key>.audit-heads.json`).
fn heads_path(conn: &Conn) -> Option<PathBuf> {
    conn.key.as_ref().map(|k| {
        let mut name = k.file_name().unwrap_or_default().to_os_string();
        name.push(".audit-heads.json");
        k.with_file_name(name)
    })
}

/// A log that verifies on its own may still be an older or a different one: the server must
/// prove (an RFC 6962 consistency proof) that its current log extends the last head this
/// party verified, or its state was truncated, rewritten or forked. Then the new head is
/// remembered.
pub(crate) fn check_against_last_head(
    conn: &Conn,
    client: &super::client::Client,
    enclave: &PartyId,
    log: &SavedLog,
) -> Result<()> {
    let Some(path) = heads_path(conn) else {
        return Ok(());
    };
    let mut heads: std::collections::BTreeMap<String, SignedHead> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).context("corrupt audit-heads file")?,
        Err(_) => Default::default(),
    };
    let mut newest = log.head.clone();
    if let Some(last) = heads.get(&enclave.to_string()) {
        let answer: ConsistencyAnswer = client
            .signed(
                "GET",
                &format!("/v1/audit/consistency?old={}", last.size),
                b"",
            )
            .map_err(|e| {
                anyhow::Error::new(Failure::verification(format!(
                    "the server cannot show its log extends the head of size {} you \
                     verified at {}: its log was truncated, rewritten or forked ({e:#})",
                    last.size, last.time
                )))
            })?;
        verify_consistency(last, &answer.head, &answer.proof, Some(enclave)).with_context(
            || {
                Failure::verification(format!(
                    "you verified a head of size {} at {}; keep {} as evidence",
                    last.size,
                    last.time,
                    path.display()
                ))
            },
        )?;
        // The entries just fetched must extend it too: their first `last.size` leaves hash
        // to the root seen then.
        let mut prefix = cleanroom_proto::MerkleLog::new();
        for item in log.items.iter().take(last.size as usize) {
            prefix.push(
                hex::decode(&item.hash)
                    .ok()
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| anyhow!("malformed leaf {}", item.seq))?,
            );
        }
        if prefix.len() != last.size || hex::encode(prefix.root()) != last.root {
            return Err(Failure::verification(format!(
                "the audit log served does not extend the head of size {} you verified at {}: \
                 the server's log was truncated, rewritten or forked",
                last.size, last.time
            ))
            .into());
        }
        if answer.head.size >= newest.size {
            newest = answer.head;
        }
    }
    heads.insert(enclave.to_string(), newest);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&heads)?)?;
    std::fs::rename(&tmp, &path)?;
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
