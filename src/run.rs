//! The `run` command: connect to the API server, serve probes and metrics,
//! and stop cleanly on SIGTERM or SIGINT.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::cli::RunArgs;
use crate::controller::{Controller, Settings};
use crate::health::Liveness;
use crate::server::{Probes, router};
use crate::shard::Coordinator;
use crate::supervise::{Supervision, panic_message, watch_heartbeats};
use crate::telemetry::Metrics;
use crate::telemetry::trace::Exporter;
use crate::worker::repo::Identity;

/// Why the operator could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot load the Kubernetes client configuration (in-cluster or KUBECONFIG): {0}")]
    KubeConfig(#[source] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("invalid sharding settings: {0}")]
    Sharding(#[from] crate::shard::settings::SettingsError),
    #[error(
        "--shutdown-timeout {shutdown:?} leaves no time to drain: it must exceed {margin:?} (kept for \
         releasing the shard Leases) by at least {drain:?}; raise it (and the pod's grace period)"
    )]
    ShutdownTooShort { shutdown: Duration, drain: Duration, margin: Duration },
    /// A task the operator cannot work without ended: exit, so that the pod
    /// restarts instead of idling with green probes.
    #[error("the {task} stopped unexpectedly ({cause}); exiting so that the replica restarts")]
    TaskEnded { task: &'static str, cause: String },
    /// A vital task failed or stalled: the shards were handed over first.
    #[error("{cause}; the shards were handed over, exiting so that the replica restarts")]
    TaskFailed { cause: String },
}

/// Why the replica stops.
enum Stop {
    Signal(&'static str),
    Failure(String),
}

/// How often the API server connection is checked for readiness.
const API_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Runs until SIGTERM or SIGINT; `traces` (if any) is flushed on the way out.
pub async fn run(args: RunArgs, traces: Option<Exporter>) -> Result<(), RunError> {
    let shard_settings = args.shard_settings();
    shard_settings.validate()?;
    let shard_namespace = shard_settings.namespace.clone();
    if args.drain_timeout() < crate::cli::MIN_DRAIN {
        return Err(RunError::ShutdownTooShort {
            shutdown: args.shutdown_timeout,
            drain: crate::cli::MIN_DRAIN,
            margin: crate::cli::RELEASE_MARGIN,
        });
    }
    // Before any remote exists: what a killed predecessor left holds credentials.
    match crate::worker::remote::remove_stale_sandboxes() {
        Ok(0) => {}
        Ok(removed) => info!(removed, "removed credential directories a previous process left behind"),
        Err(error) => warn!(%error, "could not remove stale credential directories"),
    }
    let client = kube::Client::try_default().await.map_err(RunError::KubeConfig)?;
    let calls = api_call_client().await?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    // When the signal came: the controller's deadlines count from it, not
    // from when a long reconcile pass noticed it.
    let (stopped_at_tx, stopped_at) = watch::channel(None);

    let listener = TcpListener::bind(args.http_addr)
        .await
        .map_err(|source| RunError::Bind { addr: args.http_addr, source })?;
    info!(addr = %args.http_addr, "serving /healthz, /readyz and /metrics");

    let checker =
        tokio::spawn(check_api_server(client.clone(), metrics.clone(), ready.clone(), stop_rx.clone()));
    let mut liveness = Liveness::new(args.stall_timeout);
    let (supervision, mut failures) = Supervision::new();
    let (coordinator, shards) =
        Coordinator::new(client.clone(), calls.clone(), shard_settings, metrics.shards.clone());
    let coordinator = coordinator.with_heartbeat(liveness.register("shard coordinator"));
    // The coordinator must release the shards before the process is gone.
    let budget = args.shutdown_timeout.saturating_sub(Duration::from_millis(300));
    let coordinator = tokio::spawn(coordinator.run(stop_rx.clone(), budget));
    let controller = Controller::new(
        client,
        calls,
        Settings {
            data_dir: args.data_dir.clone(),
            committer: Identity { name: args.committer_name.clone(), email: args.committer_email.clone() },
            instance: args.replica_name(),
            access_check_interval: args.access_check_interval,
            audit_interval: args.audit_interval,
            ssh_connection_sharing: args.ssh_connection_sharing,
            warm_successors: args.warm_successors,
            limits: args.limits(),
            namespace: (!args.namespace.is_empty()).then(|| args.namespace.clone()),
            metrics: metrics.clone(),
            shards,
            drain_timeout: args.drain_timeout(),
            initial_list: args.initial_list,
            max_concurrent_pushes: args.max_concurrent_pushes,
            allowed_git_hosts: args.allowed_git_hosts.clone(),
            heartbeat: liveness.register(CONTROLLER),
            supervision: supervision.clone(),
            default_service_account: args.default_service_account.clone(),
            digest_key_secret: (shard_namespace.clone(), args.digest_key_secret.clone()),
            write_all_secrets: args.write_all_secrets,
        },
    );
    let controller = tokio::spawn(controller.run(stopped_at));
    let trimmer = tokio::spawn(crate::memory::trim_periodically());
    let liveness = Arc::new(liveness);
    let heartbeats = tokio::spawn(watch_heartbeats(liveness.clone(), supervision.clone(), CONTROLLER));
    let app = router(Probes { metrics, ready, liveness });
    let mut server_stop = stop_rx.clone();
    let server_supervision = supervision.clone();
    let stopping = stop_rx.clone();
    let server = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .await;
        if !*stopping.borrow() {
            // Nothing probes or scrapes the replica any more.
            let cause = served.as_ref().err().map_or_else(|| "returned".to_owned(), ToString::to_string);
            server_supervision.report(format!("the HTTP server stopped ({cause})"));
        }
        served
    });

    let (mut controller, mut coordinator) = (controller, coordinator);
    let stop = tokio::select! {
        signal = wait_for_signal() => Stop::Signal(signal.map_err(RunError::Signals)?),
        Some(cause) = failures.recv() => Stop::Failure(cause),
        ended = &mut controller => return Err(task_ended("controller", ended)),
        ended = &mut coordinator => return Err(task_ended("shard coordinator", ended)),
    };
    match &stop {
        Stop::Signal(signal) => info!(signal, "shutting down"),
        Stop::Failure(cause) => error!(%cause, "a vital task failed: handing the shards over, then exiting"),
    }
    let _ = stopped_at_tx.send(Some(Instant::now()));
    let _ = stop_tx.send(true);
    trimmer.abort();

    let drained = tokio::time::timeout(args.shutdown_timeout, async {
        let _ = checker.await;
        let _ = controller.await;
        let _ = coordinator.await;
        server.await
    })
    .await;
    match drained {
        Ok(Ok(result)) => result.map_err(RunError::Serve)?,
        Ok(Err(join)) => warn!(error = %join, "the HTTP server task ended abnormally"),
        Err(_) => warn!(timeout = ?args.shutdown_timeout, "shutdown timed out; exiting anyway"),
    }
    heartbeats.abort();
    if let Some(traces) = traces {
        // Exports the spans still buffered (the last pushes) before exit.
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    match stop {
        Stop::Signal(_) => {
            info!("stopped");
            Ok(())
        }
        Stop::Failure(cause) => Err(RunError::TaskFailed { cause }),
    }
}

