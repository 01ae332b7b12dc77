//! The tonic services: protobuf in, domain rules and store in the middle,
//! protobuf or a rich status out.

mod accounts;
pub mod auth;
mod consent;
mod convert;
pub mod edge;
mod gateway;
mod page;
mod rich;
pub mod status;
mod templates;
mod window_watch;
mod windows;

pub use accounts::AccountRegistryService;
pub use gateway::GatewayService;
pub use templates::TemplateRegistryService;
pub use window_watch::WatchLimits;
