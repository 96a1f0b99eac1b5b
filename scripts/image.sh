#!/usr/bin/env bash
# make image: builds obsd's container image from the Dockerfile with buildah
# (Debian's package; rootful here), or docker when an engine answers, and
# writes it as an OCI archive.
#
#   scripts/image.sh [TAG [ARCHIVE]]   default obsd:dev and bin/obsd-image.tar
#
# Environment: GO (default go), VERSION (default git describe).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
TAG=${1:-obsd:dev}
ARCHIVE=${2:-bin/obsd-image.tar}
VERSION=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 "$GO" build -trimpath -ldflags="-s -w" -o "$ctx/obsd" ./cmd/obsd
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
cp Dockerfile "$ctx/Dockerfile"
mkdir -p "$(dirname "$ARCHIVE")"
rm -f "$ARCHIVE"
if command -v buildah >/dev/null; then
	buildah bud --quiet --label "org.opencontainers.image.version=$VERSION" -t "$TAG" "$ctx"
	buildah push --quiet "$TAG" "oci-archive:$ARCHIVE:$TAG"
elif docker info >/dev/null 2>&1; then
	docker build --quiet --label "org.opencontainers.image.version=$VERSION" -t "$TAG" "$ctx"
	docker save -o "$ARCHIVE" "$TAG"
else
	echo "image: neither buildah nor a running docker engine (apt-get install buildah)" >&2
	exit 1
fi
echo "image $TAG written to $ARCHIVE"
