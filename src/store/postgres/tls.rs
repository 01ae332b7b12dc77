//! TLS to PostgreSQL with rustls, with libpq's `sslmode` meanings.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` and leaves
//! certificate checks to the connector; it rejects `verify-ca`,
//! `verify-full` and `sslrootcert`. So the connection string is read here
//! first: those two options are taken out (a `verify-*` mode becomes
//! `require`, so the connection still refuses to go unencrypted) and the
//! connector is built to check what the mode promises:
//!
//! | sslmode | encrypted | chain checked | host name checked |
//! | --- | --- | --- | --- |
//! | disable | no | – | – |
//! | prefer (default) | when offered | no | no |
//! | require | yes | no | no |
//! | verify-ca | yes | yes | no |
//! | verify-full | yes | yes | yes |
//!
//! The roots are `sslrootcert`: a PEM file, or `system` for the Mozilla
//! roots; without it, `~/.postgresql/root.crt` as libpq reads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// What the server's certificate must prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verify {
    /// Encryption only (`prefer`, `require`), as libpq does.
    Nothing,
    /// Signed by a trusted root (`verify-ca`).
    Chain,
    /// Signed by a trusted root and naming the host (`verify-full`).
    ChainAndHost,
}

/// The TLS options taken out of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsOptions {
    pub verify: Verify,
    /// `sslrootcert` as written.
    pub root_cert: Option<String>,
}

/// Splits `url` into what tokio-postgres parses and the TLS options it
/// does not know.
pub(super) fn take_tls_options(url: &str) -> Result<(String, TlsOptions), StoreError> {
    let mut options = TlsOptions {
        verify: Verify::Nothing,
        root_cert: None,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        take_from_url(url, &mut options)?
    } else {
        take_from_key_values(url, &mut options)?
    };
    Ok((rest, options))
}

/// Applies one option; `Some(replacement)` when it stays in the string.
fn take_option(
    key: &str,
    value: &str,
    options: &mut TlsOptions,
) -> Result<Option<String>, StoreError> {
    match key {
        "sslmode" => {
            let (verify, passed_on) = match value {
                "verify-ca" => (Verify::Chain, "require"),
                "verify-full" => (Verify::ChainAndHost, "require"),
                other => (Verify::Nothing, other),
            };
            options.verify = verify;
            Ok(Some(passed_on.to_owned()))
        }
        "sslrootcert" => {
            options.root_cert = Some(value.to_owned());
            Ok(None)
        }
        _ => Ok(Some(value.to_owned())),
    }
}

