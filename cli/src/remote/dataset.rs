//! Owners: seal a table to the attested enclave and upload it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use cleanroom_envelope::{DatasetId, EnvelopeWriter};

use super::Conn;
use super::attest::verify_server;
use crate::input;

/// `cleanroom dataset seal`: offline sealing to a known enclave key.
#[derive(Debug, clap::Args)]
pub(crate) struct SealArgs {
    /// The table: CSV, Parquet or Arrow IPC.
    file: PathBuf,
    /// The enclave's HPKE public key (hex), from `cleanroom attest verify`.
    #[arg(long)]
    enclave_key: String,
    /// Where to write the envelope.
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Dataset id (hex, 16 bytes); random by default.
    #[arg(long)]
    id: Option<String>,
}

/// `cleanroom dataset push`.
#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    /// The table: CSV, Parquet or Arrow IPC.
    file: PathBuf,
    /// Dataset id (hex, 16 bytes); random by default.
    #[arg(long)]
    id: Option<String>,
}

fn dataset_id(id: Option<&str>) -> Result<DatasetId> {
    match id {
        Some(id) => id.parse().map_err(|e| anyhow!("invalid --id: {e}")),
        None => Ok(DatasetId::random()?),
    }
}

/// Seal `file` into `out`, streaming with bounded memory.
pub(crate) fn seal_file(
    file: &Path,
    out: &Path,
    owner: &cleanroom_proto::Identity,
    enclave_hpke: &[u8; 32],
    id: DatasetId,
) -> Result<u64> {
    let (schema, batches, bar) = input::open_batches(file)?;
    // Write beside the destination and rename on success: a failed seal
    // leaves nothing that looks like an envelope.
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let sink = std::io::BufWriter::new(tmp.reopen()?);
    let mut writer = EnvelopeWriter::new(sink, &schema, id, owner.signing_key(), enclave_hpke)?;
    let mut rows = 0u64;
    for batch in batches {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    writer.finish()?.verify()?;
    tmp.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    bar.finish_and_clear();
    Ok(rows)
}

pub(crate) fn seal(conn: &Conn, args: SealArgs) -> Result<()> {
    // Offline: nothing is sent anywhere.
    let owner = &conn.identity()?;
    let key: [u8; 32] = hex::decode(&args.enclave_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| anyhow!("--enclave-key must be 32 bytes of hex"))?;
    let id = dataset_id(args.id.as_deref())?;
    let rows = seal_file(&args.file, &args.out, owner, &key, id)?;
    let value =
        serde_json::json!({ "dataset": id.to_string(), "rows": rows, "envelope": args.out });
    conn.print(&value, || {
        format!(
            "sealed {rows} rows as dataset {id} into {}",
            args.out.display()
        )
    });
    Ok(())
}

pub(crate) fn push(conn: &Conn, args: PushArgs) -> Result<()> {
    let client = conn.client()?;
    let verified = verify_server(&client, &conn.trust)?;
    let owner = client.identity()?;
    let id = dataset_id(args.id.as_deref())?;
    let tmp = tempfile::NamedTempFile::new()?;
    let rows = seal_file(
        &args.file,
        tmp.path(),
        owner,
        &verified.keys.hpke_public_key,
        id,
    )?;
    let answer: cleanroom_proto::run::DatasetInfo =
        client.put_file(&format!("/v1/datasets/{id}"), tmp.path())?;
    conn.print(&answer, || {
        format!(
            "uploaded dataset {id}: {rows} rows sealed to the attested enclave (measurement {}…)",
            &hex::encode(verified.claims.measurement.0)[..16]
        )
    });
    Ok(())
}

fn check_dataset_id(dataset: &str) -> Result<()> {
    if dataset.is_empty()
        || !dataset
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        anyhow::bail!("{dataset:?} is not a dataset id (lowercase hex)");
    }
    Ok(())
}

/// `cleanroom dataset preview`.
#[derive(Debug, clap::Args)]
pub(crate) struct PreviewArgs {
    /// The dataset id.
    dataset: String,
    /// Where to write `preview.json` and the synthetic table (`synthetic.arrow`, `.csv`,
    /// `.parquet`).
    #[arg(long, default_value = "preview")]
    out: PathBuf,
}

pub(crate) fn preview(conn: &Conn, args: PreviewArgs) -> Result<()> {
    check_dataset_id(&args.dataset)?;
    let preview: cleanroom_proto::dp::Preview = conn.client()?.signed(
        "GET",
        &format!("/v1/datasets/{}/preview", args.dataset),
        b"",
    )?;
    write_preview(&args.out, &preview)?;
    conn.print(&preview, || describe_preview(&preview, &args.out));
    Ok(())
}

/// `cleanroom dataset publish-preview`.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishPreviewArgs {
    /// The dataset id.
    dataset: String,
    /// The ε the preview spends, once, from the dataset's budget.
    #[arg(long)]
    epsilon: f64,
    /// Synthetic rows to draw.
    #[arg(long, default_value_t = 1000)]
    rows: u32,
}

