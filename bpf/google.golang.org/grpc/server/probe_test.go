package server

import (
	"encoding/binary"
	"reflect"
	"testing"
	"unsafe"

	"github.com/obsd-dev/obsd/bpf/probe"
)

// record builds a ring-buffer record as probe.bpf.c writes it.
func record(e bpfRpcServerEvent, message, method string) []byte {
	e.MethodLen = uint16(len(method))
	e.MessageLen = uint8(len(message))
	for i := range message {
		e.Message[i] = int8(message[i])
	}
	raw := make([]byte, HeaderSize, HeaderSize+len(method))
	ne := binary.NativeEndian
	ne.PutUint64(raw[unsafe.Offsetof(e.StartNs):], e.StartNs)
	ne.PutUint64(raw[unsafe.Offsetof(e.EndNs):], e.EndNs)
	ne.PutUint64(raw[unsafe.Offsetof(e.TraceIdLow):], e.TraceIdLow)
	ne.PutUint32(raw[unsafe.Offsetof(e.Tgid):], e.Tgid)
	ne.PutUint32(raw[unsafe.Offsetof(e.Code):], e.Code)
	raw[unsafe.Offsetof(e.Flags)] = e.Flags
	raw[unsafe.Offsetof(e.MessageLen)] = e.MessageLen
	ne.PutUint16(raw[unsafe.Offsetof(e.MethodLen):], e.MethodLen)
	for i, c := range e.Message {
		raw[int(unsafe.Offsetof(e.Message))+i] = byte(c)
	}
	return append(raw, method...)
}

