//! `cleanroom console`: the owners' console, a web server on loopback inside the CLI.
//!
//! The page cannot be what verifies the server (a page served by an unverified server could
//! claim anything), so the console runs here, beside the owner's key: every request it makes
//! to cleanroomd goes through the same attested client, request signing, HPKE decryption and
//! log checks as the other commands, and the browser only ever talks to this process.
//!
//! The browser is held to one session: a random token in the URL the console prints is
//! exchanged for an `HttpOnly`, `SameSite=Strict` cookie; every request must carry it, name
//! this listener in `Host` (no DNS rebinding) and, for a form post, come from this origin
//! (no cross-site posts). Pages are server-rendered HTML (maud) with one small script of our
//! own for live updates; the content security policy allows nothing else.

mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use cleanroom_proto::api::{AccessRequested, ModuleInfo, RunList};
use cleanroom_proto::audit::{AuditEntry, verify_items};
use cleanroom_proto::dp::DpBudget;
use cleanroom_proto::policy::{Grant, Policy, Researchers, SignedPolicy};
use cleanroom_proto::run::{DatasetInfo, DatasetList, ReviewDecision, RunState, RunStatus};
use cleanroom_proto::{Identity, PartyId};
use maud::Markup;
use serde::Deserialize;

use crate::failure::{ExitKind, Failure};
use crate::remote::Conn;
use crate::remote::attest::{Verified, verify_server};
use crate::remote::client::Client;

/// `cleanroom console`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    conn: Conn,
    /// The loopback port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Print the console's address without opening a browser.
    #[arg(long)]
    no_open: bool,
}

/// The cookie that carries the session token; its name ends with the console's port
/// ([`Console::cookie`]): browsers do not keep cookies apart by port, so another local web
/// server on 127.0.0.1 would otherwise be sent this console's session.
const COOKIE: &str = "cleanroom_console";

/// What the console knows of the enclave: the session it attested, or why it could not.
struct Attested {
    client: Option<Arc<Client>>,
    /// The attestation's outcome in words, for the enclave page.
    outcome: Result<Verified, String>,
    /// When it was checked (Unix seconds).
    checked: u64,
}

/// One console session.
pub(crate) struct Console {
    conn: Conn,
    me: PartyId,
    /// The session's cookie value: never printed, never in a URL or another process's argv.
    token: String,
    /// The one-time login token of the printed link, burned by its first use.
    login: Mutex<Option<String>>,
    /// The listener's port (part of the cookie's name).
    port: u16,
    /// `Host` values that name this listener.
    hosts: Vec<String>,
    /// `Origin` values of this console's own pages.
    origins: Vec<String>,
    attested: Mutex<Attested>,
    /// Audit events that concern the owner, relayed from cleanroomd's event stream.
    events: tokio::sync::broadcast::Sender<String>,
}

/// A failure shown as a page: what happened, in plain words, and what to do next.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    next: &'static str,
}

impl Problem {
    fn from_error(error: &anyhow::Error) -> Self {
        let kind = error
            .chain()
            .find_map(|c| c.downcast_ref::<Failure>())
            .map(|f| f.kind);
        let detail = format!("{error:#}");
        let (status, title, next) = match kind {
            Some(ExitKind::Verification) => (
                StatusCode::BAD_GATEWAY,
                "Verification failed",
                "Do not send this server data or approvals. Check the server address and the \
                 measurement you pinned, and tell the operator.",
            ),
            Some(ExitKind::Network) => (
                StatusCode::BAD_GATEWAY,
                "The clean room cannot be reached",
                "Check that cleanroomd is running at the address you gave, then reload.",
            ),
            Some(ExitKind::Refused) => (
                StatusCode::FORBIDDEN,
                "The clean room refused the request",
                "Read the reason above; it names what is missing or not allowed.",
            ),
            Some(ExitKind::Server) => (
                StatusCode::BAD_GATEWAY,
                "The clean room failed",
                "Try again; if it persists, tell the operator.",
            ),
            _ => (
                StatusCode::BAD_REQUEST,
                "That did not work",
                "Read the reason above, correct it and try again.",
            ),
        };
        Problem {
            status,
            title,
            detail,
            next,
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        Problem {
            status: StatusCode::BAD_REQUEST,
            title: "That did not work",
            detail: detail.into(),
            next: "Go back, correct it and try again.",
        }
    }

    fn unauthorised() -> Self {
        Problem {
            status: StatusCode::UNAUTHORIZED,
            title: "This console needs its session link",
            detail: "The request did not carry this console's session token.".into(),
            next: "Open the link `cleanroom console` printed in your terminal (it holds the \
                   session token); restart the console for a new one.",
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.status, view::problem(&self)).into_response()
    }
}

impl From<anyhow::Error> for Problem {
    fn from(error: anyhow::Error) -> Self {
        Problem::from_error(&error)
    }
}

type Page = Result<Markup, Problem>;
type Shared = State<Arc<Console>>;

fn now() -> u64 {
    crate::remote::runs::now()
}

impl Console {
    /// Attest the server (again): a new session, or the reason there is none.
    fn attest(&self) {
        let identity = self.conn.identity().ok();
        let result =
            Client::connect(&self.conn.server, identity, &self.conn.trust).and_then(|client| {
                let verified = verify_server(&client, &self.conn.trust)?;
                Ok((client, verified))
            });
        let attested = match result {
            Ok((client, verified)) => Attested {
                client: Some(Arc::new(client)),
                outcome: Ok(verified),
                checked: now(),
            },
            Err(e) => Attested {
                client: None,
                outcome: Err(format!("{e:#}")),
                checked: now(),
            },
        };
        *self.attested.lock().expect("attestation lock") = attested;
    }

