//go:build ignore

/* gorilla/mux's route (CurrentRoute(r).GetPathTemplate()) for the request
 * it matched: at the entry of requestWithRoute(r, route), which
 * (*Router).ServeHTTP calls once, for a match only, before the handler.
 * The template is the route's path regexp's (a sub-router's routes carry
 * their parents' prefixes); a route without a path has none (the router's
 * own answer is an error; the route is then empty), and so has a request
 * that got the Router's own NotFoundHandler (a "match" with no route). A
 * request matched by nothing else never gets here: the fallback route. */
#include "obsd.h"
#include "route.h"

char __license[] SEC("license") = "Dual MIT/GPL";

volatile const u64 off_route_routeconf = OFF_NONE;  /* Route.routeConf (embedded) */
volatile const u64 off_routeconf_regexp = OFF_NONE; /* routeConf.regexp (a routeRegexpGroup) */
volatile const u64 off_group_path = OFF_NONE;       /* routeRegexpGroup.path (*routeRegexp) */
volatile const u64 off_regexp_template = OFF_NONE;  /* routeRegexp.template */

SEC("uprobe.multi")
int gorilla_route(struct pt_regs *ctx)
{
	u64 route = GO_ARG2(ctx), path = 0;
	struct go_string s = {};
	/* No route: Match "matched" a Router's own NotFoundHandler. */
	if ((route && bpf_probe_read_user(&path, sizeof(path),
					  (void *)(route + off_route_routeconf + off_routeconf_regexp +
						   off_group_path)) != 0) ||
	    (path && bpf_probe_read_user(&s, sizeof(s), (void *)(path + off_regexp_template)) != 0)) {
		count(CNT_READ_FAILED);
		return 0;
	}
	struct route_build *b = route_begin(ROUTE_GORILLA);
	if (!b)
		return 0;
	if (!route_append(b, s)) {
		count(CNT_READ_FAILED);
		return 0;
	}
	route_commit(ctx, b);
	return 0;
}
