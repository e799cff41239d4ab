//! Owners: grant and revoke, as new signed policy versions.

use anyhow::Context as _;
use anyhow::{Result, bail};
use cleanroom_proto::PartyId;
use cleanroom_proto::policy::{
    Grant, OutputRules, Policy, Researchers, Rounding, SignedPolicy, SmallGroups, Unchecked,
};
use cleanroom_proto::run::params_digest;

use super::Conn;
use crate::failure::Failure;

/// `cleanroom policy grant`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("who").required(true).args(["researchers", "any_researcher"]))]
pub(crate) struct GrantArgs {
    /// Your dataset.
    #[arg(long)]
    dataset: String,
    /// Module hash (SHA-256 hex) to allow.
    #[arg(long, required_unless_present = "r")]
    module: Option<String>,
    /// Researcher allowed (party id, hex); repeat. Say this or --any-researcher.
    #[arg(long = "researcher")]
    researchers: Vec<PartyId>,
    /// Allow any researcher (never the default: say it explicitly).
    #[arg(long, conflicts_with = "researchers")]
    any_researcher: bool,
    /// Pin the exact params (JSON text) the module may run with.
    #[arg(long, conflicts_with = "params_digest")]
    params: Option<String>,
    /// Approve this SQL query (for the SQL engine module): pins its params
    /// and records the query text in the grant for everyone to read.
    #[arg(long, conflicts_with_all = ["params", "params_digest"])]
    sql: Option<String>,
    /// Approve this R script (for the R engine module, `--module` may then be omitted): pins
    /// the script as the params and names it in the grant's note.
    #[arg(long, value_name = "FILE.R", conflicts_with_all = ["params", "params_digest", "sql"])]
    r: Option<std::path::PathBuf>,
    /// Pin the params by digest (SHA-256 hex).
    #[arg(long)]
    params_digest: Option<String>,
    /// The grant expires after this many days.
    #[arg(long)]
    expires_in_days: Option<u64>,
    /// At most this many runs in total, across all researchers.
    #[arg(long)]
    max_runs: Option<u64>,
    /// Allow unlimited runs by any researcher (needed for a grant without --researcher and
    /// without --max-runs: repeated runs enable differencing attacks).
    #[arg(long)]
    unlimited: bool,
    /// Pin the run's full input set as NAME=DATASET; repeat (include this dataset).
    #[arg(long = "input", value_name = "NAME=DATASET")]
    inputs: Vec<String>,
    /// A note shown to other parties (e.g. what the analysis is for).
    #[arg(long)]
    note: Option<String>,
    /// Column that never reaches any analysis; repeat.
    #[arg(long = "hide")]
    hidden: Vec<String>,
    /// Identifier column: joinable inside, never released; repeat.
    #[arg(long = "identifier")]
    identifiers: Vec<String>,
    /// Smallest group count released (k).
    #[arg(long)]
    min_group: Option<u64>,
    /// Columns holding group counts; repeat (default: count, n, patients).
    #[arg(long = "count-column")]
    count_columns: Vec<String>,
    /// Refuse outputs with small groups instead of suppressing those groups.
    #[arg(long)]
    refuse_small_groups: bool,
    /// Release the analysis's log lines.
    #[arg(long)]
    release_logs: bool,
    /// Hold outputs until you review them.
    #[arg(long, conflicts_with = "no_review")]
    review: bool,
    /// Turn review off again (a previous version required it).
    #[arg(long)]
    no_review: bool,
    /// Turn log release off again.
    #[arg(long, conflicts_with = "release_logs")]
    no_release_logs: bool,
    /// Clear the hidden-column list (before any --hide).
    #[arg(long)]
    clear_hidden: bool,
    /// Clear the identifier-column list (before any --identifier).
    #[arg(long)]
    clear_identifiers: bool,
    /// A reviewer for this dataset (party id); repeat. Default: you.
    #[arg(long = "reviewer")]
    reviewers: Vec<PartyId>,
    /// How many distinct reviewers must release (OpenSAFELY uses two).
    #[arg(long)]
    min_reviewers: Option<u32>,
    /// What happens to outputs the enclave cannot check (free JSON, files, tables without a
    /// declared count column): `review` or `refuse`.
    #[arg(long, value_parser = ["review", "refuse"])]
    unchecked: Option<String>,
    /// Rounding of released counts: `none`, `redact7-round5` (OpenSAFELY) or `midpoint6`.
    #[arg(long, value_parser = ["none", "redact7-round5", "midpoint6"])]
    rounding: Option<String>,
    /// Treat zero counts as not disclosive (structural zeros are released).
    #[arg(long)]
    zeros_not_disclosive: bool,
    /// Smallest residual degrees of freedom of a model output.
    #[arg(long)]
    min_residual_df: Option<u64>,
    /// Most outputs a run may publish (at most 32).
    #[arg(long)]
    max_outputs: Option<u32>,
    /// Largest total output, MiB.
    #[arg(long)]
    max_output_mib: Option<u64>,
}

