// Package adopt holds the bpf_iter program that gives TCP connections opened
// before obsd registered their process (or accepted before their namespace
// was a receiver) the sock_ops callbacks of --propagate=tcp (see adopt.bpf.c).
// internal/tcpctx loads it beside the sock_ops program, and runs it only
// where the kernel allows.
package adopt

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target amd64 -type tcpctx_rx_key bpf adopt.bpf.c -- -I../../include -I/usr/include/x86_64-linux-gnu

// Load returns the collection spec of the program "obsd_tcp_adopt_iter",
// its map obsd_tcp_adopt and its placeholder of obsd_tcp_receivers.
var Load = loadBpf
