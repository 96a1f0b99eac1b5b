package inspect

import "testing"

var responseWriterMethods = []string{
	"net/http.(*response).Header",
	"net/http.(*response).Write",
	"net/http.(*response).WriteHeader",
}

// TestITab: the itab found by scanning the itab table is the one .symtab
// names, in the same build and in its stripped twin (same layout). The
// external linker merges the table into .data.rel.ro, so there a stripped
// binary has no itab to offer (the probe then reads memory instead).
func TestITab(t *testing.T) {
	pairs := [][2]string{{normal, stripped}, {pie, strippedPIE}}
	for _, p := range pairs {
		t.Run(p[1], func(t *testing.T) {
			full, bare := openBin(t, p[0]), openBin(t, p[1])
			want, err := full.ITab("*net/http.response", "net/http.ResponseWriter", responseWriterMethods)
			if err != nil || want == 0 {
				t.Fatalf("ITab from .symtab of %s = %#x, %v", p[0], want, err)
			}
			if got, err := full.itabFromTable(responseWriterMethods); err != nil || got != want {
				t.Errorf("itab table of %s: %#x, %v; .symtab says %#x", p[0], got, err, want)
			}
			if got, err := bare.ITab("*net/http.response", "net/http.ResponseWriter", responseWriterMethods); err != nil || got != want {
				t.Errorf("ITab of %s = %#x, %v; want %#x", p[1], got, err, want)
			}
		})
	}
}

func TestITabErrors(t *testing.T) {
	b := openBin(t, stripped)
	for _, methods := range [][]string{
		nil,
		{"net/http.(*response).NoSuchMethod"},
		// No itab has these slots in this order.
		{"net/http.(*response).Write", "net/http.(*response).Header"},
	} {
		if got, err := b.ITab("*net/http.response", "io.Writer", methods); err == nil {
			t.Errorf("ITab(%v) = %#x, want an error", methods, got)
		}
	}
	if got, err := openBin(t, normal).ITab("*net/http.response", "net/http.NoSuchInterface", nil); err == nil {
		t.Errorf("ITab of a missing symbol = %#x, want an error", got)
	}
	if got, err := openBin(t, strippedExtPIE).ITab("*net/http.response", "net/http.ResponseWriter", responseWriterMethods); err == nil {
		t.Errorf("ITab of an externally linked stripped binary = %#x, want an error", got)
	}
}
