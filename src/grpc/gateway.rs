//! The `wagate.v1.Gateway` service: inbound, windows, sends.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use tonic_types::StatusExt;

use super::{convert, status};
use crate::domain::{IdempotencyKey, Inbound, InboundMessageId, SendRequest, Window};
use crate::pb;
use crate::store::{SendOutcome, Store};
use crate::telemetry;

pub struct GatewayService {
    store: Store,
}

impl GatewayService {
    pub fn new(store: Store) -> Self {
        GatewayService { store }
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

    async fn inbound(
        &self,
        request: pb::RecordInboundRequest,
    ) -> Result<pb::RecordInboundResponse, Status> {
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
        Ok(pb::RecordInboundResponse {
            outcome: convert::inbound_outcome(outcome) as i32,
            window: Some(convert::window(&pair, &Window::view(window.as_ref(), now))),
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
            Ok(response) => format!("{:?}", response.outcome()),
            Err(status) => refusal_reason(status),
        };
        metrics::counter!(telemetry::INBOUND_OUTCOMES, "outcome" => outcome).increment(1);
        recorded.map(Response::new)
    }

    async fn get_window(
        &self,
        request: Request<pb::GetWindowRequest>,
    ) -> Result<Response<pb::GetWindowResponse>, Status> {
        let request = request.into_inner();
        let pair = convert::pair(&request.business_number, &request.customer_number)
            .map_err(status::rejection)?;
        let window = self.store.window(&pair).map_err(status::store)?;
        let view = Window::view(window.as_ref(), convert::now());
        Ok(Response::new(pb::GetWindowResponse {
            window: Some(convert::window(&pair, &view)),
        }))
    }
}
