//! Researchers: push modules, submit and watch runs, fetch and decrypt
//! results; owners: review held outputs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cleanroom_proto::PartyId;
use cleanroom_proto::api::{AccessRequest, AccessRequested, CancelAccepted, RunAccepted};
use cleanroom_proto::dp::{DpRun, Epsilon, Finite, SampleAggregate};
use cleanroom_proto::receipt::LoggedReceipt;
use cleanroom_proto::run::{
    HeldBundle, OutputKind, OutputReport, PlainOutput, ResultBundle, Review, ReviewDecision,
    RunRequest, RunState, RunStatus, SealedOutput, open_output, output_context,
};
use sha2::{Digest, Sha256};

use super::Conn;
use super::attest::verify_server;
use crate::failure::{ExitKind, Failure};

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `--input NAME=DATASET` flags as the run request's inputs.
pub(crate) fn parse_inputs(specs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut inputs = BTreeMap::new();
    for spec in specs {
        let (name, dataset) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--input takes NAME=DATASET, got {spec:?}"))?;
        if inputs
            .insert(name.to_string(), dataset.to_string())
            .is_some()
        {
            bail!("--input {name}=... is given twice");
        }
    }
    Ok(inputs)
}

/// `cleanroom run submit`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    #[command(flatten)]
    run: RunSpec,
    /// Wait for the run to finish and print its outcome.
    #[arg(long)]
    wait: bool,
    /// The ε this run spends of the budgets of inputs that require differential privacy.
    #[arg(long)]
    epsilon: Option<f64>,
    /// Run by sample and aggregate: BLOCKS:OUTPUT:LO..HI[,LO..HI...], e.g.
    /// `20:estimate:0..120,0..1` (20 blocks; each publishes JSON `estimate`, a 2-number array
    /// clamped to those ranges). Needs --epsilon.
    #[arg(long, value_name = "BLOCKS:OUTPUT:BOUNDS", requires = "epsilon")]
    sample_aggregate: Option<String>,
    /// A DP run's fixed duration in seconds (default 10): its outcome is shown exactly this
    /// long after it starts, and the analysis may compute for at most this long. Needs
    /// --epsilon.
    #[arg(long, value_name = "SECS", requires = "epsilon")]
    dp_duration: Option<u32>,
}

/// `--epsilon` and `--sample-aggregate` as the request's DP terms.
fn dp_terms(
    epsilon: Option<f64>,
    sample: Option<&str>,
    duration_secs: Option<u32>,
) -> Result<Option<DpRun>> {
    let Some(epsilon) = epsilon else {
        return Ok(None);
    };
    let epsilon = Epsilon::from_f64(epsilon).with_context(|| {
        format!("--epsilon {epsilon}: a positive number with at most six decimals")
    })?;
    let sample_aggregate = match sample {
        None => None,
        Some(text) => {
            let bad = || {
                format!("--sample-aggregate {text:?}: expected BLOCKS:OUTPUT:LO..HI[,LO..HI...]")
            };
            let mut parts = text.splitn(3, ':');
            let (Some(blocks), Some(output), Some(bounds)) =
                (parts.next(), parts.next(), parts.next())
            else {
                bail!(bad());
            };
            let bounds = bounds
                .split(',')
                .map(|b| {
                    let (lo, hi) = b.split_once("..")?;
                    Some((
                        Finite::new(lo.trim().parse().ok()?)?,
                        Finite::new(hi.trim().parse().ok()?)?,
                    ))
                })
                .collect::<Option<Vec<_>>>()
                .with_context(bad)?;
            let sa = SampleAggregate {
                blocks: blocks.parse().with_context(bad)?,
                output: output.to_string(),
                bounds,
            };
            sa.validate()
                .map_err(|e| anyhow!("--sample-aggregate: {e}"))?;
            Some(sa)
        }
    };
    if duration_secs == Some(0) {
        bail!("--dp-duration must be at least 1 second");
    }
    Ok(Some(DpRun {
        epsilon,
        sample_aggregate,
        duration_secs,
    }))
}

