package client

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target amd64 -type http_client_event -type inflight_key -type goid_key -type inflight -type http_client_metric_key -type hist -type obsd_name -type name_key -type obsd_counter bpf probe.bpf.c -- -I../../../include -I/usr/include/x86_64-linux-gnu
