#!/bin/busybox sh
# /init of the GPIO test VMs: loads the kernel modules the host packed (configfs, 9p, gpio-sim),
# mounts configfs for the tests' simulated chips, mounts the project read-only and a result
# directory read-write over 9p, runs the test files named in /vm.env, and writes their exit
# status to /out/status before powering off.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm
. /vm.env

finish() {
  echo "gpio-vm: $GPIO_VM: $2 (exit $1)"
  echo "$1 $2" > /out/status
  sync
  poweroff -f
}

while read -r module; do
  insmod "/lib/modules/$module.ko" || finish 90 "cannot load the kernel module $module"
done < /lib/modules/order
mkdir -p /mnt /out
mount -t 9p -o trans=virtio,version=9p2000.L,ro host0 /mnt || finish 91 "cannot mount the project"
mount -t 9p -o trans=virtio,version=9p2000.L out /out || finish 92 "cannot mount the result directory"
mount -t configfs configfs /sys/kernel/config || finish 93 "cannot mount configfs"
[ -d /sys/kernel/config/gpio-sim ] || finish 94 "gpio-sim is not in configfs"
echo "gpio-vm: guest up: Linux $(uname -r) on $(uname -m)"

cd /mnt || finish 95 "no project"
export HOME=/tmp DENO_DIR=/deno DENO_NO_UPDATE_CHECK=1 NO_COLOR=1 TMPDIR=/tmp
export GPIO_SIM=/sys/kernel/config/gpio-sim GPIO_TEST_API GPIO_CDEV_V1 GPIO_TEST_V1_LIBRARY
# Load tests run a fifth of their rounds, and guards against hangs wait three times as long
# (tests/helpers/load.ts): each round takes 20-50x as long here, and a Deno child seconds to start.
export MMAP_IPC_TEST_LOAD MMAP_IPC_TEST_SLOWNESS
# The host type-checked these files; type-checking under emulation would take minutes.
# shellcheck disable=SC2086 # a list of file names
set --
[ -n "$GPIO_VM_FILTER" ] && set -- --filter "$GPIO_VM_FILTER"
set -o pipefail
/usr/bin/deno test --allow-all --no-check --cached-only --no-lock "$@" $GPIO_VM_TESTS 2>&1 | tee /tmp/tests.log
status=$?
[ "$status" = 0 ] || finish "$status" "the tests failed"
# A filter that matches nothing passes too: that is not a pass.
grep -q '^ok | [1-9][0-9]* passed' /tmp/tests.log || finish 96 "no test ran"
finish 0 "the tests passed"
