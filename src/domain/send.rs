//! Gating an outbound send (SPEC §3): free-form needs an open window,
//! templates need to be approved and filled exactly; then it is priced.

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::account::{self, BusinessNumber, Route};
use super::error::{Reason, Rejection};
use super::ids::IdempotencyKey;
use super::messaging_limit::{self, LimitScope, LimitSnapshot, MessagingLimit, ReachWrite};
use super::phone::Pair;
use super::policy::SendPolicy;
use super::pricing::{Pricing, price};
use super::rich::{
    self, Action, Interactive, InteractiveHeader, Location, Media, MediaSource, Reaction,
};
use super::template::{
    Category, ComponentParameters, HeaderValue, SendParameters, Template, TemplateId,
};
use super::window::Window;

const MAX_TEXT_CHARS: usize = 4096;
/// How long an idempotency key answers with its first send (SPEC §3.4).
pub const IDEMPOTENCY_TTL: TimeDelta = TimeDelta::hours(24);

/// What a send carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    Template {
        id: TemplateId,
        parameters: SendParameters,
    },
    Media(Media),
    Interactive(Interactive),
    Location(Location),
    Reaction(Reaction),
}

impl Content {
    pub fn text(body: &str) -> Result<Content, Rejection> {
        let chars = body.chars().count();
        if !(1..=MAX_TEXT_CHARS).contains(&chars) {
            return Err(Rejection::new(
                Reason::InvalidText,
                format!("must be 1-{MAX_TEXT_CHARS} characters, got {chars}"),
            )
            .at("text.body"));
        }
        super::text::refuse_controls(body)
            .map_err(|rule| Rejection::new(Reason::InvalidText, rule).at("text.body"))?;
        Ok(Content::Text(body.to_owned()))
    }

    pub fn template_id(&self) -> Option<&TemplateId> {
        match self {
            Content::Template { id, .. } => Some(id),
            _ => None,
        }
    }

    /// What the customer reads, for a free-form content (SPEC §3:
    /// `rendered_text`); `None` for a template, which its registry renders.
    pub fn free_form_text(&self) -> Option<String> {
        Some(match self {
            Content::Text(body) => body.clone(),
            Content::Template { .. } => return None,
            Content::Media(media) => rich::media_summary(media),
            Content::Interactive(interactive) => rich::interactive_summary(interactive),
            Content::Location(location) => rich::location_summary(location),
            Content::Reaction(reaction) => rich::reaction_summary(reaction),
        })
    }
}

/// A validated send request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    pub pair: Pair,
    pub idempotency_key: IdempotencyKey,
    pub content: Content,
}

/// A digest of what a send asks for (everything but the key and dry_run),
/// stable across releases, so a reused idempotency key can be told from a retry.
pub type Fingerprint = [u8; 32];

impl SendRequest {
    pub fn fingerprint(&self) -> Fingerprint {
        let mut canonical = Canonical::default();
        canonical.str(self.pair.business.as_str());
        canonical.str(self.pair.customer.as_str());
        match &self.content {
            Content::Text(body) => {
                canonical.tag(1);
                canonical.str(body);
            }
            Content::Template { id, parameters } => {
                canonical.tag(2);
                canonical.str(id.name());
                canonical.str(id.language());
                canonical.component(&parameters.body);
                canonical.component(&parameters.header);
                canonical.len(parameters.buttons.len());
                for (index, value) in &parameters.buttons {
                    canonical.len(*index as usize);
                    canonical.str(value);
                }
                // Each only when present, so earlier sends keep their digest.
                if !parameters.quick_replies.is_empty() {
                    canonical.tag(8);
                    canonical.len(parameters.quick_replies.len());
                    for (index, payload) in &parameters.quick_replies {
                        canonical.len(*index as usize);
                        canonical.str(payload);
                    }
                }
                if let Some(header) = &parameters.header_media {
                    canonical.tag(7);
                    match header {
                        HeaderValue::Media {
                            kind,
                            source,
                            filename,
                        } => {
                            canonical.str(kind.as_str());
                            canonical.source(source);
                            canonical.opt(filename);
                        }
                        HeaderValue::Location(location) => canonical.location(location),
                    }
                }
            }
            Content::Media(media) => {
                canonical.tag(3);
                canonical.str(media.kind.as_str());
                canonical.source(&media.source);
                canonical.opt(&media.caption);
                canonical.opt(&media.filename);
            }
            Content::Interactive(interactive) => {
                canonical.tag(4);
                match &interactive.header {
                    None => canonical.tag(0),
                    Some(InteractiveHeader::Text(text)) => {
                        canonical.tag(1);
                        canonical.str(text);
                    }
                    Some(InteractiveHeader::Media {
                        kind,
                        source,
                        filename,
                    }) => {
                        canonical.tag(2);
                        canonical.str(kind.as_str());
                        canonical.source(source);
                        canonical.opt(filename);
                    }
                }
                canonical.str(&interactive.body);
                canonical.opt(&interactive.footer);
                canonical.action(&interactive.action);
            }
            Content::Location(location) => {
                canonical.tag(5);
                canonical.location(location);
            }
            Content::Reaction(reaction) => {
                canonical.tag(6);
                canonical.str(&reaction.message_id);
                canonical.str(&reaction.emoji);
            }
        }
        canonical.0.finalize().into()
    }
}

