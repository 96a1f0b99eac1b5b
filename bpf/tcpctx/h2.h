/* traceparent headers for HTTP/2 with prior knowledge (h2c, gRPC without
 * TLS), part of the sk_msg program in tcpctx.bpf.c (which includes this
 * after its HTTP/1 part, whose buffer, counters and room() it uses).
 *
 * A connection is HTTP/2 when its first message, sent before any other
 * byte, starts with the client preface (RFC 9113 §3.4). From then on the
 * program sees every byte the connection sends and keeps track of the
 * frames (RFC 9113 §4.1: 9-byte header, 24-bit payload length), across
 * messages. A HEADERS frame that opens a stream (odd ID above the last one)
 * with END_HEADERS, no padding, whole in its message, for a stream whose
 * client probe left a context in obsd_tcp_streams, gets one more header
 * field at the end of its block, and its length grows by as much:
 *
 *   0x00 (literal without indexing, new name, RFC 7541 §6.2.2)
 *   0x0b "traceparent" 0x37 "00-<32 hex>-<16 hex>-0<flag>"
 *
 * A field without indexing leaves both ends' dynamic tables as they were,
 * so the HPACK state of the connection does not change.
 *
 * Never when the request carries one: each block the client writes is
 * read field by field (lengths only, nothing decoded), and a literal name
 * "traceparent" (raw or Huffman-coded) means this request has one. If the
 * encoder also added it to its dynamic table (incremental indexing, what
 * Go's hpack does), later requests may name it by an index this program
 * cannot resolve without the table: no header is added on that
 * connection again (counted as already present). A block the program
 * cannot read whole has the same effect (counted apart).
 *
 * Never losing track: a message whose bytes did not all leave (a partial
 * send, after which the writer sends the rest again) would shift the
 * frames; the program checks that the socket's write sequence is where
 * the previous message left it, and gives up on the connection for good
 * (counted) when it is not, or when a message holds more frames than it
 * walks. */

#define H2_PREFACE_LEN 24
#define H2_HDR 9
#define H2_HEADERS 0x1
#define H2_CONTINUATION 0x9
#define H2_END_HEADERS 0x4
#define H2_PADDED 0x8
#define H2_PRIORITY 0x20
#define H2_FRAME_MAX 16384 /* SETTINGS_MAX_FRAME_SIZE's initial value, which every peer accepts */
#define H2_TP_FIELD 69     /* 1 + 1 + 11 + 1 + 55 */
#define H2_FRAMES 4096     /* frames walked per message */
#define H2_FIELDS 512      /* header fields read per block */

/* Why a connection gets no more headers (h2_conn.named). */
#define H2_NAMED 1  /* its encoder put traceparent in its dynamic table */
#define H2_UNREAD 2 /* a header block could not be read whole */

enum h2_mode {
	H2_UNSEEN = 0, /* no message yet */
	H2_ON,         /* HTTP/2 from its first byte, frames tracked */
	H2_OFF,        /* not HTTP/2 with prior knowledge, or lost track of */
};

/* A connection's frame tracking, between messages (the socket's lock
 * serializes them). */
struct h2_conn {
	__u32 next_seq;     /* tcp_sock.write_seq when the next message comes */
	__u32 skip;         /* bytes of the current frame (or the preface) still to come */
	__u32 max_sid;      /* highest stream ID whose HEADERS went out */
	__u8 part[H2_HDR];  /* the first npart bytes of a frame header split over messages */
	__u8 npart;
	__u8 mode;          /* enum h2_mode */
	__u8 named;         /* H2_NAMED or H2_UNREAD: the encoder may name traceparent by index, no more headers */
	__u8 _pad[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct h2_conn);
} obsd_tcp_h2 SEC(".maps");

/* tcp_seq reads what h2_conn.next_seq is compared with; 0 with ok unset
 * when the socket is not TCP. */
static __always_inline __u32 tcp_seq(struct bpf_sock *bsk, int *ok)
{
	struct tcp_sock *tp = (struct tcp_sock *)bpf_skc_to_tcp_sock(bsk);
	*ok = tp != 0;
	return tp ? BPF_CORE_READ(tp, write_seq) : 0;
}

/* h2_first decides, at a connection's first message, whether the program
 * tracks its frames: only from the first byte the connection sends. */
