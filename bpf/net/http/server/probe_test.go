package server

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/obsd-dev/obsd/bpf/probe"
)

// record encodes an event the way the kernel lays it out, through
// encoding/binary rather than the offsets Decode uses.
func record(t *testing.T, e bpfHttpServerEvent) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, &e); err != nil {
		t.Fatal(err)
	}
	if b.Len() != RecordSize {
		t.Fatalf("encoded %d bytes, want %d", b.Len(), RecordSize)
	}
	return b.Bytes()
}

func chars[T [16]int8 | [128]int8](s string) (a T) {
	for i := 0; i < len(s) && i < len(a); i++ {
		a[i] = int8(s[i])
	}
	return a
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		in   bpfHttpServerEvent
		want probe.Request
	}{{
		name: "pattern route",
		in: bpfHttpServerEvent{StartNs: 100, EndNs: 250, Tgid: 42, Status: 404, MethodLen: 3,
			Method: chars[[16]int8]("GET"), PathLen: 8, Path: chars[[128]int8]("/items/7"),
			PatternLen: 15, Pattern: chars[[128]int8]("GET /items/{id}")},
		want: probe.Request{Kind: probe.KindHTTPServer, PID: 42, StartNS: 100, EndNS: 250,
			Method: "GET", Path: "/items/7", Pattern: "GET /items/{id}", Status: 404},
	}, {
		name: "no status written means 200",
		in: bpfHttpServerEvent{Tgid: 1, MethodLen: 4, Method: chars[[16]int8]("POST"),
			PathLen: 1, Path: chars[[128]int8]("/")},
		want: probe.Request{Kind: probe.KindHTTPServer, PID: 1, Method: "POST", Path: "/", Status: 200},
	}, {
		name: "truncated path",
		in: bpfHttpServerEvent{Tgid: 1, MethodLen: 3, Method: chars[[16]int8]("GET"), Flags: flagPathTruncated,
			PathLen: 128, Path: chars[[128]int8]("/x"), Status: 200},
		want: probe.Request{Kind: probe.KindHTTPServer, PID: 1, Method: "GET", Path: "/x" + string(make([]byte, 126)),
			Status: 200, Truncated: true},
	}, {
		name: "lengths beyond the arrays are clamped",
		in:   bpfHttpServerEvent{Tgid: 1, MethodLen: 200, Method: chars[[16]int8]("0123456789abcdef"), Status: 200},
		want: probe.Request{Kind: probe.KindHTTPServer, PID: 1, Method: "0123456789abcdef", Status: 200},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(record(t, tt.in))
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
	if _, err := Decode(make([]byte, RecordSize-1)); err == nil {
		t.Error("short record decoded")
	}
	unreadable := record(t, bpfHttpServerEvent{Flags: flagReadFailed})
	if _, err := Decode(unreadable); err == nil {
		t.Error("record with unreadable method decoded")
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
	if spec.Maps[p.Active.Map] == nil {
		t.Errorf("active map %s not in the object", p.Active.Map)
	}
	for name := range p.ProcessMaps {
		if spec.Maps[name] == nil {
			t.Errorf("process map %s not in the object", name)
		}
	}
}