/// `cleanroom policy revoke`.
#[derive(Debug, clap::Args)]
pub(crate) struct RevokeArgs {
    /// Your dataset.
    #[arg(long)]
    dataset: String,
    /// Revoke only this module's grant (default: every grant).
    #[arg(long)]
    module: Option<String>,
}

/// `cleanroom policy dp`.
#[derive(Debug, clap::Args)]
pub(crate) struct DpArgs {
    /// Your dataset.
    #[arg(long)]
    dataset: String,
    /// The column identifying a person: the privacy unit.
    #[arg(long, required_unless_present = "remove")]
    unit: Option<String>,
    /// The dataset's total ε, over every run and preview, ever.
    #[arg(long, required_unless_present = "remove")]
    epsilon: Option<f64>,
    /// The most one run may spend.
    #[arg(long, required_unless_present = "remove")]
    per_run: Option<f64>,
    /// The most one researcher may spend in total.
    #[arg(long)]
    per_researcher: Option<f64>,
    /// How many rows of one person enter an aggregate at most.
    #[arg(long, default_value_t = 1)]
    rows_per_person: u32,
    /// A column's public categories, COLUMN=A,B,C (repeat): the groups it may be grouped by.
    #[arg(long = "categories", value_name = "COLUMN=A,B,...")]
    categories: Vec<String>,
    /// A numeric column's public bounds, COLUMN=LO..HI (repeat): values are clamped to them.
    #[arg(long = "bounds", value_name = "COLUMN=LO..HI")]
    bounds: Vec<String>,
    /// Stop requiring differential privacy.
    #[arg(long, conflicts_with_all = ["unit", "epsilon", "per_run"])]
    remove: bool,
}

pub(crate) fn dp(conn: &Conn, args: DpArgs) -> Result<()> {
    use cleanroom_proto::dp::{ColumnDomain, DpRequirement, Epsilon, Finite};
    let Some(prev) = current(conn, &args.dataset)? else {
        bail!(
            "dataset {} has no policy yet: grant a module first (`cleanroom policy grant`)",
            args.dataset
        );
    };
    let eps = |flag: &str, v: f64| {
        Epsilon::from_f64(v)
            .with_context(|| format!("--{flag} {v}: a positive number with at most six decimals"))
    };
    let mut policy = prev.policy;
    policy.dp = if args.remove {
        None
    } else {
        let mut columns = std::collections::BTreeMap::new();
        for spec in &args.categories {
            let (column, values) = spec
                .split_once('=')
                .with_context(|| format!("--categories takes COLUMN=A,B,..., got {spec:?}"))?;
            let values = values.split(',').map(str::to_string).collect();
            columns.insert(column.to_string(), ColumnDomain::Categories(values));
        }
        for spec in &args.bounds {
            let parsed = spec.split_once('=').and_then(|(column, range)| {
                let (lo, hi) = range.split_once("..")?;
                let lower = Finite::new(lo.trim().parse().ok()?)?;
                let upper = Finite::new(hi.trim().parse().ok()?)?;
                Some((column.to_string(), ColumnDomain::Numeric { lower, upper }))
            });
            let (column, domain) =
                parsed.with_context(|| format!("--bounds takes COLUMN=LO..HI, got {spec:?}"))?;
            columns.insert(column, domain);
        }
        Some(DpRequirement {
            unit_column: args.unit.clone().unwrap_or_default(),
            epsilon: eps("epsilon", args.epsilon.unwrap_or_default())?,
            max_epsilon_per_run: eps("per-run", args.per_run.unwrap_or_default())?,
            max_epsilon_per_researcher: args
                .per_researcher
                .map(|v| eps("per-researcher", v))
                .transpose()?,
            max_rows_per_unit: args.rows_per_person,
            columns,
        })
    };
    policy.version += 1;
    policy.issued_at = crate::remote::runs::now();
    policy
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid policy: {e}"))?;
    publish(conn, policy)
}

