//go:build ignore

/* The request a net/http ServeMux routes, for a mux behind middleware that
 * copied the request (otelhttp, http.StripPrefix, any r.WithContext): the
 * mux sets Pattern on the copy, which the server probe's end cannot reach
 * from its own request. At the entry of (*ServeMux).findHandler(mux, r)
 * (Go 1.22+), which ServeMux.ServeHTTP calls once per mux before it writes
 * r.Pattern; the innermost mux of a request calls it last. The server
 * probe's end, on the same goroutine, reads the pattern from that request
 * (bpf/include/route.h), or, for a mux on a goroutine of its own
 * (http.TimeoutHandler), by its request's context. Attached on demand: only
 * to a process whose requests show that a mux may be hidden (it costs one
 * hit per mux). */
#include "obsd.h"
#include "route.h"

char __license[] SEC("license") = "Dual MIT/GPL";

volatile const u64 off_request_ctx = OFF_NONE; /* an interface: data word at +8 */

SEC("uprobe.multi")
int servemux_route(struct pt_regs *ctx)
{
	u64 req = GO_ARG2(ctx);
	struct route_build *b = route_begin(ROUTE_SERVEMUX);
	if (!b)
		return 0;
	b->r.req = req;
	route_commit(ctx, b);

	/* Also under the contexts up the request's chain, for a mux on a
	 * goroutine of its own (route.h). */
	struct route_ctx_key k = {.tgid = bpf_get_current_pid_tgid() >> 32};
	struct route_ctx v = {.at_ns = b->r.at_ns, .req = req};
	if (off_request_ctx == OFF_NONE ||
	    bpf_probe_read_user(&k.ctx, sizeof(k.ctx), (void *)(req + off_request_ctx + 8)) != 0)
		return 0;
#pragma unroll
	for (int i = 0; i < ROUTE_CTX_LEVELS; i++) {
		if (!k.ctx)
			break;
		bpf_map_update_elem(&obsd_shared_route_ctx, &k, &v, BPF_ANY);
		u64 parent[2]; /* the parent Context: itab, data */
		if (bpf_probe_read_user(parent, sizeof(parent), (void *)k.ctx) != 0)
			break;
		k.ctx = parent[1];
	}
	return 0;
}
