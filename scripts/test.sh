#!/usr/bin/env bash
# make test: every suite of both modules, each run even when an earlier one
# failed, then one line per suite (verdict and duration) and a last line with
# the verdict of each module. Exits non-zero if any suite failed.
#
# Environment (the Makefile passes its variables): GO (default go), RACE
# (default -race; empty turns the race detector off), TEST_TIMEOUT (30m).
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
RACE=${RACE--race}
TEST_TIMEOUT=${TEST_TIMEOUT:-30m}

# Packages tested without the race detector:
# - internal/test/...: the end-to-end suites. What they test (obsd, the
#   servers and clients under test) runs as separate processes built without
#   -race, so the detector would only watch the harness, at the price of a
#   second compilation of every dependency (client-go, gRPC, OTel) and a
#   harness several times slower. The code under test keeps -race in its own
#   packages' unit tests (agent, uprobes, export, inspect, discover, kube,
#   health...), which run in-process.
# - internal/tools/bench: its fixed-rate load loop misses its bounds under the
#   detector (TestFixedRate: 1.5 s for a 1 s run, 5 connections for 4).
norace_re='/internal/test(/|$)|/internal/tools/bench$'

results=()
root=PASS manual=PASS
step() { # step MODULE NAME COMMAND...: run one suite and record its verdict and duration
	local module=$1 name=$2 start=$SECONDS verdict=PASS
	shift 2
	echo "== $name ($(date -u +%H:%M:%S))"
	if ! "$@"; then
		verdict=FAIL
		if [ "$module" = root ]; then root=FAIL; else manual=FAIL; fi
	fi
	local d=$((SECONDS - start))
	results+=("$(printf '%s  %4dm%02ds  %s' "$verdict" $((d / 60)) $((d % 60)) "$name")")
}

pkgs=$("$GO" list ./...) || { echo "go list failed" >&2; exit 1; }
race_pkgs=$(grep -Ev "$norace_re" <<<"$pkgs")
norace_pkgs=$(grep -E "$norace_re" <<<"$pkgs")

# go vet runs every analyzer on every package, tests included, so go test's
# own subset of them (-vet=off) would be a second pass over the same code.
step root "root: go vet" "$GO" vet ./...
# shellcheck disable=SC2086 # package lists and RACE split on purpose
step root "root: go test $RACE (unit)" "$GO" test $RACE -vet=off -count=1 -timeout "$TEST_TIMEOUT" $race_pkgs
# shellcheck disable=SC2086
step root "root: go test (end-to-end, bench tool; no -race)" "$GO" test -vet=off -count=1 -timeout "$TEST_TIMEOUT" $norace_pkgs
# Each fuzz target over binary inspection, briefly (seeded with real builds
# of every supported Go): a corrupt executable must never crash obsd.
# Budgets are counts of inputs (about 10 s each on 2 busy cores), not
# durations: go1.26's fuzzing coordinator can report its own -fuzztime
# deadline as a failure ("context deadline exceeded", no crasher) when a
# worker is mid-input at that moment (go.dev/issue/75804, fixed in Go 1.27).
for f in FuzzELFHead:150x FuzzELFTail:50x FuzzBuildInfo:80x FuzzLineTable:1500x FuzzDWARF:16x; do
	step root "root: fuzz ${f%%:*} ${f#*:}" "$GO" test -vet=off -run='^$' -fuzz="^${f%%:*}\$" -fuzztime="${f#*:}" ./internal/inspect
done
cd manual || exit 1
step manual "manual/: go vet" "$GO" vet ./...
# shellcheck disable=SC2086
step manual "manual/: go test $RACE" "$GO" test $RACE -vet=off -count=1 -timeout "$TEST_TIMEOUT" ./...

echo
printf '%s\n' "${results[@]}"
printf '      %4dm%02ds  in all\n' $((SECONDS / 60)) $((SECONDS % 60))
echo "== make test: root module $root, manual/ $manual"
[ "$root" = PASS ] && [ "$manual" = PASS ]