/// The highest policy version this key signed per dataset, kept beside the key file
/// (`<key>.signed-policies.json`): a server that serves an older version back (a rollback)
/// is caught, and a new version never goes below it.
fn ledger_path(conn: &Conn) -> Option<std::path::PathBuf> {
    conn.key.as_ref().map(|k| {
        let mut name = k.file_name().unwrap_or_default().to_os_string();
        name.push(".signed-policies.json");
        k.with_file_name(name)
    })
}

fn ledger(conn: &Conn) -> Result<std::collections::BTreeMap<String, u64>> {
    match ledger_path(conn).map(std::fs::read) {
        Some(Ok(bytes)) => Ok(serde_json::from_slice(&bytes).context("corrupt policy ledger")?),
        _ => Ok(Default::default()),
    }
}

fn remember(conn: &Conn, dataset: &str, version: u64) -> Result<()> {
    let Some(path) = ledger_path(conn) else {
        return Ok(());
    };
    let mut signed = ledger(conn)?;
    let v = signed.entry(dataset.to_string()).or_insert(0);
    *v = (*v).max(version);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&signed)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The dataset's current policy, verified: signed by this CLI's own key (the owner) for this
/// dataset, and not older than the last version this key signed. Whoever answers over the
/// network cannot slip a grant into the next version, nor serve back an old one.
fn current(conn: &Conn, dataset: &str) -> Result<Option<SignedPolicy>> {
    current_on(conn, &conn.client()?, dataset)
}

