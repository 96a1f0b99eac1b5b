// Package helpertest holds a raw tracepoint program that runs the
// uprobe-side helpers of bpf/include/tcpctx.h under BPF_PROG_TEST_RUN, for
// internal/tcpctx's tests.
package helpertest

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target amd64 -type result bpf helpers.bpf.c -- -I../../include -I/usr/include/x86_64-linux-gnu

// Load returns the collection spec of the program "go_key" and its map
// "results".
var Load = loadBpf

// Result is struct result: the key formed, the helper's return value and
// the namespace inode it read.
type Result = bpfResult