    /// Run `f` (blocking: the CLI's client is synchronous) with the attested session; refused
    /// when the server did not verify.
    async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Console, &Client) -> Result<T> + Send + 'static,
    ) -> Result<T, Problem> {
        let client = {
            let attested = self.attested.lock().expect("attestation lock");
            match (&attested.client, &attested.outcome) {
                (Some(c), _) => c.clone(),
                (None, Err(why)) => {
                    return Err(Problem {
                        status: StatusCode::BAD_GATEWAY,
                        title: "The clean room did not pass attestation",
                        detail: why.clone(),
                        next: "Nothing is sent to an unverified server. Check the address and \
                               the measurement you pinned, then use “Check again” on the \
                               Enclave page.",
                    });
                }
                (None, Ok(_)) => unreachable!("a verified attestation has a client"),
            }
        };
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me, &client))
            .await
            .map_err(|e| Problem::bad_request(format!("internal error: {e}")))?
            .map_err(Problem::from)
    }

    /// The owner's datasets and their current (verified) policies.
    fn my_datasets(&self, client: &Client) -> Result<Vec<(DatasetInfo, Option<SignedPolicy>)>> {
        let list: DatasetList = client.signed("GET", "/v1/datasets", b"")?;
        let mut mine = Vec::new();
        for d in list.datasets {
            if d.owner == self.me.to_string() {
                let policy = crate::remote::policy::current_on(&self.conn, client, &d.id)?;
                mine.push((d, policy));
            }
        }
        Ok(mine)
    }
}

/// Start the console and serve until interrupted.
pub(crate) fn run(args: Args) -> Result<()> {
    let identity: Identity = args.conn.identity()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args, identity))
}

async fn serve(args: Args, identity: Identity) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let port = listener.local_addr()?.port();
    let random = || {
        let mut token = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut token);
        hex::encode(token)
    };
    let login = random();
    let (events, _) = tokio::sync::broadcast::channel(256);
    let console = Arc::new(Console {
        me: identity.party(),
        conn: args.conn,
        token: random(),
        login: Mutex::new(Some(login.clone())),
        port,
        hosts: vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")],
        origins: vec![
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
        ],
        attested: Mutex::new(Attested {
            client: None,
            outcome: Err("not checked yet".into()),
            checked: 0,
        }),
        events,
    });
    {
        let c = console.clone();
        tokio::task::spawn_blocking(move || c.attest()).await?;
    }
    relay_events(console.clone());
    let url = format!("http://127.0.0.1:{port}/login?token={login}");
    println!(
        "cleanroom console for party {} at {url}",
        console.me.short()
    );
    println!("(this link opens your session once: do not share it; Ctrl-C stops the console)");
    // Kept until the console stops: the browser may read it late.
    let _opener = if args.no_open {
        None
    } else {
        open_browser(&url)
    };
    axum::serve(listener, router(console))
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    Ok(())
}

