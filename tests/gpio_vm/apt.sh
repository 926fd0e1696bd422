# Sourced by the GPIO VM scripts: a private apt configuration under the cache, so Debian
# packages for any architecture can be looked up and downloaded without touching the host's
# /etc/apt or its dpkg database. The mirror is the one the host's own apt configuration uses.

# apt_init DIR ARCH: prepares the private apt state in DIR for ARCH (amd64 or arm64) and sets
# the array APT to the options every apt-get and apt-cache call needs. Lists are refreshed
# when older than a week.
apt_init() {
  local dir=$1 arch=$2 mirror
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  mirror=$(grep -rhoE '^(URIs:|deb) +[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    awk '{print $2}' | grep -v security | head -n1 || true)
  if [ -z "$mirror" ]; then
    echo "gpio-vm: cannot find a Debian mirror in the host's apt configuration" >&2
    return 1
  fi
  cat > "$dir/sources.list" <<SOURCES
deb $mirror trixie-backports main
deb $mirror bookworm-backports main
deb $mirror bookworm main
SOURCES
  APT=(-o "Dir::State=$dir" -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache"
    -o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o Dir::State::status=/var/lib/dpkg/status -o Debug::NoLocking=1 -o APT::Sandbox::User=root
    -o APT::Get::List-Cleanup=0 -o "APT::Architectures::=$arch" -o "APT::Architecture=$arch")
  if [ ! -f "$dir/.updated" ] || [ -n "$(find "$dir/.updated" -mtime +7 2>/dev/null)" ]; then
    apt-get "${APT[@]}" -qq update || return 1
    touch "$dir/.updated"
  fi
}

# apt_version PACKAGE SUITE: the newest version of PACKAGE in SUITE (such as trixie-backports).
apt_version() {
  apt-cache "${APT[@]}" madison "$1" | awk -F'|' -v suite="$2" '
    $3 ~ (" " suite "/") { gsub(/ /, "", $2); print $2; exit }'
}

# kernel_release META_PACKAGE SUITE: the release (such as 7.3.4+deb13-arm64) that the kernel
# meta package (linux-image-amd64, linux-image-arm64) depends on in SUITE.
kernel_release() {
  local version image
  version=$(apt_version "$1" "$2")
  [ -n "$version" ] || return 1
  image=$(apt-cache "${APT[@]}" depends "$1=$version" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$image" ] || return 1
  image=${image#linux-image-}
  echo "${image%-unsigned}"
}

# apt_fetch DEST PACKAGE...: downloads each PACKAGE (name, name=version or name/suite) into DEST
# unless a .deb of that name is there already.
apt_fetch() {
  local dest=$1 package name
  shift
  mkdir -p "$dest"
  for package in "$@"; do
    name=${package%%[=/]*}
    name=${name%%:*}
    if ! compgen -G "$dest/${name}_*.deb" >/dev/null; then
      (cd "$dest" && apt-get "${APT[@]}" -qq download "$package") || {
        echo "gpio-vm: cannot download $package" >&2
        return 1
      }
    fi
  done
}

# deb_path DIR NAME: the .deb of package NAME in DIR.
deb_path() {
  compgen -G "$1/${2}_*.deb" | head -n1
}
