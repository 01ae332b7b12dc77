//! Consent in PostgreSQL: one row per (business, customer) pair that has an
//! opt-out or a marketing backoff; a pair with neither has none.

use tokio_postgres::Row;

use super::conn;
use crate::domain::Pair;
use crate::domain::consent::{Consent, OptOut, Scope, Source};
use crate::store::{ConsentLearner, MessageState, StoreError};

const CONSENT: &str = "consent";

pub(super) fn from_row(row: &Row) -> Result<Consent, StoreError> {
    let corrupt = |detail: &str| StoreError::corrupt(CONSENT, detail);
    let scope: Option<&str> = row.get("opt_out_scope");
    let source: Option<&str> = row.get("opt_out_source");
    let at = row.get("opt_out_at");
    let opt_out = match (scope, source, at) {
        (None, None, None) => None,
        (Some(scope), Some(source), Some(at)) => Some(OptOut {
            scope: Scope::parse(scope).ok_or_else(|| corrupt("opt_out_scope"))?,
            source: Source::parse(source).ok_or_else(|| corrupt("opt_out_source"))?,
            at,
        }),
        _ => return Err(corrupt("half an opt-out")),
    };
    let limits: i32 = row.get("marketing_limits");
    Ok(Consent {
        opt_out,
        marketing_limited_until: row.get("marketing_limited_until"),
        marketing_limits: u32::try_from(limits).map_err(|_| corrupt("marketing_limits"))?,
    })
}

pub(super) async fn read(
    tx: &impl conn::Connection,
    pair: &Pair,
) -> Result<Option<Consent>, StoreError> {
    conn::query_opt(
        tx,
        "read consent",
        "SELECT * FROM consent WHERE business = $1 AND customer = $2",
        &[&pair.business.as_str(), &pair.customer.as_str()],
    )
    .await?
    .map(|row| from_row(&row))
    .transpose()
}

/// Keeps what the failure in `state`, if any, teaches about its pair's
/// consent, in the transaction that stores the state.
pub(super) async fn learn(
    tx: &impl conn::Connection,
    state: &MessageState,
    learn: ConsentLearner<'_>,
) -> Result<(), StoreError> {
    if state.error().is_none() {
        return Ok(());
    }
    let pair = &state.message.request.pair;
    let current = read(tx, pair).await?;
    match learn(state, current.as_ref()) {
        Some(next) => keep(tx, pair, &current, &next).await,
        None => Ok(()),
    }
}

/// Writes `next` as the pair's consent when it differs from `current`.
pub(super) async fn keep(
    tx: &impl conn::Connection,
    pair: &Pair,
    current: &Option<Consent>,
    next: &Option<Consent>,
) -> Result<(), StoreError> {
    if next == current {
        return Ok(());
    }
    write(tx, pair, next.as_ref()).await
}

/// Keeps `next` for the pair; `None` removes what was kept.
pub(super) async fn write(
    tx: &impl conn::Connection,
    pair: &Pair,
    next: Option<&Consent>,
) -> Result<(), StoreError> {
    let (business, customer) = (pair.business.as_str(), pair.customer.as_str());
    let Some(c) = next else {
        conn::execute(
            tx,
            "remove consent",
            "DELETE FROM consent WHERE business = $1 AND customer = $2",
            &[&business, &customer],
        )
        .await?;
        return Ok(());
    };
    let opt_out = c.opt_out.as_ref();
    let limits = i32::try_from(c.marketing_limits).unwrap_or(i32::MAX);
    conn::execute(
        tx,
        "write consent",
        "INSERT INTO consent (business, customer, opt_out_scope, opt_out_source, opt_out_at, \
            marketing_limited_until, marketing_limits) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (business, customer) DO UPDATE SET \
            opt_out_scope = EXCLUDED.opt_out_scope, opt_out_source = EXCLUDED.opt_out_source, \
            opt_out_at = EXCLUDED.opt_out_at, \
            marketing_limited_until = EXCLUDED.marketing_limited_until, \
            marketing_limits = EXCLUDED.marketing_limits",
        &[
            &business,
            &customer,
            &opt_out.map(|o| o.scope.as_str()),
            &opt_out.map(|o| o.source.as_str()),
            &opt_out.map(|o| o.at),
            &c.marketing_limited_until,
            &limits,
        ],
    )
    .await?;
    Ok(())
}
