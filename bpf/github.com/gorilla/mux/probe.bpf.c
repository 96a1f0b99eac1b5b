//go:build ignore

/* gorilla/mux's route (CurrentRoute(r).GetPathTemplate()) for the request
 * it matched: at the entry of requestWithRoute(r, route), which
 * (*Router).ServeHTTP calls once, for a match only, before the handler.
 * The template is the route's path regexp's (a sub-router's routes carry
 * their parents' prefixes); a route without a path has none (the router's
 * own answer is an error; the route is then empty), and so has a request
 * that got the Router's own NotFoundHandler (a "match" with no route).
 * A request the router matched nothing for never gets there; it ends in
 * gorilla's methodNotAllowed (405) or, by default, net/http's NotFound
 * called through HandlerFunc.ServeHTTP (404; a handler's own direct call
 * of http.NotFound for a matched route keeps that route), whose entries
 * leave an empty route: the router's own answer (CurrentRoute is nil).
 * Either way one hit. */
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
	route_string(ctx, ROUTE_GORILLA, s);
	return 0;
}

/* For the NotFound site: its link-time address (PIE load bias), and the
 * entry of net/http.HandlerFunc.ServeHTTP (0: not in the binary). */
volatile const u64 notfound_site_vaddr = 0;
volatile const u64 handlerfunc_serve = 0;

/* A return address this far past HandlerFunc.ServeHTTP's entry is its call
 * of the function (41 bytes in: stack check, frame, CALL). */
#define HANDLERFUNC_CALL_MAX 64

static __always_inline int unmatched(struct pt_regs *ctx)
{
	struct go_string none = {};
	route_string(ctx, ROUTE_GORILLA, none);
	return 0;
}

SEC("uprobe.multi")
int gorilla_unmatched(struct pt_regs *ctx)
{
	return unmatched(ctx);
}

/* net/http.NotFound(w, r): the router's default 404 only when a handler
 * value called it (HandlerFunc(NotFound).ServeHTTP): at the entry's PUSHQ
 * BP the return address is still at the top of the stack. */
SEC("uprobe.multi")
int gorilla_notfound(struct pt_regs *ctx)
{
	u64 ret = 0;
	if (!handlerfunc_serve || bpf_probe_read_user(&ret, sizeof(ret), (void *)ctx->sp) != 0)
		return 0;
	ret -= load_bias(ctx, notfound_site_vaddr);
	if (ret < handlerfunc_serve || ret >= handlerfunc_serve + HANDLERFUNC_CALL_MAX)
		return 0;
	return unmatched(ctx);
}
