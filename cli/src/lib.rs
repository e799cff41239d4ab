//! The `cleanroom` command line, as a library so tests drive it in-process.
//!
//! ```no_run
//! cleanroom_cli::run(["cleanroom", "run-local", "analysis.wasm", "--table", "patients=p.csv"]).unwrap();
//! ```

mod build;
mod console;
pub mod failure;
mod image;
mod input;
mod new;
mod pipeline;
mod progress;
mod remote;
mod run_local;
mod tables;

use std::ffi::OsString;

/// Write the completion script for `shell`.
fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "cleanroom", out);
}

/// An HTTP agent for `server` whose connections are attested TLS (or plain HTTP on loopback),
/// verified against `measurement` — for tools and tests that talk to cleanroomd without the
/// CLI's commands.
pub fn attested_agent(
    server: &str,
    measurement: &str,
    accept_simulation: bool,
) -> anyhow::Result<ureq::Agent> {
    let trust = remote::attest::Trust {
        measurements: vec![measurement.to_string()],
        manifests: Vec::new(),
        accept_insecure_simulation: accept_simulation,
        deployment_digest: None,
        author_key: None,
        min_svn: 0,
    };
    Ok(remote::client::Client::connect(server, None, &trust)?.agent())
}

use clap::{Parser, Subcommand};
use cleanroom_proto::run::ReviewDecision;

/// Confidential analyses over hospital data: develop locally, run in the clean room.
#[derive(Debug, Parser)]
#[command(name = "cleanroom", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an analysis component locally on your own test tables, with the
    /// enclave's runtime and limits.
    RunLocal(run_local::Args),
    /// Create a party key (Ed25519 signing + X25519 for results).
    Keygen(remote::KeygenArgs),
    /// Start an analysis project (rust, python or sql) that runs locally as generated.
    New(new::Args),
    /// Build a project into a component (reproducibly, for Rust and SQL) and print its
    /// module hash.
    Build(build::Args),
    /// Print a shell completion script: `cleanroom completions bash > /etc/bash_completion.d/cleanroom`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Operators: measure the host image and sign its manifest; anyone: check a manifest.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Verify a server's attestation, or check a raw SNP report offline.
    #[command(subcommand)]
    Attest(AttestCmd),
    /// Owners: seal and upload tables.
    #[command(subcommand)]
    Dataset(DatasetCmd),
    /// Owners: grant and revoke modules on your datasets.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Owners: release or withhold outputs held for your review.
    #[command(subcommand)]
    Review(ReviewCmd),
    /// Researchers: upload analysis modules.
    #[command(subcommand)]
    Module(ModuleCmd),
    /// Researchers: submit, watch and cancel runs.
    #[command(subcommand)]
    Run(RunCmd),
    /// Researchers: fetch, decrypt and verify results.
    #[command(subcommand)]
    Result(ResultCmd),
    /// Owners: approve, watch, review and audit in your browser (a console on loopback,
    /// talking to the attested server with your key).
    Console(console::Args),
    /// Everyone: verify the audit log offline, watch it live.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Everyone: check a saved receipt offline.
    #[command(subcommand)]
    Receipt(ReceiptCmd),
    /// Researchers: chains of analyses whose intermediate tables stay inside; owners: read
    /// one before granting its digest.
    #[command(subcommand)]
    Pipeline(PipelineCmd),
    /// Owners and researchers: derived datasets (tables pipelines kept inside).
    #[command(subcommand)]
    Derived(DerivedCmd),
}

#[derive(Debug, Subcommand)]
enum PipelineCmd {
    /// Resolve a pipeline file and print its digest and steps (what owners grant).
    Show(pipeline::ShowArgs),
    /// Run the chain locally on your own tables, with the enclave's runtime.
    RunLocal(pipeline::RunLocalArgs),
    /// Upload a pipeline's modules and the pipeline.
    Push {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: pipeline::PushArgs,
    },
    /// Upload and run a pipeline on datasets.
    Submit {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: pipeline::SubmitArgs,
    },
}

#[derive(Debug, Subcommand)]
enum DerivedCmd {
    /// Derived datasets you may see, with provenance and whether they are still usable.
    List {
        #[command(flatten)]
        conn: remote::Conn,
    },
}