/// Best effort: the URL is printed either way. The browser is not given the URL on its
/// command line (any local user can read another process's argv): it opens a page in a
/// directory only this user can read, which forwards to the login link (as Jupyter does).
fn open_browser(url: &str) -> Option<tempfile::TempDir> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    // tempfile makes the directory 0700 on Unix.
    let dir = tempfile::Builder::new()
        .prefix("cleanroom-console-")
        .tempdir()
        .ok()?;
    let page = dir.path().join("open.html");
    let html = format!(
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={url}\">\
         <title>cleanroom console</title><a href=\"{url}\">Open the cleanroom console</a>\n"
    );
    std::fs::write(&page, html).ok()?;
    let _ = std::process::Command::new(opener)
        .arg(&page)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    Some(dir)
}

/// Relay cleanroomd's event stream (audit entries that concern the owner) to the pages, and
/// reconnect when it drops.
fn relay_events(console: Arc<Console>) {
    std::thread::spawn(move || {
        loop {
            let client = console
                .attested
                .lock()
                .expect("attestation lock")
                .client
                .clone();
            if let Some(client) = client {
                let tx = console.events.clone();
                let _ = client.events(|event| {
                    let entry = event.get("entry").cloned().unwrap_or(event);
                    let _ = tx.send(entry.to_string());
                    Ok(true)
                });
            }
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
    });
}

fn router(console: Arc<Console>) -> Router {
    let pages = Router::new()
        .route("/", get(enclave_page))
        .route("/attest", post(attest_again))
        .route("/datasets", get(datasets_page))
        .route("/grants", get(grants_page))
        .route("/grants/edit", get(grant_form))
        .route("/grants/preview", post(grant_preview))
        .route("/grants/revoke", post(revoke_preview))
        .route("/grants/sign", post(sign_policy))
        .route("/runs", get(runs_page))
        .route("/runs/live", get(runs_live))
        .route("/events", get(events))
        .route("/review", get(review_queue))
        .route("/review/{run}", get(review_page).post(review_decide))
        .route("/audit", get(audit_page))
        .route("/audit/export", get(audit_export))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .route_layer(middleware::from_fn_with_state(console.clone(), session));
    Router::new()
        .route("/login", get(login))
        .merge(pages)
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console)
}

/// Every response: refuse a `Host` that is not this listener (DNS rebinding) and a form post
/// from another origin; forbid framing, caching, cross-origin referrers and any script but ours.
async fn guard(State(c): Shared, req: Request, next: Next) -> Response {
    let (host_ok, origin_ok) = {
        let named = |name: header::HeaderName, allowed: &[String]| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| allowed.iter().any(|a| a == v))
        };
        (
            named(header::HOST, &c.hosts),
            req.method() == axum::http::Method::GET || named(header::ORIGIN, &c.origins),
        )
    };
    let mut resp = if !host_ok || !origin_ok {
        Problem {
            status: StatusCode::FORBIDDEN,
            title: "Refused",
            detail: "The request did not come from this console's own pages.".into(),
            next: "Open the console from the link `cleanroom console` printed.",
        }
        .into_response()
    } else {
        next.run(req).await
    };
    let headers = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not `no-referrer`: with it, browsers send `Origin: null` on form posts, and the
        // origin check above needs the real one. Nothing leaves this origin either way.
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in headers {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// Constant-time comparison of a token.
fn same_token(expected: &str, candidate: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.as_bytes().ct_eq(candidate.as_bytes()).into()
}

/// Whether `candidate` is this console's session token.
fn token_matches(c: &Console, candidate: &str) -> bool {
    same_token(&c.token, candidate)
}

impl Console {
    /// The session cookie's name: bound to this console's port.
    fn cookie(&self) -> String {
        format!("{COOKIE}_{}", self.port)
    }

    /// Burn the login token if `candidate` is it: true once, for the first request with it.
    fn redeem(&self, candidate: &str) -> bool {
        let mut login = self
            .login
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if login.as_deref().is_some_and(|t| same_token(t, candidate)) {
            *login = None;
            true
        } else {
            false
        }
    }
}

/// Every page but `/login` needs the session cookie.
async fn session(State(c): Shared, req: Request, next: Next) -> Response {
    let cookie = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == c.cookie())
        .map(|(_, v)| v.to_string());
    if cookie.is_some_and(|v| token_matches(&c, &v)) {
        next.run(req).await
    } else {
        Problem::unauthorised().into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginQuery {
    token: Option<String>,
}

/// Exchange the one-time token in the printed link for the session cookie (a different
/// value), and drop it from the URL. A second use of the link is refused.
async fn login(State(c): Shared, Query(q): Query<LoginQuery>) -> Response {
    if !q.token.is_some_and(|t| c.redeem(&t)) {
        return Problem::unauthorised().into_response();
    }
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/",
        c.cookie(),
        c.token
    );
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex is a valid header"),
    );
    resp
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css")],
        include_str!("console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript")],
        include_str!("console.js"),
    )
        .into_response()
}

