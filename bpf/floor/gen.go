// Package floor holds an empty uprobe program, the benchmark's floor: what
// the traps at a probe's sites cost with no work done in them.
package floor

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target amd64 bpf probe.bpf.c -- -I../include -I/usr/include/x86_64-linux-gnu

// Load returns the collection spec of the empty program "floor_probe".
var Load = loadBpf
