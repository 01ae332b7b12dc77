//! The `wagate.v1.TemplateRegistry` service.

use tonic::{Request, Response, Status};

use super::{convert, page, status};
use crate::domain::template::TemplateFilter;
use crate::domain::{Reason, Rejection, TemplateId};
use crate::pb;
use crate::service::Service;

/// Page tokens are versioned so their format can change without confusing
/// clients that hold an old one.
const PAGE_TOKEN_PREFIX: &str = "v1:";

pub struct TemplateRegistryService {
    store: Service,
}

impl TemplateRegistryService {
    pub fn new(store: Service) -> Self {
        TemplateRegistryService { store }
    }
}

fn not_found(id: &TemplateId) -> Status {
    status::rejection(
        Rejection::new(
            Reason::TemplateNotFound,
            if id.account().is_default() {
                format!("no template {}/{} is registered", id.name(), id.language())
            } else {
                format!(
                    "no template {}/{} is registered in account {}",
                    id.name(),
                    id.language(),
                    id.account()
                )
            },
        )
        .at("name"),
    )
}

fn page_token(after: &TemplateId) -> String {
    page::token(
        PAGE_TOKEN_PREFIX,
        &format!("{}\n{}", after.name(), after.language()),
    )
}

fn parse_page_token(token: &str) -> Result<Option<TemplateId>, Rejection> {
    page::read_token(token, PAGE_TOKEN_PREFIX, |text| {
        let (name, language) = text.split_once('\n')?;
        TemplateId::parse(name, language).ok()
    })
}

#[tonic::async_trait]
impl pb::template_registry_server::TemplateRegistry for TemplateRegistryService {
    async fn upsert_template(
        &self,
        request: Request<pb::UpsertTemplateRequest>,
    ) -> Result<Response<pb::UpsertTemplateResponse>, Status> {
        let template = request.into_inner().template.ok_or_else(|| {
            status::rejection(Rejection::new(Reason::InvalidTemplate, "is required").at("template"))
        })?;
        let (id, draft) = convert::template_draft(template)
            .map_err(|e| status::rejection(e.within("template")))?;
        let content = draft
            .validate()
            .map_err(|e| status::rejection(e.within("template")))?;
        let (template, created) = self
            .store
            .upsert_template(&id, &content, convert::now())
            .await
            .map_err(status::store)?;
        tracing::info!(
            name = id.name(),
            language = id.language(),
            created,
            status = template.status.as_str(),
            "template upserted"
        );
        Ok(Response::new(pb::UpsertTemplateResponse {
            template: Some(convert::template(&template)),
            created,
        }))
    }

    async fn get_template(
        &self,
        request: Request<pb::GetTemplateRequest>,
    ) -> Result<Response<pb::GetTemplateResponse>, Status> {
        let request = request.into_inner();
        let id = convert::template_id(&request.waba_id, &request.name, &request.language)
            .map_err(status::rejection)?;
        let template = self
            .store
            .template(&id)
            .await
            .map_err(status::store)?
            .ok_or_else(|| not_found(&id))?;
        Ok(Response::new(pb::GetTemplateResponse {
            template: Some(convert::template(&template)),
        }))
    }

    async fn list_templates(
        &self,
        request: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        let request = request.into_inner();
        let limit = page::size(request.page_size).map_err(status::rejection)?;
        let after = parse_page_token(&request.page_token).map_err(status::rejection)?;
        let filter = TemplateFilter {
            status: convert::status(request.status, "status").map_err(status::rejection)?,
            category: convert::category(request.category, "category").map_err(status::rejection)?,
        };
        let account = convert::account_id(&request.waba_id).map_err(status::rejection)?;
        let page = self
            .store
            .list_templates(&account, after.as_ref(), limit, &filter)
            .await
            .map_err(status::store)?;
        Ok(Response::new(pb::ListTemplatesResponse {
            templates: page.templates.iter().map(convert::template).collect(),
            next_page_token: page.next_after.as_ref().map(page_token).unwrap_or_default(),
        }))
    }

    async fn set_template_status(
        &self,
        request: Request<pb::SetTemplateStatusRequest>,
    ) -> Result<Response<pb::SetTemplateStatusResponse>, Status> {
        let request = request.into_inner();
        let id = convert::template_id(&request.waba_id, &request.name, &request.language)
            .map_err(status::rejection)?;
        let new_status = convert::status(request.status, "status")
            .ok()
            .flatten()
            .ok_or_else(|| {
                status::rejection(
                    Rejection::new(
                        Reason::InvalidTemplateStatus,
                        "is required: a defined status such as TEMPLATE_STATUS_APPROVED",
                    )
                    .at("status"),
                )
            })?;
        let template = self
            .store
            .set_template_status_by_hand(&id, new_status, &request.reason, convert::now())
            .await
            .map_err(status::store)?
            .ok_or_else(|| not_found(&id))?;
        tracing::info!(
            name = id.name(),
            language = id.language(),
            status = new_status.as_str(),
            "template status set"
        );
        Ok(Response::new(pb::SetTemplateStatusResponse {
            template: Some(convert::template(&template)),
        }))
    }

    async fn delete_template(
        &self,
        request: Request<pb::DeleteTemplateRequest>,
    ) -> Result<Response<pb::DeleteTemplateResponse>, Status> {
        let request = request.into_inner();
        let id = convert::template_id(&request.waba_id, &request.name, &request.language)
            .map_err(status::rejection)?;
        if !self
            .store
            .delete_template(&id)
            .await
            .map_err(status::store)?
        {
            return Err(not_found(&id));
        }
        tracing::info!(
            name = id.name(),
            language = id.language(),
            "template deleted"
        );
        Ok(Response::new(pb::DeleteTemplateResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let id = TemplateId::parse("order_update", "pt_BR").unwrap();
        assert_eq!(parse_page_token(&page_token(&id)).unwrap(), Some(id));
        assert_eq!(parse_page_token("").unwrap(), None);
        for bad in ["!!", "bm90IGEgdG9rZW4", &page::token("v1:", "Bad\nen")] {
            assert_eq!(
                parse_page_token(bad).unwrap_err().reason,
                Reason::InvalidPageToken,
                "{bad}"
            );
        }
    }
}