// ---- Enclave ----------------------------------------------------------------------------

async fn enclave_page(State(c): Shared) -> Markup {
    let attested = c.attested.lock().expect("attestation lock");
    view::enclave(&c, &attested.outcome, attested.checked)
}

async fn attest_again(State(c): Shared) -> Response {
    let c2 = c.clone();
    let _ = tokio::task::spawn_blocking(move || c2.attest()).await;
    Redirect::to("/").into_response()
}

// ---- Datasets ---------------------------------------------------------------------------

/// A dataset as the datasets page shows it.
pub(crate) struct DatasetView {
    info: DatasetInfo,
    policy: Option<SignedPolicy>,
    preview: Option<cleanroom_proto::dp::Preview>,
    budget: Option<DpBudget>,
}

async fn datasets_page(State(c): Shared) -> Page {
    let data = c
        .call(|c, client| {
            let mut out = Vec::new();
            for (info, policy) in c.my_datasets(client)? {
                let preview = client
                    .signed("GET", &format!("/v1/datasets/{}/preview", info.id), b"")
                    .ok();
                let budget = budget_of(client, &info.id, policy.as_ref());
                out.push(DatasetView {
                    info,
                    policy,
                    preview,
                    budget,
                });
            }
            Ok(out)
        })
        .await?;
    Ok(view::datasets(&data))
}

fn budget_of(client: &Client, dataset: &str, policy: Option<&SignedPolicy>) -> Option<DpBudget> {
    policy.and_then(|p| p.policy.dp.as_ref())?;
    client
        .signed("GET", &format!("/v1/datasets/{dataset}/budget"), b"")
        .ok()
}

// ---- Grants -----------------------------------------------------------------------------

/// A researcher's request on one of the owner's datasets that no grant answers yet.
pub(crate) struct Pending {
    seq: u64,
    time: u64,
    researcher: PartyId,
    dataset: String,
    request: AccessRequested,
}

/// Whether `policy` already grants what `p` asks.
fn answered(policy: Option<&SignedPolicy>, p: &Pending) -> bool {
    policy.is_some_and(|s| {
        s.policy.grants.iter().any(|g| {
            g.module == p.request.request.module
                && g.params_digest
                    .as_ref()
                    .is_none_or(|d| *d == p.request.params_digest)
                && match &g.researchers {
                    Researchers::Any => true,
                    Researchers::Only(list) => list.contains(&p.researcher),
                }
        })
    })
}

/// The owner's visible audit entries (the whole log is fetched and verified).
fn my_entries(client: &Client) -> Result<Vec<AuditEntry>> {
    let log = crate::remote::audit::fetch_log(client)?;
    Ok(log.items.into_iter().filter_map(|i| i.entry).collect())
}

async fn grants_page(State(c): Shared) -> Page {
    let (datasets, pending, modules) = c
        .call(|c, client| {
            let datasets = c.my_datasets(client)?;
            let policies: BTreeMap<&str, Option<&SignedPolicy>> = datasets
                .iter()
                .map(|(d, p)| (d.id.as_str(), p.as_ref()))
                .collect();
            let mut pending = Vec::new();
            for e in my_entries(client)? {
                if e.action != "access.requested" {
                    continue;
                }
                let (Some(researcher), Ok(request)) = (
                    e.actor,
                    serde_json::from_value::<AccessRequested>(e.detail.clone()),
                ) else {
                    continue;
                };
                let mine: BTreeSet<&String> = request
                    .request
                    .inputs
                    .values()
                    .filter(|d| policies.contains_key(d.as_str()))
                    .collect();
                for dataset in mine {
                    let p = Pending {
                        seq: e.seq,
                        time: e.time,
                        researcher,
                        dataset: dataset.clone(),
                        request: request.clone(),
                    };
                    if !answered(policies[dataset.as_str()], &p) {
                        pending.push(p);
                    }
                }
            }
            pending.reverse();
            // What is known of each module asked for or granted: size, uploader, source.
            let ids: BTreeSet<String> = pending
                .iter()
                .map(|p| p.request.request.module.clone())
                .chain(datasets.iter().flat_map(|(_, p)| {
                    p.iter()
                        .flat_map(|p| p.policy.grants.iter().map(|g| g.module.clone()))
                }))
                .collect();
            let modules = ids
                .into_iter()
                .filter_map(|id| {
                    client
                        .signed::<ModuleInfo>("GET", &format!("/v1/modules/{id}"), b"")
                        .ok()
                        .map(|info| (id, info))
                })
                .collect();
            Ok((datasets, pending, modules))
        })
        .await?;
    Ok(view::grants(&datasets, &pending, &modules))
}

