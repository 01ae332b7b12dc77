//! Template sync: what WhatsApp holds for an account (the Graph API's
//! `GET /{waba-id}/message_templates`) made the registry's truth.
//!
//! Parsing reads one template object of that answer into the registry's
//! terms; planning compares the account's stored templates with the full
//! fetched list and says what to write. A template WhatsApp no longer has
//! is kept, marked DELETED, so a send of it is refused rather than
//! silently sent from a stale copy.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::account::AccountId;
use super::template::{ButtonDraft, Category, HeaderMedia, Status, TemplateDraft, TemplateId};
use super::{Template, TemplateContent};

/// One template as WhatsApp holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedTemplate {
    pub id: TemplateId,
    pub status: Status,
    /// WhatsApp's rejection reason; empty when none.
    pub reason: String,
    pub content: TemplateContent,
    /// WhatsApp's id for it (the Graph API prints it as a string).
    pub whatsapp_id: Option<String>,
}

/// What a fetched template object could not be read as, named for logs
/// and counts: `(name, language)` when those were readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub name_language: Option<(String, String)>,
    pub why: String,
}

/// Reads one object of `data` in the Graph API's answer.
pub fn parse_graph_template(
    account: &AccountId,
    value: &Value,
) -> Result<FetchedTemplate, Unreadable> {
    let text = |key: &str| value[key].as_str().unwrap_or("");
    let (name, language) = (text("name"), text("language"));
    let unreadable = |why: String| Unreadable {
        name_language: (!name.is_empty() && !language.is_empty())
            .then(|| (name.to_owned(), language.to_owned())),
        why: format!("{name}/{language}: {why}"),
    };
    let id = TemplateId::parse(name, language)
        .map_err(|e| unreadable(e.description()))?
        .in_account(account.clone());
    let status = graph_status(text("status"))
        .ok_or_else(|| unreadable(format!("unknown status {:?}", text("status"))))?;
    let category = match text("category") {
        "MARKETING" => Category::Marketing,
        "UTILITY" => Category::Utility,
        "AUTHENTICATION" => Category::Authentication,
        other => return Err(unreadable(format!("unknown category {other:?}"))),
    };
    let mut draft = TemplateDraft {
        category: Some(category),
        body: String::new(),
        header_text: String::new(),
        header_media: None,
        footer_text: String::new(),
        buttons: Vec::new(),
    };
    for component in value["components"].as_array().into_iter().flatten() {
        let component_text = component["text"].as_str().unwrap_or("").to_owned();
        match component["type"].as_str().unwrap_or("") {
            "BODY" => draft.body = component_text,
            "FOOTER" => draft.footer_text = component_text,
            "HEADER" => match component["format"].as_str().unwrap_or("TEXT") {
                "TEXT" => draft.header_text = component_text,
                format => {
                    draft.header_media = Some(
                        HeaderMedia::parse(&format.to_ascii_lowercase()).ok_or_else(|| {
                            unreadable(format!("unknown header format {format:?}"))
                        })?,
                    )
                }
            },
            "BUTTONS" => {
                for button in component["buttons"].as_array().into_iter().flatten() {
                    draft
                        .buttons
                        .push(button_draft(button).map_err(unreadable)?);
                }
            }
            other => return Err(unreadable(format!("unknown component {other:?}"))),
        }
    }
    let content = draft.validate().map_err(|e| unreadable(e.description()))?;
    let reason = match value["rejected_reason"].as_str() {
        None | Some("NONE") => String::new(),
        Some(reason) => reason.to_owned(),
    };
    let whatsapp_id = match &value["id"] {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    };
    Ok(FetchedTemplate {
        id,
        status,
        reason,
        content,
        whatsapp_id,
    })
}

fn graph_status(name: &str) -> Option<Status> {
    Some(match name {
        "APPROVED" => Status::Approved,
        "PENDING" => Status::Pending,
        "REJECTED" => Status::Rejected,
        "PAUSED" => Status::Paused,
        "DISABLED" => Status::Disabled,
        "IN_APPEAL" => Status::InAppeal,
        "PENDING_DELETION" => Status::PendingDeletion,
        "DELETED" => Status::Deleted,
        "LIMIT_EXCEEDED" => Status::LimitExceeded,
        "ARCHIVED" => Status::Archived,
        _ => return None,
    })
}