fn take_from_url(url: &str, options: &mut TlsOptions) -> Result<String, StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_owned());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|error| StoreError::unavailable("parse the database URL", error))?;
        match take_option(key, &decoded, options)? {
            Some(value) if value == decoded => kept.push(pair.to_owned()),
            Some(value) => kept.push(format!("{key}={value}")),
            None => {}
        }
    }
    Ok(if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

/// libpq's `key = value` form: values may be single-quoted, and `\` escapes
/// the next character. Every kept value is written back quoted.
fn take_from_key_values(text: &str, options: &mut TlsOptions) -> Result<String, StoreError> {
    let malformed = |what: &str| {
        StoreError::unavailable(
            "parse the database URL",
            format!("malformed connection string: {what}"),
        )
    };
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(malformed(&format!("`{key}` has no `=`")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(malformed(&format!("`{key}` has no closing quote"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if let Some(value) = take_option(&key, &value, options)? {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok(kept.join(" "))
}

/// The connector for `options`; it is used only when the server is asked
/// for TLS (`sslmode` other than `disable`).
pub(super) fn connector(options: &TlsOptions) -> Result<MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |error: rustls::Error| StoreError::unavailable("set up TLS", error);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?;
    let config = if options.verify == Verify::Nothing {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptionOnly(provider)))
            .with_no_client_auth()
    } else {
        let roots = Arc::new(root_store(options.root_cert.as_deref())?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|error| StoreError::unavailable("set up TLS", error))?;
        if options.verify == Verify::ChainAndHost {
            builder.with_webpki_verifier(webpki).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyHostName(webpki)))
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn root_store(root_cert: Option<&str>) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    if root_cert == Some("system") {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    }
    let path = match root_cert {
        Some(path) => PathBuf::from(path),
        None => default_root_cert().ok_or_else(|| {
            StoreError::unavailable(
                "set up TLS",
                "sslmode=verify-ca and verify-full need sslrootcert=<PEM file> (or =system), \
                 or ~/.postgresql/root.crt",
            )
        })?,
    };
    let certificates = read_pem(&path)?;
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(StoreError::unavailable(
            "set up TLS",
            format!("no certificate in sslrootcert {}", path.display()),
        ));
    }
    Ok(roots)
}

fn default_root_cert() -> Option<PathBuf> {
    let path = Path::new(&std::env::var_os("HOME")?).join(".postgresql/root.crt");
    path.exists().then_some(path)
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let context = || format!("sslrootcert {}", path.display());
    CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| StoreError::unavailable("set up TLS", format!("{}: {error}", context())))
}

/// `prefer` and `require`: the handshake's signatures are checked, the
/// certificate is not (libpq's meaning of these modes).
#[derive(Debug)]
struct EncryptionOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must reach a trusted root; the name may differ.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, TlsOptions) {
        take_tls_options(url).unwrap()
    }

    #[test]
    fn verify_full_becomes_require_and_the_root_cert_is_taken_out() {
        let (rest, options) =
            split("host=db port=5432 sslmode=verify-full sslrootcert='/etc/ca dir/ca.pem'");
        assert_eq!(rest, "host='db' port='5432' sslmode='require'");
        assert_eq!(options.verify, Verify::ChainAndHost);
        assert_eq!(options.root_cert.as_deref(), Some("/etc/ca dir/ca.pem"));
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(
            parsed.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn key_values_keep_quotes_escapes_and_spaces_around_equals() {
        let (rest, options) = split(r"user = 'o\'brien' password=a\ b sslmode = verify-ca");
        assert_eq!(rest, r"user='o\'brien' password='a b' sslmode='require'");
        assert_eq!(options.verify, Verify::Chain);
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_user(), Some("o'brien"));
        assert_eq!(parsed.get_password(), Some(&b"a b"[..]));
    }

    #[test]
    fn urls_lose_only_the_options_tokio_postgres_does_not_know() {
        let (rest, options) = split(
            "postgres://u:p@a:5432,b:5433/wagate?target_session_attrs=read-write\
             &sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(
            rest,
            "postgres://u:p@a:5432,b:5433/wagate?target_session_attrs=read-write&sslmode=require"
        );
        assert_eq!(options.verify, Verify::ChainAndHost);
        assert_eq!(options.root_cert.as_deref(), Some("/etc/ca.pem"));
        rest.parse::<tokio_postgres::Config>().unwrap();

        let (rest, options) = split("postgresql://localhost/wagate?sslrootcert=system");
        assert_eq!(rest, "postgresql://localhost/wagate");
        assert_eq!(options.verify, Verify::Nothing);
    }

    #[test]
    fn plain_modes_pass_through_unchanged() {
        for mode in ["disable", "prefer", "require"] {
            let (rest, options) = split(&format!("host=db sslmode={mode}"));
            assert_eq!(rest, format!("host='db' sslmode='{mode}'"));
            assert_eq!(options.verify, Verify::Nothing);
        }
        let (rest, _) = split("postgres://db/wagate");
        assert_eq!(rest, "postgres://db/wagate");
    }

    #[test]
    fn malformed_strings_are_refused_with_the_reason() {
        for bad in ["host", "host='db", "host=db port"] {
            let error = take_tls_options(bad).unwrap_err().to_string();
            assert!(
                error.contains("malformed connection string"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn verifying_modes_without_roots_say_what_is_missing() {
        let options = TlsOptions {
            verify: Verify::ChainAndHost,
            root_cert: Some("/nonexistent/ca.pem".into()),
        };
        let error = connector(&options).err().unwrap().to_string();
        assert!(error.contains("sslrootcert /nonexistent/ca.pem"), "{error}");
    }
}