func TestDecode(t *testing.T) {
	base := bpfRpcServerEvent{StartNs: 100, EndNs: 350, Tgid: 42}
	call := func(method string, code uint32) Call {
		return Call{Call: probe.Call{Kind: probe.KindRPCServer, PID: 42, StartNS: 100, EndNS: 350}, FullMethod: method, Code: code}
	}
	tests := []struct {
		name    string
		e       func() bpfRpcServerEvent
		message string
		method  string
		want    Call
	}{
		{"ok", func() bpfRpcServerEvent { return base }, "", "/grpc.testing.TestService/EmptyCall",
			call("/grpc.testing.TestService/EmptyCall", 0)},
		{"not found", func() bpfRpcServerEvent { e := base; e.Code = 5; return e }, "", "/a.B/C", call("/a.B/C", 5)},
		{"sampled", func() bpfRpcServerEvent { e := base; e.Flags = flagSampled; e.TraceIdLow = 77; return e }, "", "/a.B/C",
			func() Call { c := call("/a.B/C", 0); c.Sampled, c.TraceIDLow = true, 77; return c }()},
		{"trace id ignored unless sampled", func() bpfRpcServerEvent { e := base; e.TraceIdLow = 77; return e }, "", "/a.B/C",
			call("/a.B/C", 0)},
		{"truncated", func() bpfRpcServerEvent { e := base; e.Flags = flagMethodTruncated; return e }, "", "/a.B/Cut",
			func() Call { c := call("/a.B/Cut", 0); c.MethodTruncated = true; return c }()},
		{"unknown service", func() bpfRpcServerEvent { e := base; e.Code = 12; return e }, "unknown service no.such.Servi", "/no.such.Service/M",
			func() Call { c := call("/no.such.Service/M", 12); c.Rejected = true; return c }()},
		{"unknown method", func() bpfRpcServerEvent { e := base; e.Code = 12; return e }, "unknown method Nope for servic", "/a.B/Nope",
			func() Call { c := call("/a.B/Nope", 12); c.Rejected = true; return c }()},
		{"malformed", func() bpfRpcServerEvent { e := base; e.Code = 12; return e }, "malformed method name: \"x\"", "x",
			func() Call { c := call("x", 12); c.Rejected = true; return c }()},
		{"handler's own unimplemented", func() bpfRpcServerEvent { e := base; e.Code = 12; return e }, "method UnimplementedCall not", "/a.B/UnimplementedCall",
			call("/a.B/UnimplementedCall", 12)},
		{"rejection text on another code", func() bpfRpcServerEvent { e := base; e.Code = 13; return e }, "unknown service x", "/a.B/C",
			call("/a.B/C", 13)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCall(record(tt.e(), tt.message, tt.method))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// A sampled record carries the incoming tracestate after the method.
func TestDecodeTraceState(t *testing.T) {
	e := bpfRpcServerEvent{Tgid: 1, Flags: flagSampled, TraceIdLow: 9, Trace: 2 /* TR_REMOTE */}
	e.TracestateLen = uint16(len("vendor=a,other=b"))
	raw := record(e, "", "/a.B/C")
	ne := binary.NativeEndian
	ne.PutUint16(raw[unsafe.Offsetof(e.TracestateLen):], e.TracestateLen)
	raw[unsafe.Offsetof(e.Trace)] = e.Trace
	raw = append(raw, "vendor=a,other=b"...)
	got, err := DecodeCall(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.FullMethod != "/a.B/C" || got.Trace.TraceState != "vendor=a,other=b" || !got.Trace.Remote {
		t.Errorf("DecodeCall = %+v; want method /a.B/C and tracestate vendor=a,other=b from a remote parent", got)
	}
	if _, err := DecodeCall(raw[:len(raw)-1]); err == nil {
		t.Error("a record with its tracestate cut off decoded")
	}
}

func TestDecodeErrors(t *testing.T) {
	good := record(bpfRpcServerEvent{Tgid: 1}, "", "/a.B/C")
	for name, raw := range map[string][]byte{
		"short header":   good[:HeaderSize-1],
		"method cut off": good[:len(good)-1],
	} {
		if _, err := DecodeCall(raw); err == nil {
			t.Errorf("%s: decoded", name)
		}
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
	for m := range p.ProcessMaps {
		if spec.Maps[m] == nil {
			t.Errorf("process map %s not in the object", m)
		}
	}
	if spec.Maps["events"] == nil {
		t.Error("no events ring buffer")
	}
}

// An in-kernel series: the key's code and method hash, the buckets summed
// over CPUs, and the method read from the names map by probe.DecodeName,
// whose layout must be the generated struct obsd_name's.
func TestDecodeMetric(t *testing.T) {
	var n bpfObsdName
	if unsafe.Sizeof(n) != probe.NameSize || unsafe.Offsetof(n.LenB) != 2 || unsafe.Offsetof(n.Flags) != 4 ||
		unsafe.Offsetof(n.Name) != 8 {
		t.Fatalf("struct obsd_name is %d bytes (len_b at %d, flags at %d, name at %d), probe.DecodeName reads %d (2, 4, 8)",
			unsafe.Sizeof(n), unsafe.Offsetof(n.LenB), unsafe.Offsetof(n.Flags), unsafe.Offsetof(n.Name), probe.NameSize)
	}
	ne := binary.NativeEndian
	key := make([]byte, unsafe.Sizeof(bpfRpcServerMetricKey{}))
	ne.PutUint32(key, 42)
	ne.PutUint32(key[unsafe.Offsetof(bpfRpcServerMetricKey{}.Code):], 5)
	ne.PutUint64(key[unsafe.Offsetof(bpfRpcServerMetricKey{}.Method):], 0xabc)
	cpu := func(bucket int, sum uint64) []byte {
		v := make([]byte, unsafe.Sizeof(bpfHist{}))
		ne.PutUint64(v[8*bucket:], 1)
		ne.PutUint64(v[unsafe.Offsetof(bpfHist{}.SumNs):], sum)
		return v
	}
	h, err := DecodeMetric(key, [][]byte{cpu(0, 100), cpu(14, 20e9)})
	if err != nil {
		t.Fatal(err)
	}
	want := probe.Histogram{Kind: probe.KindRPCServer, PID: 42, NameHashed: true, NameHash: 0xabc,
		Series:  Call{Call: probe.Call{Kind: probe.KindRPCServer}, Code: 5},
		Buckets: []uint64{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, SumNS: 20e9 + 100}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("DecodeMetric = %+v, want %+v", h, want)
	}
	val := make([]byte, probe.NameSize)
	method := "/grpc.testing.TestService/UnaryCall"
	ne.PutUint16(val, uint16(len(method)))
	copy(val[8:], method)
	if err := decodeName(&h, val); err != nil || h.Series.(Call).FullMethod != method {
		t.Errorf("decodeName: %+v, %v; want method %q", h.Series, err, method)
	}
	ne.PutUint16(val, 300)
	if err := decodeName(&h, val); err == nil {
		t.Error("decodeName: a 300-byte method decoded")
	}
	if _, err := DecodeMetric(key[:8], [][]byte{cpu(0, 1)}); err == nil {
		t.Error("DecodeMetric: a short key decoded")
	}
}
