//go:build ignore

/* The request a net/http ServeMux routes, for a mux behind middleware that
 * copied the request (otelhttp, http.StripPrefix, any r.WithContext): the
 * mux sets Pattern on the copy, which the server probe's end cannot reach
 * from its own request. At the entry of (*ServeMux).findHandler(mux, r)
 * (Go 1.22+), which ServeMux.ServeHTTP calls once per mux before it writes
 * r.Pattern; the innermost mux of a request calls it last. The server
 * probe's end, on the same goroutine, reads the pattern from that request
 * (bpf/include/route.h). Attached on demand: only to a process whose
 * requests show that a mux may be hidden (it costs one hit per mux). */
#include "obsd.h"
#include "route.h"

char __license[] SEC("license") = "Dual MIT/GPL";

SEC("uprobe.multi")
int servemux_route(struct pt_regs *ctx)
{
	struct route_build *b = route_begin(ROUTE_SERVEMUX);
	if (!b)
		return 0;
	b->r.req = GO_ARG2(ctx);
	route_commit(ctx, b);
	return 0;
}