/// Length-prefixed fields, so no two different requests encode alike.
#[derive(Default)]
struct Canonical(Sha256);

impl Canonical {
    fn tag(&mut self, tag: u8) {
        self.0.update([tag]);
    }
    fn len(&mut self, len: usize) {
        self.0.update((len as u64).to_be_bytes());
    }
    fn str(&mut self, value: &str) {
        self.len(value.len());
        self.0.update(value.as_bytes());
    }
    fn source(&mut self, source: &MediaSource) {
        match source {
            MediaSource::Link(link) => {
                self.tag(1);
                self.str(link);
            }
            MediaSource::Id(id) => {
                self.tag(2);
                self.str(id);
            }
        }
    }
    fn location(&mut self, location: &Location) {
        self.0.update(location.latitude.get().to_be_bytes());
        self.0.update(location.longitude.get().to_be_bytes());
        self.opt(&location.name);
        self.opt(&location.address);
    }
    fn opt(&mut self, value: &Option<String>) {
        match value {
            None => self.tag(0),
            Some(value) => {
                self.tag(1);
                self.str(value);
            }
        }
    }
    fn action(&mut self, action: &Action) {
        match action {
            Action::Buttons(buttons) => {
                self.tag(1);
                self.len(buttons.len());
                for button in buttons {
                    self.str(&button.id);
                    self.str(&button.title);
                }
            }
            Action::List { button, sections } => {
                self.tag(2);
                self.str(button);
                self.len(sections.len());
                for section in sections {
                    self.opt(&section.title);
                    self.len(section.rows.len());
                    for row in &section.rows {
                        self.str(&row.id);
                        self.str(&row.title);
                        self.opt(&row.description);
                    }
                }
            }
            Action::CallToActionUrl { display_text, url } => {
                self.tag(3);
                self.str(display_text);
                self.str(url);
            }
        }
    }
    fn component(&mut self, parameters: &ComponentParameters) {
        self.len(parameters.positional.len());
        for value in &parameters.positional {
            self.str(value);
        }
        self.len(parameters.named.len());
        for (name, value) in &parameters.named {
            self.str(name);
            self.str(value);
        }
    }
}

/// What a send's idempotency key means, given the key's first accepted send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// The same request within 24h: answer with the first send again.
    Replay,
    /// The first use is older than 24h: this send takes the key over.
    Expired,
}

pub fn check_key_reuse(
    first: &Fingerprint,
    first_at: DateTime<Utc>,
    request: &Fingerprint,
    now: DateTime<Utc>,
) -> Result<KeyUse, Rejection> {
    if now >= first_at + IDEMPOTENCY_TTL {
        return Ok(KeyUse::Expired);
    }
    if first != request {
        return Err(Rejection::new(
            Reason::IdempotencyKeyReused,
            "was already used within 24 hours for a different request",
        )
        .at("idempotency_key"));
    }
    Ok(KeyUse::Replay)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    FreeForm,
    Template,
}

/// What an accepted send answers: how it renders and how it is priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub kind: MessageKind,
    pub rendered_text: String,
    pub template_category: Option<Category>,
    pub pricing: Pricing,
    pub free_until: Option<DateTime<Utc>>,
}

/// The outcome of gating a send, with the pair's window as it must be stored
/// afterwards when the send starts a free entry point period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub accepted: Accepted,
    pub window_update: Option<Window>,
}

