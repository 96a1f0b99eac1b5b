#!/usr/bin/env bash
# Builds kube-apiserver (the version this module requires) once into
# ${OBSD_CACHE:-/var/cache/obsd}/kube-apiserver-<version> and prints its path;
# a binary already there is reused. About 9 minutes on 2 idle cores.
set -euo pipefail
cd "$(dirname "$0")"
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' go.mod)
cache=${OBSD_CACHE:-/var/cache/obsd}
out="$cache/kube-apiserver-$version"
if [ ! -x "$out" ]; then
	mkdir -p "$cache"
	# -trimpath and no VCS stamping: the binary depends only on go.mod/go.sum.
	nice -n 5 go build -trimpath -ldflags='-s -w' -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver
	mv "$out.tmp" "$out"
fi
echo "$out"
