use std::collections::HashMap;

use cleanroom_proto::httpsig::{
    DigestWriter, MAX_CLOCK_SKEW_SECS, SignedHeaders, content_digest, sign_request, verify_request,
    verify_request_with_digest,
};
use cleanroom_proto::{Identity, SigError, VerifiedRequest};

pub(crate) const NOW: u64 = 1_700_000_000;
pub(crate) const NONCE: &str = "n0nce-0123456789_abcdef";
const METHOD: &str = "POST";
const PATH: &str = "/v1/runs?dry_run=1";
const BODY: &[u8] = br#"{"module":"abc"}"#;

pub(crate) fn headers_map(h: &SignedHeaders) -> HashMap<String, String> {
    HashMap::from([
        ("content-digest".to_string(), h.content_digest.clone()),
        ("signature-input".to_string(), h.signature_input.clone()),
        ("signature".to_string(), h.signature.clone()),
    ])
}

fn signed(identity: &Identity) -> HashMap<String, String> {
    headers_map(&sign_request(identity, METHOD, PATH, BODY, NOW, NONCE))
}

fn verify(
    method: &str,
    path: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
    now: u64,
) -> Result<VerifiedRequest, SigError> {
    verify_request(method, path, |name| headers.get(name).cloned(), body, now)
}

fn check(headers: &HashMap<String, String>) -> Result<VerifiedRequest, SigError> {
    verify(METHOD, PATH, headers, BODY, NOW)
}

/// Replaces `from` with `to` in one header (which must contain it).
fn edit(headers: &mut HashMap<String, String>, name: &str, from: &str, to: &str) {
    let value = headers.get_mut(name).unwrap();
    assert!(value.contains(from), "{value} lacks {from}");
    *value = value.replacen(from, to, 1);
}

#[test]
fn sign_then_verify() {
    let identity = Identity::generate();
    let headers = signed(&identity);
    assert_eq!(headers["content-digest"], content_digest(BODY));
    assert!(headers["content-digest"].starts_with("sha-256=:"));
    let verified = check(&headers).unwrap();
    assert_eq!(verified.party, identity.party());
    assert_eq!(verified.created, NOW);
    assert_eq!(verified.nonce, NONCE);
}

#[test]
fn content_digest_matches_rfc9530_example() {
    // RFC 9530 section 2: the digest of `{"hello": "world"}`.
    assert_eq!(
        content_digest(b"{\"hello\": \"world\"}"),
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    );
}

#[test]
fn missing_headers() {
    let headers = signed(&Identity::generate());
    for name in ["signature-input", "signature", "content-digest"] {
        let mut h = headers.clone();
        h.remove(name);
        assert_eq!(check(&h).unwrap_err(), SigError::Missing(name));
    }
}

#[test]
fn tampered_request_fails() {
    let headers = signed(&Identity::generate());
    let bad = SigError::BadSignature;
    assert_eq!(verify("PUT", PATH, &headers, BODY, NOW).unwrap_err(), bad);
    assert_eq!(
        verify(METHOD, "/v1/runs?dry_run=0", &headers, BODY, NOW).unwrap_err(),
        bad
    );
    assert_eq!(
        verify(METHOD, "/v1/runs", &headers, BODY, NOW).unwrap_err(),
        bad
    );
    assert_eq!(
        verify(METHOD, "/v1/other?dry_run=1", &headers, BODY, NOW).unwrap_err(),
        bad
    );
    assert_eq!(
        verify(METHOD, PATH, &headers, b"{\"module\":\"abd\"}", NOW).unwrap_err(),
        SigError::DigestMismatch
    );
}

#[test]
fn tampered_digest_header_fails() {
    let identity = Identity::generate();
    let mut headers = signed(&identity);
    // A digest header for another body, with the body it describes: the signature breaks.
    let other = b"other body";
    headers.insert("content-digest".into(), content_digest(other));
    assert_eq!(
        verify(METHOD, PATH, &headers, other, NOW).unwrap_err(),
        SigError::BadSignature
    );
    // A garbled digest header: mismatch with the body received.
    headers.insert("content-digest".into(), "sha-256=:AAAA:".into());
    assert_eq!(check(&headers).unwrap_err(), SigError::DigestMismatch);
}

