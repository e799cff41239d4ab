//! Runs as they happen, the review queue and decisions, and the owner's audit log.

use super::*;

pub(super) async fn my_runs(c: &Arc<Console>) -> Result<(Vec<RunStatus>, Vec<DpBudget>), Problem> {
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

pub(super) async fn runs_page(State(c): Shared) -> Page {
    let (runs, budgets) = my_runs(&c).await?;
    Ok(view::runs(&runs, &budgets, now()))
}

/// The live part of the runs page alone (chart, budgets, table), for the live update.
pub(super) async fn runs_live(State(c): Shared) -> Page {
    let (runs, budgets) = my_runs(&c).await?;
    Ok(view::runs_live(&runs, &budgets, now()))
}

/// Server-sent events: each audit entry that concerns the owner, as it happens.
pub(super) async fn events(
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

pub(super) async fn review_queue(State(c): Shared) -> Page {
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
pub(super) fn run_id(run: String) -> Result<String, Problem> {
    let ok = run
        .strip_prefix("run-")
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(run)
    } else {
        Err(Problem::bad_request(format!("{run:?} is not a run id")))
    }
}

pub(super) async fn review_page(State(c): Shared, Path(run): Path<String>) -> Page {
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
pub(super) struct DecisionForm {
    decision: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn review_decide(
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    #[serde(default)]
    page: usize,
    #[serde(default)]
    action: String,
}

pub(super) async fn audit_page(State(c): Shared, Query(q): Query<AuditQuery>) -> Page {
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

pub(super) async fn audit_export(State(c): Shared) -> Result<Response, Problem> {
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
