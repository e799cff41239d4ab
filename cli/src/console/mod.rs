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

mod activity;
mod grants;
mod session;
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

use activity::*;
use grants::*;
use session::*;

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
        Self {
            status,
            title,
            detail,
            next,
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "That did not work",
            detail: detail.into(),
            next: "Go back, correct it and try again.",
        }
    }

    fn unauthorised() -> Self {
        Self {
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
        Self::from_error(&error)
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
        f: impl FnOnce(&Self, &Client) -> Result<T> + Send + 'static,
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

// ---- Runs -------------------------------------------------------------------------------

// ---- Review -----------------------------------------------------------------------------

// ---- Audit ------------------------------------------------------------------------------

/// The audit log and whether it verified: chain and signed head against the attested
/// enclave's key, and consistency with the last head this key verified.
pub(crate) struct AuditView {
    log: crate::remote::audit::SavedLog,
    verdict: Result<(), String>,
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
