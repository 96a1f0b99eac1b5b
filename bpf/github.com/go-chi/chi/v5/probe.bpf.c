//go:build ignore

/* chi's route (Context.RoutePattern()) for the request it served: at the
 * CALL of sync.(*Pool).Put in the outermost (*Mux).ServeHTTP, after every
 * router of the request (sub-routers and mounts add their parts to the one
 * Context) matched and the handlers ran, before the Context goes back to
 * the pool. Put(x any) has the *Context in x's data word. The parts are
 * joined here; user space cleans them as RoutePattern() does. */
#include "obsd.h"
#include "route.h"

char __license[] SEC("license") = "Dual MIT/GPL";

volatile const u64 off_context_routepatterns = OFF_NONE;

/* Parts joined at most: one per nested router. */
#define CHI_PARTS 8

SEC("uprobe.multi")
int chi_route(struct pt_regs *ctx)
{
	u64 c = GO_ARG3(ctx);
	struct {
		u64 ptr;
		u64 len;
	} parts;
	struct go_string s[CHI_PARTS];
	if (!c || bpf_probe_read_user(&parts, sizeof(parts), (void *)(c + off_context_routepatterns)) != 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	u32 n = parts.len < CHI_PARTS ? (u32)parts.len : CHI_PARTS;
	if (n > 0 && bpf_probe_read_user(s, n * sizeof(s[0]), (void *)parts.ptr) != 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	struct route_build *b = route_begin(ROUTE_CHI);
	if (!b)
		return 0;
	if (parts.len > CHI_PARTS)
		b->r.flags |= ROUTE_TRUNCATED;
#pragma unroll
	for (int i = 0; i < CHI_PARTS; i++) {
		if (i >= n)
			break;
		if (!route_append(b, s[i])) {
			count(CNT_READ_FAILED);
			return 0;
		}
	}
	route_commit(ctx, b);
	return 0;
}
