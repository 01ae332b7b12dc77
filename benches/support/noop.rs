//! The baseline: the same Gateway API answering canned responses of the
//! sizes wagate sends, with no store and no rules. A bench serves it from
//! its own executable (`--noop-server`), started with [`Process::start`].

use tonic::{Request, Response, Status};
use wagate::pb;

use super::*;

struct Noop {
    window: pb::Window,
    sent: pb::SendMessageResponse,
}

#[tonic::async_trait]
impl pb::gateway_server::Gateway for Noop {
    async fn send_message(
        &self,
        _: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        Ok(Response::new(self.sent.clone()))
    }
    async fn record_inbound(
        &self,
        _: Request<pb::RecordInboundRequest>,
    ) -> Result<Response<pb::RecordInboundResponse>, Status> {
        Ok(Response::new(pb::RecordInboundResponse {
            outcome: pb::InboundOutcome::Opened as i32,
            window: Some(self.window.clone()),
        }))
    }
    async fn get_window(
        &self,
        _: Request<pb::GetWindowRequest>,
    ) -> Result<Response<pb::GetWindowResponse>, Status> {
        Ok(Response::new(pb::GetWindowResponse {
            window: Some(self.window.clone()),
            consent: Some(pb::Consent::default()),
        }))
    }
    // Not measured: the baseline only needs the measured RPCs.
    async fn get_message(
        &self,
        _: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::GetMessageResponse>, Status> {
        Err(Status::unimplemented("not in the baseline"))
    }
    type WatchMessagesStream = tokio_stream::Empty<Result<pb::WatchMessagesResponse, Status>>;
    async fn watch_messages(
        &self,
        _: Request<pb::WatchMessagesRequest>,
    ) -> Result<Response<Self::WatchMessagesStream>, Status> {
        Err(Status::unimplemented("not in the baseline"))
    }
    async fn list_windows(
        &self,
        _: Request<pb::ListWindowsRequest>,
    ) -> Result<Response<pb::ListWindowsResponse>, Status> {
        Err(Status::unimplemented("not in the baseline"))
    }
    type WatchWindowsStream = tokio_stream::Empty<Result<pb::WatchWindowsResponse, Status>>;
    async fn watch_windows(
        &self,
        _: Request<pb::WatchWindowsRequest>,
    ) -> Result<Response<Self::WatchWindowsStream>, Status> {
        Err(Status::unimplemented("not in the baseline"))
    }
    async fn record_opt_out(
        &self,
        _: Request<pb::RecordOptOutRequest>,
    ) -> Result<Response<pb::RecordOptOutResponse>, Status> {
        Err(Status::unimplemented("not in the baseline"))
    }
    async fn record_opt_in(
        &self,
        _: Request<pb::RecordOptInRequest>,
    ) -> Result<Response<pb::RecordOptInResponse>, Status> {
        Err(Status::unimplemented("not in the baseline"))
    }
}

pub fn serve() {
    let now = prost_types::Timestamp {
        seconds: 1_795_000_000,
        nanos: 123_456_000,
    };
    let window = pb::Window {
        business_number: BUSINESS.into(),
        customer_number: customer(42),
        state: pb::WindowState::Open as i32,
        last_inbound_at: Some(now),
        expires_at: Some(prost_types::Timestamp {
            seconds: now.seconds + 86_400,
            ..now
        }),
        remaining: Some(prost_types::Duration {
            seconds: 86_399,
            nanos: 876_544_000,
        }),
        free_until: None,
    };
    let sent = pb::SendMessageResponse {
        message_id: "01a21000-0000-7000-8000-000000000000".into(),
        kind: pb::MessageKind::Template as i32,
        rendered_text: "Hi Ann, your order A-1001 has shipped.".into(),
        template_category: pb::TemplateCategory::Utility as i32,
        pricing_category: pb::PricingCategory::Utility as i32,
        billable: true,
        accepted_at: Some(now),
        status: pb::MessageStatus::Accepted as i32,
        dry_run: false,
        free_until: None,
        // wagate echoes what was sent; so does the ceiling.
        content: Some(pb::MessageContent {
            content: Some(pb::message_content::Content::Template(
                pb::TemplateContent {
                    name: "order_shipped".into(),
                    language: "en_US".into(),
                    body_parameters: Some(pb::TemplateParameters {
                        positional: vec!["Ann".into(), "A-1001".into()],
                        named: Default::default(),
                    }),
                    header_parameters: None,
                    button_parameters: vec![],
                    header: None,
                    quick_reply_payloads: vec![],
                },
            )),
        }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        eprintln!("listening on {}", listener.local_addr().unwrap());
        tonic::transport::Server::builder()
            .add_service(pb::gateway_server::GatewayServer::new(Noop {
                window,
                sent,
            }))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await
            .unwrap();
    });
}
