package propagate

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Mode
		wantErr string
	}{
		{in: "none", want: None},
		{in: "tcp", want: TCP},
		{in: "headers", want: Headers},
		{in: "tcp,headers", want: TCP | Headers},
		{in: "headers,tcp", want: TCP | Headers},
		{in: " tcp , headers ", want: TCP | Headers},
		{in: "", wantErr: "empty value"},
		{in: "  ", wantErr: "empty value"},
		{in: "http", wantErr: `unknown mechanism "http"`},
		{in: "TCP", wantErr: `unknown mechanism "TCP"`},
		{in: "tcp,", wantErr: "empty item"},
		{in: "tcp,tcp", wantErr: "tcp given twice"},
		{in: "none,tcp", wantErr: "none cannot be combined"},
		{in: "tcp,none", wantErr: "none cannot be combined"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "want none, tcp, headers") && !strings.Contains(err.Error(), "twice") && !strings.Contains(err.Error(), "combined") {
					t.Errorf("error %q does not list the accepted values", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			// String reads back.
			if again, err := Parse(got.String()); err != nil || again != got {
				t.Errorf("Parse(%q.String() = %q) = %v, %v", tt.in, got.String(), again, err)
			}
		})
	}
}

func TestModeStringAndHas(t *testing.T) {
	for _, tt := range []struct {
		m    Mode
		want string
	}{{None, "none"}, {TCP, "tcp"}, {Headers, "headers"}, {TCP | Headers, "tcp,headers"}} {
		if got := tt.m.String(); got != tt.want {
			t.Errorf("%d.String() = %q, want %q", tt.m, got, tt.want)
		}
	}
	if !(TCP | Headers).Has(Headers) || TCP.Has(Headers) || TCP.Has(None) || None.Has(None) {
		t.Error("Has is wrong")
	}
}