static __always_inline void h2_first(struct sk_msg_md *msg, struct bpf_sock *bsk, struct h2_conn *h)
{
	h->mode = H2_OFF;
	struct tcp_sock *tp = (struct tcp_sock *)bpf_skc_to_tcp_sock(bsk);
	if (!tp || msg->size < H2_PREFACE_LEN)
		return;
	__u32 seq = BPF_CORE_READ(tp, write_seq);
	/* An adopted connection may be anywhere in its stream. */
	if (BPF_CORE_READ(tp, bytes_sent) != 0 || seq != BPF_CORE_READ(tp, snd_nxt))
		return;
	if (bpf_msg_pull_data(msg, 0, H2_PREFACE_LEN, 0) != 0)
		return;
	__u8 *p = (__u8 *)(long)msg->data;
	if (p + H2_PREFACE_LEN > (__u8 *)(long)msg->data_end)
		return;
	const char pre[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#pragma unroll
	for (int j = 0; j < H2_PREFACE_LEN; j++)
		if (p[j] != (__u8)pre[j])
			return;
	h->mode = H2_ON;
	h->skip = H2_PREFACE_LEN;
	h->next_seq = seq;
}

/* --- HPACK, lengths only (RFC 7541 §5, §6) --- */

struct hp_scan {
	__u32 pos;     /* next byte of the block in obsd_tcp_hdr_buf */
	__u32 len;     /* end of the block */
	__u8 found;    /* a literal name traceparent */
	__u8 indexed;  /* ... that the encoder added to its dynamic table */
	__u8 bad;      /* a field runs past the block, or too many fields */
};

/* hp_int reads an integer with a prefix of mask bits at *pos (§5.1), up
 * to 2^28; -1 past len. */
static __always_inline __s64 hp_int(struct hdr_buf *hb, __u32 *pos, __u32 len, __u8 mask)
{
	__u32 p = *pos;
	if (p >= len || p >= HDR_SCAN)
		return -1;
	__s64 v = HB(p) & mask;
	p++;
	if (v == mask) {
		for (int j = 0; j < 4; j++) {
			if (p >= len || p >= HDR_SCAN)
				return -1;
			__u8 c = HB(p);
			p++;
			v += (__s64)(c & 0x7f) << (7 * j);
			if (!(c & 0x80)) {
				*pos = p;
				return v;
			}
		}
		return -1;
	}
	*pos = p;
	return v;
}

/* hp_is_traceparent says whether the n-byte string at p (Huffman-coded
 * when huff) is "traceparent". Its Huffman code (RFC 7541 Appendix B,
 * padded with EOS bits) is the 8 bytes 4d 83 21 6b 1d 85 a9 3f. */
static __always_inline int hp_is_traceparent(struct hdr_buf *hb, __u32 p, __s64 n, int huff)
{
	if (huff) {
		const __u8 code[8] = {0x4d, 0x83, 0x21, 0x6b, 0x1d, 0x85, 0xa9, 0x3f};
		if (n != 8)
			return 0;
#pragma unroll
		for (int j = 0; j < 8; j++)
			if (HB(p + j) != code[j])
				return 0;
		return 1;
	}
	const char name[] = "traceparent";
	if (n != 11)
		return 0;
#pragma unroll
	for (int j = 0; j < 11; j++)
		if ((HB(p + j) | 0x20) != (__u8)name[j])
			return 0;
	return 1;
}

/* cb_ret makes a global function's result a bpf_loop callback's, which
 * the verifier wants within [0, 1] (clang drops a plain mask, knowing the
 * function's results). */
static __always_inline long cb_ret(long r)
{
	asm volatile("%0 &= 1" : "+r"(r));
	return r;
}

/* hp_step reads one header field representation; 1 ends the scan. A
 * global function, verified once on its own: as a loop body inlined into
 * its caller, the verifier follows every value the scan state takes. */
__noinline int hp_step(struct hp_scan *s)
{
	__u32 zero = 0;
	struct hdr_buf *hb = bpf_map_lookup_elem(&obsd_tcp_hdr_buf, &zero);
	if (!s || !hb || s->pos >= s->len || s->pos >= HDR_SCAN)
		return 1;
	__u32 p = s->pos;
	__u8 b = HB(p);
	if (b & 0x80) { /* indexed field (§6.1) */
		if (hp_int(hb, &p, s->len, 0x7f) < 0)
			goto bad;
		s->pos = p;
		return 0;
	}
	if ((b & 0xe0) == 0x20) { /* dynamic table size update (§6.3) */
		if (hp_int(hb, &p, s->len, 0x1f) < 0)
			goto bad;
		s->pos = p;
		return 0;
	}
	/* A literal (§6.2): with incremental indexing (01), without (0000)
	 * or never indexed (0001); index 0: the name follows as a string. */
	int incremental = (b & 0x40) != 0;
	__s64 idx = hp_int(hb, &p, s->len, incremental ? 0x3f : 0x0f);
	if (idx < 0)
		goto bad;
	if (idx == 0) {
		if (p >= s->len || p >= HDR_SCAN)
			goto bad;
		int huff = (HB(p) & 0x80) != 0;
		__s64 n = hp_int(hb, &p, s->len, 0x7f);
		if (n < 0 || p + n > s->len)
			goto bad;
		if (hp_is_traceparent(hb, p, n, huff)) {
			s->found = 1;
			s->indexed |= incremental;
		}
		p += n;
	}
	__s64 n = hp_int(hb, &p, s->len, 0x7f); /* the value */
	if (n < 0 || p + n > s->len)
		goto bad;
	s->pos = p + n;
	return 0;
bad:
	s->bad = 1;
	return 1;
}

static long hp_field(__u32 i, void *arg)
{
	return cb_ret(hp_step(arg));
}

/* --- frames --- */

struct h2_walk {
	struct h2_conn st;
	struct tcpctx_key k;
	__u32 off;    /* next byte of the message to read */
	__u32 size;   /* the message's size, with the fields added */
	/* the frame at hand */
	__u32 len;
	__u32 sid;
	__u8 type;
	__u8 flags;
	__u8 whole;   /* its header is in this message, at off - 9 */
	__u8 lost;
	__u8 drop;
};

/* msg_bytes copies n (at most 9) bytes of the message at off into dst. */
static __always_inline int msg_bytes(struct sk_msg_md *msg, __u32 off, __u32 n, __u8 *dst)
{
	if (n == 0)
		return 0;
	if (n > H2_HDR || bpf_msg_pull_data(msg, off, off + n, 0) != 0)
		return -1;
	__u8 *p = (__u8 *)(long)msg->data;
	__u8 *end = (__u8 *)(long)msg->data_end;
#pragma unroll
	for (int j = 0; j < H2_HDR; j++) {
		if (j < n) {
			if (p + j + 1 > end)
				return -1;
			dst[j] = p[j];
		}
	}
	return 0;
}

/* h2_field writes the traceparent field of c (H2_TP_FIELD bytes) at p. */
static __always_inline void h2_field(__u8 *p, const struct tcpctx_out *c)
{
	p[0] = 0x00;
	p[1] = 11;
	__builtin_memcpy(p + 2, "traceparent", 11);
	p[13] = 55;
	tp_value(p + 14, c);
}

/* h2_insert appends the traceparent field of c to the header block that
 * ends at at, and writes the frame's new payload length len into the
 * header at hdr. Returns as insert() does. A block that ends the message
 * is appended to where the kernel allows a push at the end (push_at_end);
 * elsewhere the bytes go in before the block's last byte, which is then
 * moved to their front. Every write follows one pull (pull_written), so
 * that nothing can fail once a byte is written and an undo only takes the
 * pushed bytes back. */
__noinline int h2_insert(struct sk_msg_md *msg, __u32 hdr, __u32 at, __u32 len, const struct tcpctx_out *c)
{
	if (!c || at < hdr + H2_HDR || at - hdr > H2_HDR + HDR_SCAN)
		return -1;
	/* The element a push splits is made to start the message: kernels
	 * without "bpf, sockmap: fix tail fragment offset in
	 * bpf_msg_push_data" misplace the tail of an element that starts
	 * further in. Past LINEAR_MAX (grpc-go batches) as before. */
	if (at <= LINEAR_MAX && bpf_msg_pull_data(msg, 0, at, 0) != 0)
		return -1;
	__u32 base = at;
	if ((at == msg->size && !push_at_end) || bpf_msg_push_data(msg, at, H2_TP_FIELD, 0) != 0) {
		if (at != msg->size)
			return -1;
		base = at - 1;
		if (bpf_msg_push_data(msg, base, H2_TP_FIELD, 0) != 0)
			return -1;
	}
	__u32 pb;
	if (pull_written(msg, hdr, at + H2_TP_FIELD, &pb) != 0)
		goto undo;
	__u32 ho = hdr - pb, off = base - hdr;
	if (ho > LINEAR_MAX || off > H2_HDR + HDR_SCAN)
		goto undo; /* not reached */
	/* Bounds the verifier keeps (clang may recompute a checked value). */
	asm volatile("%0 &= %1" : "+r"(ho) : "i"(2 * LINEAR_MAX - 1));
	asm volatile("%0 &= %1" : "+r"(off) : "i"(2 * HDR_SCAN - 1));
	__u8 *p = (__u8 *)(long)msg->data + ho;
	__u8 *end = (__u8 *)(long)msg->data_end;
	__u8 *q = p + off;
	if (p + 3 > end)
		goto undo;
	if (base != at) {
		/* q: the pushed bytes, then the block's last byte, to move in
		 * front of the field. */
		if (q + H2_TP_FIELD + 1 > end)
			goto undo;
		q[0] = q[H2_TP_FIELD];
		h2_field(q + 1, c);
	} else {
		if (q + H2_TP_FIELD > end)
			goto undo;
		h2_field(q, c);
	}
	p[0] = len >> 16;
	p[1] = len >> 8;
	p[2] = len;
	return 0;
undo:
	return bpf_msg_pop_data(msg, base, H2_TP_FIELD, 0) == 0 ? -1 : -2;
}

/* h2_block reads the HEADERS or CONTINUATION frame at hand, whose payload
 * starts at w->off, and adds the field to one that opens a stream with a
 * context. Returns the bytes added. */
__noinline int h2_block(struct sk_msg_md *msg, struct h2_walk *w)
{
	if (!w)
		return 0;
	__u32 len = w->len, sid = w->sid;
	__u8 type = w->type, flags = w->flags, whole = w->whole;
	struct tcpctx_out c;
	int have = 0;
	if (type == H2_HEADERS && (sid & 1) && sid > w->st.max_sid) {
		w->st.max_sid = sid;
		struct tcpctx_stream_key sk = {.conn = w->k, .sid = sid, ._pad = 0};
		struct tcpctx_out *v = bpf_map_lookup_elem(&obsd_tcp_streams, &sk);
		if (v) {
			c = *v;
			have = 1;
			bpf_map_delete_elem(&obsd_tcp_streams, &sk);
		} else {
			count(TCPCTX_HDR_H2_NO_CTX);
		}
	}
	/* Read the block: the whole payload must be in this message. */
	struct hp_scan s = {};
	__u32 zero = 0;
	struct hdr_buf *hb = bpf_map_lookup_elem(&obsd_tcp_hdr_buf, &zero);
	__u64 me = bpf_get_prandom_u32() | ((__u64)bpf_get_current_pid_tgid() << 32);
	if (!hb || len >= HDR_SCAN || len > w->size - w->off) {
		s.bad = 1;
	} else if (len > 0) {
		if (bpf_msg_pull_data(msg, w->off, w->off + len, 0) != 0) {
			s.bad = 1;
		} else {
			__u8 *p = (__u8 *)(long)msg->data;
			hb->owner = me;
			if (bpf_probe_read_kernel(hb->b, scan_idx(len), p) != 0)
				s.bad = 1;
		}
		s.len = len;
		if (type == H2_HEADERS && !s.bad) {
			if (flags & H2_PADDED) {
				__u8 pad = hb->b[0];
				s.pos = 1;
				if (pad > len - 1)
					s.bad = 1;
				else
					s.len = len - pad;
			}
			if (flags & H2_PRIORITY)
				s.pos += 5;
		}
		if (!s.bad) {
			bpf_loop(H2_FIELDS, hp_field, &s, 0);
			if (!s.bad && !s.found && s.pos != s.len)
				s.bad = 1; /* more fields than read */
			if (hb->owner != me) {
				count(TCPCTX_HDR_RACED);
				s.bad = 1;
			}
		}
	}
	__u8 named = w->st.named;
	/* The encoder may have named traceparent for later blocks. */
	if (s.indexed)
		w->st.named = H2_NAMED;
	else if (s.bad && !named)
		w->st.named = H2_UNREAD;
	if (!have)
		return 0;
	if (s.found || named == H2_NAMED) {
		count(TCPCTX_HDR_PRESENT);
		return 0;
	}
	if (named == H2_UNREAD) {
		count(TCPCTX_HDR_H2_UNREAD);
		return 0;
	}
	if (s.bad || !whole || !(flags & H2_END_HEADERS) || (flags & H2_PADDED) || len + H2_TP_FIELD > H2_FRAME_MAX) {
		count(TCPCTX_HDR_TOO_LONG);
		return 0;
	}
	if (!room(msg->sk, w->size)) {
		count(TCPCTX_HDR_FAILED);
		return 0;
	}
	int r = h2_insert(msg, w->off - H2_HDR, w->off + len, len + H2_TP_FIELD, &c);
	if (r != 0) {
		count(TCPCTX_HDR_FAILED);
		if (r == -2)
			w->drop = 1; /* see http1 */
		return 0;
	}
	count(TCPCTX_HDR_INJECTED);
	return H2_TP_FIELD;
}

/* h2_step reads the rest of the current frame, or the next frame header
 * and, for a header block, its payload; 1 ends the walk. Global, as
 * hp_step. */
__noinline int h2_step(struct sk_msg_md *msg, struct h2_walk *w)
{
	if (!w || w->off >= w->size)
		return 1;
	__u32 left = w->size - w->off;
	if (w->st.skip) {
		__u32 n = w->st.skip < left ? w->st.skip : left;
		w->st.skip -= n;
		w->off += n;
		return 0;
	}
	__u8 h[H2_HDR] = {};
	__u32 have = w->st.npart;
	if (have >= H2_HDR) {
		w->lost = 1;
		return 1;
	}
	if (have + left < H2_HDR) { /* the header goes on in the next message */
		if (msg_bytes(msg, w->off, left, h) != 0) {
			w->lost = 1;
			return 1;
		}
#pragma unroll
		for (int j = 0; j < H2_HDR - 1; j++) {
			__u32 d = have + j;
			if (j < left && d < H2_HDR)
				w->st.part[d] = h[j];
		}
		w->st.npart = have + left;
		w->off = w->size;
		return 1;
	}
	__u8 tail[H2_HDR] = {};
	if (msg_bytes(msg, w->off, H2_HDR - have, tail) != 0) {
		w->lost = 1;
		return 1;
	}
#pragma unroll
	for (int j = 0; j < H2_HDR; j++) {
		if (j < have)
			h[j] = w->st.part[j];
		else
			h[j] = tail[(j - have) % H2_HDR];
	}
	w->off += H2_HDR - have;
	w->st.npart = 0;
	__u32 len = ((__u32)h[0] << 16) | ((__u32)h[1] << 8) | h[2];
	__u8 type = h[3], flags = h[4];
	__u32 sid = (((__u32)h[5] & 0x7f) << 24) | ((__u32)h[6] << 16) | ((__u32)h[7] << 8) | h[8];
	if (type == H2_HEADERS || type == H2_CONTINUATION) {
		w->len = len;
		w->sid = sid;
		w->type = type;
		w->flags = flags;
		w->whole = have == 0;
		__u32 added = h2_block(msg, w);
		len += added;
		w->size = msg->size;
	}
	w->st.skip = len;
	return 0;
}

/* The bpf_loop context: the message apart from the walk, where h2_step,
 * which may write all of the walk, leaves it a ctx pointer. */
struct h2_loop {
	struct sk_msg_md *msg;
	struct h2_walk w;
};

static long h2_frame(__u32 i, void *arg)
{
	struct h2_loop *l = arg;
	return cb_ret(h2_step(l->msg, &l->w));
}

/* h2_message walks the frames of one message of a tracked connection. */
__noinline int h2_message(struct sk_msg_md *msg, struct h2_conn *h, struct tcpctx_key *k)
{
	struct bpf_sock *bsk = msg->sk;
	if (!bsk || !h || !k)
		return SK_PASS;
	int ok;
	__u32 seq = tcp_seq(bsk, &ok);
	struct h2_loop l = {.msg = msg, .w = {.st = *h, .k = *k, .size = msg->size}};
	struct h2_walk *wp = &l.w;
	if (!ok || seq != h->next_seq) {
		wp->lost = 1;
	} else {
		bpf_loop(H2_FRAMES, h2_frame, &l, 0);
		if (wp->off < wp->size)
			wp->lost = 1;
	}
	if (wp->lost) {
		count(TCPCTX_HDR_H2_LOST);
		h->mode = H2_OFF;
		return wp->drop ? SK_DROP : SK_PASS;
	}
	*h = wp->st;
	h->next_seq = seq + msg->size;
	return wp->drop ? SK_DROP : SK_PASS;
}
