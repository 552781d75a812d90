#!/usr/bin/env bash
# Debian packages the tests use: Chromium for the browser tests (and a colour emoji font, so
# that its screenshots show emoji as people's browsers do), ffmpeg for video posters and
# durations, nginx (the load balancer of `make run-cluster` and the cluster tests) and
# iproute2 (`ip netns`, the cluster tests' hosts). Installed only when missing.
# With arguments, only those packages: `ensure_packages.sh nginx` (what run-cluster needs).
set -euo pipefail
has() { [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] || command -v "$1" >/dev/null 2>&1; }
declare -A check=(
  [chromium]='[ -x /usr/bin/chromium ]'
  [ffmpeg]='has ffprobe'
  [fonts-noto-color-emoji]='[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]'
  [nginx]='has nginx'
  [iproute2]='has ip'
)
packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(chromium ffmpeg fonts-noto-color-emoji nginx iproute2)
missing=()
for package in "${packages[@]}"; do
  [ -n "${check[$package]:-}" ] || { echo "ensure_packages.sh: unknown package '$package'" >&2; exit 2; }
  eval "${check[$package]}" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "Installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
