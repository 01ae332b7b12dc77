//! Wiring: open the store, start the sweeper, serve gRPC with health and
//! reflection, and shut down gracefully.

use std::future::Future;

use chrono::TimeDelta;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::grpc::{GatewayService, TemplateRegistryService};
use crate::pb::gateway_server::GatewayServer;
use crate::pb::template_registry_server::TemplateRegistryServer;
use crate::store::{Retention, Store, StoreConfig};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs wagate until `shutdown` resolves, then stops taking new calls,
/// finishes the calls in flight and flushes the store.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
    let store = Store::open(&StoreConfig {
        path: config.data_dir.clone(),
        cache_capacity_bytes: config.cache_mb << 20,
    })?;
    let retention = Retention {
        closed_windows: TimeDelta::from_std(config.window_retention)?,
        inbound_ids: TimeDelta::from_std(config.inbound_id_retention)?,
    };
    let sweeper = store.spawn_sweeper(retention, config.sweep_interval);

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Lets grpcurl decode the ErrorInfo and BadRequest details of refusals.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };

    let listener = TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    health.set_serving::<GatewayServer<GatewayService>>().await;
    health
        .set_serving::<TemplateRegistryServer<TemplateRegistryService>>()
        .await;
    tracing::info!(%address, data_dir = %config.data_dir.display(), "listening on {address}");

    let (drain_started, mut draining_since) = tokio::sync::watch::channel(false);
    let draining = {
        let health = health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: finishing calls in flight");
            health
                .set_not_serving::<GatewayServer<GatewayService>>()
                .await;
            health
                .set_not_serving::<TemplateRegistryServer<TemplateRegistryService>>()
                .await;
            let _ = drain_started.send(true);
        }
    };
    let serving = Server::builder()
        .trace_fn(|request| tracing::info_span!("rpc", method = %request.uri().path()))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(GatewayServer::new(GatewayService::new(store.clone())))
        .add_service(TemplateRegistryServer::new(TemplateRegistryService::new(
            store.clone(),
        )))
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY, small gRPC frames wait on Nagle and delayed
            // ACKs: ~40 ms stalls at moderate concurrency.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            draining,
        );
    // A client that never closes its connection must not hold shutdown forever.
    let grace_expired = async {
        let _ = draining_since.wait_for(|started| *started).await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    let served = tokio::select! {
        served = serving => served,
        () = grace_expired => {
            tracing::warn!(grace = ?config.shutdown_grace, "calls still in flight after the shutdown grace period; stopping anyway");
            Ok(())
        }
    };

    sweeper.abort();
    store.flush().await?;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    () = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; stopping on SIGINT only");
                interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    interrupt.await;
}
