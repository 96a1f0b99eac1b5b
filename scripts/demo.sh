#!/usr/bin/env bash
# make demo: instrument testdata/httpserver with obsd, drive a known mix of
# requests, then show the metrics and spans obsd produced. Needs root.
set -euo pipefail
bin=${1:-bin}
if [ "$(id -u)" != 0 ]; then
	echo "make demo attaches eBPF uprobes: run it as root (from a root shell, or with sudo if you have it)" >&2
	exit 1
fi
if ! command -v curl >/dev/null; then
	echo "make demo drives traffic with curl: install it (Debian: apt-get install curl)" >&2
	exit 1
fi
work=$(mktemp -d)
cleanup() {
	kill ${obsd_pid:-} ${srv_pid:-} 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

"$bin/httpserver" >"$work/server.out" &
srv_pid=$!
until [ -s "$work/server.out" ]; do sleep 0.1; done
addr=$(head -1 "$work/server.out")
echo "== sample service pid $srv_pid on $addr"

OTEL_SERVICE_NAME=${OTEL_SERVICE_NAME:-} "$bin/obsd" --pid "$srv_pid" --traces=stdout --listen 127.0.0.1:0 \
	>"$work/spans.json" 2>"$work/obsd.log" &
obsd_pid=$!
metrics=""
for _ in $(seq 100); do
	listen=$(sed -n 's/.*msg="obsd running" listen=\([^ ]*\).*/\1/p' "$work/obsd.log" | head -1)
	if [ -n "$listen" ] && curl -fs "http://$listen/metrics" 2>/dev/null | grep -c '^obsd_instrumented_processes 1' >/dev/null; then
		metrics="http://$listen/metrics"
		break
	fi
	sleep 0.1
done
if [ -z "$metrics" ]; then
	echo "obsd did not instrument the service; its log:" >&2
	cat "$work/obsd.log" >&2
	exit 1
fi
echo "== obsd (pid $obsd_pid) serves $metrics"

echo "== driving traffic: 20 GET /hello, 10 GET /items/{id}, 5 GET /status/500, 3 POST /echo, 2 GET /nope"
for i in $(seq 20); do curl -fs "http://$addr/hello" >/dev/null; done
for i in $(seq 10); do curl -fs "http://$addr/items/$i" >/dev/null; done
for i in $(seq 5); do curl -s "http://$addr/status/500" >/dev/null; done
for i in $(seq 3); do curl -fs -d "ping $i" "http://$addr/echo" >/dev/null; done
for i in $(seq 2); do curl -s "http://$addr/nope" >/dev/null; done
sleep 1

echo "== request counts from $metrics"
curl -fs "$metrics" | grep -E '^http_server_request_duration_seconds_count'
echo "== obsd's own health"
curl -fs "$metrics" | grep -E '^obsd_(instrumented_processes|events_total|events_lost_total)'
echo "== obsd's /readyz"
curl -s "${metrics%/metrics}/readyz"; echo

kill -TERM "$obsd_pid"
wait "$obsd_pid" || true
echo "== spans (stdout exporter), one line each: name, status code, trace id"
if command -v jq >/dev/null; then
	jq -r '[.Name, (.Attributes[] | select(.Key=="http.response.status_code") | .Value.Value), .SpanContext.TraceID] | @tsv' "$work/spans.json" | head -40
else
	grep -o '"Name":"[^"]*"' "$work/spans.json" | sort | uniq -c
fi
echo "== $(grep -c '"SpanContext"' "$work/spans.json" || true) spans exported; obsd stopped and detached"
