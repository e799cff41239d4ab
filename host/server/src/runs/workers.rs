//! Scheduling: the embedded queue's workers and the cluster's claim loop, and failing runs a
//! restart or a dead worker interrupted (never re-run).

use super::*;

/// Start the workers. Queued runs are re-queued; runs a restart interrupted are failed
/// ("interrupted by restart"), never re-run: a module must not get a second go at its
/// inputs behind the owners' backs.
pub fn start(service: Arc<Service>, rx: mpsc::Receiver<String>) -> ApiResult<()> {
    queue::of(&service).start(rx)
}

/// The embedded queue's workers, and what a restart left queued put back on it.
pub(super) fn start_embedded(service: Arc<Service>, rx: mpsc::Receiver<String>) -> ApiResult<()> {
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..service.config.workers {
        let (service, rx) = (service.clone(), rx.clone());
        tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(id) = next else { break };
                let svc = service.clone();
                let run = id.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || execute(&svc, &run)).await {
                    // The panic message may carry module-influenced text: not for the log.
                    let _ = e;
                    tracing::error!(run = id, "run worker panicked");
                    let svc = service.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        fail_stuck(
                            &svc,
                            &id,
                            Code::Internal,
                            "the service failed while running the analysis",
                        )
                    })
                    .await;
                }
            }
        });
    }
    let mut runs = service.storage.runs()?;
    runs.sort_by_key(|r| r.created);
    for run in runs {
        match run.state {
            RunState::Running => {
                tracing::warn!(run = run.id, "failing a run interrupted by a restart");
                fail_stuck(
                    &service,
                    &run.id,
                    Code::Interrupted,
                    "interrupted by restart; submit it again",
                )?;
            }
            RunState::Queued => {
                service
                    .cancels
                    .lock()
                    .expect("cancel map lock")
                    .insert(run.id.clone(), CancelToken::new());
                let queue = service.queue.clone();
                tokio::spawn(async move {
                    let _ = queue.send(run.id).await;
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Start a cluster worker: `config.workers` loops that claim runs from the shared queue.
/// Every queued or running run is put (back) on the queue: a running run whose worker is
/// alive keeps its claim; one whose worker is gone is claimed by a live worker, which fails
/// it as interrupted.
pub(super) fn start_cluster(service: Arc<Service>) -> ApiResult<()> {
    let Some(cluster) = service.storage.cluster() else {
        return Err(ApiError::Internal(
            "a cluster worker without a cluster".into(),
        ));
    };
    for run in service.storage.runs()? {
        if matches!(run.state, RunState::Queued | RunState::Running) {
            cluster.enqueue(&run.id)?;
        }
    }
    for _ in 0..service.config.workers {
        tokio::spawn(claim_loop(service.clone()));
    }
    crate::cluster::spawn_housekeeping(service);
    Ok(())
}

/// Claim runs from the shared queue and execute them, one at a time.
pub(super) async fn claim_loop(service: Arc<Service>) {
    const BUSY: Duration = Duration::from_millis(10);
    const IDLE: Duration = Duration::from_millis(200);
    let worker = service.config.cluster.worker_id();
    let mut wait = BUSY;
    loop {
        let (svc, me) = (service.clone(), worker.clone());
        let claimed = tokio::task::spawn_blocking(move || {
            let cluster = svc.storage.cluster().expect("a cluster worker");
            cluster.claim(&me, crate::cluster::lease(&svc))
        })
        .await;
        let id = match claimed {
            Ok(Ok(Some(id))) => id,
            Ok(Ok(None)) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(IDLE);
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!("claiming a run: {e}");
                tokio::time::sleep(IDLE).await;
                continue;
            }
            Err(_) => continue,
        };
        wait = BUSY;
        let (svc, run) = (service.clone(), id.clone());
        let outcome = tokio::task::spawn_blocking(move || run_claimed(&svc, &run)).await;
        let (svc, me) = (service.clone(), worker.clone());
        // Whatever happened, the claim is given up: a run left claimed would have its lease
        // renewed by this worker for ever.
        let _ = tokio::task::spawn_blocking(move || {
            let stopped = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                // The panic message may carry module-influenced text: not for the log.
                Err(_) => Some("the run worker panicked".to_string()),
            };
            if let Some(why) = stopped {
                tracing::error!(run = id, "a claimed run stopped inside the service: {why}");
                let _ = fail_stuck(
                    &svc,
                    &id,
                    Code::Internal,
                    "the service failed while running the analysis",
                );
            }
            let cluster = svc.storage.cluster().expect("a cluster worker");
            if let Err(e) = cluster.done(&id, &me) {
                tracing::warn!(run = id, "giving up a claim: {e}");
            }
        })
        .await;
    }
}

/// Run a claimed run, or fail it if the worker that claimed it before stopped mid-run.
pub(super) fn run_claimed(service: &Service, id: &str) -> ApiResult<()> {
    match service.storage.run(id)? {
        // Claimed from a worker that stopped while running it: never run twice.
        Some(run) if run.state == RunState::Running => fail_stuck(
            service,
            id,
            Code::Interrupted,
            "the worker running it stopped; submit it again",
        ),
        Some(_) => {
            execute(service, id);
            Ok(())
        }
        None => Ok(()),
    }
}

/// Finalise a run that cannot continue (a worker panic, a restart) as failed.
pub(super) fn fail_stuck(service: &Service, id: &str, code: Code, message: &str) -> ApiResult<()> {
    let _guard = transitions(service)?;
    if let Some(mut run) = service.storage.run(id)?
        && !run.state.is_final()
        && run.state != RunState::HeldForReview
    {
        finalize(
            service,
            &mut run,
            RunState::Failed,
            Some(Reason::new(code, message)),
            vec![],
        )?;
    }
    Ok(())
}

pub(super) fn execute(service: &Service, id: &str) {
    if let Err(e) = execute_inner(service, id) {
        tracing::error!(run = id, "run failed inside the service: {e}");
        let _ = fail_stuck(
            service,
            id,
            Code::Internal,
            "the service failed while running the analysis",
        );
    }
}
