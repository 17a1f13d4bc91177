#!/usr/bin/env bash
# Build the power tests' vCenter simulator (vcsim/main.go on govmomi's simulator package) offline,
# from Debian's golang-go and golang-github-vmware-govmomi-dev, into a cache keyed by the hash of
# main.go. Idempotent: a binary already built from this main.go is reused. Prints the binary's path.
#   scripts/build-vcsim.sh [--install]   # --install: apt-get the two packages first (root)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${VCSIM_CACHE:-/var/lib/orchestrator-lab/vcsim}
GOCODE=/usr/share/gocode
die() { echo "build-vcsim: $*" >&2; exit 1; }

if [ "${1:-}" = "--install" ]; then
  [ "$(id -u)" = 0 ] || die "--install needs root (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
    golang-go golang-github-vmware-govmomi-dev >/dev/null || die "apt-get install failed"
fi
command -v go >/dev/null || die "no Go compiler: apt-get install golang-go (or run with --install)"
[ -d "$GOCODE/src/github.com/vmware/govmomi/simulator" ] \
  || die "no govmomi source: apt-get install golang-github-vmware-govmomi-dev (or run with --install)"

key=$( (sha256sum vcsim/main.go; go version; dpkg-query -W -f '${Version}' golang-github-vmware-govmomi-dev 2>/dev/null) \
  | sha256sum | cut -c1-16)
out="$CACHE/vcsim-$key"
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
umask 077
mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/orchestratorvcsim" "$work/cache"
cp vcsim/main.go "$work/src/orchestratorvcsim/main.go"
(cd "$work" && GO111MODULE=off GOPATH="$work:$GOCODE" GOCACHE="$work/cache" \
  go build -o "$work/vcsim" orchestratorvcsim) >&2 || die "go build failed"
mv "$work/vcsim" "$out.tmp" && mv "$out.tmp" "$out"   # atomic: a concurrent build sees a whole binary
echo "$out"
