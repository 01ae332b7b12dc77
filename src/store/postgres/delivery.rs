//! Deliveries in PostgreSQL: claiming due sends under a lease, storing an
//! attempt's outcome, attaching the provider's message id, and applying
//! provider statuses (or keeping one that arrives before its message is
//! known). Each runs SERIALIZABLE: a status for a wamid not stored yet and
//! the outcome that stores it read what the other writes.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::queries::{MESSAGE_COLUMNS, message_state, put_early, state_of, write_delivery};
use super::retry::in_transaction;
use super::{PgStore, conn, consent, rows};
use crate::domain::delivery::{Delivery, StatusPlan, StatusTarget};
use crate::store::{
    AttachPlanner, Claim, ConsentLearner, FinishPlanner, MessageState, StatusPlanner, StatusReport,
    StoreError,
};

pub(super) async fn claim_due(
    store: &PgStore,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Claim>, StoreError> {
    let limit = limit as i64;
    in_transaction!(store, "claim deliveries", |tx| {
        // SKIP LOCKED: replicas claiming at once take different rows.
        let leased = conn::query(
            &tx,
            "claim deliveries",
            "WITH due AS (SELECT message_id, next_attempt_at AS was FROM deliveries \
                    WHERE next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $3 \
                    FOR UPDATE SKIP LOCKED) \
                 UPDATE deliveries d SET next_attempt_at = $2, fence = d.fence + 1 \
                 FROM due WHERE d.message_id = due.message_id \
                 RETURNING d.message_id, due.was, d.fence",
            &[&now, &lease_until, &limit],
        )
        .await?;
        let mut claims = Vec::with_capacity(leased.len());
        for row in leased {
            let id: Uuid = row.get(0);
            let was: Option<DateTime<Utc>> = row.get(1);
            let fence: i64 = row.get(2);
            let state = message_state(&tx, id).await?.ok_or_else(|| {
                StoreError::corrupt("deliveries", "a delivery names a missing message")
            })?;
            let delivery = state
                .delivery
                .ok_or_else(|| StoreError::corrupt("deliveries", "a claimed delivery vanished"))?;
            claims.push(Claim {
                message: state.message,
                delivery: Delivery {
                    next_attempt_at: was,
                    ..delivery
                },
                lease_until,
                fence: fence as u64,
            });
        }
        claims
    })
}

pub(super) async fn finish_attempt(
    store: &PgStore,
    claim: &Claim,
    next: &Delivery,
    plan: FinishPlanner<'_>,
    learn: ConsentLearner<'_>,
) -> Result<MessageState, StoreError> {
    let id = claim.message.message_id;
    in_transaction!(store, "store a delivery outcome", |tx| {
        let fence: Option<i64> = conn::query_opt(
            &tx,
            "read a delivery",
            "SELECT fence FROM deliveries WHERE message_id = $1",
            &[&id],
        )
        .await?
        .map(|row| row.get(0));
        if fence != Some(claim.fence as i64) {
            return Err(StoreError::LeaseLost { message_id: id });
        }
        let mut early = None;
        if let Some(wamid) = &next.wamid
            && let Some(row) = conn::query_opt(
                &tx,
                "take an early status",
                "DELETE FROM early_statuses WHERE wamid = $1 RETURNING *",
                &[wamid],
            )
            .await?
        {
            early = Some(rows::early_status(&row)?);
        }
        let next = plan(next.clone(), early.as_ref());
        write_delivery(&tx, id, &next).await?;
        let state = message_state(&tx, id)
            .await?
            .ok_or_else(|| StoreError::corrupt("deliveries", "names a missing message"))?;
        consent::learn(&tx, &state, learn).await?;
        state
    })
}

pub(super) async fn attach_wamid(
    store: &PgStore,
    id: Uuid,
    wamid: &str,
    plan: AttachPlanner<'_>,
    learn: ConsentLearner<'_>,
) -> Result<Option<MessageState>, StoreError> {
    in_transaction!(store, "attach a provider id", |tx| {
        let (by_wamid, by_id): (conn::Params, conn::Params) = (&[&wamid], &[&id]);
        let (state, taken, early) = conn::pipelined!(
            message_state(&tx, id),
            conn::query_opt(
                &tx,
                "find a wamid",
                "SELECT 1 FROM deliveries WHERE wamid = $1",
                by_wamid,
            ),
            conn::query_opt(
                &tx,
                "read an early status",
                "SELECT * FROM early_statuses WHERE wamid = $1",
                by_wamid,
            ),
        )?;
        let early = early.map(|row| rows::early_status(&row)).transpose()?;
        let planned = match (&state, taken) {
            (
                Some(MessageState {
                    delivery: Some(current),
                    ..
                }),
                None,
            ) => plan(current, early.as_ref()),
            _ => None,
        };
        match (state, planned) {
            (Some(state), Some(next)) => {
                // A new fence: a claim on the message can no longer
                // store its outcome.
                conn::pipelined!(
                    write_delivery(&tx, id, &next),
                    conn::execute(
                        &tx,
                        "fence off claims",
                        "UPDATE deliveries SET fence = fence + 1 WHERE message_id = $1",
                        by_id,
                    ),
                    conn::execute(
                        &tx,
                        "take an early status",
                        "DELETE FROM early_statuses WHERE wamid = $1",
                        by_wamid,
                    ),
                )?;
                let state = MessageState {
                    message: state.message,
                    delivery: Some(next),
                };
                consent::learn(&tx, &state, learn).await?;
                Some(state)
            }
            _ => None,
        }
    })
}

pub(super) async fn report_status(
    store: &PgStore,
    wamid: &str,
    plan: StatusPlanner<'_>,
    learn: ConsentLearner<'_>,
) -> Result<StatusReport, StoreError> {
    in_transaction!(store, "apply a status", |tx| {
        let known = conn::query_opt(
            &tx,
            "find a wamid",
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM deliveries d \
                     JOIN outbox o ON o.message_id = d.message_id WHERE d.wamid = $1"
            ),
            &[&wamid],
        )
        .await?;
        match known {
            Some(row) => {
                let state = state_of(&row)?;
                let delivery = state.delivery.clone().ok_or_else(|| {
                    StoreError::corrupt("deliveries", "a wamid without a delivery")
                })?;
                match plan(&StatusTarget::Known(delivery)) {
                    StatusPlan::Apply(next) => {
                        let id = state.message.message_id;
                        write_delivery(&tx, id, &next).await?;
                        let state = MessageState {
                            message: state.message,
                            delivery: Some(next),
                        };
                        consent::learn(&tx, &state, learn).await?;
                        StatusReport::Applied(Box::new(state))
                    }
                    _ => StatusReport::Unchanged,
                }
            }
            None => {
                let seen = conn::query_opt(
                    &tx,
                    "read an early status",
                    "SELECT * FROM early_statuses WHERE wamid = $1",
                    &[&wamid],
                )
                .await?
                .map(|row| rows::early_status(&row))
                .transpose()?;
                match plan(&StatusTarget::Unknown(seen)) {
                    StatusPlan::KeepEarly(keep) => {
                        put_early(&tx, wamid, &keep).await?;
                        StatusReport::Early
                    }
                    _ => StatusReport::Unchanged,
                }
            }
        }
    })
}