/// Gates one send against the pair's window and the named template (looked
/// up by the caller; `None` when it does not exist).
pub fn decide(
    content: &Content,
    template: Option<&Template>,
    window: Option<&Window>,
    now: DateTime<Utc>,
) -> Result<Decision, Rejection> {
    let window_open = window.is_some_and(|w| w.is_open(now));
    let (kind, rendered_text, template_category) = match content {
        Content::Template { id, parameters } => {
            let template = template.ok_or_else(|| {
                Rejection::new(
                    Reason::TemplateNotFound,
                    format!("no template {}/{} is registered", id.name(), id.language()),
                )
                .at("template.name")
            })?;
            template.check_sendable()?;
            let rendered = template
                .fill(parameters)
                .map_err(|e| e.within("template"))?;
            (
                MessageKind::Template,
                rendered,
                Some(template.content.category),
            )
        }
        free_form => {
            if !window_open {
                return Err(Rejection::new(
                    Reason::WindowClosed,
                    "no customer service window is open for this pair: free-form messages (text, media, interactive, location, reaction) need an inbound from the customer in the last 24 hours; send an approved template instead",
                ));
            }
            let text = free_form.free_form_text().unwrap_or_default();
            (MessageKind::FreeForm, text, None)
        }
    };
    let window_update = window.and_then(|w| w.after_accepted_send(now));
    let free_until = window_update.as_ref().or(window).and_then(|w| w.free_until);
    let in_free_period = free_until.is_some_and(|until| now < until);
    Ok(Decision {
        accepted: Accepted {
            kind,
            rendered_text,
            template_category,
            pricing: price(template_category, window_open, in_free_period),
            free_until: free_until.filter(|_| in_free_period),
        },
        window_update,
    })
}

/// Where an outbound message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    Accepted,
}

/// An accepted send as kept in the outbox: enough to answer an idempotent
/// retry with the first answer and to deliver it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub message_id: Uuid,
    pub request: SendRequest,
    pub fingerprint: Fingerprint,
    pub accepted: Accepted,
    pub accepted_at: DateTime<Utc>,
    pub status: MessageStatus,
}

/// An idempotency key's first accepted send, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub fingerprint: Fingerprint,
    pub message_id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// Whether accepted sends are queued for delivery or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    Deliver,
    RecordOnly,
}

/// What the store holds for one send: its key's first use, the pair's
/// window and the named template.
#[derive(Debug, Clone, Default)]
pub struct SendSnapshot {
    pub first: Option<KeyRecord>,
    pub window: Option<Window>,
    /// The named template in every account that has one by that name and
    /// language; the plan picks the sending number's account's.
    pub templates: Vec<Template>,
    /// The sending business number, where registered.
    pub sender: Option<BusinessNumber>,
    /// Whether any account is registered (until then every number sends,
    /// in the default account).
    pub any_account: bool,
    /// The pair's opt-outs and marketing backoff; read for templates only
    /// (nothing else is refused for them).
    pub consent: Option<super::consent::Consent>,
    /// The sending number's account and the default account, as stored
    /// (for templates: their messaging limits).
    pub accounts: Vec<super::account::Account>,
    /// The customer's reach and the scope's usage, read for templates when
    /// a messaging limit applies (see [`messaging_limit_of`]).
    pub limit: Option<LimitSnapshot>,
}

