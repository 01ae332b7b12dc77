//! The stored form of the free-form contents beyond text (media,
//! interactive, location, reaction), shared by both stores: JSON of the
//! domain types' serde derives, tagged by content.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::Content;
use crate::domain::rich::{Interactive, Location, Media, Reaction};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Rich {
    Media(Media),
    Interactive(Interactive),
    Location(Location),
    Reaction(Reaction),
}

/// The stored form of `content`; `None` for text and templates, which each
/// store keeps in a form of its own.
pub fn encode(content: &Content) -> Option<Value> {
    let rich = match content {
        Content::Text(_) | Content::Template { .. } => return None,
        Content::Media(m) => Rich::Media(m.clone()),
        Content::Interactive(i) => Rich::Interactive(i.clone()),
        Content::Location(l) => Rich::Location(l.clone()),
        Content::Reaction(r) => Rich::Reaction(r.clone()),
    };
    Some(serde_json::to_value(rich).expect("rich contents encode as JSON"))
}

pub fn decode(value: &Value) -> Result<Content, serde_json::Error> {
    Ok(match Rich::deserialize(value)? {
        Rich::Media(m) => Content::Media(m),
        Rich::Interactive(i) => Content::Interactive(i),
        Rich::Location(l) => Content::Location(l),
        Rich::Reaction(r) => Content::Reaction(r),
    })
}
