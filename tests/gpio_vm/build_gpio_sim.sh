#!/usr/bin/env bash
# Builds the kernel's GPIO simulator as a module for a Debian kernel that does not ship it
# (the bookworm-backports 6.12 kernels have the v1 GPIO interface but no CONFIG_GPIO_SIM):
# gpio-sim.c and the IRQ simulator it needs (irq_sim.c, not a module upstream) come from
# linux-source of the same version and go into one module, built against the kernel's
# headers unpacked (not installed) in a scratch directory.
#
# Usage: build_gpio_sim.sh KREL DEBS_DIR OUT.ko
#   DEBS_DIR holds linux-headers-KREL, its -common package, linux-kbuild and linux-source.
set -euo pipefail
krel=$1 debs=$2 out=$3
source "$(dirname "$0")/apt.sh"

for tool in gcc-12 make bc pahole xz; do
  if ! command -v "$tool" >/dev/null; then
    echo "gpio-vm: installing the kernel module build tools (gcc-12 make bc dwarves)"
    apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends \
      gcc-12 make bc dwarves xz-utils >/dev/null
    break
  fi
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/mmap-ipc-gpio-sim.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
for deb in "$debs"/linux-headers-*.deb "$debs"/linux-kbuild-*.deb; do dpkg -x "$deb" "$scratch/root"; done
headers="$scratch/root/usr/src/linux-headers-$krel"
[ -f "$headers/Makefile" ] || { echo "gpio-vm: no headers for $krel in $debs" >&2; exit 1; }
# The headers' Makefile includes the -common headers by their installed path.
sed -i "s|^include /usr/src/|include $scratch/root/usr/src/|" "$headers/Makefile"

source=$(deb_path "$debs" "linux-source-${krel%%.*}.$(echo "$krel" | cut -d. -f2)")
[ -n "$source" ] || { echo "gpio-vm: no linux-source for $krel in $debs" >&2; exit 1; }
mkdir "$scratch/src" "$scratch/module"
dpkg --fsys-tarfile "$source" | tar -xO --wildcards '*/linux-source-*.tar.xz' | xz -dc |
  tar -x -C "$scratch/src" --wildcards '*/drivers/gpio/gpio-sim.c' '*/kernel/irq/irq_sim.c'
cp "$scratch"/src/*/drivers/gpio/gpio-sim.c "$scratch/module/gpio_sim_main.c"
cp "$scratch"/src/*/kernel/irq/irq_sim.c "$scratch/module/irq_sim.c"
# irq_to_desc() is not exported to modules; generic_handle_irq() does the same from a number.
sed -i 's/handle_simple_irq(irq_to_desc(\([a-z_]*\)))/generic_handle_irq(\1)/' "$scratch/module/irq_sim.c"
grep -q 'generic_handle_irq(' "$scratch/module/irq_sim.c" ||
  { echo "gpio-vm: irq_sim.c of $krel changed: cannot adapt it to a module" >&2; exit 1; }
printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio_sim_main.o irq_sim.o\n' > "$scratch/module/Kbuild"
make -s -C "$headers" M="$scratch/module" CC=gcc-12 modules >"$scratch/build.log" 2>&1 ||
  { cat "$scratch/build.log" >&2; exit 1; }
strip --strip-debug -o "$out.tmp" "$scratch/module/gpio-sim.ko"
mv "$out.tmp" "$out"
