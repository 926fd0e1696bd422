#!/usr/bin/env bash
# Boots one GPIO test VM under QEMU (software emulation) and runs the project's tests in it
# against the kernel's GPIO simulator. deno task test:gpio (run.ts) calls this once per VM:
#
#   v2-x86_64   trixie-backports kernel (gpio-sim is a module there), libgpiod 2.x
#   v1-x86_64   bookworm-backports 6.12 kernel, which still has the v1 GPIO interface, with
#               gpio-sim built for it (build_gpio_sim.sh), and libgpiod 1.6 (bookworm)
#   v2-aarch64  the arm64 trixie-backports kernel on a Cortex-A72, libgpiod 2.x and the aarch64
#               Deno; it also runs the library's tests there
#
# The guest's root file system is an initramfs made of Debian packages (busybox, glibc,
# libgpiod), the kernel's modules and a Deno binary; the project is mounted read-only over 9p.
# Packages, the aarch64 Deno and the built module stay in the cache for later runs.
#
# Usage: vm.sh NAME. Environment: MMAP_IPC_GPIO_VM_CACHE (the cache directory, default
# ~/.cache/mmap-ipc/gpio-vm), DENO_BIN (the host's Deno),
# DENO_DIR (its cache, for the npm packages), TESTS (test files for every VM), LIBRARY_TESTS
# (test files for the aarch64 VM too), TEST_FILTER (deno test --filter for the guests).
# Exit status: 0 passed, 1 failed, 77 skipped (QEMU cannot run here; the reason is printed).
set -euo pipefail
vm=$1
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/apt.sh"

skip() {
  echo "SKIPPED: $vm: $*"
  exit 77
}
fail() {
  echo "gpio-vm: $vm: $*" >&2
  exit 1
}

case $vm in
  v2-x86_64) arch=amd64 qemu=qemu-system-x86_64 qemu_package=qemu-system-x86 suite=trixie-backports api=2 ;;
  v1-x86_64) arch=amd64 qemu=qemu-system-x86_64 qemu_package=qemu-system-x86 suite=bookworm-backports api=1 ;;
  v2-aarch64) arch=arm64 qemu=qemu-system-aarch64 qemu_package=qemu-system-arm suite=trixie-backports api=2 ;;
  *) fail "unknown VM (v2-x86_64, v1-x86_64 or v2-aarch64)" ;;
esac

[ "$(uname -m)" = x86_64 ] || skip "the VMs are built for x86-64 hosts, this is $(uname -m)"
command -v apt-get >/dev/null && command -v dpkg >/dev/null ||
  skip "needs apt-get and dpkg (a Debian-based host) to fetch the guest's packages"
if ! command -v "$qemu" >/dev/null; then
  [ "$(id -u)" = 0 ] || skip "$qemu is not installed (apt install $qemu_package), and only root may install it"
  echo "gpio-vm: installing $qemu_package"
  apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "$qemu_package" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "$qemu_package" >/dev/null 2>&1; } ||
    skip "$qemu_package could not be installed"
fi

CACHE=${MMAP_IPC_GPIO_VM_CACHE:-$HOME/.cache/mmap-ipc/gpio-vm}
dir="$CACHE/$vm"
mkdir -p "$dir"
# One preparation at a time per cache (the private apt state is not locked); not held while booting.
exec 9>"$CACHE/.lock"
flock 9
# What the single-VM version of this script kept in the cache, now unused.
rm -rf "$CACHE/apt" "$CACHE/debs" "$CACHE"/unpacked-*
if [ -f "$dir/.ready" ]; then
  echo "gpio-vm: $vm: warm cache ($dir)"
else
  echo "gpio-vm: $vm: cold cache ($dir): downloading what it needs"
fi

# --- packages ---------------------------------------------------------------------------
# busybox for packing the initramfs on this host, whatever the guest's architecture.
apt_init "$CACHE/apt-amd64" amd64 || fail "cannot read the Debian package lists"
apt_fetch "$CACHE/host-tools" busybox-static/bookworm || fail "cannot download busybox-static"
packer="$CACHE/host-tools/busybox"
if [ ! -x "$packer" ]; then
  dpkg --fsys-tarfile "$(deb_path "$CACHE/host-tools" busybox-static)" | tar -xO ./bin/busybox > "$packer.tmp"
  chmod +x "$packer.tmp" && mv "$packer.tmp" "$packer"
fi

apt_init "$CACHE/apt-$arch" "$arch" || fail "cannot read the Debian package lists for $arch"
krel=$(kernel_release "linux-image-$arch" "$suite") || fail "no linux-image-$arch in $suite"
userland=(busybox-static/bookworm libc6/bookworm libgcc-s1/bookworm)
if [ "$api" = 2 ]; then
  userland+=(libgpiod3/bookworm-backports gpiod/bookworm-backports libgpiod2/bookworm)