#[test]
fn tampered_params_fail() {
    let mut headers = signed(&Identity::generate());
    edit(
        &mut headers,
        "signature-input",
        &format!("created={NOW}"),
        &format!("created={}", NOW + 1),
    );
    assert_eq!(check(&headers).unwrap_err(), SigError::BadSignature);

    let mut headers = signed(&Identity::generate());
    edit(
        &mut headers,
        "signature-input",
        NONCE,
        "another-nonce-1234567",
    );
    assert_eq!(check(&headers).unwrap_err(), SigError::BadSignature);
}

#[test]
fn other_key_fails() {
    let signer = Identity::generate();
    let other = Identity::generate();
    let mut headers = signed(&signer);
    edit(
        &mut headers,
        "signature-input",
        &signer.party().to_string(),
        &other.party().to_string(),
    );
    assert_eq!(check(&headers).unwrap_err(), SigError::BadSignature);

    // The whole signature swapped for one by another key over another request.
    let mut headers = signed(&signer);
    let theirs = headers_map(&sign_request(&other, METHOD, "/x", BODY, NOW, NONCE));
    headers.insert("signature".into(), theirs["signature"].clone());
    assert_eq!(check(&headers).unwrap_err(), SigError::BadSignature);
}

#[test]
fn wrong_algorithm_fails() {
    let mut headers = signed(&Identity::generate());
    edit(
        &mut headers,
        "signature-input",
        "alg=\"ed25519\"",
        "alg=\"hmac-sha256\"",
    );
    assert_eq!(
        check(&headers).unwrap_err(),
        SigError::UnsupportedAlgorithm("hmac-sha256".into())
    );
}

#[test]
fn stale_in_both_directions() {
    let headers = signed(&Identity::generate());
    assert!(verify(METHOD, PATH, &headers, BODY, NOW + MAX_CLOCK_SKEW_SECS).is_ok());
    assert!(verify(METHOD, PATH, &headers, BODY, NOW - MAX_CLOCK_SKEW_SECS).is_ok());
    let late = NOW + MAX_CLOCK_SKEW_SECS + 1;
    assert_eq!(
        verify(METHOD, PATH, &headers, BODY, late).unwrap_err(),
        SigError::Stale {
            created: NOW,
            now: late
        }
    );
    let early = NOW - MAX_CLOCK_SKEW_SECS - 1;
    let err = verify(METHOD, PATH, &headers, BODY, early).unwrap_err();
    assert_eq!(
        err,
        SigError::Stale {
            created: NOW,
            now: early
        }
    );
    assert_eq!(err.kind(), "signature_stale");
}

#[test]
fn covered_components_must_be_exact() {
    let all = "(\"@method\" \"@path\" \"@query\" \"content-digest\")";
    for replacement in [
        "(\"@method\" \"@path\" \"@query\")",
        "(\"@method\" \"@path\" \"content-digest\")",
        "(\"@path\" \"@method\" \"@query\" \"content-digest\")",
        "(\"@method\" \"@path\" \"@query\" \"content-digest\" \"content-type\")",
        "()",
    ] {
        let mut headers = signed(&Identity::generate());
        edit(&mut headers, "signature-input", all, replacement);
        let err = check(&headers).unwrap_err();
        assert!(
            matches!(err, SigError::Malformed(_)),
            "{replacement}: {err:?}"
        );
    }
}

