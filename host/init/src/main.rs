//! PID 1 of the cleanroom host image.
//!
//! It mounts what the service needs, loads the drivers the image ships, brings up the
//! network, and runs `cleanroomd`. Its configuration comes only from the kernel command line,
//! which the SEV-SNP launch measures (the firmware checks it against the hash table QEMU's
//! `kernel-hashes=on` fills): nothing is read from the operator's disk but sealed state.
//!
//! ```text
//! cleanroom.variant=production|development   development runs the INSECURE simulation backend
//! cleanroom.ip=10.0.2.15/24                  the first non-loopback interface's address
//! cleanroom.gateway=10.0.2.2                 default route
//! cleanroom.listen=0.0.0.0:7878              where cleanroomd listens (default shown)
//! cleanroom.data=/dev/vda                    ext4 data disk for sealed state (default: RAM)
//! ```
//!
//! Unknown `cleanroom.*` words are refused. The production variant refuses to start without
//! the SEV-SNP guest device: it says so on the console and powers off. If `cleanroomd` ends,
//! the machine powers off: nothing else runs in the image (no shell, no package manager).

use std::ffi::CString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image's variant, from `cleanroom.variant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// Attests with the SEV-SNP guest device; refuses to start without it.
    Production,
    /// Attests with the INSECURE simulation backend (a different command line, hence a
    /// different measurement).
    Development,
}

/// What the measured command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BootConfig {
    variant: Variant,
    address: Option<(Ipv4Addr, u8)>,
    gateway: Option<Ipv4Addr>,
    listen: SocketAddr,
    data: Option<PathBuf>,
}

fn parse(cmdline: &str) -> Result<BootConfig, String> {
    let mut config = BootConfig {
        variant: Variant::Production,
        address: None,
        gateway: None,
        listen: "0.0.0.0:7878".parse().expect("a literal address"),
        data: None,
    };
    let mut variant = None;
    for word in cmdline.split_ascii_whitespace() {
        let Some(setting) = word.strip_prefix("cleanroom.") else {
            continue;
        };
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("{word}: expected cleanroom.KEY=VALUE"))?;
        match key {
            "variant" => {
                variant = Some(match value {
                    "production" => Variant::Production,
                    "development" => Variant::Development,
                    other => return Err(format!("unknown variant {other:?}")),
                })
            }
            "ip" => {
                let (ip, prefix) = value
                    .split_once('/')
                    .ok_or_else(|| format!("cleanroom.ip={value}: expected ADDRESS/PREFIX"))?;
                let ip: Ipv4Addr = ip.parse().map_err(|e| format!("cleanroom.ip: {e}"))?;
                let prefix: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|p| *p <= 32)
                    .ok_or_else(|| format!("cleanroom.ip: bad prefix length {prefix:?}"))?;
                config.address = Some((ip, prefix));
            }
            "gateway" => {
                config.gateway = Some(
                    value
                        .parse()
                        .map_err(|e| format!("cleanroom.gateway: {e}"))?,
                )
            }
            "listen" => {
                config.listen = value
                    .parse()
                    .map_err(|e| format!("cleanroom.listen: {e}"))?
            }
            "data" => {
                if !value.starts_with("/dev/") {
                    return Err(format!(
                        "cleanroom.data={value}: expected a /dev/ block device"
                    ));
                }
                config.data = Some(PathBuf::from(value));
            }
            other => return Err(format!("unknown setting cleanroom.{other}")),
        }
    }
    config.variant = variant.ok_or("cleanroom.variant is required (production or development)")?;
    Ok(config)
}

/// Print why and power off: PID 1 must never just exit (the kernel would panic).
fn halt(why: &str) -> ! {
    eprintln!("cleanroom-init: {why}");
    eprintln!("cleanroom-init: powering off");
    // SAFETY: sync and reboot take no pointers; power-off is the intended end of PID 1.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on failure (not PID 1, or no privilege): nothing left to do.
    loop {
        std::thread::park();
    }
}

fn cstring(text: &str) -> CString {
    CString::new(text).expect("no NUL in literals and paths here")
}

fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong) -> Result<(), String> {
    std::fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
    let (s, t, f) = (cstring(source), cstring(target), cstring(fstype));
    // SAFETY: the three strings are valid NUL-terminated C strings that outlive the call;
    // data is null (no filesystem options).
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, std::ptr::null()) };
    if rc != 0 {
        return Err(format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Load the image's kernel modules in the order `/etc/cleanroom/modules` lists them.
fn load_modules() -> Result<(), String> {
    let Ok(list) = std::fs::read_to_string("/etc/cleanroom/modules") else {
        return Ok(());
    };
    for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new("/lib/modules/cleanroom").join(name);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let params = cstring("");
        // SAFETY: finit_module reads the open file descriptor and the empty parameter string,
        // both valid for the duration of the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                params.as_ptr(),
                0,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EEXIST) => {}
                // The driver's hardware is absent (sev-guest outside SEV-SNP): what that
                // means is decided below, per variant.
                Some(libc::ENODEV) => eprintln!("cleanroom-init: {name}: no such device here"),
                _ => return Err(format!("loading {name}: {err}")),
            }
        }
    }
    Ok(())
}

