package probe

// Routers as bpf/include/route.h numbers them (enum route_kind), by the
// name obsd exports as obsd.route.source; index 0 is no router.
var routerNames = [...]string{"", "chi", "gin", "echo", "gorilla/mux"}

// RouterName names a probe's enum route_kind; "" for none or an unknown
// number.
func RouterName(kind uint8) string {
	if int(kind) < len(routerNames) {
		return routerNames[kind]
	}
	return ""
}

// RouteCounters are the counters of a router's probe (bpf/include/route.h),
// given its CNT_READ_FAILED: the route could not be read or handed over,
// so the request gets the fallback route (reported, not lost).
func RouteCounters(readFailed uint32) []Counter {
	return []Counter{{Index: readFailed, Reason: "route_unread"}}
}
