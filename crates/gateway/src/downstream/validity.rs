//! A certificate's validity period, read from its DER: just enough of X.509 to find
//! `tbsCertificate.validity` (RFC 5280 §4.1.2.5), so that an expired certificate can be
//! refused at start-up and by `weir check-config` with its dates in the message. rustls
//! checks validity only on the side that verifies a peer, never on its own certificate.
//!
//! Invariant: anything unexpected in the encoding gives `None`, never a panic; only the
//! two time forms RFC 5280 allows (UTCTime and GeneralizedTime, in UTC, to the second)
//! are read.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use weir_transport::tls::split_der as tlv;

/// A moment in UTC as a certificate writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CertTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

/// When a certificate starts and stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub not_before: CertTime,
    pub not_after: CertTime,
}

impl fmt::Display for CertTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let CertTime { year, month, day, hour, minute, second } = self;
        write!(f, "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
    }
}

impl CertTime {
    /// Seconds since the Unix epoch (negative before it).
    fn unix_seconds(&self) -> i64 {
        // Days from civil, proleptic Gregorian (the usual era-based formulation).
        let (month, day) = (i64::from(self.month), i64::from(self.day));
        let year = if month <= 2 { self.year - 1 } else { self.year };
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        let days = era * 146_097 + day_of_era - 719_468;
        days * 86_400 + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
    }

    /// Whether this moment is before `now`.
    pub(crate) fn is_before(&self, now: SystemTime) -> bool {
        let now = match now.duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
        };
        self.unix_seconds() < now
    }
}

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The validity period of a DER certificate; `None` if it cannot be read.
pub(crate) fn validity(der: &[u8]) -> Option<Validity> {
    let (tag, certificate, _) = tlv(der)?;
    let (tbs_tag, mut tbs, _) = tlv(certificate)?;
    if tag != SEQUENCE || tbs_tag != SEQUENCE {
        return None;
    }
    let (first, _, rest) = tlv(tbs)?;
    if first == VERSION {
        tbs = rest;
    }
    let (serial, _, rest) = tlv(tbs)?;
    let (signature, _, rest) = tlv(rest)?;
    let (issuer, _, rest) = tlv(rest)?;
    let (validity, times, _) = tlv(rest)?;
    if serial != INTEGER || signature != SEQUENCE || issuer != SEQUENCE || validity != SEQUENCE {
        return None;
    }
    let (before_tag, before, rest) = tlv(times)?;
    let (after_tag, after, _) = tlv(rest)?;
    Some(Validity { not_before: time(before_tag, before)?, not_after: time(after_tag, after)? })
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, text: &[u8]) -> Option<CertTime> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 12 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 14 => (text.get(..4)?.parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |at: usize| rest.get(at..at + 2).and_then(|two| two.parse::<u32>().ok());
    let time =
        CertTime { year, month: field(0)?, day: field(2)?, hour: field(4)?, minute: field(6)?, second: field(8)? };
    let valid = (1..=12).contains(&time.month)
        && (1..=31).contains(&time.day)
        && time.hour < 24
        && time.minute < 60
        && time.second < 60;
    valid.then_some(time)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{date_time_ymd, CertificateParams, KeyPair};

    use super::*;

    fn certificate(from: (i32, u8, u8), until: (i32, u8, u8)) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_before = date_time_ymd(from.0, from.1, from.2);
        params.not_after = date_time_ymd(until.0, until.1, until.2);
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    #[test]
    fn both_time_forms_are_read_with_their_dates() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050 on.
        let der = certificate((2001, 2, 3), (2060, 12, 31));
        let validity = validity(&der).expect("readable");
        assert_eq!(validity.not_before.to_string(), "2001-02-03 00:00:00 UTC");
        assert_eq!(validity.not_after.to_string(), "2060-12-31 00:00:00 UTC");
        let feb_3_2001 = UNIX_EPOCH + Duration::from_secs(981_158_400);
        assert!(!validity.not_before.is_before(feb_3_2001));
        assert!(validity.not_before.is_before(feb_3_2001 + Duration::from_secs(1)));
        assert!(!validity.not_after.is_before(SystemTime::now()));
    }

    #[test]
    fn garbage_and_truncations_give_none() {
        let der = certificate((2001, 1, 1), (2002, 1, 1));
        assert!(validity(&[]).is_none());
        assert!(validity(&[SEQUENCE, 0x85, 1, 2, 3, 4, 5]).is_none());
        for cut in [1, 4, 20, 100] {
            assert!(validity(&der[..cut]).is_none(), "cut at {cut}");
        }
        assert!(time(UTC_TIME, b"011301000000Z").is_none(), "month 13");
        assert!(time(GENERALIZED_TIME, b"2001010100000Z").is_none(), "short");
        assert!(time(UTC_TIME, b"0101010000+0Z").is_none(), "not digits");
    }
}