/// An `ifreq` naming `interface`.
fn ifreq(interface: &str) -> Result<libc::ifreq, String> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = interface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(format!("interface name {interface:?} is too long"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux, and sockaddr is the
    // generic view the ioctls take.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(
    socket: libc::c_int,
    request: libc::c_ulong,
    arg: *mut libc::c_void,
    what: &str,
) -> Result<(), String> {
    // SAFETY: `arg` points to a live ifreq or rtentry of the type `request` expects.
    let rc = unsafe { libc::ioctl(socket, request, arg) };
    if rc != 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Bring `interface` up, with `address` if given.
fn configure(
    socket: libc::c_int,
    interface: &str,
    address: Option<(Ipv4Addr, u8)>,
) -> Result<(), String> {
    if let Some((ip, prefix)) = address {
        let mut req = ifreq(interface)?;
        req.ifr_ifru.ifru_addr = sockaddr(ip);
        ioctl(
            socket,
            libc::SIOCSIFADDR,
            (&raw mut req).cast(),
            "set address",
        )?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        let mut req = ifreq(interface)?;
        req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
        ioctl(
            socket,
            libc::SIOCSIFNETMASK,
            (&raw mut req).cast(),
            "set netmask",
        )?;
    }
    let mut req = ifreq(interface)?;
    ioctl(
        socket,
        libc::SIOCGIFFLAGS,
        (&raw mut req).cast(),
        "get flags",
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(
        socket,
        libc::SIOCSIFFLAGS,
        (&raw mut req).cast(),
        "bring up",
    )
}

fn network(config: &BootConfig) -> Result<(), String> {
    // SAFETY: a plain datagram socket for interface ioctls; closed below.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if socket < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let result = (|| {
        configure(socket, "lo", None)?;
        let Some(address) = config.address else {
            return Ok(());
        };
        let mut interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map_err(|e| format!("/sys/class/net: {e}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lo")
            .collect();
        interfaces.sort();
        let interface = interfaces
            .first()
            .ok_or("no network interface: is the virtio-net driver in the image?")?;
        configure(socket, interface, Some(address))?;
        if let Some(gateway) = config.gateway {
            // SAFETY: rtentry is plain old data; all-zero is a valid value.
            let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
            route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
            route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
            route.rt_gateway = sockaddr(gateway);
            route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
            ioctl(
                socket,
                libc::SIOCADDRT,
                (&raw mut route).cast(),
                "default route",
            )?;
        }
        eprintln!("cleanroom-init: {interface} is {}/{}", address.0, address.1);
        Ok(())
    })();
    // SAFETY: `socket` is the descriptor opened above.
    unsafe { libc::close(socket) };
    result
}

fn main() {
    if std::process::id() != 1 {
        eprintln!("cleanroom-init runs as PID 1 of the cleanroom image, not as a command");
        std::process::exit(2);
    }
    let fail = |e: String| halt(&e);
    mount("proc", "/proc", "proc", 0).unwrap_or_else(fail);
    mount("sysfs", "/sys", "sysfs", 0).unwrap_or_else(fail);
    mount("devtmpfs", "/dev", "devtmpfs", 0).unwrap_or_else(fail);
    mount("tmpfs", "/tmp", "tmpfs", 0).unwrap_or_else(fail);
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_else(|e| halt(&format!("/proc/cmdline: {e}")));
    let config = parse(&cmdline).unwrap_or_else(|e| halt(&format!("the kernel command line: {e}")));
    load_modules().unwrap_or_else(fail);
    match config.variant {
        Variant::Production if !Path::new("/dev/sev-guest").exists() => halt(
            "this image runs only inside an AMD SEV-SNP guest, and there is no /dev/sev-guest: \
             launch it with QEMU's sev-snp-guest object on an SNP host (docs/operating.md)",
        ),
        Variant::Production => {}
        Variant::Development => eprintln!(
            "cleanroom-init: DEVELOPMENT image: cleanroomd attests with the INSECURE simulation \
             backend; never give it real data"
        ),
    }
    network(&config).unwrap_or_else(fail);
    match &config.data {
        Some(device) => mount(&device.display().to_string(), "/data", "ext4", 0),
        None => mount("tmpfs", "/data", "tmpfs", 0),
    }
    .unwrap_or_else(fail);
    let mut service = Command::new("/bin/cleanroomd");
    service
        .arg("--data-dir")
        .arg("/data/cleanroom")
        .arg("--listen")
        .arg(config.listen.to_string())
        .env_clear()
        .env("RUST_LOG", "info");
    if config.variant == Variant::Development {
        service.arg("--insecure-simulation");
    }
    match service.status() {
        Ok(status) => halt(&format!("cleanroomd ended ({status})")),
        Err(e) => halt(&format!("cannot start /bin/cleanroomd: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_configures_the_service() {
        let config = parse(
            "console=ttyS0 quiet cleanroom.variant=development cleanroom.ip=10.0.2.15/24 \
             cleanroom.gateway=10.0.2.2 cleanroom.listen=0.0.0.0:7000 cleanroom.data=/dev/vda",
        )
        .unwrap();
        assert_eq!(config.variant, Variant::Development);
        assert_eq!(config.address, Some(("10.0.2.15".parse().unwrap(), 24)));
        assert_eq!(config.gateway, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(config.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(config.data, Some(PathBuf::from("/dev/vda")));
    }

    #[test]
    fn anything_unexpected_is_refused() {
        for bad in [
            "console=ttyS0",
            "cleanroom.variant=debug",
            "cleanroom.variant=production cleanroom.shell=1",
            "cleanroom.variant=production cleanroom.ip=10.0.2.15",
            "cleanroom.variant=production cleanroom.ip=10.0.2.15/33",
            "cleanroom.variant=production cleanroom.data=/etc/passwd",
            "cleanroom.variant=production cleanroom.listen",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse("cleanroom.variant=production").unwrap().variant,
            Variant::Production
        );
    }
}