/// What one send writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendPlan {
    /// The same request within 24h: answer with the stored first send.
    Replay { message_id: Uuid },
    /// A new message: store all of it.
    Accept(Box<AcceptPlan>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptPlan {
    pub message: OutboxMessage,
    /// The key's record, replacing `expired` (its use older than 24h that
    /// was not swept yet) if there was one.
    pub key: KeyRecord,
    pub expired: Option<KeyRecord>,
    /// The pair's window when the send started a free entry point period.
    pub window: Option<Window>,
    /// The delivery to queue; `None` when record-only.
    pub delivery: Option<super::delivery::Delivery>,
    /// The customer newly reached under the messaging limit, if so.
    pub reach: Option<ReachWrite>,
}

/// The messaging limit a send counts against and its scope, from what was
/// read: only templates can reach a customer outside their window; the
/// sending account's own limit, else the deployment's; `None` when that is
/// unlimited (then nothing more is read or written for it).
pub fn messaging_limit_of(
    request: &SendRequest,
    policy: &SendPolicy,
    snapshot: &SendSnapshot,
) -> Option<(LimitScope, MessagingLimit)> {
    request.content.template_id()?;
    let sending = account::sending_account(
        &request.pair.business,
        snapshot.sender.as_ref(),
        snapshot.any_account,
    )
    .ok()?;
    let account = snapshot.accounts.iter().find(|a| a.id == sending);
    messaging_limit::applicable(policy.messaging_limit, account)
}

/// Plans one send: a replay of the key's first answer, or the message to
/// store with everything that goes with it. A refusal writes nothing.
pub fn plan(
    snapshot: &SendSnapshot,
    request: &SendRequest,
    message_id: Uuid,
    now: DateTime<Utc>,
    mode: DeliveryMode,
    policy: &SendPolicy,
) -> Result<SendPlan, Rejection> {
    let fingerprint = request.fingerprint();
    let mut expired = None;
    if let Some(first) = &snapshot.first {
        match check_key_reuse(&first.fingerprint, first.created_at, &fingerprint, now)? {
            KeyUse::Replay => {
                return Ok(SendPlan::Replay {
                    message_id: first.message_id,
                });
            }
            KeyUse::Expired => expired = Some(first.clone()),
        }
    }
    let account = account::sending_account(
        &request.pair.business,
        snapshot.sender.as_ref(),
        snapshot.any_account,
    )?;
    // What the number's provider cannot carry is refused before anything is
    // stored, never sent in part.
    if let Some(BusinessNumber {
        route: Route::Clickatell(_),
        ..
    }) = &snapshot.sender
    {
        super::clickatell::check_carries(&request.content)?;
    }
    let template = snapshot
        .templates
        .iter()
        .find(|t| *t.id.account() == account);
    let decision = decide(&request.content, template, snapshot.window.as_ref(), now)?;
    policy.check_marketing(&request.pair.customer, decision.accepted.template_category)?;
    super::consent::check_send(
        snapshot.consent.as_ref(),
        decision.accepted.template_category,
        snapshot.window.as_ref().is_some_and(|w| w.is_open(now)),
        now,
    )?;
    let reach = match (
        messaging_limit_of(request, policy, snapshot),
        &snapshot.limit,
    ) {
        (Some((scope, limit)), Some(read)) => messaging_limit::plan_reach(
            limit,
            &scope,
            !snapshot.window.as_ref().is_some_and(|w| w.is_open(now)),
            Some(read),
            now,
        )?,
        // A store that did not read the scope's usage: counting from an
        // empty one would overwrite the real count, so count nothing.
        (Some(_), None) => {
            debug_assert!(false, "a limited send planned without its usage");
            None
        }
        (None, _) => None,
    };
    Ok(SendPlan::Accept(Box::new(AcceptPlan {
        message: OutboxMessage {
            message_id,
            request: request.clone(),
            fingerprint,
            accepted: decision.accepted,
            accepted_at: now,
            status: MessageStatus::Accepted,
        },
        key: KeyRecord {
            fingerprint,
            message_id,
            created_at: now,
        },
        expired,
        window: decision.window_update,
        delivery: (mode == DeliveryMode::Deliver).then(|| super::delivery::Delivery::queued(now)),
        reach,
    })))
}

/// An accepted message from +15550001111 to +27821234567 carrying
/// `content`, for the tests of the formats that send it.
#[cfg(test)]
pub fn test_message(content: Content) -> OutboxMessage {
    use crate::domain::{PhoneNumber, Pricing, PricingCategory};
    OutboxMessage {
        message_id: Uuid::nil(),
        request: SendRequest {
            pair: Pair {
                business: PhoneNumber::parse("+15550001111").unwrap(),
                customer: PhoneNumber::parse("+27821234567").unwrap(),
            },
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
            content,
        },
        fingerprint: [0; 32],
        accepted: Accepted {
            kind: MessageKind::FreeForm,
            rendered_text: String::new(),
            template_category: None,
            pricing: Pricing {
                category: PricingCategory::Service,
                billable: false,
            },
            free_until: None,
        },
        accepted_at: Utc::now(),
        status: MessageStatus::Accepted,
    }
}

#[cfg(test)]
mod tests;
