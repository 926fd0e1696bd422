#!/usr/bin/env bash
# Fetches what the GPIO simulator VM needs into a cache directory (reused by later runs):
# a Debian kernel that has CONFIG_GPIO_SIM (trixie-backports), its modules, static busybox,
# and libgpiod 2.x with its tools (bookworm-backports). The host's /etc/apt is never touched:
# a private apt configuration under the cache does the work. The Debian mirror is the one the
# host's own apt configuration uses.
#
# Usage: fetch.sh CACHE_DIR     prints KREL=<kernel release> on success
set -euo pipefail
cache=$1
mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial" "$cache/debs"

if ! command -v apt-get >/dev/null; then
  echo "fetch: needs apt-get (a Debian-based host)" >&2
  exit 3
fi

mirror=$(grep -rhoE '^(URIs:|deb) +[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
  awk '{print $2}' | grep -v security | head -n1 || true)
if [ -z "$mirror" ]; then
  echo "fetch: cannot find a Debian mirror in the host's apt configuration" >&2
  exit 3
fi
cat > "$cache/apt/sources.list" <<SOURCES
deb $mirror trixie-backports main
deb $mirror bookworm-backports main
deb $mirror bookworm main
SOURCES

O=(-o "Dir::State=$cache/apt" -o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt/cache"
  -o "Dir::Etc::SourceList=$cache/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
  -o Dir::State::status=/var/lib/dpkg/status -o Debug::NoLocking=1 -o APT::Sandbox::User=root -o APT::Get::List-Cleanup=0)

if [ ! -f "$cache/apt/.updated" ] || [ -n "$(find "$cache/apt/.updated" -mtime +7 2>/dev/null)" ]; then
  apt-get "${O[@]}" -qq update
  touch "$cache/apt/.updated"
fi

# The newest linux-image-amd64 in trixie-backports, and the kernel release it depends on.
version=$(apt-cache "${O[@]}" madison linux-image-amd64 | awk -F'|' '/trixie-backports/ {gsub(/ /, "", $2); print $2; exit}')
if [ -z "$version" ]; then
  echo "fetch: no linux-image-amd64 in trixie-backports" >&2
  exit 3
fi
image=$(apt-cache "${O[@]}" depends "linux-image-amd64=$version" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
krel=${image#linux-image-}
krel=${krel%-unsigned}

cd "$cache/debs"
want=("linux-image-$krel-unsigned" "linux-modules-$krel" busybox-static "libgpiod3/bookworm-backports" "gpiod/bookworm-backports" "libgpiod-dev/bookworm-backports")
for package in "${want[@]}"; do
  name=${package%%/*}
  if ! ls "${name}"_*.deb >/dev/null 2>&1; then
    apt-get "${O[@]}" -qq download "$package" 2>/dev/null || {
      # Some kernels come as linux-binary-KREL instead of linux-image-KREL-unsigned.
      [ "$name" = "linux-image-$krel-unsigned" ] && apt-get "${O[@]}" -qq download "linux-binary-$krel" || exit 4
    }
  fi
done
echo "KREL=$krel"
