//! The `wagate.v1.Gateway` service: inbound, windows, sends.

use std::collections::HashSet;
use std::pin::Pin;

use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use tonic_types::StatusExt;

use super::window_watch::{self, Draining, WatchLimits};
use super::{convert, page, status, windows};
use crate::domain::consent::Source;
use crate::domain::{
    IdempotencyKey, Inbound, InboundMessageId, Reason, Rejection, SendRequest, Window,
};
use crate::pb;
use crate::service::Service;
use crate::store::{MessageState, SendOutcome};
use crate::telemetry;

type WatchSender = tokio::sync::mpsc::Sender<Result<pb::WatchMessagesResponse, Status>>;

/// Sends one message state to a watcher; false once the watcher has gone.
async fn forward(sender: &WatchSender, state: &MessageState) -> bool {
    let message = Some(convert::outbound_message(state));
    sender
        .send(Ok(pb::WatchMessagesResponse { message }))
        .await
        .is_ok()
}

pub struct GatewayService {
    store: Service,
    watch: WatchLimits,
    /// Turns true when the server stops taking calls: watch streams end
    /// then, so their clients move to another replica at once.
    draining: Draining,
}

impl GatewayService {
    pub fn new(store: Service, watch: WatchLimits, draining: Draining) -> Self {
        GatewayService {
            store,
            watch,
            draining,
        }
    }

    async fn send(
        &self,
        request: pb::SendMessageRequest,
    ) -> Result<(pb::SendMessageResponse, &'static str), Status> {
        let now = convert::now();
        let send = SendRequest {
            pair: convert::pair(&request.business_number, &request.customer_number)
                .map_err(status::rejection)?,
            idempotency_key: IdempotencyKey::parse(&request.idempotency_key)
                .map_err(status::rejection)?,
            content: convert::content(request.content).map_err(status::rejection)?,
        };
        let message_id = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            now.timestamp() as u64,
            now.timestamp_subsec_nanos(),
        ));
        let outcome = self
            .store
            .send(&send, message_id, now, request.dry_run)
            .await
            .map_err(|error| {
                tracing::info!(business = %send.pair.business, customer = %send.pair.customer, %error, "send refused");
                status::store(error)
            })?;
        let message = outcome.message();
        tracing::info!(
            business = %send.pair.business,
            customer = %send.pair.customer,
            message_id = %message.message_id,
            kind = ?message.accepted.kind,
            pricing = ?message.accepted.pricing.category,
            replayed = matches!(outcome, SendOutcome::Replayed(_)),
            dry_run = request.dry_run,
            "send accepted"
        );
        let outcome = match outcome {
            SendOutcome::Accepted(_) => "ACCEPTED",
            SendOutcome::Replayed(_) => "REPLAYED",
            SendOutcome::DryRun(_) => "DRY_RUN",
        };
        Ok((convert::send_response(message, request.dry_run), outcome))
    }

    /// Also returns the outcome's name for metrics, as the webhook counts it.
    async fn inbound(
        &self,
        request: pb::RecordInboundRequest,
    ) -> Result<(pb::RecordInboundResponse, &'static str), Status> {
        let now = convert::now();
        let pair = convert::pair(&request.business_number, &request.customer_number)
            .map_err(status::rejection)?;
        let message_id = InboundMessageId::parse(&request.message_id).map_err(status::rejection)?;
        let received_at = request
            .received_at
            .as_ref()
            .map(|at| convert::time(at, "received_at"))
            .transpose()
            .map_err(status::rejection)?;
        let inbound = Inbound::new(
            received_at,
            convert::inbound_kind(request.kind).map_err(status::rejection)?,
            convert::entry_point(request.entry_point).map_err(status::rejection)?,
            now,
        )
        .map_err(status::rejection)?;
        let (outcome, window) = self
            .store
            .record_inbound(&pair, &message_id, &inbound, now)
            .await
            .map_err(status::store)?;
        tracing::info!(
            business = %pair.business,
            customer = %pair.customer,
            kind = ?inbound.kind,
            entry_point = ?inbound.entry_point,
            ?outcome,
            "inbound recorded"
        );
        let response = pb::RecordInboundResponse {
            outcome: convert::inbound_outcome(outcome) as i32,
            window: Some(convert::window(&pair, &Window::view(window.as_ref(), now))),
        };
        Ok((response, outcome.as_str()))
    }
}

impl GatewayService {
    async fn known_message(&self, id: Uuid) -> Result<MessageState, Status> {
        self.store
            .message(id)
            .await
            .map_err(status::store)?
            .ok_or_else(|| {
                status::rejection(
                    Rejection::new(Reason::MessageNotFound, format!("no message {id}"))
                        .at("message_id"),
                )
            })
    }
}

/// The ErrorInfo reason of a refusal, for metrics labels.
fn refusal_reason(status: &Status) -> String {
    status.get_error_details().error_info().map_or_else(
        || format!("{:?}", status.code()),
        |info| info.reason.clone(),
    )
}