/// What a run is: module, inputs and params (`run submit` runs it, `run request` asks for it).
#[derive(Debug, clap::Args)]
pub(crate) struct RunSpec {
    /// Module hash (or pipeline digest). With --r, by default the server's R engine.
    #[arg(long, required_unless_present = "r")]
    module: Option<String>,
    /// An input as NAME=DATASET (the name the analysis opens); repeat.
    #[arg(long = "input", value_name = "NAME=DATASET")]
    inputs: Vec<String>,
    /// The run's params (JSON text, or @FILE).
    #[arg(long, default_value = "", conflicts_with_all = ["sql", "r"])]
    params: String,
    /// The SQL query (the module must be the SQL engine).
    #[arg(long, conflicts_with = "r")]
    sql: Option<String>,
    /// An R script: run by the server's R engine (the script is the run's params).
    #[arg(long, value_name = "FILE.R")]
    r: Option<PathBuf>,
}

impl RunSpec {
    /// The module, the inputs and the params text.
    fn resolve(
        &self,
        client: &super::client::Client,
    ) -> Result<(String, BTreeMap<String, String>, String)> {
        let params = match (&self.sql, &self.r, self.params.strip_prefix('@')) {
            (Some(sql), _, _) => crate::run_local::sql_params(sql),
            (None, Some(script), _) => std::fs::read_to_string(script)
                .with_context(|| format!("cannot read {}", script.display()))?,
            (None, None, Some(path)) => {
                std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
            }
            (None, None, None) => self.params.clone(),
        };
        let module = match (&self.module, &self.r) {
            (Some(m), _) => m.clone(),
            (None, _) => r_engine(client)?,
        };
        Ok((module, parse_inputs(&self.inputs)?, params))
    }
}

/// The server's R engine module id (`GET /health`).
pub(crate) fn r_engine(client: &super::client::Client) -> Result<String> {
    let health: cleanroom_proto::api::Health = client.get_public("/health")?;
    health.r_engine.ok_or_else(|| {
        anyhow!("this server does not run R analyses (cleanroomd was started without --r-engine)")
    })
}

/// `cleanroom run request`: the run you ask the owners of its inputs to grant.
#[derive(Debug, clap::Args)]
pub(crate) struct RequestArgs {
    #[command(flatten)]
    run: RunSpec,
    /// What the analysis is for, to the owners.
    #[arg(long)]
    note: Option<String>,
}

/// Ask the owners of the inputs to grant a module: an audit entry they see in `audit watch`
/// and the console. It grants nothing by itself.
pub(crate) fn request(conn: &Conn, args: RequestArgs) -> Result<()> {
    let client = conn.client()?;
    let (module, inputs, params) = args.run.resolve(&client)?;
    let request = AccessRequest {
        module,
        inputs,
        params,
        note: args.note,
    };
    request
        .validate()
        .map_err(|e| anyhow!("cannot ask for this: {e}"))?;
    let answer: AccessRequested =
        client.signed("POST", "/v1/requests", &serde_json::to_vec(&request)?)?;
    conn.print(&answer, || {
        format!(
            "asked the owners of {} to grant module {}… (params {}…); they see it in their \
             audit log and console",
            answer
                .request
                .inputs
                .values()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            &answer.request.module[..12],
            &answer.params_digest[..12]
        )
    });
    Ok(())
}

pub(crate) fn submit(conn: &Conn, args: SubmitArgs) -> Result<()> {
    let client = conn.client()?;
    let identity = client.identity()?;
    let (module, inputs, params) = args.run.resolve(&client)?;
    let request = RunRequest {
        module,
        inputs,
        params,
        researcher_hpke: hex::encode(identity.hpke_public()),
        review_note: None,
        dp: dp_terms(
            args.epsilon,
            args.sample_aggregate.as_deref(),
            args.dp_duration,
        )?,
    };
    let answer: RunAccepted = client.signed("POST", "/v1/runs", &serde_json::to_vec(&request)?)?;
    let id = answer.run.clone();
    if args.wait {
        // Same attested session: no second attestation.
        return follow(conn, &client, &id);
    }
    conn.print(&answer, || format!("run {id} queued"));
    Ok(())
}

/// `cleanroom run watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    /// The run id.
    run: String,
}

