//! RecordInbound on sled: one section reads the inbound id and the window,
//! asks the domain's plan, and stages the id (with its age entry), the
//! window (with its expiry entry) and the window-change log.

use sled::IVec;

use super::records::{InboundRecord, WindowRecord, encode};
use super::wal::Tree;
use super::{INBOUND_IDS, SledStore, WINDOWS, changes, corrupt, keys, read, read_record, reindex};
use crate::domain::window::{InboundPlan, InboundSnapshot};
use crate::domain::{Inbound, InboundMessageId, Pair, Window};
use crate::store::{Planner, StoreError};

impl SledStore {
    pub(super) async fn write_inbound(
        &self,
        pair: &Pair,
        message_id: &InboundMessageId,
        inbound: &Inbound,
        plan: Planner<'_, InboundSnapshot, InboundPlan>,
    ) -> Result<InboundPlan, StoreError> {
        let pair_key = keys::pair(pair);
        let id = message_id.as_str().as_bytes();
        let (plan, lsn) = {
            let mut w = self.wal.section()?;
            let window: Option<Window> =
                read::<WindowRecord, _>(WINDOWS, w.get(Tree::Windows, &pair_key)?)?;
            let seen_for = read_record::<InboundRecord>(INBOUND_IDS, w.get(Tree::InboundIds, id)?)?
                .map(|seen| seen.pair().map_err(corrupt(INBOUND_IDS)))
                .transpose()?;
            let plan = plan(&InboundSnapshot {
                seen_for,
                window: window.clone(),
            })
            .map_err(StoreError::Rejected)?;
            if let Some(at) = plan.remember_at {
                let record = InboundRecord::new(
                    pair,
                    inbound.received_at,
                    inbound.kind,
                    inbound.entry_point,
                    at,
                );
                w.insert(Tree::InboundIds, id, encode(&record));
                w.insert(Tree::InboundAge, keys::timed(at, id), IVec::default());
            }
            if let Some((kind, next)) = plan.logged_change() {
                changes::log(&mut w, &pair_key, kind, pair, next);
            }
            if let Some(next) = &plan.write_window {
                reindex(
                    &mut w,
                    Tree::WindowExpiry,
                    &pair_key,
                    window.as_ref().map(|current| current.expires_at),
                    next.expires_at,
                );
                w.insert(Tree::Windows, pair_key, encode(&WindowRecord::from(next)));
            }
            (plan, w.commit())
        };
        // Duplicates wait too: the first recording may still be in flight.
        self.durable(lsn).await?;
        Ok(plan)
    }
}
