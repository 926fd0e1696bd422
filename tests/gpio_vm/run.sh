#!/usr/bin/env bash
# deno task test:gpio: runs tests/gpio_v2_test.ts inside a QEMU VM whose kernel has the GPIO
# simulator (gpio-sim), so the libgpiod 2.x binding talks to a real kernel. Downloads are kept
# in a cache directory ($MMAP_IPC_GPIO_VM_CACHE, default ~/.cache/mmap-ipc/gpio-vm) that later
# runs reuse. Where QEMU cannot run, it says SKIPPED and why; that is not a pass.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${MMAP_IPC_GPIO_VM_CACHE:-$HOME/.cache/mmap-ipc/gpio-vm}
mkdir -p "$cache"

skip() {
  echo "SKIPPED: the libgpiod 2.x tests against the kernel GPIO simulator did not run: $*"
  exit 0
}

[ "$(uname -m)" = x86_64 ] || skip "the VM recipe is for x86-64 hosts, this is $(uname -m)"
if ! command -v qemu-system-x86_64 >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "gpio-vm: installing qemu-system-x86"
    (apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null 2>&1; }) ||
      skip "qemu-system-x86 could not be installed"
  else
    skip "qemu-system-x86_64 is not installed (apt install qemu-system-x86)"
  fi
fi

# deno task test:gpio passes the running Deno (tests/gpio_vm/run.ts); run by hand, ask the deno on PATH.
deno_bin=${DENO_BIN:-$(deno eval 'console.log(Deno.execPath())' 2>/dev/null || true)}
[ -x "$deno_bin" ] || skip "cannot find the Deno binary"

krel=$(bash "$here/fetch.sh" "$cache" | sed -n 's/^KREL=//p') || skip "the kernel and libgpiod packages could not be fetched"
[ -n "$krel" ] || skip "no kernel release found"

# Unpack once per kernel release.
unpacked="$cache/unpacked-$krel"
if [ ! -f "$unpacked/.done" ]; then
  rm -rf "$unpacked" && mkdir -p "$unpacked"
  for deb in "$cache"/debs/*.deb; do dpkg -x "$deb" "$unpacked"; done
  touch "$unpacked/.done"
fi
config=$(ls "$unpacked"/usr/lib/modules/"$krel"/config "$unpacked"/boot/config-"$krel" 2>/dev/null | head -n1 || true)
if [ -n "$config" ] && ! grep -q '^CONFIG_GPIO_SIM=m' "$config"; then
  skip "kernel $krel has no CONFIG_GPIO_SIM module"
fi
vmlinuz=$(ls "$unpacked"/boot/vmlinuz-"$krel" "$unpacked"/usr/lib/modules/"$krel"/vmlinuz 2>/dev/null | head -n1 || true)
[ -n "$vmlinuz" ] || skip "no kernel image in the packages for $krel"

# The Deno npm packages the code imports, cached on the host and copied into the guest.
(cd "$root" && "$deno_bin" cache --quiet launch.ts tests/gpio_v2_test.ts >/dev/null)
deno_dir=$("$deno_bin" info --json | sed -n 's/.*"denoDir": *"\([^"]*\)".*/\1/p')

work=$(mktemp -d "${TMPDIR:-/tmp}/mmap-ipc-gpio-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
initrd="$work/root"
mkdir -p "$initrd"/{bin,usr/bin,lib/modules,lib64,usr/lib/x86_64-linux-gnu,proc,sys,dev,tmp,deno,mnt}
cp "$unpacked/bin/busybox" "$initrd/bin/busybox"
cp "$here/init.sh" "$initrd/init" && chmod +x "$initrd/init"
for module in configfs netfs 9pnet 9pnet_virtio 9p gpio-sim; do
  file=$(find "$unpacked/usr/lib/modules/$krel" "$unpacked/lib/modules/$krel" -name "$module.ko*" 2>/dev/null | head -n1 || true)
  [ -n "$file" ] || continue
  case "$file" in
    *.xz) xz -dc "$file" > "$initrd/lib/modules/$module.ko" ;;
    *.zst) zstd -qdc "$file" > "$initrd/lib/modules/$module.ko" ;;
    *) cp "$file" "$initrd/lib/modules/$module.ko" ;;
  esac
done
[ -f "$initrd/lib/modules/gpio-sim.ko" ] || skip "gpio-sim.ko is missing from linux-modules-$krel"
cp /lib64/ld-linux-x86-64.so.2 "$initrd/lib64/"
for lib in libc.so.6 libm.so.6 libdl.so.2 librt.so.1 libpthread.so.0 libgcc_s.so.1; do
  cp -L "/lib/x86_64-linux-gnu/$lib" "$initrd/usr/lib/x86_64-linux-gnu/"
done
cp -a "$unpacked"/usr/lib/x86_64-linux-gnu/libgpiod.so.3* "$initrd/usr/lib/x86_64-linux-gnu/"
cp "$unpacked"/usr/bin/gpio* "$initrd/usr/bin/" 2>/dev/null || true
ln -s ../usr/lib/x86_64-linux-gnu "$initrd/lib/x86_64-linux-gnu"
cp "$deno_bin" "$initrd/usr/bin/deno"
cp -a "$deno_dir/npm" "$initrd/deno/" 2>/dev/null || true
(cd "$initrd" && find . | "$initrd/bin/busybox" cpio -o -H newc 2>/dev/null) > "$work/initrd.cpio"

echo "gpio-vm: booting Linux $krel with gpio-sim (software emulation, about 10 s)"
status=0
timeout 600 qemu-system-x86_64 -accel tcg -smp 2 -m 1536 -nographic -no-reboot \
  -kernel "$vmlinuz" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -virtfs "local,path=$root,mount_tag=host0,security_model=none,readonly=on" || status=$?
# isa-debug-exit makes QEMU exit with 2 * code + 1: 1 means the guest's tests passed.
if [ "$status" = 1 ]; then
  echo "gpio-vm: the libgpiod 2.x tests passed against the kernel GPIO simulator"
  exit 0
fi
if [ "$status" = 124 ]; then
  echo "gpio-vm: the VM did not finish within 600 s" >&2
  exit 1
fi
echo "gpio-vm: the tests failed in the VM (QEMU exit $status, guest code $(((status - 1) / 2)))" >&2
exit 1
