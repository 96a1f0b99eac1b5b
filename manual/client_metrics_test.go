package manual_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual"
)

func TestClientMetricsMatchTheSemconvHistogram(t *testing.T) {
	reg := newTestRegistry(t)
	cm, err := manual.NewHTTPClientMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			w.WriteHeader(404)
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		}
	}))
	t.Cleanup(srv.Close)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	client := &http.Client{Transport: cm.Transport(nil)}
	do := func(ctx context.Context, url string) {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	do(context.Background(), srv.URL+"/ok")
	do(context.Background(), srv.URL+"/ok")
	do(context.Background(), srv.URL+"/missing")
	do(context.Background(), "http://"+deadAddr+"/x")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	do(ctx, srv.URL+"/slow")

	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	_, deadPort, _ := net.SplitHostPort(deadAddr)
	_, body := scrapeReg(t, reg)
	for _, want := range []string{
		`http_client_request_duration_seconds_count{error_type="",host_name="node-1",http_request_method="GET",http_response_status_code="200",server_address="127.0.0.1",server_port="` + port + `",service_name="svc"} 2`,
		`http_client_request_duration_seconds_count{error_type="",host_name="node-1",http_request_method="GET",http_response_status_code="404",server_address="127.0.0.1",server_port="` + port + `",service_name="svc"} 1`,
		`http_client_request_duration_seconds_count{error_type="connection_refused",host_name="node-1",http_request_method="GET",http_response_status_code="",server_address="127.0.0.1",server_port="` + deadPort + `",service_name="svc"} 1`,
		`http_client_request_duration_seconds_count{error_type="timeout",host_name="node-1",http_request_method="GET",http_response_status_code="",server_address="127.0.0.1",server_port="` + port + `",service_name="svc"} 1`,
		`http_client_request_duration_seconds_bucket{error_type="",host_name="node-1",http_request_method="GET",http_response_status_code="200",server_address="127.0.0.1",server_port="` + port + `",service_name="svc",le="7.5"} 2`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("scrape lacks %s\n%s", want, grepLines(body, "http_client_request_duration_seconds_count"))
		}
	}
}