#[tonic::async_trait]
impl pb::gateway_server::Gateway for GatewayService {
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let decided = self.send(request.into_inner()).await;
        let decision = match &decided {
            Ok((_, outcome)) => (*outcome).to_owned(),
            Err(status) => refusal_reason(status),
        };
        metrics::counter!(telemetry::SEND_DECISIONS, "decision" => decision).increment(1);
        decided.map(|(response, _)| Response::new(response))
    }

    async fn record_inbound(
        &self,
        request: Request<pb::RecordInboundRequest>,
    ) -> Result<Response<pb::RecordInboundResponse>, Status> {
        let recorded = self.inbound(request.into_inner()).await;
        let outcome = match &recorded {
            Ok((_, outcome)) => (*outcome).to_owned(),
            Err(status) => refusal_reason(status),
        };
        telemetry::record_inbound("grpc", outcome);
        recorded.map(|(response, _)| Response::new(response))
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::GetMessageResponse>, Status> {
        let id = convert::message_id(&request.get_ref().message_id, "message_id")
            .map_err(status::rejection)?;
        let state = self.known_message(id).await?;
        Ok(Response::new(pb::GetMessageResponse {
            message: Some(convert::outbound_message(&state)),
        }))
    }

    type WatchMessagesStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchMessagesResponse, Status>> + Send>>;

    async fn watch_messages(
        &self,
        request: Request<pb::WatchMessagesRequest>,
    ) -> Result<Response<Self::WatchMessagesStream>, Status> {
        let ids = request
            .get_ref()
            .message_ids
            .iter()
            .enumerate()
            .map(|(i, id)| convert::message_id(id, &format!("message_ids[{i}]")))
            .collect::<Result<HashSet<Uuid>, _>>()
            .map_err(status::rejection)?;
        // Subscribe before reading the current states, so no change falls
        // between the two.
        let mut updates = self.store.subscribe();
        let mut current = Vec::with_capacity(ids.len());
        for id in &ids {
            current.push(self.known_message(*id).await?);
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let mut draining = self.draining.clone();
        tokio::spawn(async move {
            for state in &current {
                if !forward(&sender, state).await {
                    return;
                }
            }
            loop {
                let update = tokio::select! {
                    () = sender.closed() => return,
                    () = window_watch::drain_started(&mut draining) => {
                        let _ = sender.send(Err(window_watch::drained())).await;
                        return;
                    }
                    update = updates.recv() => update,
                };
                let state = match update {
                    Ok(state) => state,
                    Err(RecvError::Lagged(missed)) => {
                        let _ = sender
                            .send(Err(status::service(
                                Code::Aborted,
                                status::WATCH_LAGGED,
                                format!("this watcher fell {missed} updates behind; read the messages again and watch anew"),
                            )))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                };
                if !ids.is_empty() && !ids.contains(&state.message.message_id) {
                    continue;
                }
                if !forward(&sender, &state).await {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    type WatchWindowsStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchWindowsResponse, Status>> + Send>>;

    async fn watch_windows(
        &self,
        request: Request<pb::WatchWindowsRequest>,
    ) -> Result<Response<Self::WatchWindowsStream>, Status> {
        let request = request.into_inner();
        let filter = window_watch::filter(&request).map_err(status::rejection)?;
        let token =
            window_watch::read_resume_token(&request.resume_token).map_err(status::rejection)?;
        let after = window_watch::start(token, convert::now(), self.watch.retention)?;
        let watcher = crate::service::watch::Watcher::new(filter, after);
        let events = window_watch::spawn(
            self.store.store().clone(),
            watcher,
            self.watch,
            self.draining.clone(),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(events))))
    }

    async fn get_window(
        &self,
        request: Request<pb::GetWindowRequest>,
    ) -> Result<Response<pb::GetWindowResponse>, Status> {
        let request = request.into_inner();
        let pair = convert::pair(&request.business_number, &request.customer_number)
            .map_err(status::rejection)?;
        let (window, consent) = self
            .store
            .window_and_consent(&pair)
            .await
            .map_err(status::store)?;
        let view = Window::view(window.as_ref(), convert::now());
        Ok(Response::new(pb::GetWindowResponse {
            window: Some(convert::window(&pair, &view)),
            consent: Some(super::consent::message(consent.as_ref())),
        }))
    }

    async fn record_opt_out(
        &self,
        request: Request<pb::RecordOptOutRequest>,
    ) -> Result<Response<pb::RecordOptOutResponse>, Status> {
        let request = request.into_inner();
        let pair = convert::pair(&request.business_number, &request.customer_number)
            .map_err(status::rejection)?;
        let scope = super::consent::scope(request.scope).map_err(status::rejection)?;
        let consent = self
            .store
            .opt_out(&pair, scope, Source::Request, convert::now())
            .await
            .map_err(status::store)?;
        Ok(Response::new(pb::RecordOptOutResponse {
            consent: Some(super::consent::message(consent.as_ref())),
        }))
    }

    async fn record_opt_in(
        &self,
        request: Request<pb::RecordOptInRequest>,
    ) -> Result<Response<pb::RecordOptInResponse>, Status> {
        let request = request.into_inner();
        let pair = convert::pair(&request.business_number, &request.customer_number)
            .map_err(status::rejection)?;
        let consent = self.store.opt_in(&pair).await.map_err(status::store)?;
        Ok(Response::new(pb::RecordOptInResponse {
            consent: Some(super::consent::message(consent.as_ref())),
        }))
    }

    async fn list_windows(
        &self,
        request: Request<pb::ListWindowsRequest>,
    ) -> Result<Response<pb::ListWindowsResponse>, Status> {
        let request = request.into_inner();
        let now = convert::now();
        let query = windows::query(&request, now).map_err(status::rejection)?;
        let limit = page::size(request.page_size).map_err(status::rejection)?;
        let after = windows::parse_page_token(&request.page_token).map_err(status::rejection)?;
        let page = self
            .store
            .list_windows(&query, after.as_ref(), limit)
            .await
            .map_err(status::store)?;
        Ok(Response::new(pb::ListWindowsResponse {
            windows: page
                .windows
                .iter()
                .map(|(pair, window)| convert::window(pair, &Window::view(Some(window), now)))
                .collect(),
            next_page_token: page
                .next_after
                .as_ref()
                .map(windows::page_token)
                .unwrap_or_default(),
        }))
    }
}
