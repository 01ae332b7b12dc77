//! TLS to PostgreSQL (SPEC §8): `sslmode` means what it means to libpq,
//! against a real PostgreSQL that takes TCP connections over TLS only and
//! presents a certificate for `localhost` from a CA made for the test.

mod common;
#[path = "pg/mod.rs"]
mod pg;

use std::path::Path;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA named `ca_name` and a server certificate it signed for
/// `server_name`: (CA, certificate, key), PEM.
fn ca_and_server(ca_name: &str, server_name: &str) -> (String, String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![server_name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, server_name);
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// Connection settings naming the server `host` while connecting to
/// 127.0.0.1, so the name the certificate must carry is `host`.
fn url(server: &pg::Postgres, host: &str, database: &str, tls: &str) -> String {
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user=postgres password={} dbname={database} \
         connect_timeout=5 {tls}",
        server.port,
        pg::PASSWORD
    )
}

/// wagate's connections to `database`: how many, and whether all use TLS.
fn encrypted_connections(server: &pg::Postgres, database: &str) -> String {
    server.psql(
        "postgres",
        &format!(
            "SELECT count(*) || ' ' || bool_and(s.ssl) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.datname = '{database}'"
        ),
    )
}

/// A write through a replica on `url` comes back, over connections that
/// are all encrypted.
async fn serves_over_tls(server: &pg::Postgres, database: &str, url: &str) {
    let replica = Server::start_with(&["--database-url", url]);
    let mut gateway = replica.gateway().await;
    gateway
        .record_inbound(inbound("+14155550100", "wamid.tls"))
        .await
        .expect("a write over TLS");
    let window = window(&replica, "+14155550100").await;
    assert_eq!(window.state(), pb::WindowState::Open);
    let connections = encrypted_connections(server, database);
    let (count, all_tls) = connections.split_once(' ').unwrap();
    assert!(count.parse::<u32>().unwrap() >= 1, "{connections}");
    assert_eq!(all_tls, "true", "every connection of wagate's is encrypted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_means_what_it_means_to_libpq() {
    let (ca, cert, key) = ca_and_server("wagate test database CA", "localhost");
    let server = pg::Postgres::start_tls(&cert, &key);
    let certs = tempfile::tempdir().unwrap();
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let (other_ca, _, _) = ca_and_server("some other CA", "localhost");
    let other_ca_file = certs.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, &other_ca).unwrap();
    let root = |file: &Path| format!("sslrootcert='{}'", file.display());

    // verify-full: our CA, and the name the certificate carries.
    let database = server.create_database();
    let full = url(
        &server,
        "localhost",
        &database,
        &format!("sslmode=verify-full {}", root(&ca_file)),
    );
    serves_over_tls(&server, &database, &full).await;

    // The same as a URL, with the root certificate percent-encoded.
    let database = server.create_database();
    let as_url = format!(
        "postgres://postgres:{}@localhost:{}/{database}?hostaddr=127.0.0.1\
         &sslmode=verify-full&sslrootcert={}",
        pg::PASSWORD,
        server.port,
        ca_file.display().to_string().replace('/', "%2F")
    );
    serves_over_tls(&server, &database, &as_url).await;

    // verify-ca checks the chain only, so another name is fine.
    let database = server.create_database();
    let ca_only = url(
        &server,
        "db.internal",
        &database,
        &format!("sslmode=verify-ca {}", root(&ca_file)),
    );
    serves_over_tls(&server, &database, &ca_only).await;

    // require encrypts without checking the certificate.
    let database = server.create_database();
    serves_over_tls(
        &server,
        &database,
        &url(&server, "127.0.0.1", &database, "sslmode=require"),
    )
    .await;

    // Refusals, each clear and at start, with nothing written.
    let database = server.create_database();
    let refusals = [
        (
            url(
                &server,
                "db.internal",
                &database,
                &format!("sslmode=verify-full {}", root(&ca_file)),
            ),
            "certificate not valid for name \"db.internal\"",
        ),
        (
            url(
                &server,
                "localhost",
                &database,
                &format!("sslmode=verify-full {}", root(&other_ca_file)),
            ),
            "UnknownIssuer",
        ),
        (
            url(&server, "localhost", &database, "sslmode=verify-full"),
            "need sslrootcert",
        ),
        (
            url(&server, "localhost", &database, "sslmode=disable"),
            "no encryption",
        ),
        // Client certificates are not supported: refused by name.
        (
            url(
                &server,
                "localhost",
                &database,
                "sslmode=require sslcert=/c.pem",
            ),
            "unknown option `sslcert`",
        ),
    ];
    for (url, reason) in refusals {
        // No ~/.postgresql/root.crt to fall back on.
        let err = refused_start(&[("HOME", "/nonexistent")], &["--database-url", &url]);
        assert!(
            err.contains("cannot open the PostgreSQL store") && err.contains(reason),
            "{url}: expected {reason:?} in\n{err}"
        );
    }
    assert_eq!(server.public_tables(&database), "0", "nothing was created");
}
