package client

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
func record(t *testing.T, e bpfRpcClientEvent, method, host string) []byte {
	t.Helper()
	e.MethodLen, e.HostLen = uint16(len(method)), uint16(len(host))
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, &e); err != nil {
		t.Fatal(err)
	}
	if b.Len() != HeaderSize {
		t.Fatalf("encoded %d bytes, want %d", b.Len(), HeaderSize)
	}
	b.WriteString(method + host)
	return b.Bytes()
}

func TestDecode(t *testing.T) {
	const m = "/grpc.testing.TestService/UnaryCall"
	tests := []struct {
		name         string
		in           bpfRpcClientEvent
		method, host string
		want         Call
	}{{
		name:   "ok",
		in:     bpfRpcClientEvent{StartNs: 100, EndNs: 250, Tgid: 42, Code: 0},
		method: m, host: "127.0.0.1:50051",
		want: Call{Call: probe.Call{Kind: probe.KindRPCClient, PID: 42, StartNS: 100, EndNS: 250},
			Method: m, Authority: "127.0.0.1:50051"},
	}, {
		name:   "status and span",
		in:     bpfRpcClientEvent{StartNs: 1, EndNs: 2, Tgid: 7, Code: 4, Flags: flagSampled, TraceIdLow: 0xfeed},
		method: m, host: "svc.ns:443",
		want: Call{Call: probe.Call{Kind: probe.KindRPCClient, PID: 7, StartNS: 1, EndNS: 2, Sampled: true, TraceIDLow: 0xfeed},
			Method: m, Authority: "svc.ns:443", Code: 4},
	}, {
		name:   "other error, cut strings",
		in:     bpfRpcClientEvent{Tgid: 1, Code: 2, Flags: flagOtherError | flagMethodTruncated | flagHostTruncated},
		method: "/a/b", host: "",
		want: Call{Call: probe.Call{Kind: probe.KindRPCClient, PID: 1}, Method: "/a/b", Code: 2,
			OtherError: true, MethodTruncated: true, AuthorityTruncated: true},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCall(record(t, tt.in, tt.method, tt.host))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	good := record(t, bpfRpcClientEvent{StartNs: 1, EndNs: 2}, "/a/b", "h:1")
	tests := map[string][]byte{
		"short header":       good[:HeaderSize-1],
		"strings past end":   good[:len(good)-1],
		"end before start":   record(t, bpfRpcClientEvent{StartNs: 2, EndNs: 1}, "/a/b", ""),
		"empty":              nil,
		"header only, lying": record(t, bpfRpcClientEvent{}, "", "")[:HeaderSize-8],
	}
	for name, raw := range tests {
		if _, err := Decode(raw); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// TestDeclarationMatchesObject: every constant the declaration names is in
// the BPF object, and the Go budget is the object's.
func TestDeclarationMatchesObject(t *testing.T) {
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
	for _, s := range p.Sites {
		if _, ok := spec.Programs[s.Program]; !ok {
			t.Errorf("program %s of %s not in the object", s.Program, s.Symbol)
		}
		if s.VaddrConst != "" {
			names = append(names, s.VaddrConst)
		}
	}
	for _, n := range names {
		if _, ok := spec.Variables[n]; !ok {
			t.Errorf("constant %s not in the object", n)
		}
	}
	var budget int64
	if err := spec.Variables["budget_calls"].Get(&budget); err != nil {
		t.Fatal(err)
	}
	if budget != BudgetCalls {
		t.Errorf("budget_calls = %d in the object, BudgetCalls = %d", budget, BudgetCalls)
	}
	for m := range p.ProcessMaps {
		if _, ok := spec.Maps[m]; !ok {
			t.Errorf("process map %s not in the object", m)
		}
	}
}
