//! Certificate checks shared by every TLS front-end: the validity period of an X.509
//! certificate (RFC 5280 §4.1.2.5) that is trusted by something other than a chain to a CA
//! (a pinned PPSTP client certificate, an overlay node's self-signed certificate), where no
//! path validator checks the dates for us.

/// A certificate's `notBefore..=notAfter`, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// Why a certificate is outside its validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidityError {
    #[error("certificate not valid yet")]
    NotYetValid,
    #[error("certificate expired")]
    Expired,
}

impl ValidityError {
    /// The rustls error a certificate verifier returns for it.
    pub fn to_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(match self {
            ValidityError::NotYetValid => rustls::CertificateError::NotValidYet,
            ValidityError::Expired => rustls::CertificateError::Expired,
        })
    }
}

impl Validity {
    /// The validity period of a parsed certificate.
    pub fn of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Validity {
        let v = cert.validity();
        Validity {
            not_before: v.not_before.timestamp(),
            not_after: v.not_after.timestamp(),
        }
    }

    /// Ok when `now` (Unix seconds) lies within the period, both ends included.
    pub fn check(&self, now: i64) -> Result<(), ValidityError> {
        if now < self.not_before {
            Err(ValidityError::NotYetValid)
        } else if now > self.not_after {
            Err(ValidityError::Expired)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_are_inside_and_each_side_has_its_error() {
        let v = Validity {
            not_before: 100,
            not_after: 200,
        };
        assert_eq!(v.check(100), Ok(()));
        assert_eq!(v.check(200), Ok(()));
        assert_eq!(v.check(99), Err(ValidityError::NotYetValid));
        assert_eq!(v.check(201), Err(ValidityError::Expired));
    }
}