#[derive(Debug, Subcommand)]
enum ReceiptCmd {
    /// Check a `receipt.json`: the enclave's signature and that the release is in the audit
    /// log (an inclusion proof in a signed tree head). Offline.
    Verify {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::runs::ReceiptVerifyArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Compute the SEV-SNP launch measurement from the image's inputs; with --key, write the
    /// signed manifest to publish.
    Measure(image::MeasureArgs),
    /// Recompute a published manifest's measurement from local copies of its inputs.
    Check(image::CheckArgs),
    /// Pack a root directory into a reproducible initramfs (gzip'd newc cpio).
    Initramfs(image::InitramfsArgs),
}

#[derive(Debug, Subcommand)]
enum AttestCmd {
    /// Fetch fresh evidence from --server and verify every check.
    Verify {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::attest::VerifyArgs,
    },
    /// Check a raw SNP report against AMD's pinned roots, offline.
    Report(remote::attest::ReportArgs),
}

#[derive(Debug, Subcommand)]
enum DatasetCmd {
    /// Seal a table to the attested enclave and upload it.
    Push {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::dataset::PushArgs,
    },
    /// Seal a table to a known enclave key, offline.
    Seal {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::dataset::SealArgs,
    },
    /// List datasets.
    List {
        #[command(flatten)]
        conn: remote::Conn,
    },
    /// Fetch a dataset's DP preview: summaries, and a synthetic table to develop against
    /// with `run-local` (written to --out).
    Preview {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::dataset::PreviewArgs,
    },
    /// Publish a DP preview of your dataset, computed in the enclave and charged once to its
    /// budget.
    PublishPreview {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::dataset::PublishPreviewArgs,
    },
    /// Show a dataset's differential-privacy budget: total, spent, left (and your share).
    Budget {
        #[command(flatten)]
        conn: remote::Conn,
        /// The dataset id.
        dataset: String,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Grant a module (a new signed policy version).
    Grant {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: Box<remote::policy::GrantArgs>,
    },
    /// Revoke grants (a new signed policy version); runs stop at once.
    Revoke {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::policy::RevokeArgs,
    },
    /// Show and verify a dataset's current policy.
    Show {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::policy::ShowArgs,
    },
    /// Require differential privacy on your dataset (a new signed policy version): the
    /// privacy unit, the budget and the columns' public domains.
    Dp {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::policy::DpArgs,
    },
    /// Sign and publish a policy you wrote (JSON), without building on the server's copy.
    Sign {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::policy::SignArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ReviewCmd {
    /// Show what a held run would release.
    Show {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::runs::ReviewArgs,
    },
    /// Release the outputs.
    Release {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::runs::ReviewArgs,
    },
    /// Withhold the outputs.
    Withhold {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::runs::ReviewArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ModuleCmd {
    /// Upload a component (and, with --source, the project it was built from); prints its hash.
    Push {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::modules::PushArgs,
    },
    /// Show a module: size, uploader, its source's summary (--source DIR writes the files).
    Show {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::modules::ShowArgs,
    },
    /// Owners: rebuild a module from its source with the pinned toolchain and confirm that
    /// the hash you are asked to grant is what the source builds.
    Verify {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::modules::VerifyArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RunCmd {
    /// Ask the owners of the inputs to grant a module (they approve in the console or with
    /// `policy grant`).
    Request {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::runs::RequestArgs,
    },
    /// Submit a run.
    Submit {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::runs::SubmitArgs,
    },
    /// Follow a run until it ends.
    Watch {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::runs::WatchArgs,
    },
    /// Cancel a run.
    Cancel {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::runs::CancelArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ResultCmd {
    /// Fetch, decrypt and verify a released run's outputs.
    Fetch {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::runs::FetchArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Verify the hash chain and the enclave-signed head.
    Verify {
        #[command(flatten)]
        conn: remote::Conn,
        #[command(flatten)]
        args: remote::audit::VerifyArgs,
    },
    /// Print audit events that concern you as they happen.
    Watch {
        #[command(flatten)]
        conn: remote::Conn,
    },
}

/// Print a command's answer: `value` as JSON with `--json`, else `text`; and keep `value` for
/// [`run_capture`].
pub(crate) fn report(json: bool, value: &impl serde::Serialize, text: impl FnOnce() -> String) {
    let value = serde_json::to_value(value).expect("answers always serialise");
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        println!("{}", text());
    }
    LAST_OUTPUT.with(|last| *last.borrow_mut() = Some(value));
}

/// The source bundle `cleanroom module push --source DIR` uploads for the project in `dir`.
pub fn source_bundle(dir: &std::path::Path) -> anyhow::Result<cleanroom_proto::api::SourceBundle> {
    build::collect_source(dir, build::detect(dir)?)
}

/// The initramfs `cleanroom image initramfs ROOT` writes, as bytes.
pub fn initramfs_bytes(root: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    image::pack_initramfs(root)
}

/// Write a source bundle into `dir` as `cleanroom module show --source DIR` does.
pub fn write_source_bundle(
    bundle: &cleanroom_proto::api::SourceBundle,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    build::write_source(bundle, dir)
}

thread_local! {
    /// The JSON value the last command on this thread printed (for `run_capture`).
    static LAST_OUTPUT: std::cell::RefCell<Option<serde_json::Value>> = const { std::cell::RefCell::new(None) };
}

/// Like [`run`], and also return the JSON value the command reports (what
/// `--json` prints; `null` for commands without one). Tests and scripts
/// embedding the CLI use it.
pub fn run_capture<I, T>(args: I) -> anyhow::Result<serde_json::Value>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    LAST_OUTPUT.with(|last| *last.borrow_mut() = None);
    run(args)?;
    Ok(LAST_OUTPUT
        .with(|last| last.borrow_mut().take())
        .unwrap_or(serde_json::Value::Null))
}

/// Parse `args` (program name first) and run the command. Usage errors are
/// returned as `clap::Error` inside the `anyhow::Error`.
pub fn run<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    match cli.command {
        Command::RunLocal(args) => run_local::run(args),
        Command::Keygen(args) => remote::keygen(args),
        Command::New(args) => new::run(args),
        Command::Build(args) => build::run(args),
        Command::Image(ImageCmd::Measure(args)) => image::measure(args),
        Command::Image(ImageCmd::Check(args)) => image::check(args),
        Command::Image(ImageCmd::Initramfs(args)) => image::initramfs(args),
        Command::Completions { shell } => {
            completions(shell, &mut std::io::stdout());
            Ok(())
        }
        Command::Attest(AttestCmd::Verify { conn, args }) => remote::attest::verify(&conn, args),
        Command::Attest(AttestCmd::Report(args)) => remote::attest::report(args),
        Command::Dataset(DatasetCmd::Push { conn, args }) => remote::dataset::push(&conn, args),
        Command::Dataset(DatasetCmd::Seal { conn, args }) => remote::dataset::seal(&conn, args),
        Command::Dataset(DatasetCmd::List { conn }) => remote::dataset::list(&conn),
        Command::Dataset(DatasetCmd::Preview { conn, args }) => {
            remote::dataset::preview(&conn, args)
        }
        Command::Dataset(DatasetCmd::PublishPreview { conn, args }) => {
            remote::dataset::publish_preview(&conn, args)
        }
        Command::Dataset(DatasetCmd::Budget { conn, dataset }) => {
            remote::dataset::budget(&conn, &dataset)
        }
        Command::Policy(PolicyCmd::Grant { conn, args }) => remote::policy::grant(&conn, *args),
        Command::Policy(PolicyCmd::Revoke { conn, args }) => remote::policy::revoke(&conn, args),
        Command::Policy(PolicyCmd::Show { conn, args }) => remote::policy::show(&conn, args),
        Command::Policy(PolicyCmd::Sign { conn, args }) => remote::policy::sign(&conn, args),
        Command::Policy(PolicyCmd::Dp { conn, args }) => remote::policy::dp(&conn, args),
        Command::Review(ReviewCmd::Show { conn, args }) => remote::runs::review(&conn, args, None),
        Command::Review(ReviewCmd::Release { conn, args }) => {
            remote::runs::review(&conn, args, Some(ReviewDecision::Release))
        }
        Command::Review(ReviewCmd::Withhold { conn, args }) => {
            remote::runs::review(&conn, args, Some(ReviewDecision::Withhold))
        }
        Command::Module(ModuleCmd::Push { conn, args }) => remote::modules::push(&conn, args),
        Command::Module(ModuleCmd::Show { conn, args }) => remote::modules::show(&conn, args),
        Command::Module(ModuleCmd::Verify { conn, args }) => remote::modules::verify(&conn, args),
        Command::Run(RunCmd::Request { conn, args }) => remote::runs::request(&conn, args),
        Command::Run(RunCmd::Submit { conn, args }) => remote::runs::submit(&conn, args),
        Command::Run(RunCmd::Watch { conn, args }) => remote::runs::watch(&conn, args),
        Command::Run(RunCmd::Cancel { conn, args }) => remote::runs::cancel(&conn, args),
        Command::Result(ResultCmd::Fetch { conn, args }) => remote::runs::fetch(&conn, args),
        Command::Console(args) => console::run(args),
        Command::Audit(AuditCmd::Verify { conn, args }) => remote::audit::verify(&conn, args),
        Command::Audit(AuditCmd::Watch { conn }) => remote::audit::watch(&conn),
        Command::Receipt(ReceiptCmd::Verify { conn, args }) => {
            remote::runs::verify_receipt(&conn, args)
        }
        Command::Pipeline(PipelineCmd::Show(args)) => pipeline::show(args),
        Command::Pipeline(PipelineCmd::RunLocal(args)) => pipeline::run_local(args),
        Command::Pipeline(PipelineCmd::Push { conn, args }) => pipeline::push(&conn, args),
        Command::Pipeline(PipelineCmd::Submit { conn, args }) => pipeline::submit(&conn, args),
        Command::Derived(DerivedCmd::List { conn }) => pipeline::derived(&conn),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn completions_cover_every_command() {
        let mut out = Vec::new();
        super::completions(clap_complete::Shell::Bash, &mut out);
        let script = String::from_utf8(out).unwrap();
        for command in ["run-local", "receipt", "audit", "new", "policy"] {
            assert!(script.contains(command), "{command} missing");
        }
        assert!(script.contains("--any-researcher"));
    }
}
