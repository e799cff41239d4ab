//! A signed HTTP client for cleanroomd.

use cleanroom_proto::api::ErrorBody;
use serde::de::DeserializeOwned;
use std::io::Read;
use std::path::Path;

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use cleanroom_proto::Identity;
use cleanroom_proto::httpsig::{self, SignedHeaders};

use super::attest::{Trust, Verified, attest};
use super::tls::{self, KeyCheck};
use crate::failure::{ExitKind, Failure};

/// Talks to one server as one party.
pub(crate) struct Client {
    base: String,
    identity: Option<Identity>,
    agent: ureq::Agent,
    /// The enclave this session's TLS key belongs to (`None` over plain HTTP).
    verified: Option<Verified>,
}

fn nonce() -> String {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    hex::encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Client {
    /// Connect to `base`. Over `https://` the session is attested first: fresh evidence for
    /// our nonce, verified against `trust`, whose enclave must have endorsed the TLS key of
    /// the connection it came over; later connections accept that key only. Plain `http://`
    /// is accepted for a loopback address only (a local simulation).
    pub(crate) fn connect(base: &str, identity: Option<Identity>, trust: &Trust) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if base.starts_with("https://") {
            let check = Arc::new(KeyCheck::Record(Mutex::new(None)));
            let boot = Self {
                base: base.clone(),
                identity: None,
                agent: tls::agent(check.clone(), false)?,
                verified: None,
            };
            let (verified, endorsement) = attest(&boot, trust)?;
            let KeyCheck::Record(seen) = &*check else {
                unreachable!("the bootstrap check records")
            };
            let seen = seen.lock().expect("verifier lock").ok_or_else(|| {
                anyhow!("no TLS certificate was seen on the bootstrap connection")
            })?;
            endorsement
                .ok_or_else(|| {
                    anyhow::Error::new(Failure::verification(format!(
                        "{base} serves TLS but its enclave does not endorse the TLS key: \
                         refusing the connection"
                    )))
                })?
                .verify(&verified.keys, &seen)
                .context(Failure::verification(
                    "attested TLS failed: do not send this server data",
                ))?;
            Ok(Self {
                base,
                identity,
                agent: tls::agent(Arc::new(KeyCheck::Pinned(seen)), true)?,
                verified: Some(verified),
            })
        } else if let Some(rest) = base.strip_prefix("http://") {
            let host = rest.split(['/', ':']).next().unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
                || rest.starts_with("[::1]");
            if !loopback {
                bail!(
                    "plain http:// is only for a local simulation on loopback; use https:// \
                     (attested TLS) for {base}"
                );
            }
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent();
            Ok(Self {
                base,
                identity,
                agent,
                verified: None,
            })
        } else {
            bail!("--server must be an https:// URL (got {base})")
        }
    }

    /// The session's HTTP agent (pinned to the attested TLS key).
    pub(crate) fn agent(&self) -> ureq::Agent {
        self.agent.clone()
    }

    /// The enclave verified when this session was attested (attested TLS).
    pub(crate) fn verified(&self) -> Option<&Verified> {
        self.verified.as_ref()
    }

    pub(crate) fn identity(&self) -> Result<&Identity> {
        self.identity.as_ref().ok_or_else(|| {
            anyhow!(
                "this command signs requests: pass --key FILE (create one with `cleanroom keygen`)"
            )
        })
    }

    fn headers(&self, method: &str, path: &str, body: &[u8]) -> Result<SignedHeaders> {
        Ok(httpsig::sign_request(
            self.identity()?,
            method,
            path,
            body,
            now(),
            &nonce(),
        ))
    }

    /// An unsigned GET returning JSON.
    pub(crate) fn get_public<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .with_context(|| unreachable(&self.base))?;
        decode(resp)
    }

    /// A signed request with a JSON (or empty) body.
    pub(crate) fn signed<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<T> {
        let h = self.headers(method, path, body)?;
        let url = format!("{}{path}", self.base);
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-digest", &h.content_digest)
            .header("signature-input", &h.signature_input)
            .header("signature", &h.signature)
            .header("content-type", "application/json")
            .body(body.to_vec())?;
        let resp = self
            .agent
            .run(req)
            .with_context(|| unreachable(&self.base))?;
        decode(resp)
    }

    /// A signed PUT streaming a file (hashed first, then sent).
    pub(crate) fn put_file<T: DeserializeOwned>(&self, path: &str, file: &Path) -> Result<T> {
        let mut digest = httpsig::DigestWriter::new();
        let mut f =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            digest.update(&buf[..n]);
        }
        let digest = digest.finish();
        let identity = self.identity()?;
        let h = httpsig::sign_request_with_digest(identity, "PUT", path, &digest, now(), &nonce());
        let len = std::fs::metadata(file)?.len();
        // A progress bar on a terminal (hidden otherwise).
        let bar = crate::progress::bytes("uploading", len);
        let reader = bar.wrap_read(std::fs::File::open(file)?);
        let resp = self
            .agent
            .put(format!("{}{path}", self.base))
            .header("content-digest", &h.content_digest)
            .header("signature-input", &h.signature_input)
            .header("signature", &h.signature)
            .header("content-type", "application/octet-stream")
            .header("content-length", &len.to_string())
            .send(ureq::SendBody::from_owned_reader(reader))
            .with_context(|| unreachable(&self.base))?;
        bar.finish_and_clear();
        decode(resp)
    }

    /// A signed GET streaming Server-Sent Events, calling `on_event` per data line.
    pub(crate) fn events(
        &self,
        mut on_event: impl FnMut(serde_json::Value) -> Result<bool>,
    ) -> Result<()> {
        let path = "/v1/events";
        let h = self.headers("GET", path, b"")?;
        let resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("content-digest", &h.content_digest)
            .header("signature-input", &h.signature_input)
            .header("signature", &h.signature)
            .call()
            .with_context(|| unreachable(&self.base))?;
        if !resp.status().is_success() {
            return decode::<serde_json::Value>(resp).map(|_| ());
        }
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in std::io::BufRead::lines(reader) {
            let line = line?;
            if let Some(data) = line.strip_prefix("data: ") {
                let value: serde_json::Value = serde_json::from_str(data)?;
                if !on_event(value)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// The context of a transport error: the server could not be reached.
fn unreachable(base: &str) -> Failure {
    Failure::new(ExitKind::Network, format!("cannot reach {base}"))
}

/// The server's answer as `T`, or its refusal (an [`ErrorBody`]) as a [`Failure`].
fn decode<T: DeserializeOwned>(resp: ureq::http::Response<ureq::Body>) -> Result<T> {
    let status = resp.status();
    let text = resp
        .into_body()
        .read_to_string()
        .context("cannot read the server's answer")?;
    if !status.is_success() {
        let (kind, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => (e.kind, e.message),
            Err(_) => ("error".into(), text.chars().take(200).collect()),
        };
        let class = if status.is_server_error() {
            ExitKind::Server
        } else {
            ExitKind::Refused
        };
        return Err(Failure::new(
            class,
            format!("server refused ({status}, {kind}): {message}"),
        )
        .into());
    }
    serde_json::from_str(&text).with_context(|| {
        format!(
            "the server answered {status} with something other than {}: {}",
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("JSON"),
            text.chars().take(200).collect::<String>()
        )
    })
}
