package agent

import "testing"

func TestEmitsSpans(t *testing.T) {
	tests := []struct {
		linksSDK bool
		env      string
		want     bool
	}{
		{false, "", true},
		{true, "", false},
		{true, "0", true},
		{false, "1", false},
		{false, "true", false},
		{true, "false", true},
		{true, "maybe", false},
	}
	for _, tt := range tests {
		if got := emitsSpans(tt.linksSDK, tt.env); got != tt.want {
			t.Errorf("emitsSpans(%v, %q) = %v, want %v", tt.linksSDK, tt.env, got, tt.want)
		}
	}
}
