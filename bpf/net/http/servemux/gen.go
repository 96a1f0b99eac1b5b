package servemux

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target amd64 -type obsd_counter bpf probe.bpf.c -- -I../../../include -I/usr/include/x86_64-linux-gnu