/// The grant form's fields (prefilled from a request or an existing grant).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantForm {
    dataset: String,
    module: String,
    /// Researcher party ids, comma- or space-separated; empty: any researcher.
    #[serde(default)]
    researchers: String,
    #[serde(default)]
    params_digest: String,
    /// The params text the request carried (shown, and its digest checked).
    #[serde(default)]
    params: String,
    #[serde(default)]
    note: String,
    /// Pinned inputs as NAME=DATASET, comma-separated.
    #[serde(default)]
    inputs: String,
    #[serde(default)]
    max_runs: String,
    #[serde(default)]
    expires_in_days: String,
    /// "on" when checked.
    #[serde(default)]
    review: Option<String>,
    #[serde(default)]
    min_group: String,
    /// Identifier columns (dataset-wide), comma-separated: joinable inside, never released.
    #[serde(default)]
    identifiers: Option<String>,
    /// Hidden columns (dataset-wide), comma-separated: never reach any analysis.
    #[serde(default)]
    hidden: Option<String>,
}

/// A comma-separated column list.
fn columns(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// A dataset id (lowercase hex): anything else never reaches a request path.
fn dataset_id(dataset: &str) -> Result<String, Problem> {
    if !dataset.is_empty()
        && dataset
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(dataset.to_string())
    } else {
        Err(Problem::bad_request(format!(
            "{dataset:?} is not a dataset id"
        )))
    }
}

async fn grant_form(State(c): Shared, Query(form): Query<GrantForm>) -> Page {
    let dataset = dataset_id(&form.dataset)?;
    let policy = c
        .call(move |c, client| crate::remote::policy::current_on(&c.conn, client, &dataset))
        .await?;
    Ok(view::grant_form(&form, policy.as_ref()))
}

fn parse_optional<T: std::str::FromStr>(field: &str, text: &str) -> Result<Option<T>, Problem> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| Problem::bad_request(format!("{field}: {text:?} is not a whole number")))
}

