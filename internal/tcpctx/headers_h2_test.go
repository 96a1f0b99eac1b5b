package tcpctx

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2frame is one frame a test client sends: its bytes are built here with
// x/net's Framer, and ctx, when set, is the stream's context
// (SetOutgoingStream) and whether the injector should use it.
type h2frame struct {
	typ    http2.FrameType
	flags  http2.Flags
	sid    uint32
	block  []byte // HEADERS/CONTINUATION: the header block fragment; else the payload
	pad    uint8  // HEADERS: PADDED with this many bytes
	prio   bool   // HEADERS: PRIORITY
	ctx    *Context
	inject bool // the peer must see this frame with the field added
}

// bytes returns the frame as the client writes it, or as the peer must
// receive it with the traceparent field of f.ctx appended to its block.
func (f h2frame) bytes(t *testing.T, added bool) []byte {
	t.Helper()
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.AllowIllegalWrites = true
	block := f.block
	if added {
		block = append(slices.Clip(block), h2Field(*f.ctx)...)
	}
	var err error
	switch f.typ {
	case http2.FrameHeaders:
		p := http2.HeadersFrameParam{StreamID: f.sid, BlockFragment: block, EndStream: f.flags.Has(http2.FlagHeadersEndStream),
			EndHeaders: f.flags.Has(http2.FlagHeadersEndHeaders), PadLength: f.pad}
		if f.prio {
			p.Priority = http2.PriorityParam{StreamDep: 0, Weight: 15}
		}
		err = fr.WriteHeaders(p)
	default:
		err = fr.WriteRawFrame(f.typ, f.flags, f.sid, block)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// h2Field is the field the injector appends: a literal without indexing
// with a new, raw name (RFC 7541 §6.2.2), its value raw.
func h2Field(c Context) []byte {
	v := strings.TrimSuffix(strings.TrimPrefix(tpLine(c), "traceparent: "), "\r\n")
	return append(append([]byte{0x00, 11}, "traceparent"...), append([]byte{byte(len(v))}, v...)...)
}

// block encodes fields with enc (whose dynamic table persists across a
// connection's blocks, as a Go client's does).
func block(t *testing.T, enc *hpack.Encoder, buf *bytes.Buffer, fields ...string) []byte {
	t.Helper()
	buf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		if err := enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}); err != nil {
			t.Fatal(err)
		}
	}
	return slices.Clone(buf.Bytes())
}

// TestHeadersHTTP2 writes HTTP/2 frames with prior knowledge on raw
// connections, as Go's clients frame them, and checks what the peer
// received two ways: byte for byte against the frames with the field added
// where it belongs, and through x/net's Framer and HPACK decoder (each
// header block's fields, in order).
func TestHeadersHTTP2(t *testing.T) {
	eachPushPath(t, testHeadersHTTP2)
}

