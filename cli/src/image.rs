//! `cleanroom image`: the operator's host image, measured. `measure` computes the SEV-SNP
//! launch measurement from the image's inputs and (with `--key`) writes the signed manifest
//! the operator publishes; `check` recomputes a published manifest from local copies of the
//! inputs, so owners need not take the operator's word for the measurement they pin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cleanroom_proto::image::{FileDigest, ImageManifest, SignedImageManifest};
use cleanroom_trust::measure::{LaunchInputs, launch_measurement};
use sha2::{Digest, Sha256};

use crate::failure::Failure;

/// The launch configuration that `measure` and `check` share.
#[derive(Debug, clap::Args)]
pub(crate) struct Launch {
    /// The firmware: OVMF built for SEV-SNP direct boot (`OvmfPkg/AmdSev/AmdSevX64.dsc`).
    #[arg(long, value_name = "FILE")]
    firmware: PathBuf,
    /// The kernel (bzImage), booted directly and measured through the firmware's hash table.
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// The initramfs.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
}

/// `cleanroom image measure`.
#[derive(Debug, clap::Args)]
pub(crate) struct MeasureArgs {
    #[command(flatten)]
    launch: Launch,
    /// The kernel command line (measured exactly: every byte counts).
    #[arg(long, requires = "kernel")]
    cmdline: Option<String>,
    /// vCPUs at launch.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// The vCPU model QEMU is started with (`-cpu`), lowercase: epyc-v4, epyc-milan,
    /// epyc-genoa, ...
    #[arg(long, default_value = "epyc-v4")]
    vcpu_type: String,
    /// SEV features in each VMSA (QEMU's default for SNP is 0x1, SNP active).
    #[arg(long, default_value = "0x1", value_parser = parse_u64)]
    guest_features: u64,
    /// `production`, or `development` (a variant that boots the simulation backend).
    #[arg(long, default_value = "production", value_parser = ["production", "development"])]
    variant: String,
    /// What built the inputs, as NAME=VERSION (repeat): recorded for rebuilding them.
    #[arg(long = "built-with", value_name = "NAME=VERSION")]
    built_with: Vec<String>,
    /// Sign the manifest with this (operator's) key and write it to --out.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Where to write the signed manifest.
    #[arg(long, short = 'o', default_value = "image-manifest.json")]
    out: PathBuf,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
}

/// `cleanroom image check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The published manifest.
    manifest: PathBuf,
    #[command(flatten)]
    launch: Launch,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_u64(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("{text}: {e}"))
}

fn file_digest(path: &Path) -> Result<FileDigest> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(FileDigest {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        bytes: bytes.len() as u64,
    })
}

fn measure_launch(
    launch: &Launch,
    cmdline: Option<&str>,
    vcpus: u32,
    vcpu_type: &str,
    guest_features: u64,
) -> Result<String> {
    let measurement = launch_measurement(&LaunchInputs {
        firmware: &launch.firmware,
        kernel: launch.kernel.as_deref(),
        initrd: launch.initrd.as_deref(),
        cmdline,
        vcpus,
        vcpu_type,
        guest_features,
    })
    .context("cannot compute the launch measurement")?;
    Ok(hex::encode(measurement.0))
}

pub(crate) fn measure(args: MeasureArgs) -> Result<()> {
    let measurement = measure_launch(
        &args.launch,
        args.cmdline.as_deref(),
        args.vcpus,
        &args.vcpu_type,
        args.guest_features,
    )?;
    let mut built_with = BTreeMap::new();
    for item in &args.built_with {
        let (name, version) = item
            .split_once('=')
            .with_context(|| format!("--built-with takes NAME=VERSION, got {item:?}"))?;
        built_with.insert(name.to_string(), version.to_string());
    }
    let manifest = ImageManifest {
        measurement,
        variant: args.variant.clone(),
        firmware: file_digest(&args.launch.firmware)?,
        kernel: args.launch.kernel.as_deref().map(file_digest).transpose()?,
        initrd: args.launch.initrd.as_deref().map(file_digest).transpose()?,
        cmdline: args.cmdline.clone(),
        vcpus: args.vcpus,
        vcpu_type: args.vcpu_type.clone(),
        guest_features: args.guest_features,
        built_with,
        issued_at: crate::remote::runs::now(),
    };
    if let Some(key) = &args.key {
        let operator = cleanroom_proto::Identity::load(key)
            .with_context(|| format!("cannot load key {}", key.display()))?;
        let signed = SignedImageManifest::sign(manifest.clone(), &operator);
        let text = serde_json::to_string_pretty(&signed)? + "\n";
        std::fs::write(&args.out, text)
            .with_context(|| format!("cannot write {}", args.out.display()))?;
    }
    crate::report(args.json, &manifest, || {
        let mut out = format!(
            "measurement {}\n{} image, {} vCPU(s) of {}, guest features {:#x}",
            manifest.measurement,
            manifest.variant,
            manifest.vcpus,
            manifest.vcpu_type,
            manifest.guest_features
        );
        if args.key.is_some() {
            out.push_str(&format!(
                "\nsigned manifest written to {}",
                args.out.display()
            ));
        }
        out
    });
    Ok(())
}

/// What `image check` found.
#[derive(Debug, serde::Serialize)]
struct Checked {
    measurement: String,
    operator: String,
    matches: bool,
}

