//! The pure rules of wagate: no I/O, no async, no transport types; the
//! current time is always passed in.

pub mod account;
pub mod clickatell;
pub mod cloud_api;
pub mod consent;
pub mod delivery;
pub mod error;
pub mod ids;
pub mod messaging_limit;
pub mod phone;
pub mod placeholder;
pub mod policy;
pub mod pricing;
pub mod retention;
pub mod rich;
pub mod send;
pub mod template;
pub mod template_rules;
pub mod template_sync;
pub mod text;
pub mod time;
pub mod window;
pub mod window_events;
pub mod window_query;

pub use error::{Reason, Rejection, RejectionKind};
pub use ids::{IdempotencyKey, InboundMessageId};
pub use phone::{Pair, PhoneNumber};
pub use pricing::{Pricing, PricingCategory};
pub use send::{
    Accepted, Content, Decision, MessageKind, MessageStatus, OutboxMessage, SendRequest,
};
pub use template::{
    Button, Category, SendParameters, Status, Template, TemplateContent, TemplateId,
};
pub use window::{
    EntryPoint, Inbound, InboundKind, InboundOutcome, Window, WindowState, WindowView,
};