fn button_draft(button: &Value) -> Result<ButtonDraft, String> {
    let text = button["text"].as_str().unwrap_or("").to_owned();
    match button["type"].as_str().unwrap_or("") {
        "QUICK_REPLY" => Ok(ButtonDraft::QuickReply { text }),
        "URL" => Ok(ButtonDraft::Url {
            text,
            url: button["url"].as_str().unwrap_or("").to_owned(),
        }),
        "PHONE_NUMBER" => Ok(ButtonDraft::PhoneNumber {
            text,
            phone_number: button["phone_number"].as_str().unwrap_or("").to_owned(),
        }),
        // An authentication template's copy-code button, under either name
        // the Graph API has used for it.
        "COPY_CODE" => Ok(ButtonDraft::CopyCode {
            text: if text.is_empty() {
                "Copy code".to_owned()
            } else {
                text
            },
        }),
        "OTP" if button["otp_type"].as_str() == Some("COPY_CODE") => {
            Ok(ButtonDraft::CopyCode { text })
        }
        other => Err(format!("unsupported button {other:?}")),
    }
}

/// How one sync changed an account's registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub created: u32,
    pub updated: u32,
    pub deleted: u32,
    pub unchanged: u32,
    /// Templates WhatsApp returned that could not be read; their stored
    /// copies are left as they were.
    pub failed: u32,
}

/// What to write for one sync: every template that changed, in full.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    pub puts: Vec<Template>,
    pub counts: SyncCounts,
}

/// Compares the account's stored templates with everything WhatsApp
/// returned (`fetched`, and the `unreadable` ones by name).
pub fn plan_sync(
    stored: &[Template],
    fetched: &[FetchedTemplate],
    unreadable: &[Unreadable],
    now: DateTime<Utc>,
) -> SyncPlan {
    let mut plan = SyncPlan::default();
    plan.counts.failed = unreadable.len() as u32;
    let stored_by_id: BTreeMap<&TemplateId, &Template> =
        stored.iter().map(|t| (&t.id, t)).collect();
    for f in fetched {
        match stored_by_id.get(&f.id) {
            None => {
                plan.counts.created += 1;
                plan.puts.push(Template {
                    id: f.id.clone(),
                    content: f.content.clone(),
                    status: f.status,
                    status_reason: f.reason.clone(),
                    created_at: now,
                    updated_at: now,
                    whatsapp_id: f.whatsapp_id.clone(),
                });
            }
            Some(t)
                if t.content == f.content
                    && t.status == f.status
                    && t.status_reason == f.reason
                    && t.whatsapp_id == f.whatsapp_id =>
            {
                plan.counts.unchanged += 1;
            }
            Some(t) => {
                plan.counts.updated += 1;
                plan.puts.push(Template {
                    content: f.content.clone(),
                    status: f.status,
                    status_reason: f.reason.clone(),
                    updated_at: now,
                    whatsapp_id: f.whatsapp_id.clone(),
                    ..(*t).clone()
                });
            }
        }
    }
    let seen: BTreeSet<(&str, &str)> = fetched
        .iter()
        .map(|f| (f.id.name(), f.id.language()))
        .chain(
            unreadable
                .iter()
                .filter_map(|u| u.name_language.as_ref())
                .map(|(n, l)| (n.as_str(), l.as_str())),
        )
        .collect();
    for t in stored {
        if seen.contains(&(t.id.name(), t.id.language())) {
            continue;
        }
        if t.status == Status::Deleted {
            plan.counts.unchanged += 1;
            continue;
        }
        plan.counts.deleted += 1;
        plan.puts.push(Template {
            status: Status::Deleted,
            status_reason: "no longer on WhatsApp".to_owned(),
            updated_at: now,
            ..t.clone()
        });
    }
    plan
}

#[cfg(test)]
mod tests;