/// The policy a grant form would publish: the current one with this grant added (replacing
/// the module's grant with the same pinned params) and the form's dataset-wide rules.
fn proposed(prev: Option<&SignedPolicy>, form: &GrantForm) -> Result<Policy, Problem> {
    let module = form.module.trim().to_string();
    if module.len() != 64 || hex::decode(&module).is_err() {
        return Err(Problem::bad_request(
            "the module must be a SHA-256 in hex (64 characters)",
        ));
    }
    let researchers: Vec<PartyId> = form
        .researchers
        .split([',', ' ', '\n'])
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| Problem::bad_request(format!("{s:?} is not a party id")))
        })
        .collect::<Result<_, _>>()?;
    let max_runs = parse_optional::<u64>("most runs", &form.max_runs)?;
    let expires = parse_optional::<u64>("expires in days", &form.expires_in_days)?;
    let min_group = parse_optional::<u64>("smallest group", &form.min_group)?;
    if researchers.is_empty() && max_runs.is_none() {
        return Err(Problem::bad_request(
            "a grant to any researcher needs a most-runs limit: name researchers or set one \
             (repeated runs enable differencing attacks)",
        ));
    }
    let params_digest = match (form.params.is_empty(), form.params_digest.trim()) {
        (false, d) => {
            let computed = cleanroom_proto::run::params_digest(&form.params);
            if !d.is_empty() && d != computed {
                return Err(Problem::bad_request(
                    "the params shown do not match the params digest: the request was altered",
                ));
            }
            Some(computed)
        }
        (true, "") => None,
        (true, d) => Some(d.to_string()),
    };
    let mut inputs = BTreeMap::new();
    for spec in form.inputs.split(',').filter(|s| !s.trim().is_empty()) {
        let (name, dataset) = spec
            .trim()
            .split_once('=')
            .ok_or_else(|| Problem::bad_request(format!("input {spec:?} is not NAME=DATASET")))?;
        inputs.insert(name.to_string(), dataset.to_string());
    }
    let now = now();
    let mut policy = match prev {
        Some(p) => {
            let mut policy = p.policy.clone();
            policy.version += 1;
            policy
        }
        None => Policy {
            dataset: form.dataset.clone(),
            version: 1,
            grants: Vec::new(),
            hidden_columns: Vec::new(),
            identifier_columns: Vec::new(),
            output: Default::default(),
            dp: None,
            issued_at: now,
        },
    };
    policy.issued_at = now;
    policy
        .grants
        .retain(|g| !(g.module == module && g.params_digest == params_digest));
    policy.grants.push(Grant {
        module,
        researchers: if researchers.is_empty() {
            Researchers::Any
        } else {
            Researchers::Only(researchers)
        },
        params_digest,
        expires_at: expires.map(|d| now + d * 86_400),
        max_runs,
        note: Some(form.note.trim().to_string()).filter(|n| !n.is_empty()),
        inputs: (!inputs.is_empty()).then_some(inputs),
        unlimited: false,
    });
    policy.output.review_required = form.review.is_some();
    if let Some(list) = &form.identifiers {
        policy.identifier_columns = columns(list);
    }
    if let Some(list) = &form.hidden {
        policy.hidden_columns = columns(list);
    }
    if let Some(k) = min_group {
        policy.output.min_group_count = k;
    }
    policy
        .validate()
        .map_err(|e| Problem::bad_request(format!("the policy would be invalid: {e}")))?;
    Ok(policy)
}

