/* The outgoing contexts of --propagate (issue 11 §3): written by the HTTP
 * and gRPC client probes (through tcpctx.h), read by the sock_ops program
 * and the header injector (bpf/tcpctx) and by the adopt iterator
 * (bpf/tcpctx/adopt); user space hands the first object's map to the
 * others. */
#ifndef OBSD_TCPCTX_OUT_H
#define OBSD_TCPCTX_OUT_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "tcpctx_key.h"

/* Map sizes: one entry per live propagating connection (deleted at close). */
#define TCPCTX_MAX_CONNS 16384

/* obsd_tcp_out's value: the context the next data segments of the
 * connection carry. Writers replace it whole with bpf_map_update_elem (a
 * hash map swaps the element, so the sock_ops program never reads half of
 * one context and half of another) before the request's first byte is
 * written, and delete it for a request that has no context. */
struct tcpctx_out {
	__u8 trace_id[16];
	__u8 span_id[8];
	__u8 flags;      /* W3C trace-flags; only TCPCTX_FLAG_SAMPLED crosses */
	__u8 _pad[3];
	__u32 tgid;      /* the writer's process: user space deletes its entries when it exits */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TCPCTX_MAX_CONNS);
	__type(key, struct tcpctx_key);
	__type(value, struct tcpctx_out);
} obsd_tcp_out SEC(".maps");

/* An HTTP/2 stream's outgoing context, for the header injector: the
 * stream's HEADERS frame may leave in one message with other streams' (a
 * gRPC writer batches them), so the connection's latest context is not
 * enough. Written by the stream sites (HTTP/2 and gRPC clients) with
 * --propagate=headers, deleted by the injector when the frame passes; an
 * LRU, so that the streams of connections it never sees (TLS) age out. */
struct tcpctx_stream_key {
	struct tcpctx_key conn;
	__u32 sid;       /* HTTP/2 stream ID */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TCPCTX_MAX_CONNS);
	__type(key, struct tcpctx_stream_key);
	__type(value, struct tcpctx_out);
} obsd_tcp_streams SEC(".maps");

#endif
