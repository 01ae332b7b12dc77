//! `wagate migrate --from <data-dir> --to <database-url>`: copies a sled
//! data directory into PostgreSQL, so a deployment can move from one
//! replica to several. Stop the sled-backed wagate first (sled allows one
//! process). Every write is idempotent: an interrupted run can be repeated.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;

use crate::config::Secret;
use crate::store::Record;
use crate::store::postgres::{PgConfig, PgStore};
use crate::store::sled::{SledConfig, SledStore};

/// Records per import transaction.
const BATCH: usize = 500;

#[derive(Debug, Parser)]
#[command(
    name = "wagate migrate",
    about = "Copy a sled data directory into PostgreSQL"
)]
pub struct MigrateArgs {
    /// The sled data directory to read (wagate must not be running on it).
    #[arg(long)]
    pub from: PathBuf,
    /// The PostgreSQL database to write (schema migrations are applied).
    #[arg(long, env = "WAGATE_DATABASE_URL", value_parser = |s: &str| Ok::<_, String>(Secret::new(s)))]
    pub to: Secret,
}

fn kind(record: &Record) -> &'static str {
    match record {
        Record::Window { .. } => "windows",
        Record::InboundId { .. } => "inbound ids",
        Record::Template(_) => "templates",
        Record::Message(_) => "messages",
        Record::Key { .. } => "idempotency keys",
        Record::EarlyStatus { .. } => "early statuses",
        Record::Account(_) => "accounts",
        Record::Number(_) => "business numbers",
        Record::Consent { .. } => "consent records",
        Record::Reach { .. } => "messaging-limit reaches",
        Record::LimitUsage { .. } => "messaging-limit usage records",
    }
}

/// Copies everything; returns how many records of each kind.
pub async fn run(args: &MigrateArgs) -> Result<BTreeMap<&'static str, u64>, String> {
    if !args.from.join("conf").exists() && !args.from.join("db").exists() {
        return Err(format!(
            "{} is not a wagate data directory",
            args.from.display()
        ));
    }
    let source = SledStore::open(&SledConfig {
        path: args.from.clone(),
        cache_capacity_bytes: 64 << 20,
    })
    .map_err(|e| format!("cannot open {}: {e}", args.from.display()))?;
    let target = PgStore::connect(&PgConfig {
        url: args.to.expose().to_owned(),
        pool_size: 2,
    })
    .await
    .map_err(|e| format!("cannot open the PostgreSQL store: {e}"))?;
    let mut counts = BTreeMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    let settled = source
        .settled()
        .await
        .map_err(|e| format!("cannot read {}: {e}", args.from.display()))?;
    for record in settled.export() {
        let record = record.map_err(|e| format!("cannot read {}: {e}", args.from.display()))?;
        *counts.entry(kind(&record)).or_insert(0) += 1;
        batch.push(record);
        if batch.len() == BATCH {
            target.import(&batch).await.map_err(|e| e.to_string())?;
            batch.clear();
        }
    }
    target.import(&batch).await.map_err(|e| e.to_string())?;
    Ok(counts)
}
