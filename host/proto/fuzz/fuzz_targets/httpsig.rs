//! Signature-Input / Signature / Content-Digest parsing must never panic,
//! and nothing unsigned may verify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let input = parts.next().unwrap_or_default().to_string();
    let signature = parts.next().unwrap_or_default().to_string();
    let digest = parts.next().unwrap_or_default().to_string();
    let body = parts.next().unwrap_or_default();
    let header = |name: &str| match name {
        "signature-input" => Some(input.clone()),
        "signature" => Some(signature.clone()),
        "content-digest" => Some(digest.clone()),
        _ => None,
    };
    let result = cleanroom_proto::httpsig::verify_request("POST", "/v1/runs", header, body.as_bytes(), 1_800_000_000);
    assert!(result.is_err(), "random input verified");
});
