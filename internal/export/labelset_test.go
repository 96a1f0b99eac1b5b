package export

import "testing"

// A series counted in the kernel is labelled at every scrape with what it
// counted since the last one: an overflowed value adds exactly those calls,
// and a scrape with nothing new adds nothing.
func TestAdmitNCountsCalls(t *testing.T) {
	logged := 0
	s := NewLabelSet(1, "_OTHER", func() { logged++ })
	if v, ok := s.AdmitN("a", 5); !ok || v != "a" {
		t.Fatalf(`AdmitN("a") = %q, %v; want it admitted`, v, ok)
	}
	for _, step := range []struct {
		n, want uint64
	}{{7, 7}, {0, 7}, {3, 10}} {
		if v, ok := s.AdmitN("b", step.n); ok || v != "_OTHER" {
			t.Fatalf(`AdmitN("b") = %q, %v; want the overflow value`, v, ok)
		}
		if got := s.Overflowed(); got != step.want {
			t.Errorf("after %d more calls: Overflowed() = %d, want %d", step.n, got, step.want)
		}
	}
	if s.Admit("c"); s.Overflowed() != 11 || logged != 1 {
		t.Errorf("Admit: Overflowed() = %d, logged %d times; want 11, once", s.Overflowed(), logged)
	}
}
