#!/bin/busybox sh
# /init of the GPIO test VM: sets up the kernel's GPIO simulator with a chip whose lines are
# named like a Raspberry Pi's header (GPIO4, GPIO17, ...), mounts the project read-only over
# 9p, runs the libgpiod 2.x tests, and reports their exit status through isa-debug-exit.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm

report() {
  echo "gpio-vm: tests exited with $1"
  printf "\\$(printf %o "$1")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
  poweroff -f
}

for module in configfs netfs 9pnet 9pnet_virtio 9p gpio-sim; do
  [ -f "/lib/modules/$module.ko" ] && insmod "/lib/modules/$module.ko" 2>/dev/null
done
mount -t configfs configfs /sys/kernel/config || report 90

S=/sys/kernel/config/gpio-sim/sim0
mkdir "$S" "$S/bank0" || report 91
echo 32 > "$S/bank0/num_lines"
echo pinctrl-sim > "$S/bank0/label" 2>/dev/null
i=0
while [ $i -lt 32 ]; do
  mkdir "$S/bank0/line$i" && echo "GPIO$i" > "$S/bank0/line$i/name"
  i=$((i + 1))
done
echo 1 > "$S/live" || report 92
chip=$(cat "$S/bank0/chip_name")
export GPIO_SIM_SYSFS="/sys/devices/platform/$(cat "$S/dev_name")/$chip"
export GPIO_SIM_CHIP="/dev/$chip"

mkdir -p /mnt && mount -t 9p -o trans=virtio,version=9p2000.L,ro host0 /mnt || report 93
cd /mnt || report 94
export HOME=/tmp DENO_DIR=/deno DENO_NO_UPDATE_CHECK=1 NO_COLOR=1 TMPDIR=/tmp
/usr/bin/deno test -A --cached-only --no-lock tests/gpio_v2_test.ts
report $?
