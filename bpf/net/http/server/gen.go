package server

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target amd64 -type http_server_event -type http_server_metric_key -type http_server_metric -type inflight -type budget -type route -type route_name_key -type obsd_counter bpf probe.bpf.c -- -I../../../include -I/usr/include/x86_64-linux-gnu
