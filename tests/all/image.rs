//! The host image's launch measurement: `cleanroom image measure` against the reference tool
//! `sev-snp-measure` on the same inputs (our firmware build, a kernel, an initramfs, a command
//! line) for several vCPU counts and models; the signed manifest, `image check`, and pinning a
//! manifest with `attest verify --manifest`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::server::TestServer;

/// The firmware `scripts/build-firmware.sh` built (`scripts/test.sh` exports its path).
fn firmware() -> PathBuf {
    let path = std::env::var_os("CLEANROOM_FIRMWARE")
        .map(PathBuf::from)
        .expect(
            "CLEANROOM_FIRMWARE is not set: run scripts/build-firmware.sh and export its output \
         (scripts/test.sh does)",
        );
    assert!(path.is_file(), "no firmware at {}", path.display());
    path
}

fn sev_snp_measure() -> PathBuf {
    std::env::var_os("CLEANROOM_SEV_SNP_MEASURE")
        .map(PathBuf::from)
        .expect("CLEANROOM_SEV_SNP_MEASURE is not set (scripts/test.sh installs the tool)")
}

/// The reference tool's measurement, hex.
fn reference(
    firmware: &Path,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    vcpus: u32,
    vcpu_type: &str,
) -> String {
    let out = Command::new(sev_snp_measure())
        .args([
            "--mode",
            "snp",
            "--vmm-type",
            "QEMU",
            "--output-format",
            "hex",
        ])
        .arg(format!("--vcpus={vcpus}"))
        .arg(format!("--vcpu-type={vcpu_type}"))
        .arg("--ovmf")
        .arg(firmware)
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .arg(format!("--append={cmdline}"))
        .output()
        .expect("sev-snp-measure runs");
    assert!(
        out.status.success(),
        "sev-snp-measure failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Inputs with known contents: the measurement hashes the kernel and initramfs as files.
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.cpio.gz");
    let pattern = |len: u32, step: u32, modulus: u32| -> Vec<u8> {
        (0..len).map(|i| (i * step % modulus) as u8).collect()
    };
    std::fs::write(&kernel, pattern(3_000_000, 7, 251)).unwrap();
    std::fs::write(&initrd, pattern(1_000_000, 13, 241)).unwrap();
    (kernel, initrd)
}

/// `--firmware F --kernel K --initrd I`.
fn launch_args<'a>(firmware: &'a Path, kernel: &'a Path, initrd: &'a Path) -> [&'a str; 6] {
    let path = |p: &'a Path| p.to_str().expect("UTF-8 temporary paths");
    [
        "--firmware",
        path(firmware),
        "--kernel",
        path(kernel),
        "--initrd",
        path(initrd),
    ]
}

fn measure(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut argv = vec!["cleanroom", "image", "measure", "--json"];
    argv.extend(args);
    cleanroom_cli::run_capture(argv)
}

#[test]
fn the_measurement_matches_sev_snp_measure() {
    let firmware = firmware();
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = inputs(dir.path());
    let cmdline = "console=ttyS0 cleanroom.listen=0.0.0.0:7878 quiet";
    let launch = launch_args(&firmware, &kernel, &initrd);
    let mut seen = std::collections::BTreeSet::new();
    for (vcpus, ours, theirs) in [
        (1, "epyc-v4", "EPYC-v4"),
        (2, "epyc-v4", "EPYC-v4"),
        (4, "epyc-milan", "EPYC-Milan"),
        (8, "epyc-genoa", "EPYC-Genoa"),
    ] {
        let vcpus_s = vcpus.to_string();
        let ours_m = measure(
            &[
                &launch[..],
                &[
                    "--cmdline",
                    cmdline,
                    "--vcpus",
                    &vcpus_s,
                    "--vcpu-type",
                    ours,
                ],
            ]
            .concat(),
        )
        .unwrap()["measurement"]
            .as_str()
            .unwrap()
            .to_string();
        let theirs_m = reference(&firmware, &kernel, &initrd, cmdline, vcpus, theirs);
        assert_eq!(ours_m, theirs_m, "{vcpus} x {ours}");
        seen.insert(ours_m);
    }
    assert_eq!(
        seen.len(),
        4,
        "each vCPU configuration measures differently"
    );
    // One byte of the command line is a different image.
    let edited = cmdline.replace("quiet", "quieT");
    let other = measure(&[&launch[..], &["--cmdline", &edited]].concat()).unwrap();
    assert!(!seen.contains(other["measurement"].as_str().unwrap()));
}

