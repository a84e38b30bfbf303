//! Unit tests of the file-response logic: validators, ranges, conditionals, disposition.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

const LEN: u64 = 1000;

fn modified() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)
}

fn validators() -> Validators {
    Validators::new(LEN, Some(modified()))
}

fn range(start: u64, end: u64) -> ByteRange {
    ByteRange { start, end }
}

fn date(offset_secs: i64) -> String {
    let base = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let at = if offset_secs >= 0 {
        base + Duration::from_secs(offset_secs.unsigned_abs())
    } else {
        base - Duration::from_secs(offset_secs.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

#[test]
fn validators_are_a_strong_tag_and_a_second_resolution_date() {
    let v = validators();
    assert_eq!(v.etag, "\"6553f100.75bcd15-3e8\"");
    assert_eq!(v.last_modified_header().as_deref(), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
    assert_ne!(Validators::new(LEN + 1, Some(modified())).etag, v.etag);
    assert_ne!(Validators::new(LEN, Some(modified() + Duration::from_nanos(1))).etag, v.etag);
}

#[test]
fn times_an_http_date_cannot_show_have_no_last_modified() {
    let before_epoch = UNIX_EPOCH - Duration::from_secs(10);
    assert_eq!(Validators::new(1, Some(before_epoch)).last_modified, None);
    let year_10000 = UNIX_EPOCH + Duration::from_secs(MAX_HTTP_DATE_SECS + 1);
    assert_eq!(Validators::new(1, Some(year_10000)).last_modified, None);
    assert_eq!(Validators::new(1, None).last_modified_header(), None);
}

#[test]
fn single_range_forms() {
    assert_eq!(parse_range("bytes=0-99", LEN), RangeRequest::Single(range(0, 99)));
    assert_eq!(parse_range("bytes=900-", LEN), RangeRequest::Single(range(900, 999)));
    assert_eq!(parse_range("bytes=-100", LEN), RangeRequest::Single(range(900, 999)));
    assert_eq!(parse_range("bytes=500-5000", LEN), RangeRequest::Single(range(500, 999)));
    assert_eq!(parse_range("bytes=-5000", LEN), RangeRequest::Single(range(0, 999)));
    assert_eq!(parse_range("BYTES=1-1", LEN), RangeRequest::Single(range(1, 1)));
    assert_eq!(parse_range("bytes= 2-3 ,", LEN), RangeRequest::Single(range(2, 3)));
    assert_eq!(range(10, 19).len(), 10);
    assert_eq!(range(0, 99).content_range(LEN), "bytes 0-99/1000");
}

#[test]
fn unsatisfiable_ranges() {
    assert_eq!(parse_range("bytes=1000-", LEN), RangeRequest::Unsatisfiable);
    assert_eq!(parse_range("bytes=1000-2000", LEN), RangeRequest::Unsatisfiable);
    assert_eq!(parse_range("bytes=-0", LEN), RangeRequest::Unsatisfiable);
    assert_eq!(parse_range("bytes=0-0", 0), RangeRequest::Unsatisfiable);
    assert_eq!(parse_range("bytes=-5", 0), RangeRequest::Unsatisfiable);
    assert_eq!(parse_range("bytes=2000-,3000-", LEN), RangeRequest::Unsatisfiable);
    assert_eq!(parse_range("bytes=99999999999999999999999-", LEN), RangeRequest::Unsatisfiable);
    assert_eq!(unsatisfied_content_range(LEN), "bytes */1000");
}

#[test]
fn huge_numbers_saturate() {
    assert_eq!(parse_range("bytes=10-99999999999999999999999", LEN), RangeRequest::Single(range(10, 999)));
    assert_eq!(parse_range("bytes=-99999999999999999999999", LEN), RangeRequest::Single(range(0, 999)));
}

#[test]
fn malformed_ranges_and_multiple_ranges_are_ignored() {
    for value in [
        "",
        "bytes",
        "bytes=",
        "bytes=,",
        "items=0-1",
        "bytes=a-b",
        "bytes=5-1",
        "bytes=1-2-3",
        "bytes=-",
        "bytes=+1-2",
        "bytes=0x1-2",
        "bytes=1 -2",
        "bytes =0-1",
    ] {
        assert_eq!(parse_range(value, LEN), RangeRequest::Ignore, "{value:?}");
    }
    assert_eq!(parse_range("bytes=0-1,5-9", LEN), RangeRequest::Ignore);
    assert_eq!(parse_range("bytes=0-1,5000-", LEN), RangeRequest::Ignore, "one satisfiable of several: full");
    assert_eq!(parse_range("bytes=0-1,junk", LEN), RangeRequest::Ignore);
}

fn answer(conditions: Conditions<'_>) -> Answer {
    evaluate(&conditions, &validators(), LEN)
}

#[test]
fn if_none_match_uses_weak_comparison_lists_and_star() {
    let v = validators();
    let weak = format!("W/{}", v.etag);
    let listed = format!("\"other\", {weak}");
    for value in [v.etag.as_str(), weak.as_str(), listed.as_str(), "*", " * "] {
        assert_eq!(answer(Conditions { if_none_match: Some(value), ..Default::default() }), Answer::NotModified);
    }
    for value in ["\"other\"", "W/\"other\", \"x\"", "garbage", "", "\"6553f100.75bcd15-3e8"] {
        assert_eq!(answer(Conditions { if_none_match: Some(value), ..Default::default() }), Answer::Full, "{value:?}");
    }
}

#[test]
fn if_modified_since_gives_304_only_without_if_none_match() {
    let now = date(0);
    let later = date(60);
    let earlier = date(-60);
    assert_eq!(answer(Conditions { if_modified_since: Some(&now), ..Default::default() }), Answer::NotModified);
    assert_eq!(answer(Conditions { if_modified_since: Some(&later), ..Default::default() }), Answer::NotModified);
    assert_eq!(answer(Conditions { if_modified_since: Some(&earlier), ..Default::default() }), Answer::Full);
    assert_eq!(answer(Conditions { if_modified_since: Some("yesterday"), ..Default::default() }), Answer::Full);
    let stale_tag =
        Conditions { if_none_match: Some("\"other\""), if_modified_since: Some(&now), ..Default::default() };
    assert_eq!(answer(stale_tag), Answer::Full, "If-None-Match wins over If-Modified-Since");
}

#[test]
fn if_match_and_if_unmodified_since_fail_with_412() {
    let v = validators();
    let weak = format!("W/{}", v.etag);
    assert_eq!(answer(Conditions { if_match: Some(&v.etag), ..Default::default() }), Answer::Full);
    assert_eq!(answer(Conditions { if_match: Some("*"), ..Default::default() }), Answer::Full);
    assert_eq!(answer(Conditions { if_match: Some(&weak), ..Default::default() }), Answer::PreconditionFailed);
    assert_eq!(answer(Conditions { if_match: Some("\"x\""), ..Default::default() }), Answer::PreconditionFailed);
    let (earlier, now) = (date(-1), date(0));
    assert_eq!(answer(Conditions { if_unmodified_since: Some(&now), ..Default::default() }), Answer::Full);
    let changed = Conditions { if_unmodified_since: Some(&earlier), ..Default::default() };
    assert_eq!(answer(changed), Answer::PreconditionFailed);
    let matched = Conditions { if_match: Some(&v.etag), if_unmodified_since: Some(&earlier), ..Default::default() };
    assert_eq!(answer(matched), Answer::Full, "If-Match wins over If-Unmodified-Since");
}

#[test]
fn range_and_if_range() {
    let v = validators();
    let weak = format!("W/{}", v.etag);
    let (now, earlier) = (date(0), date(-1));
    let ranged = |if_range| Conditions { range: Some("bytes=0-9"), if_range, ..Default::default() };
    assert_eq!(answer(ranged(None)), Answer::Partial(range(0, 9)));
    assert_eq!(answer(ranged(Some(&v.etag))), Answer::Partial(range(0, 9)));
    assert_eq!(answer(ranged(Some(&now))), Answer::Partial(range(0, 9)));
    assert_eq!(answer(ranged(Some(&weak))), Answer::Full, "a weak tag never satisfies If-Range");
    assert_eq!(answer(ranged(Some("\"old\""))), Answer::Full);
    assert_eq!(answer(ranged(Some(&earlier))), Answer::Full);
    assert_eq!(answer(ranged(Some("nonsense"))), Answer::Full);
    let past_end = Conditions { range: Some("bytes=5000-"), ..Default::default() };
    assert_eq!(answer(past_end), Answer::RangeNotSatisfiable);
    let fresh = Conditions { range: Some("bytes=0-9"), if_none_match: Some(&v.etag), ..Default::default() };
    assert_eq!(answer(fresh), Answer::NotModified, "conditionals come before ranges");
}

#[test]
fn conditions_read_the_first_utf8_value_of_each_header() {
    let headers: Vec<(&str, &[u8])> = vec![("if-none-match", b"\"a\""), ("range", b"bytes=0-1"), ("if-range", b"\xff")];
    let conditions = Conditions::from_lookup(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v));
    assert_eq!(
        conditions,
        Conditions { if_none_match: Some("\"a\""), range: Some("bytes=0-1"), if_range: None, ..Default::default() }
    );
}

#[test]
fn plain_ascii_name_is_quoted() {
    assert_eq!(
        content_disposition(Disposition::Attachment, "report 2024.pdf"),
        "attachment; filename=\"report 2024.pdf\""
    );
    assert_eq!(content_disposition(Disposition::Inline, "a.txt"), "inline; filename=\"a.txt\"");
}

#[test]
fn quotes_and_backslashes_are_escaped() {
    assert_eq!(content_disposition(Disposition::Attachment, "a\"b\\c.txt"), "attachment; filename=\"a\\\"b\\\\c.txt\"");
}

#[test]
fn control_characters_cannot_inject_headers() {
    assert_eq!(
        content_disposition(Disposition::Attachment, "a\r\nb.txt"),
        "attachment; filename=\"a__b.txt\"; filename*=UTF-8''a%0D%0Ab.txt"
    );
}

#[test]
fn non_ascii_name_gets_filename_star() {
    assert_eq!(
        content_disposition(Disposition::Inline, "résumé €.pdf"),
        "inline; filename=\"r_sum_ _.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%82%AC.pdf"
    );
}

proptest! {
    #[test]
    fn range_parser_never_panics_and_stays_inside_the_file(value in ".{0,64}", len in any::<u64>()) {
        if let RangeRequest::Single(r) = parse_range(&value, len) {
            prop_assert!(r.start <= r.end && r.end < len);
        }
    }

    #[test]
    fn range_parser_on_range_shaped_input(
        value in "(bytes|BYTES|x)=[-0-9, ]{0,40}",
        len in prop_oneof![Just(0u64), 1u64..4096, any::<u64>()],
    ) {
        if let RangeRequest::Single(r) = parse_range(&value, len) {
            prop_assert!(r.start <= r.end && r.end < len);
            prop_assert_eq!(r.content_range(len), format!("bytes {}-{}/{len}", r.start, r.end));
        }
    }

    #[test]
    fn evaluate_never_panics(
        inm in proptest::option::of(".{0,40}"),
        ims in proptest::option::of(".{0,40}"),
        im in proptest::option::of(".{0,40}"),
        range in proptest::option::of("bytes=[-0-9,]{0,20}"),
        if_range in proptest::option::of(".{0,40}"),
        len in any::<u64>(),
    ) {
        let conditions = Conditions {
            if_none_match: inm.as_deref(),
            if_modified_since: ims.as_deref(),
            if_match: im.as_deref(),
            if_unmodified_since: None,
            range: range.as_deref(),
            if_range: if_range.as_deref(),
        };
        if let Answer::Partial(r) = evaluate(&conditions, &Validators::new(len, Some(modified())), len) {
            prop_assert!(r.start <= r.end && r.end < len);
        }
    }

    #[test]
    fn disposition_is_always_a_valid_header_value(name in ".{0,40}") {
        let value = content_disposition(Disposition::Attachment, &name);
        prop_assert!(value.bytes().all(|b| (b' '..=b'~').contains(&b)));
    }
}
