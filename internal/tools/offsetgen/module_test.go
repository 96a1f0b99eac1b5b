package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"

	"github.com/obsd-dev/obsd/internal/offsets"
)

// The grpc-go fields come from the probes' declarations, so a probe that
// declares one gets it in the table without a list here.
func TestModuleFields(t *testing.T) {
	ks := moduleFields(grpcModule)
	method := offsets.Key{Module: grpcModule, Package: "google.golang.org/grpc/internal/transport", Struct: "Stream", Field: "method"}
	if !slices.Contains(ks, method) {
		t.Errorf("grpc-go fields %v lack %v, which the gRPC server probe declares", ks, method)
	}
	for _, k := range ks {
		if k.Module != grpcModule {
			t.Errorf("%v listed as a grpc-go field", k)
		}
	}
}

// TestGRPCTableMatchesDWARF builds the grpc-go template against grpc-go
// releases on each side of the v1.69 and v1.77 layout changes and checks
// that the embedded table says for each exactly what the fresh binary's
// DWARF says, field by field, absent fields included. It needs the module
// proxy (or a module cache holding those releases).
func TestGRPCTableMatchesDWARF(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grpc-go programs")
	}
	table, err := offsets.Load()
	if err != nil {
		t.Fatal(err)
	}
	keys := moduleFields(grpcModule)
	tmpl, err := filepath.Abs(filepath.Join("testdata", "grpc"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, v := range []string{"v1.68.1", "v1.85.0"} {
		t.Run(v, func(t *testing.T) {
			if !table.Known(grpcModule, v) {
				t.Fatalf("the table does not list grpc-go %s", v)
			}
			dir := t.TempDir()
			l, err := moduleLayout(context.Background(), log, filepath.Join(dir, "src"), grpcModule, tmpl, keys, v, "")
			if err != nil {
				t.Fatal(err)
			}
			present := 0
			for _, k := range keys {
				got, ok := table.Get(k, v)
				want := l[k]
				switch {
				case want < 0 && ok:
					t.Errorf("%v: the table says %d in %s, DWARF has no such field", k, got, v)
				case want >= 0 && (!ok || got != uint64(want)):
					t.Errorf("%v: the table says %d (%v) in %s, DWARF says %d", k, got, ok, v, want)
				case want >= 0:
					present++
				}
			}
			if present == 0 {
				t.Errorf("no grpc-go field found in %s", v)
			}
		})
	}
}
