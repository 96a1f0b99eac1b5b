package export

import "testing"

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
