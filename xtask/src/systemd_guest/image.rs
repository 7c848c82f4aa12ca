//! The guests' machine: a Debian 12 root filesystem built once from the
//! archive (mmdebstrap) and cached under target/, and how one guest boots
//! it through a copy-on-write overlay.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::ROOT;
use crate::arch::Arch;
use crate::cmd::{run, say};
use crate::matrix::qemu::{self, Live};

/// Packages of the guest beyond minbase: systemd as init, a kernel with its
/// initrd, networking for the fleet, a Prometheus to scrape the service,
/// an NFS server with a Python client for the server-side copy check, and
/// gdb, whose backtraces the unit's stacks are held to.
const PACKAGES: &str =
    "systemd-sysv,dbus,udev,linux-image-amd64,initramfs-tools,prometheus,nfs-kernel-server,python3-minimal,gdb";

/// Units and files the guest needs besides packages.
const CUSTOMIZE: &str = r#"set -e
mkdir -p "$1/mnt/ct" "$1/etc/systemd/network"
echo '/dev/vdb /mnt/ct ext4 defaults 0 2' >> "$1/etc/fstab"
printf '[Match]\nName=eth0\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n' > "$1/etc/systemd/network/10-eth0.network"
cat > "$1/etc/systemd/system/copytrace-check.service" <<'UNIT'
[Unit]
Description=copytrace package checks
After=multi-user.target network-online.target
RequiresMountsFor=/mnt/ct
[Service]
Type=simple
ExecStart=/mnt/ct/copytrace-systemd-check
StandardInput=tty
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
[Install]
WantedBy=multi-user.target
UNIT
chroot "$1" systemctl enable systemd-networkd.service copytrace-check.service
chroot "$1" systemctl mask serial-getty@ttyS0.service getty@tty1.service
"#;

/// The cached root filesystem image with its kernel and initrd.
pub struct Base {
    image: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

fn recipe_hash() -> String {
    // A change of packages or customisation rebuilds the image.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in PACKAGES.bytes().chain(CUSTOMIZE.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub fn base() -> Result<Base> {
    let root = PathBuf::from(ROOT);
    let base = Base {
        image: root.join("base.img"),
        kernel: root.join("vmlinuz"),
        initrd: root.join("initrd.img"),
    };
    let stamp = root.join("base.recipe");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(recipe_hash().as_str())
        && base.image.exists()
    {
        return Ok(base);
    }
    std::fs::create_dir_all(&root)?;
    let tar = root.join("rootfs.tar");
    let hook = root.join("customize.sh");
    std::fs::write(&hook, CUSTOMIZE)?;
    say("systemd guest: building a Debian 12 root filesystem (mmdebstrap, about 2 min, cached)");
    run(Command::new("mmdebstrap")
        .args([
            "--variant=minbase",
            "--aptopt=APT::Install-Recommends \"false\"",
        ])
        .arg(format!("--include={PACKAGES}"))
        .arg(format!("--customize-hook=sh {} \"$1\"", hook.display()))
        .args(["bookworm"])
        .arg(&tar))?;
    let stage = root.join("stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    run(Command::new("tar")
        .args(["-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&stage))?;
    let boot = stage.join("boot");
    let pick = |prefix: &str| -> Result<PathBuf> {
        std::fs::read_dir(&boot)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .with_context(|| format!("no /boot/{prefix}* in the root filesystem"))
    };
    std::fs::copy(pick("vmlinuz-")?, &base.kernel)?;
    std::fs::copy(pick("initrd.img-")?, &base.initrd)?;
    let _ = std::fs::remove_file(&base.image);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "root", "-d"])
        .arg(&stage)
        .arg(&base.image)
        .arg("3G"))?;
    std::fs::remove_dir_all(&stage)?;
    std::fs::remove_file(&tar)?;
    std::fs::write(&stamp, recipe_hash())?;
    Ok(base)
}

/// Boots one guest on an overlay of the base, its data disk, and a
/// forwarded metrics port.
pub fn boot(base: &Base, name: &str, data: &Path, metrics_port: u16) -> Result<Live> {
    let root = PathBuf::from(ROOT);
    let overlay = root.join(format!("{name}.qcow2"));
    let _ = std::fs::remove_file(&overlay);
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(std::fs::canonicalize(&base.image)?)
        .arg(&overlay))?;
    let mut cmd = qemu::base_command(Arch::X86_64, 1536);
    cmd.arg("-kernel")
        .arg(&base.kernel)
        .arg("-initrd")
        .arg(&base.initrd)
        .args([
            "-append",
            "root=/dev/vda rw console=ttyS0 quiet net.ifnames=0 systemd.show_status=0",
        ])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", data.display()))
        .args([
            "-nic",
            &format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{metrics_port}-:9977"),
        ]);
    say(&format!(
        "systemd guest {name}: booting Debian 12 (systemd, stock kernel)"
    ));
    Live::start(cmd)
}
