package server

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/obsd-dev/obsd/bpf/probe"
)

// record encodes a header the way the kernel lays it out, through
// encoding/binary rather than the offsets Decode uses, and appends the
// strings.
func record(t *testing.T, e bpfHttpServerEvent, pattern, path string) []byte {
	t.Helper()
	e.PatternLen, e.PathLen = uint16(len(pattern)), uint16(len(path))
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, &e); err != nil {
		t.Fatal(err)
	}
	if b.Len() != HeaderSize {
		t.Fatalf("encoded %d bytes, want %d", b.Len(), HeaderSize)
	}
	b.WriteString(pattern + path)
	return b.Bytes()
}

func method(s string) (a [16]int8) {
	for i := 0; i < len(s) && i < len(a); i++ {
		a[i] = int8(s[i])
	}
	return a
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name          string
		in            bpfHttpServerEvent
		pattern, path string
		want          probe.Request
	}{{
		name:    "pattern route",
		in:      bpfHttpServerEvent{StartNs: 100, EndNs: 250, Tgid: 42, Status: 404, MethodLen: 3, Method: method("GET"), Proto: 0x11},
		pattern: "GET /items/{id}", path: "/items/7",
		want: probe.Request{Kind: probe.KindHTTPServer, PID: 42, StartNS: 100, EndNS: 250,
			Method: "GET", Path: "/items/7", Pattern: "GET /items/{id}", Status: 404, Protocol: "1.1"},
	}, {
		name: "HTTP/2",
		in:   bpfHttpServerEvent{Tgid: 1, MethodLen: 3, Method: method("GET"), Status: 200, Flags: flagTLS, Proto: 0x20},
		path: "/",
		want: probe.Request{Kind: probe.KindHTTPServer, PID: 1, Method: "GET", Path: "/", Status: 200, TLS: true, Protocol: "2"},
	}, {
		name: "over TLS",
		in:   bpfHttpServerEvent{Tgid: 1, MethodLen: 4, Method: method("POST"), Status: 101, Flags: flagTLS},
		path: "/",
		want: probe.Request{Kind: probe.KindHTTPServer, PID: 1, Method: "POST", Path: "/", Status: 101, TLS: true},
	}, {
		name:    "pattern without path (metrics only)",
		in:      bpfHttpServerEvent{Tgid: 1, MethodLen: 3, Method: method("GET"), Status: 200},
		pattern: "/hello",
		want:    probe.Request{Kind: probe.KindHTTPServer, PID: 1, Method: "GET", Pattern: "/hello", Status: 200},
	}, {
		name: "truncated path",
		in:   bpfHttpServerEvent{Tgid: 1, MethodLen: 3, Method: method("GET"), Flags: flagPathTruncated, Status: 200},
		path: "/x",
		want: probe.Request{Kind: probe.KindHTTPServer, PID: 1, Method: "GET", Path: "/x", Status: 200, Truncated: true, PathTruncated: true},
	}, {
		name:    "truncated pattern",
		in:      bpfHttpServerEvent{Tgid: 1, MethodLen: 3, Method: method("GET"), Flags: flagPatternTruncated, Status: 200},
		pattern: "/x",
		want:    probe.Request{Kind: probe.KindHTTPServer, PID: 1, Method: "GET", Pattern: "/x", Status: 200, Truncated: true, PatternTruncated: true},
	}, {
		name: "truncated method",
		in:   bpfHttpServerEvent{Tgid: 1, MethodLen: 16, Method: method("0123456789abcdef"), Flags: flagMethodTruncated, Status: 200},
		want: probe.Request{Kind: probe.KindHTTPServer, PID: 1, Method: "0123456789abcdef", Status: 200, MethodTruncated: true},
	}, {
		name: "method length beyond the array is clamped",
		in:   bpfHttpServerEvent{Tgid: 1, MethodLen: 200, Method: method("0123456789abcdef"), Status: 200},
		want: probe.Request{Kind: probe.KindHTTPServer, PID: 1, Method: "0123456789abcdef", Status: 200},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRequest(record(t, tt.in, tt.pattern, tt.path))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Decode =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	if _, err := Decode(make([]byte, HeaderSize-1)); err == nil {
		t.Error("short record decoded")
	}
	if _, err := Decode(record(t, bpfHttpServerEvent{Flags: flagReadFailed}, "", "")); err == nil {
		t.Error("record with unreadable method decoded")
	}
	if _, err := Decode(record(t, bpfHttpServerEvent{Flags: flagReadFailed, Status: 200, MethodLen: 3, Method: method("GET")}, "", "/")); err == nil {
		t.Error("record marked unreadable decoded")
	}
	if _, err := Decode(record(t, bpfHttpServerEvent{MethodLen: 3, Method: method("GET")}, "", "/")); err == nil {
		t.Error("record without status decoded (the probe never sends one: it would read as 200)")
	}
	r := record(t, bpfHttpServerEvent{MethodLen: 3, Method: method("GET"), Status: 200}, "/p", "/path")
	if _, err := Decode(r[:len(r)-1]); err == nil {
		t.Error("record shorter than its string lengths decoded")
	}
}

func TestConstsExistInObject(t *testing.T) {
	p := New()
	spec, err := p.Spec()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Consts {
		v, ok := spec.Variables[c.Name]
		if !ok {
			t.Errorf("const %s not in the BPF object", c.Name)
			continue
		}
		if !v.Constant() {
			t.Errorf("%s is not a volatile const", c.Name)
		}
	}
	for _, s := range p.Sites {
		if spec.Programs[s.Program] == nil {
			t.Errorf("site %s: program %s not in the object", s.Symbol, s.Program)
		}
	}
	for name, want := range map[string]int64{"budget_slots": BudgetSlots, "budget_series": BudgetSeries} {
		var got int64
		if v := spec.Variables[name]; v == nil {
			t.Errorf("budget %s not in the BPF object", name)
		} else if err := v.Get(&got); err != nil || got != want {
			t.Errorf("%s = %d (%v), want %d as documented", name, got, err, want)
		}
	}
	if spec.Maps[p.Active.Map] == nil {
		t.Errorf("active map %s not in the object", p.Active.Map)
	}
	for name := range p.ProcessMaps {
		if spec.Maps[name] == nil {
			t.Errorf("process map %s not in the object", name)
		}
	}
}

func encode(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestDecodeMetric(t *testing.T) {
	key := encode(t, &bpfHttpServerMetricKey{Tgid: 7, Status: 201, Method: 3, Proto: 0x20, Pattern: 0x6c8123, PatternLen: 15})
	cpu0 := bpfHttpServerMetric{SumNs: 3_000}
	cpu0.Buckets[0], cpu0.Buckets[14] = 2, 1
	cpu1 := bpfHttpServerMetric{SumNs: 500}
	cpu1.Buckets[0] = 1
	got, err := DecodeMetric(key, [][]byte{encode(t, &cpu0), encode(t, &cpu1)})
	if err != nil {
		t.Fatal(err)
	}
	want := probe.Histogram{Kind: probe.KindHTTPServer, PID: 7, Method: "POST", Status: 201,
		PatternAddr: 0x6c8123, PatternLen: 15, Protocol: "2", SumNS: 3_500, Buckets: make([]uint64, 15)}
	want.Buckets[0], want.Buckets[14] = 3, 1
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DecodeMetric = %+v, want %+v", got, want)
	}

	// Methods are numbered as in enum method_id; 0 is any other.
	for id, name := range map[uint8]string{0: "_OTHER", 1: "GET", 6: "CONNECT", 9: "PATCH"} {
		key := encode(t, &bpfHttpServerMetricKey{Tgid: 7, Status: 200, Method: id})
		if got, err := DecodeMetric(key, [][]byte{encode(t, &cpu1)}); err != nil || got.Method != name {
			t.Errorf("method %d: DecodeMetric = %+v, %v; want %s", id, got, err, name)
		}
	}
	key = encode(t, &bpfHttpServerMetricKey{Tgid: 7, Status: 200, Method: 1})
	for _, bad := range []struct {
		name   string
		key    []byte
		values [][]byte
	}{
		{"short key", key[:8], [][]byte{encode(t, &cpu1)}},
		{"short value", key, [][]byte{encode(t, &cpu1)[:64]}},
		{"status 0", encode(t, &bpfHttpServerMetricKey{Tgid: 7, Method: 1}), [][]byte{encode(t, &cpu1)}},
		{"method out of range", encode(t, &bpfHttpServerMetricKey{Tgid: 7, Status: 200, Method: 10}), [][]byte{encode(t, &cpu1)}},
	} {
		if _, err := DecodeMetric(bad.key, bad.values); err == nil {
			t.Errorf("%s: no error", bad.name)
		}
	}
}

// The probe's protocol byte is major << 4 | minor, from Request.ProtoMajor
// and ProtoMinor; semconv names HTTP/2 "2", not "2.0".
func TestProtocolVersion(t *testing.T) {
	for b, want := range map[byte]string{0: "", 0x10: "1.0", 0x11: "1.1", 0x20: "2", 0x30: "3", 0x12: "1.2"} {
		if got := protocolVersion(b); got != want {
			t.Errorf("protocolVersion(%#x) = %q, want %q", b, got, want)
		}
	}
}

// A router's route: the kind in the key or record names the router, and
// http_server_route_names holds the bytes of a route counted by hash.
func TestDecodeRoutes(t *testing.T) {
	cpu := encode(t, &bpfHttpServerMetric{})
	for kind, want := range map[uint8]string{0: "", 1: "chi", 2: "gin", 3: "echo", 4: "gorilla/mux"} {
		key := encode(t, &bpfHttpServerMetricKey{Tgid: 7, Status: 200, Method: 1, RouteKind: kind, Pattern: 0xfeed, PatternLen: 9})
		got, err := DecodeMetric(key, [][]byte{cpu})
		hashed := kind != 0 // a router's route is in the key by hash, a pattern by address
		if err != nil || got.Router != want || got.NameHashed != hashed || (hashed && got.NameHash != 0xfeed) ||
			(!hashed && (got.PatternAddr != 0xfeed || got.PatternLen != 9)) {
			t.Errorf("route kind %d: DecodeMetric = %+v, %v; want router %q", kind, got, err, want)
		}
		r, err := DecodeRequest(record(t, bpfHttpServerEvent{Tgid: 7, Status: 200, RouteKind: kind}, "/x/{id}", ""))
		if err != nil || r.Router != want || r.Pattern != "/x/{id}" {
			t.Errorf("route kind %d: DecodeRequest = %+v, %v; want router %q", kind, r, err, want)
		}
	}
	if _, err := DecodeMetric(encode(t, &bpfHttpServerMetricKey{Tgid: 7, Status: 200, RouteKind: 5}), [][]byte{cpu}); err == nil {
		t.Error("route kind 5: no error")
	}

	var v bpfRoute
	for i, c := range []byte("/orders/:oid") {
		v.Name[i] = int8(c)
	}
	v.Len, v.Flags = 12, routeTruncated
	name, cut, err := DecodeRouteName(encode(t, &v))
	if err != nil || name != "/orders/:oid" || !cut {
		t.Errorf("DecodeRouteName = %q, %v, %v", name, cut, err)
	}
	v.Len = uint16(len(v.Name) + 1)
	if _, _, err := DecodeRouteName(encode(t, &v)); err == nil {
		t.Error("a length past the name: no error")
	}
	if _, _, err := DecodeRouteName(encode(t, &v)[:40]); err == nil {
		t.Error("a short value: no error")
	}
}