pub(crate) fn publish_preview(conn: &Conn, args: PublishPreviewArgs) -> Result<()> {
    check_dataset_id(&args.dataset)?;
    let epsilon = cleanroom_proto::dp::Epsilon::from_f64(args.epsilon).with_context(|| {
        format!(
            "--epsilon {}: a positive number with at most six decimals",
            args.epsilon
        )
    })?;
    let request = cleanroom_proto::dp::PreviewRequest {
        epsilon,
        synthetic_rows: args.rows,
    };
    let preview: cleanroom_proto::dp::Preview = conn.client()?.signed(
        "PUT",
        &format!("/v1/datasets/{}/preview", args.dataset),
        &serde_json::to_vec(&request)?,
    )?;
    let summary = serde_json::json!({
        "dataset": preview.dataset, "epsilon": preview.epsilon, "people": preview.people
    });
    conn.print(&summary, || {
        format!(
            "published the preview of {} (ε = {}, about {} people); researchers fetch it with \
             `cleanroom dataset preview {}`",
            preview.dataset, preview.epsilon, preview.people, preview.dataset
        )
    });
    Ok(())
}

/// `preview.json` and the synthetic table, as Arrow IPC, CSV and Parquet.
fn write_preview(dir: &Path, preview: &cleanroom_proto::dp::Preview) -> Result<()> {
    use base64::Engine;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join("preview.json"),
        serde_json::to_vec_pretty(preview)?,
    )?;
    let ipc = base64::engine::general_purpose::STANDARD
        .decode(&preview.synthetic)
        .context("the preview's synthetic table is not base64")?;
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(&ipc), None)
        .context("the preview's synthetic table is not Arrow IPC")?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    let mut file = std::fs::File::create(dir.join("synthetic.arrow"))?;
    let mut writer = arrow_ipc::writer::FileWriter::try_new(&mut file, &schema)?;
    for b in &batches {
        writer.write(b)?;
    }
    writer.finish()?;
    crate::tables::write_copies(dir, "synthetic", &schema, &batches)
}

fn describe_preview(p: &cleanroom_proto::dp::Preview, dir: &Path) -> String {
    use cleanroom_proto::dp::ColumnSummary;
    let mut out = format!(
        "preview of {} (ε = {}): about {} people\n",
        p.dataset, p.epsilon, p.people
    );
    for c in &p.columns {
        let ty = p
            .schema
            .iter()
            .find(|(n, _)| n == &c.name)
            .map_or("?", |(_, t)| t.as_str());
        out.push_str(&format!("  {} ({ty})", c.name));
        match &c.summary {
            ColumnSummary::Undeclared => out.push_str(": no public domain declared"),
            ColumnSummary::Categories(counts) => {
                let parts: Vec<String> = counts
                    .iter()
                    .map(|(k, n)| format!("{}={n}", k.as_deref().unwrap_or("(other)")))
                    .collect();
                out.push_str(&format!(": {}", parts.join(" ")));
            }
            ColumnSummary::Numeric { quantiles, .. } => {
                let parts: Vec<String> = quantiles
                    .iter()
                    .map(|(q, v)| format!("q{}={v:.1}", q * 100.0))
                    .collect();
                out.push_str(&format!(": {}", parts.join(" ")));
            }
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "synthetic table: {} (develop with `cleanroom run-local --table NAME={}`)",
        dir.join("synthetic.csv").display(),
        dir.join("synthetic.arrow").display()
    ));
    out
}

pub(crate) fn budget(conn: &Conn, dataset: &str) -> Result<()> {
    check_dataset_id(dataset)?;
    let budget: cleanroom_proto::dp::DpBudget =
        conn.client()?
            .signed("GET", &format!("/v1/datasets/{dataset}/budget"), b"")?;
    conn.print(&budget, || {
        let mut out = format!(
            "dataset {}: ε = {} spent of {}, {} left (at most {} per run)",
            budget.dataset,
            budget.spent,
            budget.epsilon,
            budget.remaining,
            budget.max_epsilon_per_run
        );
        if let Some(yours) = &budget.yours {
            out.push_str(&format!(
                "\nyou: ε = {} spent, {} left to you",
                yours.spent, yours.remaining
            ));
        }
        out
    });
    Ok(())
}

pub(crate) fn list(conn: &Conn) -> Result<()> {
    let list: cleanroom_proto::run::DatasetList =
        conn.client()?.signed("GET", "/v1/datasets", b"")?;
    conn.print(&list, || {
        let mut out = String::new();
        for d in &list.datasets {
            out.push_str(&format!(
                "{}  {} rows  owner {}…  policy {}\n",
                d.id,
                d.rows.map_or("?".into(), |r| r.to_string()),
                &d.owner[..12.min(d.owner.len())],
                d.policy_version.map_or("-".into(), |v| format!("v{v}")),
            ));
            if let Some(columns) = &d.columns {
                let cols: Vec<String> = columns.iter().map(|(n, t)| format!("{n} ({t})")).collect();
                out.push_str(&format!("  columns: {}\n", cols.join(", ")));
            }
        }
        out.trim_end().to_string()
    });
    Ok(())
}