#[test]
fn a_signed_manifest_is_checked_against_the_inputs_and_pins_the_enclave() {
    let firmware = firmware();
    let s = TestServer::start();
    s.keygen("operator");
    let dir = tempfile::tempdir().unwrap();
    let (kernel, initrd) = inputs(dir.path());
    let manifest = dir.path().join("image-manifest.json");
    let common = launch_args(&firmware, &kernel, &initrd);
    let key = s.path("operator.json");
    let mut args = common.to_vec();
    args.extend([
        "--cmdline",
        "console=ttyS0",
        "--vcpus",
        "2",
        "--key",
        key.to_str().unwrap(),
        "-o",
        manifest.to_str().unwrap(),
        "--built-with",
        "rustc=1.97.0",
    ]);
    let written = measure(&args).unwrap();
    let mut check = vec![
        "cleanroom",
        "image",
        "check",
        manifest.to_str().unwrap(),
        "--json",
    ];
    check.extend(common);
    let checked = cleanroom_cli::run_capture(check.clone()).unwrap();
    assert_eq!(checked["matches"], true);
    assert_eq!(checked["measurement"], written["measurement"]);

    // The operator's kernel is not the one published: the check says which input differs.
    std::fs::write(&kernel, b"another kernel").unwrap();
    let err = cleanroom_cli::run(check.clone()).unwrap_err();
    assert!(
        format!("{err:#}").contains("is not the kernel the manifest names"),
        "{err:#}"
    );
    assert_eq!(cleanroom_cli::failure::exit_code(&err), 6);

    // A manifest edited after signing does not verify.
    let mut signed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    signed["manifest"]["measurement"] = serde_json::Value::String("00".repeat(48));
    let forged = dir.path().join("forged.json");
    std::fs::write(&forged, serde_json::to_vec(&signed).unwrap()).unwrap();
    // What the CLI accepts with only a manifest pinned (no --measurement).
    let attest = |manifest: &Path, simulation: bool| {
        let mut argv = vec![
            "cleanroom".to_string(),
            "attest".into(),
            "verify".into(),
            "--server".into(),
            s.url.clone(),
            "--json".into(),
            "--manifest".into(),
            manifest.display().to_string(),
        ];
        if simulation {
            argv.push("--accept-insecure-simulation".into());
        }
        cleanroom_cli::run_capture(argv)
    };
    let err = attest(&forged, true).unwrap_err();
    assert!(format!("{err:#}").contains("does not verify"), "{err:#}");

    // Pinning a manifest pins its measurement: the simulation server's is another one, so
    // it is refused; a manifest naming the server's measurement is accepted.
    let err = attest(&manifest, true).unwrap_err();
    assert!(
        format!("{err:#}").contains("not in the allow-list"),
        "{err:#}"
    );
    let mut matching: cleanroom_proto::image::SignedImageManifest =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    matching.manifest.measurement = s.measurement.clone();
    matching.manifest.variant = "development".into();
    let operator = cleanroom_proto::Identity::load(&key).unwrap();
    let matching = cleanroom_proto::image::SignedImageManifest::sign(matching.manifest, &operator);
    let dev = dir.path().join("dev.json");
    std::fs::write(&dev, serde_json::to_vec(&matching).unwrap()).unwrap();
    let verified = attest(&dev, true).unwrap();
    assert_eq!(verified["claims"]["measurement"], s.measurement);
    // A development image is never trusted without saying so.
    let err = attest(&dev, false).unwrap_err();
    assert!(
        format!("{err:#}").contains("describes a development image"),
        "{err:#}"
    );
}

/// A root file system in `dir`, written in the given order (file times differ with it).
fn root(dir: &Path, order: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    for name in order {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("contents of {name}")).unwrap();
        if *name == "init" || name.starts_with("bin/") {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::os::unix::fs::symlink("../lib", dir.join("lib64")).unwrap();
}

#[test]
fn the_initramfs_is_the_same_bytes_wherever_and_whenever_it_is_packed() {
    let files = [
        "init",
        "bin/cleanroomd",
        "etc/cleanroom/modules",
        "lib/libc.so.6",
    ];
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    root(a.path(), &files);
    let reversed: Vec<&str> = files.iter().rev().copied().collect();
    root(b.path(), &reversed);
    let first = cleanroom_cli::initramfs_bytes(a.path()).unwrap();
    let second = cleanroom_cli::initramfs_bytes(b.path()).unwrap();
    assert!(first == second, "two packings of the same files differ");

    // What the kernel will find: every file, owned by root, at time zero, and a console.
    let mut gz = flate2::read::GzDecoder::new(&first[..]);
    let mut archive = Vec::new();
    std::io::Read::read_to_end(&mut gz, &mut archive).unwrap();
    let mut reader = &archive[..];
    let mut names = Vec::new();
    loop {
        let entry = cpio::NewcReader::new(reader).unwrap();
        if entry.entry().is_trailer() {
            break;
        }
        let e = entry.entry();
        assert_eq!((e.uid(), e.gid(), e.mtime()), (0, 0, 0), "{}", e.name());
        if e.name() == "init" {
            assert_eq!(e.mode(), 0o100_755);
        }
        if e.name() == "dev/console" {
            assert_eq!((e.rdev_major(), e.rdev_minor()), (5, 1));
        }
        names.push(e.name().to_string());
        reader = entry.finish().unwrap();
    }
    for expected in [
        "init",
        "bin/cleanroomd",
        "dev/console",
        "lib64",
        "etc/cleanroom/modules",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are in path order");

    // Without an executable init there is nothing for the kernel to run.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("init"), "not executable").unwrap();
    let err = cleanroom_cli::initramfs_bytes(empty.path()).unwrap_err();
    assert!(format!("{err:#}").contains("executable `init`"), "{err:#}");
}
