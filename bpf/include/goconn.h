/* --propagate=tcp for Go's probes (issue 11 §3): from a Go connection
 * (a net.Conn interface in the target's memory) to the key of
 * obsd_tcp_out / obsd_tcp_in (tcpctx.h), and the trace context's bytes in
 * the maps' W3C order.
 *
 * Only a *net.TCPConn, or a *crypto/tls.Conn over one, has a key: the
 * interface's dynamic type is told from its itab's first method slot
 * (Close, first of net.Conn's methods in name order), as the client probe
 * tells error types. Anything else (a user's net.Conn wrapper, a Unix
 * socket) is counted as CNT_TCPCTX_CONN and carries nothing. */
#ifndef OBSD_GOCONN_H
#define OBSD_GOCONN_H

#include "obsd.h"
#include "tracectx.h"
#include "tcpctx.h"

/* Set by the loader when obsd runs with --propagate=tcp and spans on; the
 * maps are then tcpctx's (MapReplacements), else tiny placeholders. */
volatile const u8 tcp_propagate = 0;
/* Set with tcp_propagate when the header injector runs (--propagate with
 * headers): the stream sites then also give each HTTP/2 stream its
 * context in obsd_tcp_streams. */
volatile const u8 tcp_headers = 0;

/* Field offsets (the target's DWARF, else the offsets table). */
volatile const u64 off_conn_fd = OFF_NONE;      /* net.conn.fd, *netFD (TCPConn embeds conn first) */
volatile const u64 off_netfd_laddr = OFF_NONE;  /* net.netFD.laddr, a net.Addr */
volatile const u64 off_netfd_raddr = OFF_NONE;  /* net.netFD.raddr, a net.Addr */
volatile const u64 off_tcpaddr_ip = OFF_NONE;   /* net.TCPAddr.IP */
volatile const u64 off_tcpaddr_port = OFF_NONE; /* net.TCPAddr.Port */
volatile const u64 off_tlsconn_conn = OFF_NONE; /* crypto/tls.Conn.conn, a net.Conn */

/* Link-time addresses of the Close methods that name the two types. */
volatile const u64 fn_tcpconn_close = 0; /* net.(*TCPConn).Close */
volatile const u64 fn_tlsconn_close = 0; /* crypto/tls.(*Conn).Close */

/* goconn_key fills k for the net.Conn interface stored at addr in a
 * process whose load bias is bias. Returns 0, or -1 (counted). */
static __always_inline int goconn_key(u64 addr, u64 bias, struct tcpctx_key *k)
{
	struct {
		u64 itab, data;
	} c = {};
	u64 fn = 0;
	if (!fn_tcpconn_close || off_conn_fd == OFF_NONE || off_netfd_laddr == OFF_NONE ||
	    off_netfd_raddr == OFF_NONE || off_tcpaddr_ip == OFF_NONE || off_tcpaddr_port == OFF_NONE)
		goto fail;
	if (bpf_probe_read_user(&c, sizeof(c), (void *)addr) != 0 || !c.itab || !c.data ||
	    bpf_probe_read_user(&fn, sizeof(fn), (void *)(c.itab + 24)) != 0)
		goto fail;
	if (fn_tlsconn_close && fn - bias == fn_tlsconn_close && off_tlsconn_conn != OFF_NONE) {
		/* TLS: the TCP connection under it. */
		if (bpf_probe_read_user(&c, sizeof(c), (void *)(c.data + off_tlsconn_conn)) != 0 || !c.itab ||
		    !c.data || bpf_probe_read_user(&fn, sizeof(fn), (void *)(c.itab + 24)) != 0)
			goto fail;
	}
	if (fn - bias != fn_tcpconn_close)
		goto fail;
	u64 fd = 0;
	struct {
		u64 itab, data;
	} la = {}, ra = {};
	if (bpf_probe_read_user(&fd, sizeof(fd), (void *)(c.data + off_conn_fd)) != 0 || !fd ||
	    bpf_probe_read_user(&la, sizeof(la), (void *)(fd + off_netfd_laddr)) != 0 ||
	    bpf_probe_read_user(&ra, sizeof(ra), (void *)(fd + off_netfd_raddr)) != 0 || !la.data || !ra.data)
		goto fail;
	if (tcpctx_go_key(k, tcpctx_current_netns(), la.data, ra.data, off_tcpaddr_ip, off_tcpaddr_port) != 0)
		goto fail;
	return 0;
fail:
	count(CNT_TCPCTX_CONN);
	return -1;
}

/* goconn_sender says whether process tgid is registered to send context:
 * only a sender's connections get the callbacks that use, and at close
 * delete, an obsd_tcp_out entry. Checked before anything is read. */
static __always_inline int goconn_sender(u32 tgid)
{
	return bpf_map_lookup_elem(&obsd_tcp_senders, &tgid) != 0;
}

/* goconn_value fills v with tc (W3C byte order) for process tgid. */
static __always_inline void goconn_value(struct tcpctx_out *v, const struct trace_ctx *tc, u32 tgid)
{
	u64 w = __builtin_bswap64(tc->trace_hi);
	__builtin_memcpy(v->trace_id, &w, 8);
	w = __builtin_bswap64(tc->trace_lo);
	__builtin_memcpy(v->trace_id + 8, &w, 8);
	w = __builtin_bswap64(tc->span);
	__builtin_memcpy(v->span_id, &w, 8);
	v->flags = (tc->trace & TR_SAMPLED) ? TCPCTX_FLAG_SAMPLED : 0;
	v->tgid = tgid;
}