func testHeadersHTTP2(t *testing.T, p *Propagator, self uint32) {
	const hs = http2.FlagHeadersEndHeaders
	eh := hs | http2.FlagHeadersEndStream
	for i, tt := range []struct {
		name string
		// frames is what the client sends after the preface and SETTINGS
		// (one message), built once per case with one HPACK encoder.
		frames func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame
		// cuts split the frames' bytes into messages, given each frame's
		// size; nil: one message. A frame's context is set right before
		// the message it starts in.
		cuts                               func(sizes []int) []int
		noPrefc                            bool // send no preface: the connection is not HTTP/2 from its first byte
		injected, present, tooLong, unread uint64
		noStream                           uint64 // new streams without a context
	}{
		{name: "one request", injected: 1,
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				return []h2frame{{typ: http2.FrameHeaders, flags: hs, sid: 1, ctx: ctx(1), inject: true,
					block: block(t, enc, buf, ":method", "POST", ":scheme", "http", ":authority", "b", ":path", "/x", "content-type", "application/grpc")},
					{typ: http2.FrameData, flags: http2.FlagDataEndStream, sid: 1, block: []byte("\x00\x00\x00\x00\x02hi")}}
			}},
		{name: "batched streams, some without a context", injected: 2, noStream: 1,
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				var fs []h2frame
				for _, sid := range []uint32{1, 3, 5} {
					var c *Context
					if sid != 3 {
						c = ctx(int(sid))
					}
					fs = append(fs, h2frame{typ: http2.FrameHeaders, flags: eh, sid: sid, ctx: c, inject: c != nil,
						block: block(t, enc, buf, ":method", "GET", ":scheme", "http", ":path", fmt.Sprintf("/%d", sid))})
				}
				return fs
			}},
		{name: "priority flag", injected: 1,
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				return []h2frame{{typ: http2.FrameHeaders, flags: eh, sid: 1, prio: true, ctx: ctx(1), inject: true,
					block: block(t, enc, buf, ":method", "GET", ":path", "/")}}
			}},
		{name: "frame headers and a DATA payload that looks like frames, split over messages", injected: 1, tooLong: 1,
			// Cuts: 4 bytes into the first HEADERS frame's header, inside
			// the DATA payload right before the fake frame's bytes.
			cuts: func(sizes []int) []int { return []int{4, sizes[0] + 9 + 3} },
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				b1 := block(t, enc, buf, ":method", "GET", ":path", "/")
				var fake bytes.Buffer // a whole HEADERS frame for stream 7, as DATA
				fr := http2.NewFramer(&fake, nil)
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: b1, EndHeaders: true})
				return []h2frame{
					{typ: http2.FrameHeaders, flags: hs, sid: 1, ctx: ctx(1), block: b1}, // header split: left alone
					{typ: http2.FrameData, sid: 1, block: append([]byte("abc"), fake.Bytes()...)},
					{typ: http2.FrameHeaders, flags: eh, sid: 3, ctx: ctx(3), inject: true, block: block(t, enc, buf, ":method", "GET", ":path", "/3")},
				}
			}},
		{name: "the request's own traceparent, then indexed by later requests", present: 2,
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				var fs []h2frame
				for _, sid := range []uint32{1, 3} {
					fs = append(fs, h2frame{typ: http2.FrameHeaders, flags: eh, sid: sid, ctx: ctx(int(sid)),
						block: block(t, enc, buf, ":method", "GET", ":path", "/", "traceparent", strings.TrimSuffix(tpLine(*ctx(90 + int(sid)))[13:], "\r\n"))})
				}
				return fs
			}},
		{name: "raw (non-Huffman) traceparent name never indexed", present: 1, injected: 1,
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				own := append([]byte{0x10, 11}, "traceparent"...)
				own = append(append(own, 3), "x-y"...)
				return []h2frame{
					{typ: http2.FrameHeaders, flags: eh, sid: 1, ctx: ctx(1), block: append(block(t, enc, buf, ":method", "GET"), own...)},
					// never indexed: the next request is free of it
					{typ: http2.FrameHeaders, flags: eh, sid: 3, ctx: ctx(3), inject: true, block: block(t, enc, buf, ":method", "GET")},
				}
			}},
		{name: "trailers are not a new stream", injected: 1,
			cuts: func(sizes []int) []int { return []int{sizes[0] + sizes[1]} },
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				return []h2frame{
					{typ: http2.FrameHeaders, flags: hs, sid: 1, ctx: ctx(1), inject: true, block: block(t, enc, buf, ":method", "POST", ":path", "/")},
					{typ: http2.FrameData, sid: 1, block: []byte("body")},
					{typ: http2.FrameHeaders, flags: eh, sid: 1, ctx: ctx(2), block: block(t, enc, buf, "x-trailer", "1")},
				}
			}},
		{name: "CONTINUATION and padding: left alone", tooLong: 2, injected: 1,
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				return []h2frame{ // split between fields
					{typ: http2.FrameHeaders, flags: 0, sid: 1, ctx: ctx(1), block: block(t, enc, buf, ":method", "GET", ":path", "/c")},
					{typ: http2.FrameContinuation, flags: http2.FlagContinuationEndHeaders, sid: 1, block: block(t, enc, buf, "x-a", "1")},
					{typ: http2.FrameHeaders, flags: eh, sid: 3, pad: 4, ctx: ctx(3), block: block(t, enc, buf, ":method", "GET")},
					{typ: http2.FrameHeaders, flags: eh, sid: 5, ctx: ctx(5), inject: true, block: block(t, enc, buf, ":method", "GET")},
				}
			}},
		{name: "CONTINUATION splitting a field: no more headers on the connection", tooLong: 1, unread: 1,
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				b := block(t, enc, buf, ":method", "GET", "x-a", "some value")
				return []h2frame{
					{typ: http2.FrameHeaders, flags: 0, sid: 1, ctx: ctx(1), block: b[:4]},
					{typ: http2.FrameContinuation, flags: http2.FlagContinuationEndHeaders, sid: 1, block: b[4:]},
					{typ: http2.FrameHeaders, flags: eh, sid: 3, ctx: ctx(3), block: block(t, enc, buf, ":method", "GET")},
				}
			}},
		{name: "a block too long to read: no more headers on the connection", tooLong: 1, unread: 1,
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				return []h2frame{
					{typ: http2.FrameHeaders, flags: eh, sid: 1, ctx: ctx(1), block: block(t, enc, buf, ":method", "GET", "x-big", strings.Repeat("~", 5000))},
					{typ: http2.FrameHeaders, flags: eh, sid: 3, ctx: ctx(3), block: block(t, enc, buf, ":method", "GET")},
				}
			}},
		{name: "a header block across writes (a writer's buffer boundary): no more headers on the connection", tooLong: 1, unread: 1,
			cuts: func(sizes []int) []int { return []int{9 + 3} },
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				return []h2frame{
					{typ: http2.FrameHeaders, flags: eh, sid: 1, ctx: ctx(1), block: block(t, enc, buf, ":method", "GET", ":path", "/split", "x-a", "b")},
					{typ: http2.FrameHeaders, flags: eh, sid: 3, ctx: ctx(3), block: block(t, enc, buf, ":method", "GET")},
				}
			}},
		{name: "no preface: not tracked", noPrefc: true,
			frames: func(enc *hpack.Encoder, buf *bytes.Buffer, ctx func(int) *Context) []h2frame {
				return []h2frame{{typ: http2.FrameHeaders, flags: eh, sid: 1, ctx: ctx(1), block: block(t, enc, buf, ":method", "GET")}}
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, got := rawSink(t)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conn := Conn{Netns: self, Local: addrPort(c.LocalAddr()), Remote: addrPort(c.RemoteAddr())}
			var buf bytes.Buffer
			enc := hpack.NewEncoder(&buf)
			frames := tt.frames(enc, &buf, func(sid int) *Context { c := ctxFor(100+i, sid); return &c })
			var start, sent, want []byte
			if !tt.noPrefc {
				var b bytes.Buffer
				b.WriteString(http2.ClientPreface)
				http2.NewFramer(&b, nil).WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
				start = b.Bytes()
			}
			var sizes []int
			for _, f := range frames {
				b := f.bytes(t, false)
				sizes = append(sizes, len(b))
				sent = append(sent, b...)
				want = append(want, f.bytes(t, f.inject)...)
			}
			before, err := p.Counters()
			if err != nil {
				t.Fatal(err)
			}
			write := func(b []byte) {
				t.Helper()
				if len(b) == 0 {
					return
				}
				writeOne(t, p, c, b)
			}
			write(start)
			var cuts []int
			if tt.cuts != nil {
				cuts = tt.cuts(sizes)
			}
			last, fi, at := 0, 0, 0
			for _, cut := range append(cuts, len(sent)) {
				for ; fi < len(frames) && at < cut; fi++ {
					if f := frames[fi]; f.ctx != nil {
						if err := p.SetOutgoingStream(conn, f.sid, *f.ctx); err != nil {
							t.Fatal(err)
						}
					}
					at += sizes[fi]
				}
				write(sent[last:cut])
				last = cut
			}
			c.Close()
			recv := <-got
			if !bytes.Equal(recv, append(start, want...)) {
				t.Errorf("peer received\n%q\nwant\n%q", recv, append(start, want...))
			}
			checkDecoded(t, recv, len(start), frames)
			after, err := p.Counters()
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range []struct {
				what       string
				got, wantN uint64
			}{
				{"injected", after.HeadersInjected - before.HeadersInjected, tt.injected},
				{"already present", after.HeadersPresent - before.HeadersPresent, tt.present},
				{"too long", after.HeadersTooLong - before.HeadersTooLong, tt.tooLong},
				{"unread connection", after.HeadersUnread - before.HeadersUnread, tt.unread},
				{"stream without context", after.HeadersNoStream - before.HeadersNoStream, tt.noStream},
				{"failed", after.HeadersFailed - before.HeadersFailed, 0},
				{"raced", after.HeadersRaced - before.HeadersRaced, 0},
				{"lost", after.HeadersLost - before.HeadersLost, 0},
				{"not HTTP/1", after.HeadersNotHTTP1 - before.HeadersNotHTTP1, 0},
			} {
				if d.got != d.wantN {
					t.Errorf("%s: counter moved by %d, want %d", d.what, d.got, d.wantN)
				}
			}
		})
	}
}

