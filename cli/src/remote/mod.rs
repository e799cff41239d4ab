//! Commands that talk to a cleanroomd: owners' and researchers' flows.

pub(crate) mod attest;
pub(crate) mod audit;
pub(crate) mod client;
pub(crate) mod dataset;
pub(crate) mod modules;
pub(crate) mod policy;
pub(crate) mod runs;
pub(crate) mod tls;

use std::path::PathBuf;

use anyhow::{Context, Result};
use cleanroom_proto::Identity;

use client::Client;

/// Where the server is and who we are.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Conn {
    /// The cleanroomd URL.
    #[arg(
        long,
        env = "CLEANROOM_SERVER",
        default_value = "https://127.0.0.1:7878",
        global = true
    )]
    pub(crate) server: String,
    /// Your key file (from `cleanroom keygen`).
    #[arg(long, env = "CLEANROOM_KEY", global = true)]
    pub(crate) key: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// What you require of the enclave (every connection is attested).
    #[command(flatten)]
    pub(crate) trust: attest::Trust,
}

impl Conn {
    pub(crate) fn client(&self) -> Result<Client> {
        let identity = match &self.key {
            Some(path) => Some(
                Identity::load(path)
                    .with_context(|| format!("cannot load key {}", path.display()))?,
            ),
            None => None,
        };
        Client::connect(&self.server, identity, &self.trust)
    }

    /// The signing identity (`--key`), without connecting anywhere.
    pub(crate) fn identity(&self) -> Result<Identity> {
        let path = self.key.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "this command signs: pass --key FILE (create one with `cleanroom keygen`)"
            )
        })?;
        Identity::load(path).with_context(|| format!("cannot load key {}", path.display()))
    }

    /// Print `value` as JSON if --json, else `text`.
    pub(crate) fn print(&self, value: &impl serde::Serialize, text: impl FnOnce() -> String) {
        crate::report(self.json, value, text);
    }
}

/// `cleanroom keygen`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the key (refuses to overwrite).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Print `{"key_file", "party"}` as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn keygen(args: KeygenArgs) -> Result<()> {
    let identity = Identity::generate();
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    identity.save(&args.out)?;
    let value = serde_json::json!({ "key_file": args.out, "party": identity.party() });
    crate::LAST_OUTPUT.with(|last| *last.borrow_mut() = Some(value.clone()));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("wrote {} (party {})", args.out.display(), identity.party());
        println!("share your party id; keep the file secret");
    }
    Ok(())
}