else
  userland+=(libgpiod2/bookworm gpiod/bookworm)
fi
apt_fetch "$dir/debs" "${userland[@]}" || fail "cannot download the guest's packages"
if apt-cache "${APT[@]}" show "linux-binary-$krel" >/dev/null 2>&1; then
  kernel=("linux-binary-$krel" "linux-modules-$krel" "linux-base-$krel")
else
  kernel=("linux-image-$krel-unsigned")
fi
apt_fetch "$dir/kernel-debs" "${kernel[@]}" || fail "cannot download the kernel $krel"

# Unpacked once per set of packages.
unpack() { # unpack DEBS_DIR TARGET
  local stamp
  stamp=$(cd "$1" && ls ./*.deb)
  if [ "$(cat "$2/.debs" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$2" && mkdir -p "$2"
    for deb in "$1"/*.deb; do dpkg -x "$deb" "$2"; done
    echo "$stamp" > "$2/.debs"
  fi
}
first_existing() { # the first of the paths that exists
  local path
  for path in "$@"; do [ -e "$path" ] && { echo "$path"; return; }; done
  return 0
}
unpack "$dir/debs" "$dir/userland"
unpack "$dir/kernel-debs" "$dir/kernel"
modules=$(first_existing "$dir/kernel/usr/lib/modules/$krel" "$dir/kernel/lib/modules/$krel")
[ -n "$modules" ] || fail "no modules in the packages of $krel"
config=$(first_existing "$modules/config" "$dir/kernel/boot/config-$krel")
vmlinuz=$(first_existing "$modules/vmlinuz" "$dir/kernel/boot/vmlinuz-$krel")
[ -n "$config" ] && [ -n "$vmlinuz" ] || fail "no kernel image or config in the packages of $krel"
cdev_v1=n
grep -q '^CONFIG_GPIO_CDEV_V1=y' "$config" && cdev_v1=y

wanted=(configfs 9pnet_virtio 9p)
extra_module=
if [ "$api" = 2 ]; then
  grep -q '^CONFIG_GPIO_SIM=m' "$config" || fail "kernel $krel has no gpio-sim module"
  wanted+=(gpio-sim)
else
  [ "$cdev_v1" = y ] || fail "kernel $krel has no v1 GPIO interface, which libgpiod 1.6 needs"
  extra_module="$dir/gpio-sim-$krel.ko"
  if [ ! -f "$extra_module" ]; then
    base=${krel%-amd64}
    source_package="linux-source-${krel%%.*}.$(echo "$krel" | cut -d. -f2)"
    echo "gpio-vm: $vm: building gpio-sim for $krel (once; about 300 MB of packages)"
    apt_fetch "$dir/build-debs" "linux-headers-$krel" "linux-headers-$base-common" \
      "linux-kbuild-$base" "$source_package=$(apt_version "$source_package" "$suite")" ||
      fail "cannot download the kernel headers and source for $krel"
    bash "$here/build_gpio_sim.sh" "$krel" "$dir/build-debs" "$extra_module" ||
      fail "cannot build gpio-sim for $krel"
    rm -rf "$dir/build-debs" # only the module is needed from now on
  fi
fi

# The Deno for the guest: this host's for x86-64, the npm package of the same version for aarch64.
version=$("$DENO_BIN" --version | awk 'NR == 1 {print $2}')
if [ "$arch" = amd64 ]; then
  guest_deno=$DENO_BIN
else
  guest_deno="$CACHE/deno-$version-aarch64/deno"
  if [ ! -x "$guest_deno" ]; then
    command -v npm >/dev/null || fail "needs npm to fetch the aarch64 Deno (@deno/linux-arm64-glibc)"
    mkdir -p "$(dirname "$guest_deno")"
    tarball=$(cd "$(dirname "$guest_deno")" && npm pack --silent "@deno/linux-arm64-glibc@$version") ||
      fail "cannot fetch @deno/linux-arm64-glibc@$version from npm"
    tar -xzf "$(dirname "$guest_deno")/$tarball" -C "$(dirname "$guest_deno")" --strip-components=1 package/deno
    rm -f "$(dirname "$guest_deno")/$tarball"
  fi
fi
touch "$dir/.ready"

# --- initramfs --------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/mmap-ipc-gpio-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
image="$work/root"
mkdir -p "$image"/{bin,usr/bin,usr/lib,lib/modules,proc,sys,dev,tmp,mnt,out,deno} "$work/out"
cp "$dir/userland/bin/busybox" "$image/bin/busybox"
cp -a "$dir/userland/lib"* "$image/"
cp -a "$dir/userland/usr/lib/." "$image/usr/lib/"
cp -a "$dir"/userland/usr/bin/gpio* "$image/usr/bin/"
cp "$here/init.sh" "$image/init" && chmod +x "$image/init"
cp "$guest_deno" "$image/usr/bin/deno"
# The x86-64 guests' helper that makes edges come faster than the kernel takes them (built
# here: the guests have no compiler; the tests that need it are ignored where it is missing).
if [ "$arch" = amd64 ] && command -v gcc >/dev/null; then
  gcc -O2 -o "$image/usr/bin/rt_burst" "$here/rt_burst.c" || fail "cannot build rt_burst"
fi
cp -a "$DENO_DIR/npm" "$image/deno/" 2>/dev/null || true

# Modules with what they depend on, dependencies first. The packages have no modules.dep (depmod
# makes it at install time), so each module's own .modinfo says what it needs.
find "$modules" -name '*.ko*' > "$work/modules.list"
order=()
add_module() {
  local name=${1//-/_} file dep loaded
  for loaded in "${order[@]}"; do [ "$loaded" = "$name" ] && return; done
  file=$(awk -v want="$name" '{
    base = $0; sub(/.*\//, "", base); sub(/\.ko(\.xz|\.zst)?$/, "", base); gsub(/-/, "_", base)
    if (base == want) { print; exit }
  }' "$work/modules.list")
  [ -n "$file" ] || fail "kernel $krel has no module $1"
  case "$file" in
    *.xz) xz -dc "$file" > "$image/lib/modules/$name.ko" ;;
    *.zst) zstd -qdc "$file" > "$image/lib/modules/$name.ko" ;;
    *) cp "$file" "$image/lib/modules/$name.ko" ;;
  esac
  for dep in $(tr '\0' '\n' < "$image/lib/modules/$name.ko" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '); do
    add_module "$dep"
  done
  order+=("$name")
}
for module in "${wanted[@]}"; do add_module "$module"; done
if [ -n "$extra_module" ]; then
  cp "$extra_module" "$image/lib/modules/gpio_sim.ko"
  order+=(gpio_sim)
fi
printf '%s\n' "${order[@]}" > "$image/lib/modules/order"

tests=$TESTS
[ "$arch" = arm64 ] && tests="$tests $LIBRARY_TESTS"
cat > "$image/vm.env" <<ENV
GPIO_VM=$vm
GPIO_TEST_API=$api
GPIO_CDEV_V1=$cdev_v1
GPIO_TEST_V1_LIBRARY=$([ "$api" = 2 ] && echo libgpiod.so.2)
GPIO_VM_TESTS="$tests"
GPIO_VM_FILTER='${TEST_FILTER:-}'
MMAP_IPC_TEST_LOAD=0.2
MMAP_IPC_TEST_SLOWNESS=3
ENV
(cd "$image" && find . | "$packer" cpio -o -H newc 2>/dev/null) > "$work/initrd.cpio"
rm -rf "$image"
flock -u 9 # the cache is not read from here on

# --- boot -------------------------------------------------------------------------------
if [ "$arch" = amd64 ]; then
  machine=(-accel tcg)
  console=ttyS0
  limit=600
else
  machine=(-M virt -cpu cortex-a72 -accel tcg)
  console=ttyAMA0
  limit=2400
fi
echo "gpio-vm: $vm: booting Linux $krel ($arch, software emulation) with libgpiod $([ "$api" = 1 ] && echo 1.6 || echo 2.x)"
set +e
# Niced: the emulated CPUs share this machine's cores with everything else on it.
nice -n 10 timeout "$limit" "$qemu" "${machine[@]}" -smp 2 -m 2048 -nographic -no-reboot \
  -kernel "$vmlinuz" -initrd "$work/initrd.cpio" \
  -append "console=$console quiet panic=-1 rdinit=/init" \
  -virtfs "local,path=$root,mount_tag=host0,security_model=none,readonly=on" \
  -virtfs "local,path=$work/out,mount_tag=out,security_model=none" \
  </dev/null 2>&1 | tee "$work/console.log" | sed -un '/gpio-vm: guest up/,$p'
qemu_status=${PIPESTATUS[0]}
set -e
if [ ! -f "$work/out/status" ]; then
  tail -n 30 "$work/console.log" >&2
  [ "$qemu_status" = 124 ] && fail "the VM did not finish within $limit s"
  # No result at all: the guest died before the tests (an emulated kernel has panicked at boot).
  echo "gpio-vm: $vm: the VM stopped without a result (QEMU exit $qemu_status)" >&2
  exit 3
fi
read -r code reason < "$work/out/status"
[ "$code" = 0 ] || fail "$reason (exit $code)"