async fn grant_preview(State(c): Shared, Form(form): Form<GrantForm>) -> Page {
    let dataset = dataset_id(&form.dataset)?;
    let prev = c
        .call(move |c, client| crate::remote::policy::current_on(&c.conn, client, &dataset))
        .await?;
    let next = proposed(prev.as_ref(), &form)?;
    Ok(view::confirm(prev.as_ref(), &next))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeForm {
    dataset: String,
    module: String,
    #[serde(default)]
    params_digest: String,
}

async fn revoke_preview(State(c): Shared, Form(form): Form<RevokeForm>) -> Page {
    let dataset = dataset_id(&form.dataset)?;
    let prev = c
        .call(move |c, client| crate::remote::policy::current_on(&c.conn, client, &dataset))
        .await?
        .ok_or_else(|| Problem::bad_request("this dataset has no policy: nothing to revoke"))?;
    let mut next = prev.policy.clone();
    let pin = Some(form.params_digest.clone()).filter(|d| !d.is_empty());
    next.grants
        .retain(|g| !(g.module == form.module && g.params_digest == pin));
    next.version += 1;
    next.issued_at = now();
    Ok(view::confirm(Some(&prev), &next))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignForm {
    /// The exact policy the confirmation page showed, as JSON.
    policy: String,
}

/// Sign exactly the policy the confirmation page showed, if the server's current version is
/// still the one it was computed from (else the owner reviews the new state first).
async fn sign_policy(State(c): Shared, Form(form): Form<SignForm>) -> Page {
    let policy: Policy = serde_json::from_str(&form.policy)
        .map_err(|e| Problem::bad_request(format!("not a policy: {e}")))?;
    dataset_id(&policy.dataset)?;
    let (signed, stored) = c
        .call(move |c, client| {
            let prev = crate::remote::policy::current_on(&c.conn, client, &policy.dataset)?;
            let expected = prev.as_ref().map_or(1, |p| p.policy.version + 1);
            if policy.version != expected {
                return Err(anyhow!(
                    "the policy changed since you reviewed it (now v{}): review the change again",
                    expected - 1
                ));
            }
            policy
                .validate()
                .map_err(|e| anyhow!("invalid policy: {e}"))?;
            crate::remote::policy::sign_and_put(&c.conn, client, policy)
        })
        .await?;
    Ok(view::signed(&signed, &stored))
}

// ---- Runs -------------------------------------------------------------------------------

async fn my_runs(c: &Arc<Console>) -> Result<(Vec<RunStatus>, Vec<DpBudget>), Problem> {
    c.call(|c, client| {
        let mut runs = client.signed::<RunList>("GET", "/v1/runs", b"")?.runs;
        runs.sort_by(|a, b| b.created.cmp(&a.created).then(b.run.cmp(&a.run)));
        let mut budgets = Vec::new();
        for (d, p) in c.my_datasets(client)? {
            budgets.extend(budget_of(client, &d.id, p.as_ref()));
        }
        Ok((runs, budgets))
    })
    .await
}

async fn runs_page(State(c): Shared) -> Page {
    let (runs, budgets) = my_runs(&c).await?;
    Ok(view::runs(&runs, &budgets, now()))
}

/// The live part of the runs page alone (chart, budgets, table), for the live update.
async fn runs_live(State(c): Shared) -> Page {
    let (runs, budgets) = my_runs(&c).await?;
    Ok(view::runs_live(&runs, &budgets, now()))
}

/// Server-sent events: each audit entry that concerns the owner, as it happens.
async fn events(
    State(c): Shared,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let rx = c.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(entry) => return Some((Ok(Event::default().data(entry)), rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

// ---- Review -----------------------------------------------------------------------------

async fn review_queue(State(c): Shared) -> Page {
    let me = c.me;
    let (runs, _) = my_runs(&c).await?;
    let waiting: Vec<RunStatus> = runs
        .into_iter()
        .filter(|r| r.state == RunState::HeldForReview && r.pending_reviews.contains(&me))
        .collect();
    Ok(view::review_queue(&waiting))
}

/// A run id as the server makes them (`run-` and hex): anything else never reaches a request
/// path.
fn run_id(run: String) -> Result<String, Problem> {
    let ok = run
        .strip_prefix("run-")
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(run)
    } else {
        Err(Problem::bad_request(format!("{run:?} is not a run id")))
    }
}

async fn review_page(State(c): Shared, Path(run): Path<String>) -> Page {
    let id = run_id(run)?;
    let (status, reports, outputs) = c
        .call(move |c, client| {
            let status: RunStatus = client.signed("GET", &format!("/v1/runs/{id}"), b"")?;
            let (reports, outputs) = crate::remote::runs::open_held(client, &c.conn.trust, &id)?;
            Ok((status, reports, outputs))
        })
        .await?;
    Ok(view::review(&status, &reports, &outputs))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionForm {
    decision: String,
    #[serde(default)]
    reason: String,
}

async fn review_decide(
    State(c): Shared,
    Path(run): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Page {
    let decision = match form.decision.as_str() {
        "release" => ReviewDecision::Release,
        "withhold" => ReviewDecision::Withhold,
        other => return Err(Problem::bad_request(format!("unknown decision {other:?}"))),
    };
    let run = run_id(run)?;
    let reason = Some(form.reason.trim().to_string()).filter(|r| !r.is_empty());
    let status = c
        .call(move |_, client| crate::remote::runs::decide(client, &run, decision, reason))
        .await?;
    Ok(view::decided(&status, decision))
}

// ---- Audit ------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    page: usize,
    #[serde(default)]
    action: String,
}

/// The audit log and whether it verified: chain and signed head against the attested
/// enclave's key, and consistency with the last head this key verified.
pub(crate) struct AuditView {
    log: crate::remote::audit::SavedLog,
    verdict: Result<(), String>,
}

async fn audit_page(State(c): Shared, Query(q): Query<AuditQuery>) -> Page {
    let view = c
        .call(|c, client| {
            let log = crate::remote::audit::fetch_log(client)?;
            let enclave = PartyId(
                verify_server(client, &c.conn.trust)?
                    .keys
                    .signing_public_key,
            );
            let verdict = verify_items(&log.items, &log.head, Some(&enclave))
                .map_err(anyhow::Error::from)
                .and_then(|_| {
                    crate::remote::audit::check_against_last_head(&c.conn, client, &enclave, &log)
                })
                .map_err(|e| format!("{e:#}"));
            Ok(AuditView { log, verdict })
        })
        .await?;
    Ok(view::audit(&view, q.page, q.action.trim()))
}

async fn audit_export(State(c): Shared) -> Result<Response, Problem> {
    let log = c
        .call(|_, client| crate::remote::audit::fetch_log(client))
        .await?;
    let body = serde_json::to_vec_pretty(&log).map_err(|e| Problem::bad_request(e.to_string()))?;
    let headers = [
        (header::CONTENT_TYPE, "application/json"),
        (
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"audit-log.json\"",
        ),
    ];
    Ok((headers, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(module: &str) -> GrantForm {
        GrantForm {
            dataset: "d1".into(),
            module: module.into(),
            researchers: PartyId([7; 32]).to_string(),
            ..Default::default()
        }
    }

    fn current(policy: Policy) -> SignedPolicy {
        SignedPolicy::sign(policy, &Identity::generate())
    }

    #[test]
    fn a_grant_to_anyone_needs_a_run_limit() {
        let mut f = form(&"ab".repeat(32));
        f.researchers.clear();
        let e = proposed(None, &f).unwrap_err();
        assert!(e.detail.contains("most-runs limit"), "{}", e.detail);
        f.max_runs = "5".into();
        let p = proposed(None, &f).unwrap();
        assert_eq!(p.grants[0].researchers, Researchers::Any);
        assert_eq!(p.grants[0].max_runs, Some(5));
    }

    #[test]
    fn params_that_do_not_match_their_digest_are_refused() {
        let mut f = form(&"ab".repeat(32));
        f.params = r#"{"group_by":"sex"}"#.into();
        f.params_digest = cleanroom_proto::run::params_digest(r#"{"group_by":"age"}"#);
        let e = proposed(None, &f).unwrap_err();
        assert!(e.detail.contains("altered"), "{}", e.detail);
        f.params_digest.clear();
        let p = proposed(None, &f).unwrap();
        assert_eq!(
            p.grants[0].params_digest.as_deref(),
            Some(cleanroom_proto::run::params_digest(&f.params).as_str())
        );
    }

    #[test]
    fn a_change_replaces_only_the_same_grant_and_bumps_the_version() {
        let first = proposed(None, &form(&"ab".repeat(32))).unwrap();
        let mut other = form(&"cd".repeat(32));
        other.identifiers = Some("mrn, patient_id".into());
        let second = proposed(Some(&current(first)), &other).unwrap();
        assert_eq!(second.version, 2);
        assert_eq!(second.grants.len(), 2);
        assert_eq!(second.identifier_columns, ["mrn", "patient_id"]);
        let mut changed = form(&"ab".repeat(32));
        changed.max_runs = "3".into();
        let third = proposed(Some(&current(second)), &changed).unwrap();
        assert_eq!(third.version, 3);
        assert_eq!(third.grants.len(), 2);
        let ab = third
            .grants
            .iter()
            .find(|g| g.module == "ab".repeat(32))
            .unwrap();
        assert_eq!(ab.max_runs, Some(3));
        // Untouched by a form that does not name them.
        assert_eq!(third.identifier_columns, ["mrn", "patient_id"]);
    }

    #[test]
    fn only_the_exact_token_opens_a_session() {
        let c = Console {
            conn: <crate::remote::Conn as clap::FromArgMatches>::from_arg_matches(
                &<crate::remote::Conn as clap::Args>::augment_args(clap::Command::new("t"))
                    .get_matches_from(["t"]),
            )
            .unwrap(),
            me: PartyId([1; 32]),
            token: "ab".repeat(32),
            login: Mutex::new(Some("cd".repeat(32))),
            port: 4321,
            hosts: vec![],
            origins: vec![],
            attested: Mutex::new(Attested {
                client: None,
                outcome: Err("x".into()),
                checked: 0,
            }),
            events: tokio::sync::broadcast::channel(1).0,
        };
        assert!(token_matches(&c, &"ab".repeat(32)));
        assert!(!token_matches(&c, &"ab".repeat(31)));
        assert!(!token_matches(&c, &format!("{}ac", "ab".repeat(31))));
        assert!(!token_matches(&c, ""));
        // The login link works once, and is not the session.
        assert!(
            !c.redeem(&"ab".repeat(32)),
            "the session token is no login token"
        );
        assert!(c.redeem(&"cd".repeat(32)));
        assert!(
            !c.redeem(&"cd".repeat(32)),
            "a login link opens one session"
        );
        assert_eq!(c.cookie(), "cleanroom_console_4321");
    }

    #[test]
    fn only_run_ids_reach_a_request_path() {
        assert!(run_id("run-00ff".into()).is_ok());
        for bad in [
            "run-",
            "run-../../v1/datasets",
            "x",
            "run-00?wait=30",
            "run-0/held",
        ] {
            assert!(run_id(bad.into()).is_err(), "{bad}");
        }
    }
}