/* goconn_out makes the connection k of process tgid (a sender) carry tc
 * (a CLIENT span's context, as its server's parent), or nothing when tc is
 * NULL or has no span. */
static __always_inline void goconn_out(struct tcpctx_key *k, const struct trace_ctx *tc, u32 tgid)
{
	if (!tc || !tc->span) {
		bpf_map_delete_elem(&obsd_tcp_out, k);
		return;
	}
	struct tcpctx_out v = {};
	goconn_value(&v, tc, tgid);
	if (bpf_map_update_elem(&obsd_tcp_out, k, &v, BPF_ANY) != 0)
		count(CNT_TCPCTX_OUT_FULL);
}

/* goconn_parent makes the context v holds tc's remote parent. */
static __always_inline void goconn_parent(const struct tcpctx_in *v, struct trace_ctx *tc)
{
	u64 hi, lo, span;
	__builtin_memcpy(&hi, v->trace_id, 8);
	__builtin_memcpy(&lo, v->trace_id + 8, 8);
	__builtin_memcpy(&span, v->span_id, 8);
	tc_remote(tc, __builtin_bswap64(hi), __builtin_bswap64(lo), __builtin_bswap64(span),
		  v->flags & TCPCTX_FLAG_SAMPLED);
}

/* goconn_in takes the context that arrived on k since the last request
 * that looked (fresh: its gen not taken yet), marking it taken, into
 * tc as the span's remote parent, unless tc already has one from the
 * request's headers (the header names the caller exactly; the connection's
 * context is still marked taken, so that no later request inherits it). */
static __always_inline void goconn_in(struct tcpctx_key *k, struct trace_ctx *tc)
{
	struct tcpctx_in *v = bpf_map_lookup_elem(&obsd_tcp_in, k);
	if (!v || v->gen == v->taken_gen)
		return;
	v->taken_gen = v->gen;
	if (!tc || (tc->trace & TR_REMOTE))
		return;
	goconn_parent(v, tc);
}

/* Multiplexed connections (gRPC over HTTP/2): a context goes on the
 * connection before each stream's HEADERS frame, but concurrent streams
 * share the connection's segments and the server starts their handlers in
 * no fixed order, so "the latest context that arrived" may be another
 * stream's. The option has no room for the stream ID, so the client puts
 * it in the context itself: the low 16 bits of its CLIENT span's ID are
 * the stream's (ID >> 1, client streams being odd), chosen when the stream
 * is written (the span's ID is not used before). The server joins a
 * stream only to a context whose span ID carries its own stream's bits;
 * any other (a stream whose context a later stream's replaced) stays a
 * root, counted. Two streams 65,536 apart on one connection share bits. */
#define GOCONN_STREAM_MASK 0xffffULL

/* goconn_stream_span returns span with its low bits set to stream sid's. */
static __always_inline u64 goconn_stream_span(u64 span, u32 sid)
{
	u64 s = (span & ~GOCONN_STREAM_MASK) | ((sid >> 1) & GOCONN_STREAM_MASK);
	if (!(s & ~GOCONN_STREAM_MASK)) /* never a zero-looking high part */
		s |= GOCONN_STREAM_MASK + 1;
	return s;
}

/* goconn_out_stream makes the connection k of process tgid carry tc for
 * HTTP/2 stream sid, whose span ID goconn_stream_span tagged: on the
 * connection, for the TCP option, and for the stream, for the header
 * injector, which may see several streams' HEADERS in one message. */
static __always_inline void goconn_out_stream(struct tcpctx_key *k, u32 sid, const struct trace_ctx *tc, u32 tgid)
{
	goconn_out(k, tc, tgid);
	if (!tcp_headers || !tc || !tc->span)
		return;
	struct tcpctx_stream_key sk = {.conn = *k, .sid = sid, ._pad = 0};
	struct tcpctx_out v = {};
	goconn_value(&v, tc, tgid);
	if (bpf_map_update_elem(&obsd_tcp_streams, &sk, &v, BPF_ANY) != 0)
		count(CNT_TCPCTX_OUT_FULL);
}

/* goconn_in_stream takes, into tc, the context that arrived on k if it is
 * fresh and names stream sid (see above), marking it taken. Returns 1
 * joined (or tc already had a header parent), 0 nothing on k, -1 the
 * connection carries contexts but none for this stream. */
static __always_inline int goconn_in_stream(struct tcpctx_key *k, u32 sid, struct trace_ctx *tc)
{
	struct tcpctx_in *v = bpf_map_lookup_elem(&obsd_tcp_in, k);
	if (!v)
		return 0;
	u64 span;
	__builtin_memcpy(&span, v->span_id, 8);
	if (v->gen == v->taken_gen ||
	    (__builtin_bswap64(span) & GOCONN_STREAM_MASK) != ((sid >> 1) & GOCONN_STREAM_MASK))
		return -1;
	v->taken_gen = v->gen;
	if (!(tc->trace & TR_REMOTE))
		goconn_parent(v, tc);
	return 1;
}

#endif