/// The controller's name among the heartbeats.
const CONTROLLER: &str = "controller";

/// Marks the process ready while the API server answers.
/// How long a request other than a watch may wait for its answer. The
/// default (295 s, which long-polling watches need) let one status write or
/// Lease renewal sent to an API server that was restarting hold up a whole
/// controller or coordinator pass.
const API_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for every request but watches, bounded by [`API_CALL_TIMEOUT`].
async fn api_call_client() -> Result<kube::Client, RunError> {
    let mut config =
        kube::Config::infer().await.map_err(|e| RunError::KubeConfig(kube::Error::InferConfig(e)))?;
    config.read_timeout = Some(API_CALL_TIMEOUT);
    config.write_timeout = Some(API_CALL_TIMEOUT);
    kube::Client::try_from(config).map_err(RunError::KubeConfig)
}

async fn check_api_server(
    client: kube::Client,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match client.apiserver_version().await {
            Ok(version) => {
                if !ready.swap(true, Ordering::Relaxed) {
                    info!(version = %version.git_version, "connected to the Kubernetes API server");
                }
                metrics.api_server_reachable.set(1);
            }
            Err(error) => {
                if ready.swap(false, Ordering::Relaxed) {
                    warn!(%error, "the Kubernetes API server stopped answering");
                }
                metrics.api_server_reachable.set(0);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(API_CHECK_INTERVAL) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Resolves with the name of the first SIGTERM or SIGINT.
/// Why a vital task ended before the stop signal: its panic message, if any.
fn task_ended(task: &'static str, ended: Result<(), tokio::task::JoinError>) -> RunError {
    let cause = match ended {
        Ok(()) => "it returned".to_owned(),
        Err(error) if error.is_panic() => format!("panicked: {}", panic_message(error.into_panic().as_ref())),
        Err(error) => error.to_string(),
    };
    RunError::TaskEnded { task, cause }
}

async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: a panicking controller task left the process up with green
    /// probes; its end is now an error that names the panic.
    #[tokio::test]
    async fn a_vital_task_that_panics_is_reported_with_its_message() {
        let panicked = tokio::spawn(async { panic!("interval overflow") }).await;
        let error = task_ended("controller", panicked);
        assert!(matches!(error, RunError::TaskEnded { task: "controller", .. }));
        assert!(error.to_string().contains("panicked: interval overflow"), "{error}");
        let returned = task_ended("shard coordinator", Ok(()));
        assert!(returned.to_string().contains("the shard coordinator stopped unexpectedly (it returned)"));
    }
}
