//! The console's pages, server-rendered (maud escapes every interpolated value: module-written
//! names, cells and JSON are text, never markup).

use maud::{DOCTYPE, Markup, html};

use std::collections::BTreeMap;

use cleanroom_proto::api::{ModuleInfo, PolicyStored};
use cleanroom_proto::audit::AuditEntry;
use cleanroom_proto::dp::DpBudget;
use cleanroom_proto::policy::{Policy, Researchers, SignedPolicy};
use cleanroom_proto::run::{
    DatasetInfo, Disposition, OutputKind, OutputReport, PlainOutput, ReviewDecision, RunState,
    RunStatus,
};

use super::{AuditView, Console, DatasetView, GrantForm, Pending, Problem};
use crate::remote::attest::Verified;

/// Entries per audit page.
const AUDIT_PAGE: usize = 50;
/// Rows of a held table shown in the browser.
const TABLE_ROWS: usize = 200;

fn when(secs: u64) -> String {
    if secs == 0 {
        return "never".into();
    }
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

fn short(hex: &str) -> &str {
    &hex[..12.min(hex.len())]
}

/// The page frame: navigation, a skip link, one stylesheet and one script, both ours.
fn layout(title: &str, active: &str, body: Markup) -> Markup {
    let nav = [
        ("/", "Enclave"),
        ("/datasets", "Datasets"),
        ("/grants", "Grants"),
        ("/runs", "Runs"),
        ("/review", "Review"),
        ("/audit", "Audit"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cleanroom console" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "cleanroom" }
                    nav aria-label="Sections" {
                        ul {
                            @for (href, label) in nav {
                                li {
                                    @if label == active {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

pub(super) fn problem(p: &Problem) -> Markup {
    layout(
        p.title,
        "",
        html! {
            div.callout.bad role="alert" {
                p { strong { "What happened: " } (p.detail) }
                p { strong { "What to do: " } (p.next) }
            }
        },
    )
}

pub(super) fn enclave(c: &Console, outcome: &Result<Verified, String>, checked: u64) -> Markup {
    let body = html! {
        @match outcome {
            Ok(v) if v.claims.simulated => {
                div.callout.warn role="status" #attestation {
                    p { strong { "Simulation: " } "the evidence verifies, but comes from the INSECURE \
                        simulation backend, not AMD SEV-SNP hardware. Use it for development only; \
                        real patient data needs a real enclave." }
                }
            }
            Ok(_) => {
                div.callout.good role="status" #attestation {
                    p { strong { "Verified: " } "AMD SEV-SNP evidence, signed by AMD's keys, for a \
                        measurement you pinned. The console talks only to this enclave (attested TLS)." }
                }
            }
            Err(why) => {
                div.callout.bad role="alert" #attestation {
                    p { strong { "Failed: " } "the server did not pass attestation, so the console \
                        sends it nothing." }
                    p { strong { "Why: " } (why) }
                    p { "Check the server address and the measurement you pinned, then check again." }
                }
            }
        }
        dl.facts {
            dt { "Server" } dd { code { (c.conn.server) } }
            dt { "You" } dd { code { (c.me) } }
            dt { "Pinned measurement(s)" }
            dd {
                @if c.conn.trust.measurements.is_empty() { "none (manifests or author key only)" }
                @for m in &c.conn.trust.measurements { code { (m) } br; }
            }
            @if let Ok(v) = outcome {
                dt { "Measurement reported" } dd { code { (hex::encode(v.claims.measurement.0)) } }
                dt { "Matches the pin" } dd {
                    @if c.conn.trust.measurements.iter().any(|m| m.eq_ignore_ascii_case(&hex::encode(v.claims.measurement.0))) {
                        "yes"
                    } @else { "accepted through a signed manifest or author statement" }
                }
                dt { "CPU generation" } dd { (format!("{:?}", v.claims.generation)) }
                dt { "TCB (security versions)" } dd { (tcb(&v.claims.reported_tcb)) }
                dt { "Deployment" } dd { code { (v.deployment) } }
                dt { "Enclave signing key" } dd { code { (hex::encode(v.keys.signing_public_key)) } }
                @if let Some(s) = &v.statement { dt { "Author-signed release" } dd { "SVN " (s.svn) } }
            }
            dt { "Last checked" } dd #checked { (when(checked)) }
        }
        form method="post" action="/attest" {
            button type="submit" { "Check again" }
        }
    };
    layout("Enclave", "Enclave", body)
}

fn tcb(t: &cleanroom_trust::Tcb) -> String {
    let mut text = format!(
        "bootloader {}, TEE {}, SNP firmware {}, microcode {}",
        t.bootloader, t.tee, t.snp, t.microcode
    );
    if let Some(fmc) = t.fmc {
        text.push_str(&format!(", FMC {fmc}"));
    }
    text
}

fn schema_list(columns: &[(String, String)]) -> Markup {
    html! {
        ul.schema {
            @for (name, ty) in columns { li { code { (name) } " " span.muted { (ty) } } }
        }
    }
}

fn policy_summary(policy: Option<&SignedPolicy>) -> Markup {
    html! {
        @match policy {
            None => p.muted { "No policy yet: nothing may run on this dataset." },
            Some(p) => pre.policy { (crate::remote::policy::describe(p)) },
        }
    }
}

pub(super) fn datasets(data: &[DatasetView]) -> Markup {
    let body = html! {
        @if data.is_empty() {
            p { "You have no datasets on this clean room yet. Upload one with "
                code { "cleanroom dataset push FILE --key YOUR_KEY" } "." }
        }
        @for d in data {
            section.card aria-labelledby=(format!("ds-{}", d.info.id)) {
                h2 #(format!("ds-{}", d.info.id)) { "Dataset " code { (short(&d.info.id)) } }
                dl.facts {
                    dt { "Id" } dd { code { (d.info.id) } }
                    dt { "Rows" } dd { (d.info.rows.map(|r| r.to_string()).unwrap_or_default()) }
                    dt { "Uploaded" } dd { (when(d.info.created)) }
                }
                h3 { "Schema" }
                (schema_list(d.info.columns.as_deref().unwrap_or_default()))
                h3 { "Current policy" }
                (policy_summary(d.policy.as_ref()))
                @if let Some(b) = &d.budget { (budget(b)) }
                h3 { "Preview" }
                @match &d.preview {
                    None => p.muted { "No DP preview published (publish one with "
                        code { "cleanroom dataset publish-preview" } ")." },
                    Some(p) => p { "DP preview published " (when(p.created)) ", ε " (p.epsilon)
                        ", about " (p.people) " people, " (p.columns.len()) " column summaries." },
                }
            }
        }
    };
    layout("Datasets", "Datasets", body)
}

fn budget(b: &DpBudget) -> Markup {
    let total: f64 = b.epsilon.to_string().parse().unwrap_or(0.0);
    let spent: f64 = b.spent.to_string().parse().unwrap_or(0.0);
    html! {
        div.budget {
            label for=(format!("budget-{}", b.dataset)) {
                "Privacy budget of " code { (short(&b.dataset)) } ": ε " (b.spent) " spent of " (b.epsilon)
            }
            meter #(format!("budget-{}", b.dataset)) min="0" max=(total) value=(spent) {}
        }
    }
}

/// A module's id with what the server knows of it: size, uploader, attached source.
fn module_cell(id: &str, modules: &BTreeMap<String, ModuleInfo>) -> Markup {
    html! {
        code title=(id) { (short(id)) }
        @if let Some(m) = modules.get(id) {
            br;
            span.muted {
                (format!("{:.1} MiB", m.bytes as f64 / (1 << 20) as f64)) ", uploaded by "
                code { (short(&m.uploader)) }
                @match &m.source {
                    Some(src) => { ", " (format!("{:?}", src.kind).to_lowercase()) " source attached" },
                    None => ", no source attached",
                }
            }
        }
    }
}

pub(super) fn grants(
    datasets: &[(DatasetInfo, Option<SignedPolicy>)],
    pending: &[Pending],
    modules: &BTreeMap<String, ModuleInfo>,
) -> Markup {
    let body = html! {
        section aria-labelledby="pending-h" {
            h2 #pending-h { "Pending requests" }
            @if pending.is_empty() {
                p.muted #no-pending { "No researcher is waiting for a grant on your datasets." }
            } @else {
                table #pending {
                    caption.sr { "Requests no grant answers yet" }
                    thead { tr { th scope="col" { "When" } th scope="col" { "Researcher" } th scope="col" { "Dataset" }
                        th scope="col" { "Module" } th scope="col" { "Params" } th scope="col" { "Note" } th scope="col" { span.sr { "Action" } } } }
                    tbody {
                        @for p in pending {
                            @let r = &p.request.request;
                            tr {
                                td { (when(p.time)) br; span.muted { "entry #" (p.seq) } }
                                td { code { (p.researcher.short()) } }
                                td { code { (short(&p.dataset)) } }
                                td { (module_cell(&r.module, modules)) }
                                td { pre.params { (params_text(&r.params)) } }
                                td { (r.note.clone().unwrap_or_default()) }
                                td {
                                    a.button href=(grant_link(p)) { "Review and approve" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="active-h" {
            h2 #active-h { "Active grants" }
            @for (d, policy) in datasets {
                h3 { "Dataset " code { (short(&d.id)) } }
                @match policy {
                    None => p.muted { "No policy yet." },
                    Some(sp) if sp.policy.grants.is_empty() => p.muted { "Policy v" (sp.policy.version) ": no grants." },
                    Some(sp) => {
                        table.grants {
                            thead { tr { th scope="col" { "Module" } th scope="col" { "Researchers" } th scope="col" { "Params" }
                                th scope="col" { "Limits" } th scope="col" { "Note" } th scope="col" { span.sr { "Actions" } } } }
                            tbody {
                                @for g in &sp.policy.grants {
                                    tr {
                                        td { (module_cell(&g.module, modules)) }
                                        td { (researchers(&g.researchers)) }
                                        td { @if let Some(d) = &g.params_digest { "pinned " code { (short(d)) } } @else { "any" } }
                                        td {
                                            @if let Some(n) = g.max_runs { "at most " (n) " runs" br; }
                                            @if g.unlimited { "unlimited runs" br; }
                                            @if let Some(t) = g.expires_at { "expires " (when(t)) }
                                        }
                                        td { (g.note.clone().unwrap_or_default()) }
                                        td.actions {
                                            a.button href=(edit_link(&d.id, sp, g)) { "Change" }
                                            form method="post" action="/grants/revoke" {
                                                input type="hidden" name="dataset" value=(d.id);
                                                input type="hidden" name="module" value=(g.module);
                                                input type="hidden" name="params_digest" value=(g.params_digest.clone().unwrap_or_default());
                                                button.danger type="submit" { "Revoke…" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout("Grants", "Grants", body)
}

/// The params a request pins; for the SQL engine, the query itself.
fn params_text(params: &str) -> String {
    match serde_json::from_str::<cleanroom_proto::run::SqlParams>(params) {
        Ok(sql) => format!("SQL: {}", sql.sql),
        Err(_) if params.is_empty() => "(no params)".into(),
        Err(_) => params.to_string(),
    }
}

fn researchers(r: &Researchers) -> Markup {
    html! {
        @match r {
            Researchers::Any => "any researcher",
            Researchers::Only(list) => @for p in list { code { (p.short()) } " " },
        }
    }
}

/// A query string (what axum's `Query` reads back).
fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

fn grant_link(p: &Pending) -> String {
    let r = &p.request.request;
    let inputs = r
        .inputs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let researcher = p.researcher.to_string();
    format!(
        "/grants/edit?{}",
        query(&[
            ("dataset", &p.dataset),
            ("module", &r.module),
            ("researchers", &researcher),
            ("params", &r.params),
            ("params_digest", &p.request.params_digest),
            ("note", r.note.as_deref().unwrap_or_default()),
            ("inputs", &inputs),
        ])
    )
}

fn edit_link(dataset: &str, sp: &SignedPolicy, g: &cleanroom_proto::policy::Grant) -> String {
    let researchers = match &g.researchers {
        Researchers::Any => String::new(),
        Researchers::Only(list) => list
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    };
    let inputs = g
        .inputs
        .as_ref()
        .map(|i| {
            i.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let max_runs = g.max_runs.map(|n| n.to_string()).unwrap_or_default();
    let min_group = sp.policy.output.min_group_count.to_string();
    let mut pairs = vec![
        ("dataset", dataset),
        ("module", g.module.as_str()),
        ("researchers", researchers.as_str()),
        (
            "params_digest",
            g.params_digest.as_deref().unwrap_or_default(),
        ),
        ("note", g.note.as_deref().unwrap_or_default()),
        ("inputs", inputs.as_str()),
        ("max_runs", max_runs.as_str()),
        ("min_group", min_group.as_str()),
    ];
    if sp.policy.output.review_required {
        pairs.push(("review", "on"));
    }
    format!("/grants/edit?{}", query(&pairs))
}

pub(super) fn grant_form(form: &GrantForm, policy: Option<&SignedPolicy>) -> Markup {
    let review = form.review.is_some() || policy.is_some_and(|p| p.policy.output.review_required);
    let min_group = if form.min_group.is_empty() {
        policy
            .map(|p| p.policy.output.min_group_count.to_string())
            .unwrap_or_default()
    } else {
        form.min_group.clone()
    };
    let current = |pick: fn(&Policy) -> &Vec<String>| {
        policy
            .map(|p| pick(&p.policy).join(", "))
            .unwrap_or_default()
    };
    let identifiers = form
        .identifiers
        .clone()
        .unwrap_or_else(|| current(|p| &p.identifier_columns));
    let hidden = form
        .hidden
        .clone()
        .unwrap_or_else(|| current(|p| &p.hidden_columns));
    let body = html! {
        p { "Set the terms, then check the exact policy change before anything is signed." }
        form.grant method="post" action="/grants/preview" {
            input type="hidden" name="dataset" value=(form.dataset);
            input type="hidden" name="params" value=(form.params);
            div.field { label for="module" { "Module (SHA-256)" }
                input #module name="module" value=(form.module) required size="64" spellcheck="false"; }
            div.field { label for="researchers" { "Researchers (party ids; empty: any researcher)" }
                input #researchers name="researchers" value=(form.researchers) spellcheck="false"; }
            @if !form.params.is_empty() {
                div.field { span.label { "Params the run will send (pinned)" } pre.params #params-shown { (params_text(&form.params)) } }
            }
            div.field { label for="params_digest" { "Params digest (pinned; empty: any params)" }
                input #params_digest name="params_digest" value=(form.params_digest) spellcheck="false"; }
            div.field { label for="inputs" { "Pinned inputs (NAME=DATASET, comma-separated; empty: not pinned)" }
                input #inputs name="inputs" value=(form.inputs) spellcheck="false"; }
            div.field { label for="max_runs" { "Most runs in total" }
                input #max_runs name="max_runs" type="number" min="1" value=(form.max_runs); }
            div.field { label for="expires_in_days" { "Expires in days (empty: never)" }
                input #expires_in_days name="expires_in_days" type="number" min="1" value=(form.expires_in_days); }
            div.field { label for="min_group" { "Smallest group released (dataset-wide)" }
                input #min_group name="min_group" type="number" min="1" value=(min_group); }
            div.field { label for="identifiers" { "Identifier columns (dataset-wide, comma-separated): joinable inside, never released" }
                input #identifiers name="identifiers" value=(identifiers) spellcheck="false"; }
            div.field { label for="hidden" { "Hidden columns (dataset-wide, comma-separated): never reach any analysis" }
                input #hidden name="hidden" value=(hidden) spellcheck="false"; }
            div.field.check {
                input #review name="review" type="checkbox" checked[review];
                label for="review" { "Hold outputs for my review before release (dataset-wide)" }
            }
            div.field { label for="note" { "Note shown to other parties" }
                input #note name="note" value=(form.note); }
            button type="submit" { "Check the change…" }
        }
    };
    layout("Approve a grant", "Grants", body)
}

/// What will be signed: the policy diff against the current version, and the exact JSON.
pub(super) fn confirm(prev: Option<&SignedPolicy>, next: &Policy) -> Markup {
    let old = prev
        .map(|p| serde_json::to_string_pretty(&p.policy).unwrap_or_default())
        .unwrap_or_default();
    let new = serde_json::to_string_pretty(next).unwrap_or_default();
    let diff = similar::TextDiff::from_lines(&old, &new);
    let body = html! {
        p { "You are about to sign version " strong { (next.version) } " of the policy of dataset "
            code { (short(&next.dataset)) } " with your key. Lines marked + are added, − removed." }
        pre.diff #policy-diff aria-label="Policy change" {
            @for change in diff.iter_all_changes() {
                @match change.tag() {
                    similar::ChangeTag::Insert => ins { "+ " (change) },
                    similar::ChangeTag::Delete => del { "− " (change) },
                    similar::ChangeTag::Equal => span { "  " (change) },
                }
            }
        }
        form method="post" action="/grants/sign" {
            input type="hidden" name="policy" value=(serde_json::to_string(next).unwrap_or_default());
            button type="submit" #sign { "Sign and publish v" (next.version) }
            " "
            a href="/grants" { "Cancel" }
        }
    };
    layout("Check what you sign", "Grants", body)
}

pub(super) fn signed(signed: &SignedPolicy, stored: &PolicyStored) -> Markup {
    let _ = stored;
    let body = html! {
        div.callout.good role="status" #signed {
            p { "Signed and published policy v" (signed.policy.version) " of dataset "
                code { (short(&signed.policy.dataset)) } " (digest " code { (short(&signed.digest())) } "). It is in force now." }
        }
        (policy_summary(Some(signed)))
        p { a href="/grants" { "Back to grants" } }
    };
    layout("Policy signed", "Grants", body)
}

fn state_class(s: RunState) -> &'static str {
    match s {
        RunState::Released => "good",
        RunState::HeldForReview | RunState::Queued | RunState::Running | RunState::Submitted => {
            "warn"
        }
        _ => "bad",
    }
}

fn run_rows(runs: &[RunStatus]) -> Markup {
    html! {
        @for r in runs {
            tr id=(format!("run-{}", r.run)) {
                td { code { (r.run) } }
                td { span class=(format!("state {}", state_class(r.state))) { (r.state.as_str().replace('_', " ")) } }
                td { code { (r.researcher.short()) } }
                td { code title=(r.module) { (short(&r.module)) } }
                td {
                    @for i in &r.inputs {
                        code { (i.name) } " → " code { (short(&i.dataset)) } " (policy v" (i.policy_version) ")" br;
                    }
                }
                td { (when(r.created)) }
                td {
                    @if r.state == RunState::HeldForReview {
                        a href=(format!("/review/{}", r.run)) { "Review" }
                    }
                    @if let Some(reason) = &r.reason { span.muted { (reason.code) } }
                }
            }
        }
    }
}

/// Runs per hour over the last day, as an inline SVG bar chart.
fn chart(runs: &[RunStatus], now: u64) -> Markup {
    const HOURS: u64 = 24;
    let mut counts = [0u32; HOURS as usize];
    for r in runs {
        let age = now.saturating_sub(r.created) / 3600;
        if age < HOURS {
            counts[(HOURS - 1 - age) as usize] += 1;
        }
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let total: u32 = counts.iter().sum();
    html! {
        figure.chart {
            svg viewBox="0 0 240 60" role="img" aria-label=(format!("{total} runs in the last 24 hours, per hour")) {
                @for (i, n) in counts.iter().enumerate() {
                    @let h = 56 * n / max;
                    rect x=(i * 10 + 1) y=(58 - h) width="8" height=(h.max(1)) {
                        title { (n) " run(s)" }
                    }
                }
            }
            figcaption { (total) " run(s) in the last 24 hours (one bar per hour, newest right)" }
        }
    }
}

/// The part of the runs page that live updates replace: chart, budgets and the table.
pub(super) fn runs_live(runs: &[RunStatus], budgets: &[DpBudget], now: u64) -> Markup {
    html! {
        (chart(runs, now))
        @for b in budgets { (budget(b)) }
        table #runs {
            thead { tr { th scope="col" { "Run" } th scope="col" { "State" } th scope="col" { "Researcher" }
                th scope="col" { "Module" } th scope="col" { "Inputs and rules" } th scope="col" { "Submitted" } th scope="col" { span.sr { "Action" } } } }
            tbody { (run_rows(runs)) }
        }
    }
}

pub(super) fn runs(runs: &[RunStatus], budgets: &[DpBudget], now: u64) -> Markup {
    let body = html! {
        p #live role="status" aria-live="polite" { "Live: new runs and changes appear as they happen." }
        div #live-region data-live="/runs/live" { (runs_live(runs, budgets, now)) }
    };
    layout("Runs", "Runs", body)
}

pub(super) fn review_queue(waiting: &[RunStatus]) -> Markup {
    let body = html! {
        @if waiting.is_empty() {
            p.muted #queue-empty { "Nothing awaits your review." }
        } @else {
            ul.queue {
                @for r in waiting {
                    li { a href=(format!("/review/{}", r.run)) { "Run " code { (r.run) } } " by "
                        code { (r.researcher.short()) } ", module " code { (short(&r.module)) } ", " (r.outputs.len()) " output(s)" }
                }
            }
        }
    };
    layout("Review queue", "Review", body)
}

fn disposition(d: Disposition) -> &'static str {
    match d {
        Disposition::Release => "release",
        Disposition::Hold => "held for review",
        Disposition::Refuse => "refused",
    }
}

fn output(o: &PlainOutput) -> Markup {
    html! {
        @match o.kind {
            OutputKind::Table => {
                @match cleanroom_runtime::output::decode_stream(&o.bytes) {
                    Err(e) => p.bad { "table " code { (o.name) } " does not decode: " (e) },
                    Ok((schema, batches)) => {
                        @let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                        p { "Table " code { (o.name) } ": " (rows) " rows × " (schema.fields().len()) " columns"
                            @if rows > TABLE_ROWS { " (first " (TABLE_ROWS) " shown)" } }
                        div.scroll {
                            table.data {
                                thead { tr { @for f in schema.fields() { th scope="col" { (f.name()) } } } }
                                tbody { (table_rows(&batches)) }
                            }
                        }
                    }
                }
            }
            OutputKind::Json => {
                p { "JSON " code { (o.name) } }
                pre.json { (pretty_json(&o.bytes)) }
            }
            _ => {
                p { (format!("{:?}", o.kind).to_lowercase()) " " code { (o.name) } }
                pre { (String::from_utf8_lossy(&o.bytes)) }
            }
        }
    }
}

fn pretty_json(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

fn table_rows(batches: &[arrow_array::RecordBatch]) -> Markup {
    let options = arrow_cast::display::FormatOptions::default().with_null("NULL");
    let mut rows: Vec<Vec<String>> = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .filter_map(|c| arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for row in 0..batch.num_rows() {
            if rows.len() == TABLE_ROWS {
                break;
            }
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    html! {
        @for row in &rows { tr { @for cell in row { td { (cell) } } } }
    }
}

pub(super) fn review(
    status: &RunStatus,
    reports: &[OutputReport],
    outputs: &[PlainOutput],
) -> Markup {
    let body = html! {
        dl.facts {
            dt { "Researcher" } dd { code { (status.researcher) } }
            dt { "Module" } dd { code { (status.module) } }
            dt { "Params digest" } dd { code { (status.params_digest) } }
            dt { "State" } dd { (status.state.as_str().replace('_', " ")) }
        }
        h2 { "What the rules decided" }
        table #rules {
            thead { tr { th scope="col" { "Output" } th scope="col" { "Kind" } th scope="col" { "Decision" } th scope="col" { "Rules that fired" } } }
            tbody {
                @for r in reports {
                    tr { td { (r.index) } td { (format!("{:?}", r.kind).to_lowercase()) } td { (disposition(r.disposition)) }
                        td { @if r.codes.is_empty() { "none" } @for c in &r.codes { code { (c) } " " } } }
                }
            }
        }
        h2 { "Outputs (decrypted here, with your key)" }
        @for o in outputs { section.output { (output(o)) } }
        @if status.state == RunState::HeldForReview {
            form.decision method="post" action=(format!("/review/{}", status.run)) {
                div.field { label for="reason" { "Reason (recorded in the audit log)" }
                    input #reason name="reason" required; }
                button type="submit" name="decision" value="release" #release { "Release to the researcher" }
                " "
                button.danger type="submit" name="decision" value="withhold" #withhold { "Withhold" }
            }
        }
    };
    layout(
        &format!("Review run {}", short(&status.run)),
        "Review",
        body,
    )
}

pub(super) fn decided(status: &RunStatus, decision: ReviewDecision) -> Markup {
    let verb = match decision {
        ReviewDecision::Release => "released",
        ReviewDecision::Withhold => "withheld",
    };
    let body = html! {
        div.callout.good role="status" #decided {
            p { "You " (verb) " run " code { (status.run) } "; it is now " strong { (status.state) } "." }
        }
        p { a href="/review" { "Back to the review queue" } }
    };
    layout("Decision recorded", "Review", body)
}

fn entry_row(e: &AuditEntry) -> Markup {
    html! {
        tr {
            td { (e.seq) }
            td { (when(e.time)) }
            td { code { (e.action) } }
            td { code { (short(&e.subject)) } }
            td { (e.actor.map(|a| a.short()).unwrap_or_else(|| "enclave".into())) }
            td { details { summary { "detail" } pre { (serde_json::to_string_pretty(&e.detail).unwrap_or_default()) } } }
        }
    }
}

pub(super) fn audit(v: &AuditView, page: usize, action: &str) -> Markup {
    let visible: Vec<&AuditEntry> = v
        .log
        .items
        .iter()
        .rev()
        .filter_map(|i| i.entry.as_ref())
        .filter(|e| action.is_empty() || e.action.contains(action))
        .collect();
    let pages = visible.len().div_ceil(AUDIT_PAGE).max(1);
    let page = page.min(pages - 1);
    let shown = visible.iter().skip(page * AUDIT_PAGE).take(AUDIT_PAGE);
    let link = |p: usize| {
        format!(
            "/audit?{}",
            query(&[("page", &p.to_string()), ("action", action)])
        )
    };
    let body = html! {
        @match &v.verdict {
            Ok(()) => div.callout.good role="status" #audit-verdict {
                p { strong { "Verified: " } "the log's " (v.log.items.len()) " entries hash to the tree head of size "
                    (v.log.head.size) " the enclave signed at " (when(v.log.head.time))
                    ", and it extends the last head you verified (kept beside your key)." }
            },
            Err(why) => div.callout.bad role="alert" #audit-verdict {
                p { strong { "Does not verify: " } (why) }
                p { "Keep your saved heads file as evidence, stop approving on this server and tell the operator." }
            },
        }
        form.filter method="get" action="/audit" {
            label for="action" { "Filter by action" }
            input #action name="action" value=(action) placeholder="e.g. run. or policy.publish";
            button type="submit" { "Filter" }
            " "
            a.button href="/audit/export" download="audit-log.json" { "Export (JSON, verifiable offline)" }
        }
        p.muted { (visible.len()) " entries concern you (newest first); the others are served as hashes only." }
        table #audit {
            thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Action" } th scope="col" { "Subject" }
                th scope="col" { "Actor" } th scope="col" { "Detail" } } }
            tbody { @for e in shown { (entry_row(e)) } }
        }
        nav.pager aria-label="Audit pages" {
            @if page > 0 { a href=(link(page - 1)) { "← Newer" } " " }
            "Page " (page + 1) " of " (pages)
            @if page + 1 < pages { " " a href=(link(page + 1)) { "Older →" } }
        }
    };
    layout("Audit log", "Audit", body)
}