// checkDecoded parses what the peer received after skip bytes with x/net's
// Framer and HPACK decoder: every frame as sent, every header block's
// fields as encoded plus, where injected, one traceparent field last with
// the stream's context.
func checkDecoded(t *testing.T, recv []byte, skip int, sent []h2frame) {
	t.Helper()
	fr := http2.NewFramer(io.Discard, bytes.NewReader(recv[skip:]))
	fr.SetMaxReadFrameSize(1 << 20)
	var sentDec, recvDec []hpack.HeaderField
	sd := hpack.NewDecoder(4096, func(f hpack.HeaderField) { sentDec = append(sentDec, f) })
	rd := hpack.NewDecoder(4096, func(f hpack.HeaderField) { recvDec = append(recvDec, f) })
	for i, want := range sent {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		h := f.Header()
		if h.Type != want.typ || h.StreamID != want.sid {
			t.Fatalf("frame %d is %v stream %d, want %v stream %d", i, h.Type, h.StreamID, want.typ, want.sid)
		}
		var frag []byte
		switch f := f.(type) {
		case *http2.HeadersFrame:
			frag = f.HeaderBlockFragment()
		case *http2.ContinuationFrame:
			frag = f.HeaderBlockFragment()
		default:
			continue
		}
		sentDec, recvDec = nil, nil
		if _, err := sd.Write(want.block); err != nil {
			t.Fatal(err)
		}
		if _, err := rd.Write(frag); err != nil {
			t.Fatalf("frame %d: the peer cannot decode the block: %v", i, err)
		}
		wantF := sentDec
		if want.inject {
			v := strings.TrimSuffix(tpLine(*want.ctx)[13:], "\r\n")
			wantF = append(wantF, hpack.HeaderField{Name: "traceparent", Value: v})
		}
		if !slices.Equal(recvDec, wantF) {
			t.Errorf("frame %d decodes to %v, want %v", i, recvDec, wantF)
		}
	}
	if _, err := fr.ReadFrame(); err != io.EOF {
		t.Errorf("after the frames sent: %v, want EOF", err)
	}
}