/// One line per output decision, for people.
pub(crate) fn describe_outputs(reports: &[OutputReport]) -> String {
    reports
        .iter()
        .map(|r| {
            let codes: Vec<String> = r.codes.iter().map(ToString::to_string).collect();
            format!(
                "  output {} ({:?}): {:?}{}",
                r.index,
                r.kind,
                r.disposition,
                if codes.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", codes.join(", "))
                }
            )
            .to_lowercase()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Follow a run until it is final (or held for review).
pub(crate) fn watch(conn: &Conn, args: WatchArgs) -> Result<()> {
    follow(conn, &conn.client()?, &args.run)
}

fn follow(conn: &Conn, client: &super::client::Client, run: &str) -> Result<()> {
    let args = WatchArgs {
        run: run.to_string(),
    };
    // The server holds each request until the run leaves the state it is in (up to the wait),
    // so following a run costs one request per state change, not a poll every few ms.
    let path = format!("/v1/runs/{}?wait={FOLLOW_WAIT_SECS}", args.run);
    let mut last = None;
    let bar = crate::progress::spinner(format!("run {}", args.run));
    loop {
        let status: RunStatus = client.signed("GET", &path, b"")?;
        let state = status.state;
        if Some(state) != last {
            bar.set_message(format!("run {}: {state}", args.run));
            last = Some(state);
        }
        if state.is_final() || state == RunState::HeldForReview {
            bar.finish_and_clear();
            conn.print(&status, || {
                let reason = status
                    .reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                let mut out = format!("run {} {state}{reason}", args.run);
                if !status.outputs.is_empty() {
                    out.push('\n');
                    out.push_str(&describe_outputs(&status.outputs));
                }
                out
            });
            if matches!(
                state,
                RunState::Failed | RunState::Rejected | RunState::Withheld | RunState::Cancelled
            ) {
                let kind = match state {
                    RunState::Withheld => ExitKind::Withheld,
                    RunState::Rejected => ExitKind::Refused,
                    _ => ExitKind::RunFailed,
                };
                return Err(Failure::new(kind, format!("run {} ended {state}", args.run)).into());
            }
            return Ok(());
        }
    }
}

/// How long each status request of `run watch` / `run submit --wait` may be held by the server.
const FOLLOW_WAIT_SECS: u64 = 20;

/// `cleanroom run cancel`.
#[derive(Debug, clap::Args)]
pub(crate) struct CancelArgs {
    /// The run id.
    run: String,
}

pub(crate) fn cancel(conn: &Conn, args: CancelArgs) -> Result<()> {
    let answer: CancelAccepted =
        conn.client()?
            .signed("POST", &format!("/v1/runs/{}/cancel", args.run), b"{}")?;
    conn.print(&answer, || format!("cancelling run {}", args.run));
    Ok(())
}

/// `cleanroom result fetch`.
#[derive(Debug, clap::Args)]
pub(crate) struct FetchArgs {
    /// The run id.
    run: String,
    /// Directory for the decrypted outputs.
    #[arg(long, short = 'o', default_value = "results")]
    out: PathBuf,
}

pub(crate) fn fetch(conn: &Conn, args: FetchArgs) -> Result<()> {
    let client = conn.client()?;
    let identity = client.identity()?;
    // The receipt must be signed by the key an attested enclave holds.
    let verified = verify_server(&client, &conn.trust)?;
    let enclave = PartyId(verified.keys.signing_public_key);
    let bundle: ResultBundle =
        client.signed("GET", &format!("/v1/runs/{}/result", args.run), b"")?;
    let logged = LoggedReceipt {
        receipt: bundle.receipt,
        logged: bundle.logged,
    };
    logged.verify(Some(&enclave)).context(
        "the receipt is not signed by the attested enclave, or its release is not in the audit log",
    )?;
    let receipt = &logged.receipt;
    if receipt.receipt.run_id != args.run || receipt.receipt.researcher != identity.party() {
        bail!("the receipt is for another run or researcher");
    }
    std::fs::create_dir_all(&args.out)?;
    let mut plain = Vec::new();
    for o in &bundle.outputs {
        let listed = receipt
            .receipt
            .outputs
            .iter()
            .find(|r| r.index == o.index)
            .ok_or_else(|| anyhow!("output {} is not in the receipt", o.index))?;
        let ciphertext = B64.decode(&o.sealed)?;
        if listed.ciphertext_sha256 != hex::encode(Sha256::digest(&ciphertext)) {
            bail!(
                "output {} does not match the digest in the receipt",
                o.index
            );
        }
        plain.push(open_one(identity, &args.run, "result", o)?);
    }
    let lines = write_outputs(conn, &plain, &args.out)?;
    std::fs::write(
        args.out.join("receipt.json"),
        serde_json::to_vec_pretty(&logged)?,
    )?;
    conn.print(&serde_json::to_value(&logged)?, || {
        format!(
            "run {} released; receipt verified (enclave {}, measurement {}…), its release is \
             entry #{} of the audit log (tree size {})\n{}\noutputs and receipt.json in {}",
            args.run,
            enclave.short(),
            &receipt.receipt.measurement[..16.min(receipt.receipt.measurement.len())],
            logged.logged.entry.seq,
            logged.logged.head.size,
            lines.join("\n"),
            args.out.display()
        )
    });
    Ok(())
}

/// `cleanroom receipt verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReceiptVerifyArgs {
    /// A `receipt.json` written by `cleanroom result fetch`.
    file: PathBuf,
    /// The enclave signing key (hex) that must have signed it; without it the key named in
    /// the receipt is printed for you to compare with an attestation you verified.
    #[arg(long)]
    enclave_key: Option<PartyId>,
}

/// Checks a saved receipt offline: its signature, and that its run's final entry (naming
/// this receipt) is included in an enclave-signed audit tree head.
pub(crate) fn verify_receipt(conn: &Conn, args: ReceiptVerifyArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let logged: LoggedReceipt = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a receipt.json", args.file.display()))?;
    logged
        .verify(args.enclave_key.as_ref())
        .context(Failure::verification("the receipt does not verify"))?;
    let r = &logged.receipt.receipt;
    let value = serde_json::json!({
        "verified": true, "run": r.run_id, "state": r.state,
        "enclave_key": r.enclave_key, "measurement": r.measurement,
        "entry": logged.logged.entry.seq, "tree_size": logged.logged.head.size,
    });
    conn.print(&value, || {
        let mut text = format!(
            "receipt verified: run {} {} (module {}…), signed by enclave {} (measurement {}…)\n\
             logged as entry #{} of the audit log; the tree head of size {} signed at {} includes it",
            r.run_id,
            r.state,
            &r.module[..12.min(r.module.len())],
            r.enclave_key,
            &r.measurement[..16.min(r.measurement.len())],
            logged.logged.entry.seq,
            logged.logged.head.size,
            logged.logged.head.time,
        );
        if args.enclave_key.is_none() {
            text.push_str(
                "\ncheck that enclave key against a verified attestation (or pass --enclave-key)",
            );
        }
        text
    });
    Ok(())
}

/// Module-written text made safe for a terminal: control characters (ANSI and OSC escapes
/// could hide lines from a reviewer) are shown as `?`; newlines and tabs stay.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Write decrypted outputs into `dir` (tables as `.arrows` and `.csv`, JSON, log, error text,
/// files). Returns a line per output for people.
fn write_outputs(
    conn: &Conn,
    outputs: &[PlainOutput],
    dir: &std::path::Path,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for plain in outputs {
        let name = plain.name.as_str();
        let bytes = &plain.bytes;
        match plain.kind {
            OutputKind::Table => {
                let (schema, batches) =
                    cleanroom_runtime::output::decode_stream(bytes).map_err(|e| anyhow!(e))?;
                std::fs::write(dir.join(format!("{name}.arrows")), bytes)?;
                crate::tables::write_copies(dir, name, &schema, &batches)?;
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                lines.push(format!(
                    "  table {name}: {rows} rows × {} columns → {name}.csv, .parquet, .arrows",
                    schema.fields().len()
                ));
                if !conn.json {
                    let text = arrow_cast::pretty::pretty_format_batches(&batches)?.to_string();
                    lines.extend(text.lines().map(|l| format!("      {}", printable(l))));
                }
            }
            OutputKind::Json => {
                std::fs::write(dir.join(format!("{name}.json")), bytes)?;
                lines.push(format!(
                    "  json {name}: {}",
                    printable(&String::from_utf8_lossy(bytes))
                ));
            }
            OutputKind::Log => {
                std::fs::write(dir.join("log.txt"), bytes)?;
                lines.push("  log → log.txt".to_string());
            }
            OutputKind::Error => {
                std::fs::write(dir.join("error.txt"), bytes)?;
                lines.push(format!(
                    "  error: {}",
                    printable(&String::from_utf8_lossy(bytes))
                ));
            }
            OutputKind::File => {
                std::fs::create_dir_all(dir.join("files"))?;
                std::fs::write(dir.join("files").join(name), bytes)?;
                lines.push(format!("  file {name}: {} bytes", bytes.len()));
            }
        }
    }
    Ok(lines)
}

/// Decrypt one output sealed to `identity` for `run` and check its name.
fn open_one(
    identity: &cleanroom_proto::Identity,
    run: &str,
    purpose: &str,
    o: &SealedOutput,
) -> Result<PlainOutput> {
    let sealed = B64.decode(&o.sealed)?;
    let plain = open_output(identity, &output_context(run, purpose, o.index), &sealed)
        .with_context(|| format!("cannot decrypt output {}", o.index))?;
    cleanroom_runtime::output::validate_name(&plain.name)
        .map_err(|e| anyhow!("server sent a bad output name: {e}"))?;
    Ok(plain)
}

/// A held run's outputs, sealed to this reviewer's own key (named in the signed query),
/// shown only if the attested enclave signed them; with the policy's decision per output.
pub(crate) fn open_held(
    client: &super::client::Client,
    trust: &super::attest::Trust,
    run: &str,
) -> Result<(Vec<OutputReport>, Vec<PlainOutput>)> {
    let identity = client.identity()?;
    let path = format!(
        "/v1/runs/{run}/held?hpke={}",
        hex::encode(identity.hpke_public())
    );
    let held: HeldBundle = client.signed("GET", &path, b"")?;
    // Anyone can seal to this key: only outputs the attested enclave signed are shown.
    let verified = verify_server(client, trust)?;
    held.verify(&PartyId(verified.keys.signing_public_key))
        .context(Failure::verification(
            "the held outputs are not signed by the attested enclave",
        ))?;
    if held.run != run {
        bail!("the server answered with another run's held outputs");
    }
    let plain = held
        .outputs
        .iter()
        .map(|o| open_one(identity, run, "review", o))
        .collect::<Result<Vec<_>>>()?;
    Ok((held.reports, plain))
}

/// Record a reviewer's decision on a held run.
pub(crate) fn decide(
    client: &super::client::Client,
    run: &str,
    decision: ReviewDecision,
    reason: Option<String>,
) -> Result<RunStatus> {
    let body = Review { decision, reason };
    client.signed(
        "POST",
        &format!("/v1/runs/{run}/review"),
        &serde_json::to_vec(&body)?,
    )
}

/// `cleanroom review show|release|withhold`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReviewArgs {
    /// The run id.
    run: String,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: Option<String>,
    /// Where `review show` writes the decrypted outputs.
    #[arg(long, short = 'o', default_value = "review")]
    out: PathBuf,
}

pub(crate) fn review(
    conn: &Conn,
    args: ReviewArgs,
    decision: Option<ReviewDecision>,
) -> Result<()> {
    let client = conn.client()?;
    let Some(decision) = decision else {
        let (reports, plain) = open_held(&client, &conn.trust, &args.run)?;
        std::fs::create_dir_all(&args.out)?;
        let lines = write_outputs(conn, &plain, &args.out)?;
        conn.print(&serde_json::to_value(&reports)?, || {
            format!(
                "run {} awaits your review\n{}\n{}\ndecrypted outputs in {}",
                args.run,
                describe_outputs(&reports),
                lines.join("\n"),
                args.out.display()
            )
        });
        return Ok(());
    };
    let answer = decide(&client, &args.run, decision, args.reason)?;
    let verb = match decision {
        ReviewDecision::Release => "released",
        ReviewDecision::Withhold => "withheld",
    };
    conn.print(&answer, || {
        format!("run {}: {verb}; now {}", args.run, answer.state)
    });
    Ok(())
}
