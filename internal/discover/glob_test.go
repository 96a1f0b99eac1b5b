package discover

import (
	"path"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern string
		exe     string
		want    bool
	}{
		// Whole-path patterns: '*' crosses '/'.
		{"/usr/local/bin/myservice", "/usr/local/bin/myservice", true},
		{"/usr/local/bin/myservice", "/usr/local/bin/myservice2", false},
		{"*/bin/*", "/usr/local/bin/myservice", true},
		{"*/bin/*", "/bin/sh", true},
		{"*/bin/*", "/usr/sbin/sshd", false},
		{"/opt/*", "/opt/app/releases/v2/server", true},
		{"/opt/*", "/optional/server", false},
		{"*", "/anything/at/all", true},
		{"/usr/?in/*", "/usr/bin/x", true},
		{"/a?b", "/a/b", true}, // '?' crosses '/' too
		{"*/my*svc", "/srv/my-great-svc", true},
		{"*/my*svc", "/srv/my-great-svc.old", false},
		{"*/app-[0-9]", "/srv/app-7", true},
		{"*/app-[0-9]", "/srv/app-x", false},
		{"*/app-[^0-9]", "/srv/app-x", true},
		{"*/app-[^0-9]", "/srv/app-7", false},
		{"*/app-[a-cx]", "/srv/app-x", true},
		{`*/a\*b`, "/x/a*b", true},
		{`*/a\*b`, "/x/azb", false},
		{"*/caf?", "/srv/café", true}, // '?' is one character, not one byte
		{"*a*a*a*b", "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		// Base-name patterns.
		{"myservice", "/usr/local/bin/myservice", true},
		{"myservice", "/app/myservice", true},
		{"myservice", "/usr/local/bin/myservice2", false},
		{"myservice", "/myservice/bin/other", false},
		{"my*", "/usr/local/bin/myservice", true},
		{"my*", "/my/bin/other", false}, // only the base name counts
		{"*service", "/usr/local/bin/myservice", true},
		{"?yservice", "/x/myservice", true},
		{"worker", "/opt/app/bin/worker", true},
	}
	for _, tt := range tests {
		g, err := compileGlob(tt.pattern)
		if err != nil {
			t.Fatalf("compileGlob(%q): %v", tt.pattern, err)
		}
		if got := g.match(tt.exe); got != tt.want {
			t.Errorf("%q matching %q = %v, want %v", tt.pattern, tt.exe, got, tt.want)
		}
	}
}

// TestGlobAgreesWithPathMatch checks that, apart from '*' and '?'
// crossing '/', the syntax is path.Match's: on names without '/' both
// must agree.
func TestGlobAgreesWithPathMatch(t *testing.T) {
	patterns := []string{"abc", "a*", "*c", "a?c", "[ab]bc", "[^a]bc", "[a-c]*", `a\bc`, `\*`, "*[x-z]", "a*b*c"}
	names := []string{"abc", "bbc", "xbc", "ab", "a", "", "*", "abz", "aXbYc", "zzz"}
	for _, p := range patterns {
		g, err := compileGlob(p)
		if err != nil {
			t.Fatalf("compileGlob(%q): %v", p, err)
		}
		for _, n := range names {
			want, err := path.Match(p, n)
			if err != nil {
				t.Fatalf("path.Match(%q): %v", p, err)
			}
			// Base-name patterns look at path.Base, so give a full path.
			if got := g.match("/dir/" + n); n != "" && got != want {
				t.Errorf("%q matching %q = %v, path.Match says %v", p, n, got, want)
			}
		}
	}
}

func TestCompileGlobErrors(t *testing.T) {
	tests := []struct {
		pattern string
		wantErr string
	}{
		{"", "empty pattern"},
		{"bin/myservice", "must start with '/' or '*'"},
		{`foo\`, "trailing backslash"},
		{"foo[", "unterminated character class"},
		{"foo[ab", "unterminated character class"},
		{"foo[]", `unescaped ']'`},
		{"foo[a-]", `unescaped ']'`},
		{"foo[-a]", `unescaped '-'`},
		{"foo[z-a]", "range z-a is reversed"},
		{`foo[a\`, "unterminated character class"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			_, err := compileGlob(tt.pattern)
			checkErr(t, err, tt.wantErr)
		})
	}
}

func TestCriteria(t *testing.T) {
	if !(Criteria{}).Empty() {
		t.Error("zero Criteria not Empty")
	}
	for _, c := range []Criteria{{PIDs: []int{1}}, {ExeGlobs: []string{"x"}}, {Ports: []int{80}}} {
		if c.Empty() {
			t.Errorf("%+v is Empty", c)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	bad := Criteria{PIDs: []int{0, -3, 7}, ExeGlobs: []string{"ok", "bin/x"}, Ports: []int{0, 65536, 443}}
	err := bad.Validate()
	for _, want := range []string{"pid 0:", "pid -3:", `"bin/x"`, "port 0:", "port 65536:"} {
		checkErr(t, err, want)
	}
	// Scan and Run refuse to work with invalid criteria.
	w := New(bad, Options{ProcRoot: t.TempDir()})
	if _, _, err := w.Scan(); err == nil {
		t.Error("Scan accepted invalid criteria")
	}
	if err := w.Run(t.Context(), nil); err == nil {
		t.Error("Run accepted invalid criteria")
	}
}
