package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/obsd-dev/obsd/internal/offsets"
)

// TestBisect runs the release search on made-up layouts and checks that it reads few releases,
// yet every change ends up between two consecutive releases read.
func TestBisect(t *testing.T) {
	status := offsets.Key{Module: offsets.Std, Package: "net/http", Struct: "response", Field: "status"}
	pattern := offsets.Key{Module: offsets.Std, Package: "net/http", Struct: "Request", Field: "Pattern"}
	releases := func(minor string, n int) []string {
		var rs []string
		for i := range n {
			rs = append(rs, fmt.Sprintf("%s.%d", minor, i))
		}
		return rs
	}
	// status moves at go1.26.10; Pattern appears with go1.23.0.
	truth := func(r string) layout {
		l := layout{status: 120, pattern: -1}
		if compareReleases(r, "go1.26.10") >= 0 {
			l[status] = 128
		}
		if compareReleases(r, "go1.23.0") >= 0 {
			l[pattern] = 232
		}
		return l
	}
	tests := []struct {
		name     string
		releases []string
		all      bool
		wantRead []string
	}{
		{
			name:     "no change within minors",
			releases: append(releases("go1.22", 13), releases("go1.23", 13)...),
			wantRead: []string{"go1.22.0", "go1.22.12", "go1.23.0", "go1.23.12"},
		},
		{
			name:     "change within a minor",
			releases: releases("go1.26", 12),
			wantRead: []string{"go1.26.0", "go1.26.11", "go1.26.6", "go1.26.9", "go1.26.10"},
		},
		{
			name:     "single release",
			releases: []string{"go1.27.0"},
			wantRead: []string{"go1.27.0"},
		},
		{
			name:     "all",
			releases: releases("go1.24", 3),
			all:      true,
			wantRead: []string{"go1.24.0", "go1.24.1", "go1.24.2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var read []string
			g := &generator{
				log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
				keys: []offsets.Key{status, pattern},
				seen: map[string]layout{},
				read: func(_ context.Context, r string) (layout, error) {
					read = append(read, r)
					return truth(r), nil
				},
			}
			table, err := g.generate(context.Background(), tt.releases, tt.all)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(read, tt.wantRead) {
				t.Errorf("read %v, want %v", read, tt.wantRead)
			}
			// Every release, read or not, must come out of the table as it truly is.
			for _, r := range tt.releases {
				for k, want := range truth(r) {
					got, ok := table.Get(k, r)
					if want < 0 && ok || want >= 0 && (!ok || got != uint64(want)) {
						t.Errorf("%v in %s: %d, %v; want %d", k, r, got, ok, want)
					}
				}
			}
		})
	}
}

func TestGenerateRefuses(t *testing.T) {
	std := offsets.Key{Module: offsets.Std, Package: "net/http", Struct: "Request", Field: "Method"}
	typo := offsets.Key{Module: offsets.Std, Package: "net/http", Struct: "Request", Field: "Mehtod"}
	g := &generator{
		log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		keys: []offsets.Key{std, typo},
		seen: map[string]layout{},
		read: func(context.Context, string) (layout, error) { return layout{std: 0, typo: -1}, nil },
	}
	if _, err := g.generate(context.Background(), []string{"go1.26.0"}, false); err == nil {
		t.Error("a field found in no release was accepted")
	}
	if _, err := g.generate(context.Background(), []string{"go1.26rc1"}, false); err == nil {
		t.Error("a pre-release was accepted as a release")
	}
	if _, err := newGenerator(g.log, []offsets.Key{{Module: "google.golang.org/grpc", Package: "google.golang.org/grpc", Struct: "ClientConn", Field: "target"}}, "."); err == nil {
		t.Error("a module field was accepted")
	}
}

func TestReleases(t *testing.T) {
	tests := []struct {
		v, minor string
		ok       bool
	}{
		{"go1.26.8", "go1.26", true},
		{"go1.21.0", "go1.21", true},
		{"go1.26rc1", "", false},
		{"go1.26", "", false},
		{"1.26.8", "", false},
	}
	for _, tt := range tests {
		if m, ok := releaseMinor(tt.v); m != tt.minor || ok != tt.ok {
			t.Errorf("releaseMinor(%q) = %q, %v; want %q, %v", tt.v, m, ok, tt.minor, tt.ok)
		}
	}
	rs := []string{"go1.26.10", "go1.9.1", "go1.26.9", "go1.26.0"}
	slices.SortFunc(rs, compareReleases)
	if want := []string{"go1.9.1", "go1.26.0", "go1.26.9", "go1.26.10"}; !slices.Equal(rs, want) {
		t.Errorf("sorted %v, want %v", rs, want)
	}
}