#[test]
fn malformed_params_fail() {
    let identity = Identity::generate();
    let party = identity.party().to_string();
    let cases: [(&str, &str, &str); 8] = [
        ("signature-input", "sig1=", "sig2="),
        (
            "signature-input",
            &format!("keyid=\"{party}\""),
            "keyid=\"not-a-key\"",
        ),
        ("signature-input", &format!(";nonce=\"{NONCE}\""), ""),
        ("signature-input", NONCE, "short"),
        ("signature-input", NONCE, "has spaces in the nonce"),
        ("signature-input", &format!("created={NOW}"), "created=-5"),
        ("signature", "sig1=:", "sig1=:AAAA"),
        ("signature", "sig1=:", "sig1=:QUFB:"),
    ];
    for (name, from, to) in cases {
        let mut headers = signed(&identity);
        edit(&mut headers, name, from, to);
        let err = check(&headers).unwrap_err();
        assert!(
            matches!(err, SigError::Malformed(_)),
            "{name} {from} -> {to}: {err:?}"
        );
        assert_eq!(err.kind(), "signature_malformed");
    }
}

#[test]
fn other_dictionary_members_are_ignored() {
    let mut headers = signed(&Identity::generate());
    let input = format!(
        "other=(\"@method\");created=1, {}",
        headers["signature-input"]
    );
    headers.insert("signature-input".into(), input);
    let sig = format!("{}, other=:AAAA:", headers["signature"]);
    headers.insert("signature".into(), sig);
    check(&headers).unwrap();
}

#[test]
fn streamed_digest_matches() {
    let identity = Identity::generate();
    let headers = signed(&identity);
    let mut writer = DigestWriter::new();
    for chunk in BODY.chunks(3) {
        writer.update(chunk);
    }
    let digest = writer.finish();
    assert_eq!(digest, content_digest(BODY));
    let verified =
        verify_request_with_digest(METHOD, PATH, |n| headers.get(n).cloned(), &digest, NOW)
            .unwrap();
    assert_eq!(verified.party, identity.party());
    let wrong = content_digest(b"x");
    assert_eq!(
        verify_request_with_digest(METHOD, PATH, |n| headers.get(n).cloned(), &wrong, NOW)
            .unwrap_err(),
        SigError::DigestMismatch
    );
}

#[test]
fn random_nonces_verify() {
    let identity = Identity::generate();
    let nonce = cleanroom_proto::httpsig::new_nonce();
    let headers = headers_map(&sign_request(
        &identity, "GET", "/v1/runs", b"", NOW, &nonce,
    ));
    let verified = verify("GET", "/v1/runs", &headers, b"", NOW).unwrap();
    assert_eq!(verified.nonce, nonce);
}

#[test]
fn wire_format_is_rfc9421_shaped() {
    // Pins the header and signature-base format that the CLI and the server must share.
    let identity = Identity::from_secrets([7; 32], [9; 32]);
    let party = identity.party();
    let h = sign_request(&identity, "POST", "/v1/runs?x=1&y=2", b"{}", NOW, NONCE);
    let params = format!(
        "(\"@method\" \"@path\" \"@query\" \"content-digest\");created={NOW};nonce=\"{NONCE}\";\
         keyid=\"{party}\";alg=\"ed25519\""
    );
    assert_eq!(h.signature_input, format!("sig1={params}"));
    let base = format!(
        "\"@method\": POST\n\"@path\": /v1/runs\n\"@query\": ?x=1&y=2\n\
         \"content-digest\": {}\n\"@signature-params\": {params}",
        h.content_digest
    );
    let b64 = h
        .signature
        .strip_prefix("sig1=:")
        .unwrap()
        .strip_suffix(':')
        .unwrap();
    use base64::Engine as _;
    let sig: [u8; 64] = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
        .try_into()
        .unwrap();
    cleanroom_proto::verify_signature(&party, base.as_bytes(), &sig).unwrap();
}

#[test]
fn error_kinds_are_distinct() {
    let errors = [
        SigError::Missing("signature"),
        SigError::Malformed(String::new()),
        SigError::Stale { created: 0, now: 0 },
        SigError::DigestMismatch,
        SigError::BadSignature,
        SigError::UnsupportedAlgorithm(String::new()),
    ];
    let kinds: std::collections::BTreeSet<_> = errors.iter().map(SigError::kind).collect();
    assert_eq!(kinds.len(), errors.len());
}
