package main

import (
	"fmt"
	"reflect"
	"testing"
)

// oauth2Proxy is a real program routed by gorilla/mux (buildServeMux in
// its oauthproxy.go): a literal route, routes under a prefix that is a
// flag (--proxy-prefix, "/oauth2"), registered in a helper given the
// sub-router, and upstream paths from configuration.
const oauth2Proxy = "github.com/oauth2-proxy/oauth2-proxy/v7@v7.15.6"

// TestHarvestOAuth2Proxy: what the harvest finds in oauth2-proxy, and what
// its user-space match then names each request, against the route the
// router gives (read from its source, and as obsd's gorilla probe reported
// it running with --upstream static://200: docs/route-harvest.md).
func TestHarvestOAuth2Proxy(t *testing.T) {
	bin := builds.GoInstall(t, oauth2Proxy)
	res, err := Harvest(bin)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range res.Registrations {
		lit := "?"
		if g.Known {
			lit = fmt.Sprintf("%q", g.Literal)
		}
		tied := "untied"
		if g.FullKnown {
			tied = "tied"
		}
		got = append(got, fmt.Sprintf("%s %s %s", g.Callee, lit, tied))
	}
	want := []string{
		// pkg/upstream registerSimpleHandler: the --upstream paths.
		"(*Router).PathPrefix ? untied", "(*Router).Path ? untied",
		// buildServeMux.
		`(*Router).Path "/robots.txt" tied`, "(*Router).Path ? untied", // proxyPrefix + authOnlyPath
		"(*Router).PathPrefix ? untied", // proxyPrefix, then Subrouter()
		`(*Router).PathPrefix "/" tied`,
		// buildProxySubrouter(s *mux.Router): literals without their prefix.
		`(*Router).Path "/sign_in" untied`, `(*Router).Path "/start" untied`, `(*Router).Path "/callback" untied`,
		`(*Router).PathPrefix "/static/" untied`, `(*Router).Path "/userinfo" untied`, `(*Router).Path "/sign_out" untied`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("registrations:\n got %q\nwant %q", got, want)
	}
	if res.Unresolved != 4 {
		t.Errorf("%d unreadable arguments, want 4", res.Unresolved)
	}
	m, err := NewMatcher("gorillamux", res.MatchTemplates("gorillamux"))
	if err != nil {
		t.Fatal(err)
	}
	// path -> the router's route, the harvest's match.
	reqs := []struct{ path, router, harvest string }{
		{"/robots.txt", "/robots.txt", "/robots.txt"},
		{"/oauth2/auth", "/oauth2/auth", "/"},
		{"/oauth2/sign_in", "/oauth2/sign_in", "/"},
		{"/oauth2/start", "/oauth2/start", "/"},
		{"/oauth2/callback", "/oauth2/callback", "/"},
		{"/oauth2/static/css/x.css", "/oauth2/static/", "/"},
		{"/oauth2/userinfo", "/oauth2/userinfo", "/"},
		{"/oauth2/sign_out", "/oauth2/sign_out", "/"},
		{"/", "/", "/"},
		{"/foo/bar", "/", "/"},
		{"/ping", "/", "/"},
		{"/oauth2", "/", "/"},
		{"/oauth2/nope", "/", "/"},
	}
	right := 0
	for _, r := range reqs {
		h, _ := m.Match("GET", r.path)
		if h != r.harvest {
			t.Errorf("GET %s: harvest matched %q, want %q (the router says %q)", r.path, h, r.harvest, r.router)
		}
		if h == r.router {
			right++
		}
	}
	t.Logf("oauth2-proxy: %d of %d request kinds named as the router names them", right, len(reqs))
}
