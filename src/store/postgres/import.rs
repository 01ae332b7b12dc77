//! Writes records read out of another store (`wagate migrate`): each batch
//! one transaction, every insert idempotent, so an interrupted import can
//! simply be run again.

use super::{
    PgStore, accounts, db_error, insert_inbound_id, insert_message, note_change, put_early,
    put_key, put_template, write_delivery, write_window,
};
use crate::store::{Record, StoreError};

impl PgStore {
    pub async fn import(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db_error("start an import"))?;
        for record in records {
            match record {
                Record::Window { pair, window } => write_window(&tx, pair, window).await?,
                Record::InboundId {
                    id,
                    pair,
                    inbound,
                    recorded_at,
                } => insert_inbound_id(&tx, id, pair, inbound, *recorded_at).await?,
                Record::Template(template) => put_template(&tx, template).await?,
                Record::Message(state) => {
                    let id = state.message.message_id;
                    let exists = tx
                        .query_opt("SELECT 1 FROM outbox WHERE message_id = $1", &[&id])
                        .await
                        .map_err(db_error("look up a message"))?
                        .is_some();
                    if !exists {
                        insert_message(&tx, &state.message).await?;
                    }
                    match &state.delivery {
                        Some(delivery) => write_delivery(&tx, id, delivery).await?,
                        None => note_change(&tx, id, None).await?,
                    }
                }
                Record::Key { key, record } => put_key(&tx, key.as_str(), record).await?,
                Record::EarlyStatus { wamid, status } => put_early(&tx, wamid, status).await?,
                Record::Account(account) => accounts::put_account(&tx, account).await?,
                Record::Number(number) => accounts::put_number(&tx, number).await?,
                Record::Consent { pair, consent } => {
                    super::consent::write(&tx, pair, Some(consent)).await?
                }
                Record::Reach {
                    scope,
                    customer,
                    reached_at,
                } => {
                    super::reach::write_reach(&tx, scope, customer, *reached_at).await?;
                }
                Record::LimitUsage { scope, usage } => {
                    super::reach::write_usage(&tx, scope, usage).await?;
                }
            }
        }
        tx.commit().await.map_err(db_error("commit an import"))?;
        Ok(())
    }
}
