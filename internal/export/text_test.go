package export

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClean(t *testing.T) {
	jp := strings.Repeat("日本", 25) // 150 bytes, 3 per character
	tests := []struct {
		name string
		in   string
		max  int
		cut  bool
		want string
	}{
		{"ascii unchanged", "/hello", 16, false, "/hello"},
		{"utf8 unchanged", "/日本", 16, false, "/日本"},
		{"invalid byte", "/a\xffb", 16, false, "/a\uFFFDb"},
		{"invalid run is one replacement", "/a\xff\xfeb", 16, false, "/a\uFFFDb"},
		{"lone continuation", "\x80x", 16, false, "\uFFFDx"},
		{"too long ascii", "abcdefghij", 8, false, "abcde…"},
		{"too long cut before a character", "ab日本", 7, false, "ab…"},
		{"probe cut inside a character", jp[:128], 256, true, jp[:126] + "…"},
		{"probe cut on a boundary", jp[:126], 256, true, jp[:126] + "…"},
		{"probe cut after 1 of 4 bytes", "x\xf0", 16, true, "x…"},
		{"probe cut after 3 of 4 bytes", "x\xf0\x9f\x98", 16, true, "x…"},
		{"probe cut after a whole 4-byte character", "x\xf0\x9f\x98\x80", 16, true, "x\U0001F600…"},
		{"probe cut and invalid", "\xff" + jp[:4], 16, true, "\uFFFD日…"},
		{"probe cut, mark does not fit", "abcdefgh", 8, true, "abcde…"},
		{"empty", "", 8, false, ""},
		{"max below the mark", "abcdef", 2, false, "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Clean(tt.in, tt.max, tt.cut)
			if got != tt.want {
				t.Errorf("Clean(%q, %d, %v) = %q, want %q", tt.in, tt.max, tt.cut, got, tt.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("Clean(%q) = %q is not UTF-8", tt.in, got)
			}
			if len(got) > tt.max && tt.max >= len(CutMark) {
				t.Errorf("Clean(%q) = %d bytes, max %d", tt.in, len(got), tt.max)
			}
		})
	}
}

func TestCleanDoesNotAllocateWhenValid(t *testing.T) {
	s := "/items/{id}"
	if n := testing.AllocsPerRun(100, func() { _ = Clean(s, MaxValueLen, false) }); n != 0 {
		t.Errorf("Clean allocated %v times for a valid string", n)
	}
}

func FuzzClean(f *testing.F) {
	f.Add("/日本", 8, true)
	f.Add("\xff\xfe", 4, false)
	f.Fuzz(func(t *testing.T, s string, max int, cut bool) {
		if max < len(CutMark) || max > 1024 {
			return
		}
		got := Clean(s, max, cut)
		if !utf8.ValidString(got) || len(got) > max {
			t.Fatalf("Clean(%q, %d, %v) = %q", s, max, cut, got)
		}
		if (cut || len(strings.ToValidUTF8(s, "\uFFFD")) > max) && !strings.HasSuffix(got, CutMark) {
			t.Fatalf("Clean(%q, %d, %v) = %q: cut without a mark", s, max, cut, got)
		}
	})
}