pub(crate) fn check(args: CheckArgs) -> Result<()> {
    let bytes = std::fs::read(&args.manifest)
        .with_context(|| format!("cannot read {}", args.manifest.display()))?;
    let signed: SignedImageManifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not an image manifest", args.manifest.display()))?;
    signed.verify().context(Failure::verification(
        "the manifest's signature does not verify",
    ))?;
    let m = &signed.manifest;
    // Each local input must be the file the manifest names, byte for byte.
    let pairs = [
        (Some(&args.launch.firmware), Some(&m.firmware), "firmware"),
        (args.launch.kernel.as_ref(), m.kernel.as_ref(), "kernel"),
        (args.launch.initrd.as_ref(), m.initrd.as_ref(), "initrd"),
    ];
    for (local, named, what) in pairs {
        match (local, named) {
            (Some(path), Some(named)) => {
                let digest = file_digest(path)?;
                if digest.sha256 != named.sha256 {
                    return Err(Failure::verification(format!(
                        "{} is not the {what} the manifest names (SHA-256 {} vs {})",
                        path.display(),
                        digest.sha256,
                        named.sha256
                    ))
                    .into());
                }
            }
            (None, None) => {}
            (None, Some(named)) => bail!("the manifest names a {what} ({}): pass it", named.name),
            (Some(_), None) => bail!("the manifest names no {what}, but you passed one"),
        }
    }
    let measurement = measure_launch(
        &args.launch,
        m.cmdline.as_deref(),
        m.vcpus,
        &m.vcpu_type,
        m.guest_features,
    )?;
    let checked = Checked {
        matches: measurement == m.measurement,
        measurement,
        operator: signed.operator.to_string(),
    };
    crate::report(args.json, &checked, || {
        if checked.matches {
            format!(
                "verified: the inputs measure to {} as the manifest says (published by {})",
                checked.measurement, checked.operator
            )
        } else {
            format!(
                "MISMATCH: the inputs measure to {}, the manifest says {}",
                checked.measurement, m.measurement
            )
        }
    });
    if !checked.matches {
        return Err(Failure::verification(
            "the manifest's measurement is not what its inputs measure to: do not pin it",
        )
        .into());
    }
    Ok(())
}

/// `cleanroom image initramfs`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitramfsArgs {
    /// The root file system to pack (a directory: `init` at its top).
    root: PathBuf,
    /// The archive to write (gzip-compressed newc cpio).
    #[arg(long, short = 'o')]
    out: PathBuf,
}

/// Pack `root` as the kernel reads an initramfs: a newc cpio, gzip-compressed, byte for byte
/// the same for the same files wherever and whenever it is packed: entries sorted by path,
/// owned by root, every time zero, inode numbers in order, and only the mode's permission
/// bits kept. `/dev/console` is added (the kernel opens it for PID 1 before anything is
/// mounted).
pub(crate) fn initramfs(args: InitramfsArgs) -> Result<()> {
    let bytes = pack_initramfs(&args.root)?;
    std::fs::write(&args.out, &bytes)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    crate::report(false, &serde_json::Value::Null, || {
        format!(
            "packed {} ({} bytes, SHA-256 {})",
            args.out.display(),
            bytes.len(),
            hex::encode(Sha256::digest(&bytes))
        )
    });
    Ok(())
}

/// One entry of the archive.
enum Node {
    Dir,
    File { bytes: Vec<u8>, executable: bool },
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

pub(crate) fn pack_initramfs(root: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    nodes.insert("dev".into(), Node::Dir);
    nodes.insert(
        "dev/console".into(),
        Node::CharDevice { major: 5, minor: 1 },
    );
    fn walk(root: &Path, dir: &Path, nodes: &mut BTreeMap<String, Node>) -> Result<()> {
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("walked from root")
                .to_str()
                .with_context(|| format!("{} is not UTF-8", path.display()))?
                .to_string();
            let meta = std::fs::symlink_metadata(&path)?;
            let node = if meta.file_type().is_symlink() {
                Node::Symlink(std::fs::read_link(&path)?.to_string_lossy().into_owned())
            } else if meta.is_dir() {
                walk(root, &path, nodes)?;
                Node::Dir
            } else if meta.is_file() {
                Node::File {
                    bytes: std::fs::read(&path)?,
                    executable: meta.permissions().mode() & 0o111 != 0,
                }
            } else {
                bail!(
                    "{} is neither a file, a directory nor a link",
                    path.display()
                );
            };
            nodes.insert(rel, node);
        }
        Ok(())
    }
    walk(root, root, &mut nodes)?;
    if !matches!(
        nodes.get("init"),
        Some(Node::File {
            executable: true,
            ..
        })
    ) {
        bail!("{} has no executable `init` at its top", root.display());
    }
    let mut archive = Vec::new();
    for (ino, (name, node)) in nodes.iter().enumerate() {
        let builder = cpio::newc::Builder::new(name)
            .ino(ino as u32 + 1)
            .uid(0)
            .gid(0)
            .mtime(0);
        let (builder, data): (_, &[u8]) = match node {
            Node::Dir => (builder.mode(0o040_755).nlink(2), &[]),
            Node::File { bytes, executable } => (
                builder
                    .mode(if *executable { 0o100_755 } else { 0o100_644 })
                    .nlink(1),
                bytes,
            ),
            Node::Symlink(target) => (builder.mode(0o120_777).nlink(1), target.as_bytes()),
            Node::CharDevice { major, minor } => (
                builder
                    .mode(0o020_600)
                    .nlink(1)
                    .rdev_major(*major)
                    .rdev_minor(*minor),
                &[],
            ),
        };
        let size = u32::try_from(data.len()).context("a file larger than 4 GiB")?;
        let mut writer = builder.write(&mut archive, size);
        std::io::Write::write_all(&mut writer, data)?;
        writer.finish()?;
    }
    cpio::newc::trailer(&mut archive)?;
    // gzip without a name or a time in the header.
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &archive)?;
    Ok(gz.finish()?)
}
