package export

import (
	"fmt"
	"testing"
)

func TestGRPCCodeName(t *testing.T) {
	// The specification's table (grpc/doc/statuscodes.md), by number.
	tests := map[uint32]string{0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
		10: "ABORTED", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE", 16: "UNAUTHENTICATED", 17: "17", 4294967295: "4294967295"}
	for code, want := range tests {
		if got := GRPCCodeName(code); got != want {
			t.Errorf("GRPCCodeName(%d) = %q, want %q", code, got, want)
		}
	}
}

func TestGRPCMethod(t *testing.T) {
	tests := []struct {
		full, want string
		ok         bool
	}{
		{"/grpc.testing.TestService/EmptyCall", "grpc.testing.TestService/EmptyCall", true},
		{"/Svc/M", "Svc/M", true},
		{"grpc.testing.TestService/EmptyCall", OtherMethod, false},
		{"/Svc/", OtherMethod, false},
		{"//M", OtherMethod, false},
		{"/Svc", OtherMethod, false},
		{"/a/b/c", OtherMethod, false},
		{"", OtherMethod, false},
	}
	for _, tt := range tests {
		got, ok := GRPCMethod(tt.full)
		if got != tt.want || ok != tt.ok {
			t.Errorf("GRPCMethod(%q) = %q, %v; want %q, %v", tt.full, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSplitAuthority(t *testing.T) {
	tests := []struct{ in, host, port string }{
		{"127.0.0.1:50051", "127.0.0.1", "50051"},
		{"svc.ns.svc.cluster.local:443", "svc.ns.svc.cluster.local", "443"},
		{"[::1]:8080", "::1", "8080"},
		{"localhost", "localhost", ""},
		{"[::1]", "::1", ""},
		{"host:notaport", "host:notaport", ""},
		{"host:99999", "host:99999", ""},
	}
	for _, tt := range tests {
		if h, p := SplitAuthority(tt.in); h != tt.host || p != tt.port {
			t.Errorf("SplitAuthority(%q) = %q, %q; want %q, %q", tt.in, h, p, tt.host, tt.port)
		}
	}
}

// TestClientLabelsBounded: past each bound, new values of a process become
// the overflow value and are counted, values admitted before stay, and
// another process has bounds of its own.
func TestClientLabelsBounded(t *testing.T) {
	b := NewRPCBounds(nil)
	a, other := Service{InstanceID: "a"}, Service{InstanceID: "b"}
	for i := range MaxRPCMethods {
		l := b.ClientLabels(a, fmt.Sprintf("/S/M%d", i), false, "h:1", false, 0, 1)
		if l.Method != fmt.Sprintf("S/M%d", i) {
			t.Fatalf("method %d labelled %q", i, l.Method)
		}
	}
	if l := b.ClientLabels(a, "/S/new", false, "h:1", false, 0, 1); l.Method != OtherMethod {
		t.Errorf("method past the bound labelled %q", l.Method)
	}
	if l := b.ClientLabels(a, "/S/M0", false, "h:1", false, 0, 1); l.Method != "S/M0" {
		t.Errorf("admitted method relabelled %q", l.Method)
	}
	if l := b.ClientLabels(other, "/S/new", false, "h:1", false, 0, 1); l.Method != "S/new" {
		t.Errorf("another process's method labelled %q", l.Method)
	}
	for i := range MaxServerAddresses - 1 { // h:1 is admitted already
		l := b.ClientLabels(a, "/S/M0", false, fmt.Sprintf("h%d:%d", i, i+1), false, 0, 1)
		if l.Address != fmt.Sprintf("h%d", i) || l.Port != fmt.Sprint(i+1) {
			t.Fatalf("address %d labelled %q %q", i, l.Address, l.Port)
		}
	}
	if l := b.ClientLabels(a, "/S/M0", false, "late:1", false, 0, 1); l.Address != OtherMethod || l.Port != "" {
		t.Errorf("address past the bound labelled %q %q", l.Address, l.Port)
	}
	if l := b.ClientLabels(a, "/S/M0", true, "h:1", true, 99, 1); l.Method != OtherMethod || l.Address != OtherMethod || l.Code != "99" {
		t.Errorf("cut method and authority, code 99: %+v", l)
	}
	got := map[string]uint64{}
	for _, o := range b.Overflows() {
		got[o.Service.InstanceID+"/"+o.Label] = o.N
	}
	want := map[string]uint64{"a/rpc_method": 1, "a/server_address": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("overflows %v, want %v", got, want)
	}
	b.Forget("a")
	if l := b.ClientLabels(a, "/S/fresh", false, "h:1", false, 0, 1); l.Method != "S/fresh" {
		t.Errorf("after Forget, method labelled %q", l.Method)
	}
}

func TestGRPCCodes(t *testing.T) {
	tests := []struct {
		code uint32
		name string
		err  bool
	}{
		{0, "OK", false}, {1, "CANCELLED", false}, {2, "UNKNOWN", true}, {3, "INVALID_ARGUMENT", false},
		{4, "DEADLINE_EXCEEDED", true}, {5, "NOT_FOUND", false}, {10, "ABORTED", false}, {12, "UNIMPLEMENTED", true},
		{13, "INTERNAL", true}, {14, "UNAVAILABLE", true}, {15, "DATA_LOSS", true}, {16, "UNAUTHENTICATED", false},
		{17, "17", true},
	}
	for _, tt := range tests {
		if got := GRPCCodeName(tt.code); got != tt.name {
			t.Errorf("GRPCCodeName(%d) = %q, want %q", tt.code, got, tt.name)
		}
		if got := GRPCServerError(tt.code); got != tt.err {
			t.Errorf("GRPCServerError(%d) = %v, want %v", tt.code, got, tt.err)
		}
	}
}

func TestRPCMethod(t *testing.T) {
	for full, want := range map[string]string{
		"/grpc.testing.TestService/EmptyCall": "grpc.testing.TestService/EmptyCall",
		"no/slash":                            "no/slash",
		"/bad\xffutf8":                        "bad\uFFFDutf8",
	} {
		if got := RPCMethod(full, false); got != want {
			t.Errorf("RPCMethod(%q) = %q, want %q", full, got, want)
		}
	}
	if got := RPCMethod("/a.B/Cu", true); got != "a.B/Cu"+CutMark {
		t.Errorf("a cut method is %q, want it marked", got)
	}
}