/// [`current`] over an existing session (the console keeps one).
pub(crate) fn current_on(
    conn: &Conn,
    client: &super::client::Client,
    dataset: &str,
) -> Result<Option<SignedPolicy>> {
    let me = client.identity()?.party();
    let last = ledger(conn)?.get(dataset).copied().unwrap_or(0);
    match client.signed::<SignedPolicy>("GET", &format!("/v1/datasets/{dataset}/policy"), b"") {
        Ok(signed) => {
            signed.verify().context(Failure::verification(
                "the server's copy of the policy does not verify",
            ))?;
            if signed.owner != me || signed.policy.dataset != dataset {
                return Err(Failure::verification(format!(
                    "the server answered with a policy not signed by you for dataset {dataset}; \
                     refusing to build on it"
                ))
                .into());
            }
            if signed.policy.version < last {
                return Err(Failure::verification(format!(
                    "the server serves policy v{} of dataset {dataset}, but you signed v{last}: \
                     its state was rolled back; refusing to build on it",
                    signed.policy.version
                ))
                .into());
            }
            Ok(Some(signed))
        }
        Err(e) if e.to_string().contains("not-found") => {
            if last > 0 {
                return Err(Failure::verification(format!(
                    "the server has no policy for dataset {dataset}, but you signed v{last}: its \
                     state was rolled back; refusing to start over"
                ))
                .into());
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `cleanroom policy sign`.
#[derive(Debug, clap::Args)]
pub(crate) struct SignArgs {
    /// The policy (JSON of a `Policy`: dataset, version, grants, columns, output rules).
    #[arg(long)]
    from_file: std::path::PathBuf,
}

pub(crate) fn sign(conn: &Conn, args: SignArgs) -> Result<()> {
    let text = std::fs::read(&args.from_file)
        .with_context(|| format!("cannot read {}", args.from_file.display()))?;
    let policy: Policy = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a policy", args.from_file.display()))?;
    policy
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid policy: {e}"))?;
    publish(conn, policy)
}

fn publish(conn: &Conn, policy: Policy) -> Result<()> {
    let (signed, answer) = sign_and_put(conn, &conn.client()?, policy)?;
    conn.print(&answer, || describe(&signed));
    Ok(())
}

/// Sign `policy` with the session's key, store it on the server and remember its version in
/// the ledger beside the key.
pub(crate) fn sign_and_put(
    conn: &Conn,
    client: &super::client::Client,
    policy: Policy,
) -> Result<(SignedPolicy, cleanroom_proto::api::PolicyStored)> {
    let last = ledger(conn)?.get(&policy.dataset).copied().unwrap_or(0);
    if policy.version <= last {
        bail!(
            "you already signed v{last} of dataset {}: give this policy a higher version",
            policy.dataset
        );
    }
    let signed = SignedPolicy::sign(policy, client.identity()?);
    let body = serde_json::to_vec(&signed)?;
    let answer: cleanroom_proto::api::PolicyStored = client.signed(
        "PUT",
        &format!("/v1/datasets/{}/policy", signed.policy.dataset),
        &body,
    )?;
    remember(conn, &signed.policy.dataset, signed.policy.version)?;
    Ok((signed, answer))
}

pub(crate) fn describe(signed: &SignedPolicy) -> String {
    let p = &signed.policy;
    let mut out = format!(
        "dataset {} policy v{} signed ({})\n",
        p.dataset,
        p.version,
        signed.digest()
    );
    if p.grants.is_empty() {
        out.push_str("  no grants: nothing may run on this dataset\n");
    }
    for g in &p.grants {
        let who = match &g.researchers {
            Researchers::Any => "any researcher".to_string(),
            Researchers::Only(list) => list
                .iter()
                .map(|r| r.short())
                .collect::<Vec<_>>()
                .join(", "),
        };
        out.push_str(&format!(
            "  grant module {}… to {who}",
            &g.module[..12.min(g.module.len())]
        ));
        if let Some(d) = &g.params_digest {
            out.push_str(&format!(", params pinned {}…", &d[..12.min(d.len())]));
        }
        if let Some(n) = g.max_runs {
            out.push_str(&format!(", at most {n} runs in total"));
        } else if g.unlimited {
            out.push_str(", UNLIMITED runs");
        }
        if let Some(inputs) = &g.inputs {
            out.push_str(&format!(", inputs pinned to {} dataset(s)", inputs.len()));
        }
        if let Some(t) = g.expires_at {
            out.push_str(&format!(", expires at {t}"));
        }
        if let Some(note) = &g.note {
            out.push_str(&format!("\n    note: {note}"));
        }
        out.push('\n');
    }
    let r = &p.output;
    out.push_str(&format!(
        "  output rules: groups < {} {}, at most {} bytes, logs {}, review {}",
        r.min_group_count,
        if r.small_groups == SmallGroups::Refuse {
            "refuse the output"
        } else {
            "suppressed"
        },
        r.max_output_bytes,
        if r.release_logs {
            "released"
        } else {
            "withheld"
        },
        if r.review_required {
            "required"
        } else {
            "not required"
        },
    ));
    if !p.hidden_columns.is_empty() {
        out.push_str(&format!(
            "\n  hidden columns: {}",
            p.hidden_columns.join(", ")
        ));
    }
    if !p.identifier_columns.is_empty() {
        out.push_str(&format!(
            "\n  identifier columns: {}",
            p.identifier_columns.join(", ")
        ));
    }
    if let Some(dp) = &p.dp {
        out.push_str(&format!(
            "\n  differential privacy: person = {}, ε = {} in total, at most {} per run{}, at \
             most {} row(s) per person",
            dp.unit_column,
            dp.epsilon,
            dp.max_epsilon_per_run,
            dp.max_epsilon_per_researcher
                .map(|e| format!(", {e} per researcher"))
                .unwrap_or_default(),
            dp.max_rows_per_unit
        ));
    }
    out
}

pub(crate) fn grant(conn: &Conn, mut args: GrantArgs) -> Result<()> {
    let module = match (&args.module, &args.r) {
        (Some(m), _) => m.clone(),
        (None, _) => crate::remote::runs::r_engine(&conn.client()?)?,
    };
    if module.len() != 64 || hex::decode(&module).is_err() {
        bail!("--module must be a SHA-256 in hex (as `cleanroom module push` prints)");
    }
    let now = crate::remote::runs::now();
    let prev = current(conn, &args.dataset)?;
    let (version, mut grants, mut hidden, mut identifiers, mut rules) = match &prev {
        Some(p) => (
            p.policy.version + 1,
            p.policy.grants.clone(),
            p.policy.hidden_columns.clone(),
            p.policy.identifier_columns.clone(),
            p.policy.output.clone(),
        ),
        None => (1, vec![], vec![], vec![], OutputRules::default()),
    };
    let researchers = if args.any_researcher {
        Researchers::Any
    } else {
        Researchers::Only(args.researchers.clone())
    };
    if researchers == Researchers::Any && args.max_runs.is_none() && !args.unlimited {
        bail!(
            "a grant to --any-researcher needs --max-runs N (in total), or --unlimited to allow \
             unlimited runs by anyone; or name researchers with --researcher"
        );
    }
    let mut pinned = std::collections::BTreeMap::new();
    for spec in &args.inputs {
        let (name, dataset) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--input takes NAME=DATASET, got {spec:?}"))?;
        pinned.insert(name.to_string(), dataset.to_string());
    }
    let (params, note) = match (&args.sql, args.r.take()) {
        (_, Some(script)) => {
            let text = std::fs::read_to_string(&script)
                .with_context(|| format!("cannot read {}", script.display()))?;
            eprintln!(
                "you are approving this R script, exactly:\n\n    {}\n",
                text.trim_end().replace('\n', "\n    ")
            );
            let name = script.file_name().unwrap_or_default().to_string_lossy();
            let note = args.note.clone().unwrap_or_else(|| format!("R: {name}"));
            (Some(text), Some(note))
        }
        (Some(sql), None) => {
            eprintln!(
                "you are approving this query, exactly:\n\n    {}\n",
                sql.replace('\n', "\n    ")
            );
            (
                Some(crate::run_local::sql_params(sql)),
                Some(format!("SQL: {sql}")),
            )
        }
        (None, None) => (args.params.clone(), args.note.clone()),
    };
    let params_digest = params.as_deref().map(params_digest).or(args.params_digest);
    // One module may hold several grants with different pinned params (one approved SQL
    // query each); a new grant replaces only the module's grant with the same pin.
    grants.retain(|g| !(g.module == module && g.params_digest == params_digest));
    grants.push(Grant {
        module,
        researchers,
        params_digest,
        expires_at: args.expires_in_days.map(|d| now + d * 86_400),
        max_runs: args.max_runs,
        note,
        inputs: (!pinned.is_empty()).then_some(pinned),
        unlimited: args.unlimited,
    });
    if args.clear_hidden {
        hidden.clear();
    }
    if !args.hidden.is_empty() {
        hidden = args.hidden;
    }
    if args.clear_identifiers {
        identifiers.clear();
    }
    if !args.identifiers.is_empty() {
        identifiers = args.identifiers;
    }
    if let Some(k) = args.min_group {
        rules.min_group_count = k;
    }
    if !args.count_columns.is_empty() {
        rules.count_columns = args.count_columns;
    }
    if args.refuse_small_groups {
        rules.small_groups = SmallGroups::Refuse;
    }
    rules.release_logs = (rules.release_logs || args.release_logs) && !args.no_release_logs;
    rules.review_required = (rules.review_required || args.review) && !args.no_review;
    if let Some(m) = args.max_output_mib {
        rules.max_output_bytes = m << 20;
    }
    if !args.reviewers.is_empty() {
        rules.reviewers = args.reviewers;
    }
    if let Some(n) = args.min_reviewers {
        rules.min_reviewers = n;
    }
    match args.unchecked.as_deref() {
        Some("review") => rules.unchecked = Some(Unchecked::Review),
        Some("refuse") => rules.unchecked = Some(Unchecked::Refuse),
        _ => {}
    }
    match args.rounding.as_deref() {
        Some("none") => rules.rounding = Rounding::None,
        Some("redact7-round5") => rules.rounding = Rounding::Redact7Round5,
        Some("midpoint6") => rules.rounding = Rounding::Midpoint6,
        _ => {}
    }
    if args.zeros_not_disclosive {
        rules.zeros_disclosive = false;
    }
    if let Some(df) = args.min_residual_df {
        rules.min_residual_df = df;
    }
    if let Some(n) = args.max_outputs {
        rules.max_outputs = n;
    }
    publish(
        conn,
        Policy {
            dataset: args.dataset,
            version,
            grants,
            hidden_columns: hidden,
            identifier_columns: identifiers,
            output: rules,
            // A new grant never drops the owner's DP requirement.
            dp: prev.as_ref().and_then(|p| p.policy.dp.clone()),
            issued_at: now,
        },
    )
}

pub(crate) fn revoke(conn: &Conn, args: RevokeArgs) -> Result<()> {
    let Some(prev) = current(conn, &args.dataset)? else {
        bail!(
            "dataset {} has no policy: there is nothing to revoke",
            args.dataset
        );
    };
    let mut policy = prev.policy;
    match &args.module {
        Some(m) => policy.grants.retain(|g| &g.module != m),
        None => policy.grants.clear(),
    }
    policy.version += 1;
    policy.issued_at = crate::remote::runs::now();
    publish(conn, policy)
}

/// `cleanroom policy show`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// The dataset.
    #[arg(long)]
    dataset: String,
}

pub(crate) fn show(conn: &Conn, args: ShowArgs) -> Result<()> {
    match current(conn, &args.dataset)? {
        Some(p) => {
            p.verify()?;
            conn.print(&serde_json::to_value(&p)?, || describe(&p));
            Ok(())
        }
        None => Err(Failure::new(
            crate::failure::ExitKind::Refused,
            format!(
                "the server shows no policy for dataset {} (none yet, or not yours to see)",
                args.dataset
            ),
        )
        .into()),
    }
}
