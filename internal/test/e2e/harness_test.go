package e2e

import (
	"fmt"
	"runtime"
	"testing"
)

// recorder is a testing.TB that records how a test ended; Fatalf and Skip
// end the goroutine, as the real ones do.
type recorder struct {
	testing.TB
	failed, skipped string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}

func run(fn func(t testing.TB)) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

func TestSkipFailsWhenRequired(t *testing.T) {
	for _, tt := range []struct {
		env                string
		wantFail, wantSkip bool
	}{
		{"1", true, false},
		{"", false, true},
		{"0", false, true},
	} {
		t.Run("OBSD_REQUIRE_BPF="+tt.env, func(t *testing.T) {
			t.Setenv("OBSD_REQUIRE_BPF", tt.env)
			for name, fn := range map[string]func(testing.TB){
				"Skip":        func(tb testing.TB) { Skip(tb, "no %s", "thing") },
				"RequireTool": func(tb testing.TB) { RequireTool(tb, "obsd-no-such-tool") },
			} {
				r := run(fn)
				if (r.failed != "") != tt.wantFail || (r.skipped != "") != tt.wantSkip {
					t.Errorf("%s: failed %q, skipped %q; want fail %v, skip %v", name, r.failed, r.skipped, tt.wantFail, tt.wantSkip)
				}
			}
			if r := run(func(tb testing.TB) { RequireTool(tb, "sh") }); r.failed != "" || r.skipped != "" {
				t.Errorf("RequireTool(sh) with sh installed: failed %q, skipped %q", r.failed, r.skipped)
			}
		})
	}
}
