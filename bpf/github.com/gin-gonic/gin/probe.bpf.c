//go:build ignore

/* gin's route (Context.FullPath()) for the request it served: at the CALL
 * of sync.(*Pool).Put in (*Engine).ServeHTTP, after handleHTTPRequest ran
 * the handlers and before the Context goes back to the pool (where another
 * request may take it). Put(x any) has the *Context in x's data word. */
#include "obsd.h"
#include "route.h"

char __license[] SEC("license") = "Dual MIT/GPL";

volatile const u64 off_context_fullpath = OFF_NONE;

SEC("uprobe.multi")
int gin_route(struct pt_regs *ctx)
{
	u64 c = GO_ARG3(ctx);
	struct go_string s;
	if (!c || bpf_probe_read_user(&s, sizeof(s), (void *)(c + off_context_fullpath)) != 0) {
		count(CNT_READ_FAILED);
		return 0;
	}
	route_string(ctx, ROUTE_GIN, s);
	return 0;
}
