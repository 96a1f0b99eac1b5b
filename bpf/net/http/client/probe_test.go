package client

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"
	"unsafe"

	"github.com/obsd-dev/obsd/bpf/probe"
)

// record builds a ring-buffer record as probe.bpf.c writes it.
func record(e bpfHttpClientEvent, path, query string) []byte {
	e.PathLen, e.QueryLen = uint16(len(path)), uint16(len(query))
	var b bytes.Buffer
	binary.Write(&b, binary.NativeEndian, e)
	b.WriteString(path)
	b.WriteString(query)
	return b.Bytes()
}

func chars(dst []int8, s string) uint8 {
	for i := range s {
		dst[i] = int8(s[i])
	}
	return uint8(len(s))
}

func TestDecodeRequest(t *testing.T) {
	var ok bpfHttpClientEvent
	ok.StartNs, ok.EndNs, ok.Tgid, ok.TraceIdLow = 100, 350, 42, 7
	ok.Status, ok.ProtoMajor, ok.ProtoMinor = 404, 2, 0
	ok.Flags = flagSampled | flagQueryTruncated
	ok.MethodLen = chars(ok.Method[:], "GET")
	ok.SchemeLen = chars(ok.Scheme[:], "https")
	ok.HostLen = chars(ok.Host[:], "api.example:8443")

	failed := ok
	failed.Status, failed.ProtoMajor, failed.ErrorKind, failed.Flags = 0, 0, uint8(ErrConnectionRefused), 0

	noErr := ok
	noErr.Status = 0
	both := ok
	both.ErrorKind = uint8(ErrTimeout)
	badKind := failed
	badKind.ErrorKind = 9

	for _, tc := range []struct {
		name    string
		raw     []byte
		want    Request
		wantErr bool
	}{
		{"response", record(ok, "/v1/items", "a=1&b"), Request{
			Call:   probe.Call{Kind: probe.KindHTTPClient, PID: 42, StartNS: 100, EndNS: 350, Sampled: true, TraceIDLow: 7},
			Method: "GET", Scheme: "https", Host: "api.example:8443", Path: "/v1/items", RawQuery: "a=1&b",
			Status: 404, ProtoMajor: 2, QueryTruncated: true,
		}, false},
		{"refused", record(failed, "", ""), Request{
			Call:   probe.Call{Kind: probe.KindHTTPClient, PID: 42, StartNS: 100, EndNS: 350, TraceIDLow: 7},
			Method: "GET", Scheme: "https", Host: "api.example:8443", Err: ErrConnectionRefused,
		}, false},
		{"short", record(ok, "", "")[:HeaderSize-1], Request{}, true},
		{"strings past the end", record(ok, "/p", "")[:HeaderSize+1], Request{}, true},
		{"neither status nor error", record(noErr, "", ""), Request{}, true},
		{"status and error", record(both, "", ""), Request{}, true},
		{"unknown error kind", record(badKind, "", ""), Request{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeRequest(tc.raw)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestErrorKindString(t *testing.T) {
	want := map[ErrorKind]string{ErrNone: "", ErrOther: "_OTHER", ErrTimeout: "timeout",
		ErrConnectionRefused: "connection_refused", ErrContextCanceled: "context_canceled", ErrTLS: "tls"}
	for k, s := range want {
		if k.String() != s {
			t.Errorf("%d.String() = %q, want %q", k, k.String(), s)
		}
	}
}

// TestDeclaration checks that every constant the declaration names is in
// the BPF object, and that the end site is every RET of the start's function.
func TestDeclaration(t *testing.T) {
	p := New()
	spec, err := p.Spec()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range p.Consts {
		names = append(names, c.Name)
	}
	for _, f := range p.Funcs {
		names = append(names, f.Name)
	}
	for _, n := range append(names, "start_site_vaddr", "with_spans", "sample_bound") {
		if _, ok := spec.Variables[n]; !ok {
			t.Errorf("constant %q not in the BPF object", n)
		}
	}
	if len(p.Sites) != 5 || p.Sites[0].Returns || !p.Sites[1].Returns || p.Sites[0].Symbol != p.Sites[1].Symbol {
		t.Errorf("sites = %+v, want the entry and the RETs of one function, then the HTTP/1 connection's site and the HTTP/2 stream's two names", p.Sites)
	}
	// The others cost a hit per request: only with --propagate (the
	// HTTP/2 stream's with the TCP option only: it alone carries the
	// stream's tag), and optional, each alone (a binary may have either
	// HTTP/2 name, or none).
	for i, s := range p.Sites[min(2, len(p.Sites)):] {
		want := map[bool]string{true: probe.TCPPropagateConst, false: probe.TCPStreamsWhen}[i == 0]
		if s.When != want || !s.Optional || s.OneOf != "" {
			t.Errorf("site %s: When %q, Optional %v, OneOf %q; want %s, optional, alone", s.Symbol, s.When, s.Optional, s.OneOf, want)
		}
	}
	if off := int(unsafe.Offsetof(bpfHttpClientEvent{}.Method)); off%8 != 0 {
		t.Errorf("method at %d: the record's strings should start aligned", off)
	}
}

// An in-kernel series: status, error kind and protocol from the key; the
// method, host and scheme from the names map (the scheme is the name's
// flags, which decide the default port of a host without one).
func TestDecodeMetric(t *testing.T) {
	ne := binary.NativeEndian
	var k bpfHttpClientMetricKey
	key := make([]byte, unsafe.Sizeof(k))
	ne.PutUint32(key, 7)
	ne.PutUint16(key[unsafe.Offsetof(k.Status):], 503)
	key[unsafe.Offsetof(k.Proto)] = 0x11
	ne.PutUint64(key[unsafe.Offsetof(k.Names):], 0xfeed)
	cpu := make([]byte, unsafe.Sizeof(bpfHist{}))
	ne.PutUint64(cpu[8*3:], 2)
	h, err := DecodeMetric(key, [][]byte{cpu, cpu})
	if err != nil {
		t.Fatal(err)
	}
	if h.PID != 7 || !h.NameHashed || h.NameHash != 0xfeed || h.Buckets[3] != 4 {
		t.Errorf("DecodeMetric = %+v", h)
	}
	name := func(method, host string, scheme uint8) []byte {
		val := make([]byte, unsafe.Sizeof(bpfObsdName{}))
		ne.PutUint16(val, uint16(len(method)))
		ne.PutUint16(val[2:], uint16(len(host)))
		val[unsafe.Offsetof(bpfObsdName{}.Flags)] = scheme
		copy(val[8:], method+host)
		return val
	}
	for scheme, want := range map[uint8]string{1: "http", 2: "https"} {
		h := h
		if err := decodeName(&h, name("GET", "example.com", scheme)); err != nil {
			t.Fatal(err)
		}
		r := h.Series.(Request)
		if r.Method != "GET" || r.Host != "example.com" || r.Scheme != want || r.Status != 503 || r.ProtoMajor != 1 ||
			r.ProtoMinor != 1 || r.Err != ErrNone {
			t.Errorf("scheme %d: series %+v, want GET http(s)://example.com 503 HTTP/1.1", scheme, r)
		}
	}
	if err := decodeName(&h, name("GET", "example.com", 0)); err == nil {
		t.Error("a series of scheme 0 decoded: the probe counts only http and https")
	}
}
