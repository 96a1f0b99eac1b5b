package tcpctx

import (
	"testing"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestOpenClose loads, attaches at the cgroup v2 root and detaches.
func TestOpenClose(t *testing.T) {
	e2e.RequireRoot(t)
	p, err := Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("attached at %s", p.Cgroup())
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
