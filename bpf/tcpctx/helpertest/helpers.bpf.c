//go:build ignore

/* Runs tcpctx.h's uprobe-side helpers from BPF_PROG_TEST_RUN, in the
 * calling task: internal/tcpctx checks them against the test process's own
 * namespace and real Go *net.TCPAddr values. */
#include "tcpctx.h"

char __license[] SEC("license") = "Dual MIT/GPL";

struct result {
	struct tcpctx_key key;
	__s32 ret;
	__u32 netns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct result);
} results SEC(".maps");

/* args: laddr, raddr (*net.TCPAddr), offset of IP, offset of Port. */
SEC("raw_tp")
int go_key(__u64 *args)
{
	__u32 zero = 0;
	struct result *r = bpf_map_lookup_elem(&results, &zero);
	if (!r)
		return 0;
	r->netns = tcpctx_current_netns();
	r->ret = tcpctx_go_key(&r->key, r->netns, args[0], args[1], args[2], args[3]);
	return 0;
}
