//! Small PEM, X.509 and time helpers shared by the CA and node code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::time::ASN1Time;
use x509_parser::x509::AttributeTypeAndValue;

use crate::CaError;

pub(crate) const CERTIFICATE_TAG: &str = "CERTIFICATE";

/// Parses one DER certificate.
pub(crate) fn parse_cert<'a>(
    der: &'a [u8],
    what: &'static str,
) -> Result<X509Certificate<'a>, CaError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_rest, cert)| cert)
        .map_err(|e| CaError::X509 {
            what,
            source: e.into(),
        })
}

/// Every block of a PEM text, which must all be certificates, in order.
pub(crate) fn certs_from_pem(
    text: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let blocks = pem::parse_many(text).map_err(|source| CaError::Pem { what, source })?;
    let certs: Vec<_> = blocks
        .iter()
        .filter(|b| b.tag() == CERTIFICATE_TAG)
        .map(|b| CertificateDer::from(b.contents().to_vec()))
        .collect();
    // A stray key or CSR block in a certificate field is a caller bug: say so
    // rather than ignore it.
    if certs.is_empty() || certs.len() != blocks.len() {
        return Err(CaError::PemBlocks {
            what,
            tag: CERTIFICATE_TAG,
            expected: "one or more",
            found: certs.len(),
        });
    }
    Ok(certs)
}

/// A PEM text holding exactly one certificate.
pub(crate) fn single_cert_from_pem(
    text: &str,
    what: &'static str,
) -> Result<CertificateDer<'static>, CaError> {
    let mut certs = certs_from_pem(text, what)?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        found => Err(CaError::PemBlocks {
            what,
            tag: CERTIFICATE_TAG,
            expected: "exactly one",
            found,
        }),
    }
}

pub(crate) fn cert_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(CERTIFICATE_TAG, der.to_vec()))
}

/// The one value of a subject attribute (CN, OU or O).
pub(crate) fn single_attr<'a>(
    mut values: impl Iterator<Item = &'a AttributeTypeAndValue<'a>>,
    field: &'static str,
) -> Result<String, CaError> {
    let first = values
        .next()
        .ok_or(CaError::MissingSubjectField { field })?;
    if values.next().is_some() {
        return Err(CaError::AmbiguousSubjectField { field });
    }
    first
        .as_str()
        .map(str::to_owned)
        .map_err(|source| CaError::SubjectFieldEncoding { field, source })
}

pub(crate) fn asn1_to_system(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    let offset = Duration::from_secs(secs.unsigned_abs());
    // X.509 times are years 0..=9999, which SystemTime always holds; the
    // fallback is unreachable but errs on "long expired".
    if secs >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
    .unwrap_or(UNIX_EPOCH)
}

/// Whole seconds, in the range certificates can encode.
pub(crate) fn system_to_offset(t: SystemTime) -> Option<OffsetDateTime> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok()?,
        Err(before) => i64::try_from(before.duration().as_secs())
            .ok()?
            .checked_neg()?,
    };
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

/// rustls's clock type; times before 1970 become 1970.
pub(crate) fn unix_time(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}
