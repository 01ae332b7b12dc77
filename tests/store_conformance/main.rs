//! One conformance suite, every backend: each case in `cases.rs` is written
//! once and instantiated here for each store, so a rule cannot behave
//! differently on one of them without a failing test.

mod accounts;
mod cancel;
mod cases;
mod changes;
mod consent;
mod limit;
mod listing;
#[path = "../pg/mod.rs"]
mod pg;
mod rich;

use async_trait::async_trait;
use wagate::domain::send::DeliveryMode;
use wagate::service::Service;
use wagate::store::postgres::{PgConfig, PgStore};
use wagate::store::sled::{SledConfig, SledStore};

/// sled on a temporary directory; reopening drops nothing but the handle.
struct Sled {
    dir: tempfile::TempDir,
}

impl Sled {
    fn new() -> Sled {
        Sled {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

#[async_trait]
impl cases::Harness for Sled {
    async fn open(&self) -> Service {
        let store = SledStore::open(&SledConfig {
            path: self.dir.path().join("db"),
            cache_capacity_bytes: 8 << 20,
        })
        .unwrap();
        Service::new(std::sync::Arc::new(store), DeliveryMode::Deliver)
    }

    async fn another_replica(&self, first: &Service) -> Service {
        first.clone()
    }

    /// sled's store finishes a call on its first poll (the server's
    /// write-ahead log, which waits for fsync, is not part of it).
    fn calls_can_be_cancelled_part_way(&self) -> bool {
        false
    }
}

/// A database of its own on the test binary's PostgreSQL; reopening
/// connects again.
struct Postgres {
    url: String,
}

impl Postgres {
    fn new() -> Postgres {
        let server = pg::shared();
        Postgres {
            url: server.url(&server.create_database()),
        }
    }
}

#[async_trait]
impl cases::Harness for Postgres {
    async fn open(&self) -> Service {
        let store = PgStore::connect(&PgConfig {
            url: self.url.clone(),
            pool_size: 8,
        })
        .await
        .unwrap();
        Service::new(std::sync::Arc::new(store), DeliveryMode::Deliver)
    }

    async fn another_replica(&self, _first: &Service) -> Service {
        self.open().await
    }
}

/// Instantiates every case for one backend, as a module of tests.
macro_rules! conformance {
    ($backend:ident, $harness:expr) => {
        mod $backend {
            use super::*;
            conformance!(@cases $harness;
                inbound_opens_dedupes_and_survives_reopen,
                too_old_inbound_is_remembered_for_dedupe_only,
                sends_are_idempotent_and_dry_runs_store_nothing,
                expired_idempotency_key_is_taken_over,
                concurrent_sends_with_one_key_store_one_message,
                concurrent_inbounds_for_one_customer_lose_no_update,
                sweep_drops_windows_closed_past_retention_but_spares_extended_ones,
                sweep_forgets_inbound_ids_after_retention,
                sweep_drops_idempotency_records_after_24h,
                templates_upsert_status_list_and_delete,
                template_sends_read_the_registry_in_the_same_transaction,
                the_background_sweeper_drains_a_backlog_larger_than_one_step,
                a_claim_is_exclusive_until_released,
                times_finer_than_stored_come_back_as_stored,
                retries_are_due_at_their_time_and_done_messages_leave_the_queue,
                a_status_that_beats_the_api_answer_is_applied_when_the_wamid_arrives,
                a_provider_id_learned_from_a_status_stops_the_retries,
                watchers_hear_every_stored_change,
                statuses_for_wamids_that_never_arrive_are_swept_after_a_day,
                the_send_rate_is_shared_by_every_replica,
                sweeping_on_every_replica_at_once_removes_each_record_once,
                windows_are_listed_by_expiry_a_page_at_a_time,
                window_changes_are_logged_read_in_order_and_swept,
                cancelled_calls_store_all_or_nothing_and_the_store_keeps_serving,
                rich_contents_are_stored_and_read_back_as_sent,
                accounts_and_numbers_follow_the_registry_rules_and_survive_reopen,
                concurrent_registrations_keep_a_phone_number_id_on_one_number,
                each_number_sends_its_own_accounts_template,
                a_template_sync_writes_one_accounts_registry_at_once,
                a_number_sent_for_by_clickatell_keeps_its_integration,
                opt_outs_and_whatsapps_limits_are_kept_per_pair_on_every_replica,
                the_messaging_limit_counts_each_customer_once_on_every_replica,
                an_account_with_its_own_messaging_limit_is_counted_apart,
                a_burst_of_new_customers_fills_the_limit_exactly_and_every_send_is_answered,
                many_window_reads_at_once_each_get_their_own_pair,
            );
        }
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                crate::cases::$case(&harness).await;
            }
        )*
    };
}

conformance!(sled, Sled::new());
conformance!(postgres, Postgres::new());

/// PostgreSQL answers many GetWindow reads at once with shared statements
/// (`store::postgres::window_reads`), and each still gets its own pair's
/// answer. Fails if no read was gathered, so the case above cannot pass
/// by running every read on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_gathers_window_reads_under_load() {
    let harness = Postgres::new();
    let writer = cases::Harness::open(&harness).await;
    let store = std::sync::Arc::new(
        PgStore::connect(&PgConfig {
            url: harness.url.clone(),
            pool_size: 8,
        })
        .await
        .unwrap(),
    );
    let reader = Service::new(store.clone(), DeliveryMode::Deliver);
    consent::many_window_reads_at_once(&writer, &reader).await;
    let gathered = store.reads_gathered();
    assert!(
        gathered > 0 && gathered <= 600,
        "{gathered} of 600 reads gathered"
    );
}
