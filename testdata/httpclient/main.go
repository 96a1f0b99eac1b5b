// Command httpclient is a client-only program (it links no HTTP server)
// that sends a fixed mix of HTTP requests to servers the test runs, and
// prints its own tally of every round trip as JSON: the truth obsd's
// http_client_request_duration_seconds series must equal.
//
// It prints "ready" and waits for a line on stdin before sending (so obsd
// can attach first), prints the tally as one JSON line, then waits for
// stdin to close before exiting (so obsd can be scraped meanwhile).
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Series is one http_client_request_duration_seconds series, as the
// client itself saw its round trips.
type Series struct {
	Method   string `json:"method"`
	Status   string `json:"status"`
	Error    string `json:"error_type"`
	Address  string `json:"server_address"`
	Port     string `json:"server_port"`
	Protocol string `json:"protocol"`
	N        int    `json:"n"`
}

type key struct{ method, status, errType, address, port, protocol string }

// tally counts round trips by what the client saw: response or error.
type tally struct {
	mu sync.Mutex
	m  map[key]int
}

func (t *tally) record(req *http.Request, resp *http.Response, err error) {
	k := key{method: req.Method, address: strings.ToLower(req.URL.Hostname()), port: req.URL.Port()}
	switch m := req.Method; m {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
	default:
		k.method = "_OTHER"
	}
	if k.port == "" {
		k.port = map[string]string{"http": "80", "https": "443"}[req.URL.Scheme]
	}
	if err != nil {
		k.errType = classify(err)
	} else {
		k.status = strconv.Itoa(resp.StatusCode)
		k.protocol = fmt.Sprintf("%d.%d", resp.ProtoMajor, resp.ProtoMinor)
		if resp.ProtoMajor == 2 {
			k.protocol = "2"
		}
	}
	t.mu.Lock()
	t.m[k]++
	t.mu.Unlock()
}

// classify is the error.type obsd documents, decided with the errors
// package (obsd decides from the error's type word in the kernel).
func classify(err error) string {
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "context_canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.As(err, &verify), errors.As(err, &record):
		return "tls"
	}
	return "_OTHER"
}

func (t *tally) series() []Series {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Series
	for k, n := range t.m {
		out = append(out, Series{k.method, k.status, k.errType, k.address, k.port, k.protocol, n})
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]) < fmt.Sprint(out[j]) })
	return out
}

// counting is a custom RoundTripper wrapping a Transport, as programs
// write for auth or retries: every hop passes through it.
type counting struct {
	next http.RoundTripper
	t    *tally
}

func (c counting) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	c.t.record(req, resp, err)
	return resp, err
}

func main() {
	plain := flag.String("http", "", "base URL of the HTTP/1 test server")
	secure := flag.String("https", "", "base URL of the TLS test server (h2 and HTTP/1.1)")
	caFile := flag.String("ca", "", "PEM file of the TLS server's certificate")
	h2c := flag.String("h2c", "", "base URL of the h2c test server (Go 1.24+ clients only)")
	refused := flag.String("refused", "", "host:port on loopback where nothing listens")
	loop := flag.Int("loop", 0, "instead of the mix, send this many GETs to -http -loop-path, one at a time on one connection, and print their mean time (cost measurements)")
	loopPath := flag.String("loop-path", "/ok", "the path -loop sends its GETs to")
	loopConns := flag.Int("loop-conns", 1, "with -loop: send the GETs from this many goroutines at once, each on its own keep-alive connection")
	flag.Parse()

	fmt.Println("ready h2c=" + strconv.FormatBool(h2cSupported))
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		log.Fatalf("waiting for the go-ahead: %v", err)
	}

	if *loop > 0 {
		for {
			fmt.Printf("ns_per_request %d\n", timeLoop(*plain+*loopPath, *loop, *loopConns))
			if _, err := in.ReadString('\n'); err != nil {
				return
			}
		}
	}
	t := &tally{m: map[key]int{}}
	run(t, *plain, *secure, *caFile, *h2c, *refused)
	out, err := json.Marshal(t.series())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(out))
	io.Copy(io.Discard, in) // until the test closes stdin
}

func run(t *tally, plain, secure, caFile, h2cURL, refused string) {
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	c := &http.Client{Transport: counting{tr, t}}
	do := func(c *http.Client, ctx context.Context, method, u string) {
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			log.Fatal(err)
		}
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	bg := context.Background()
	times := func(n int, f func()) {
		for i := 0; i < n; i++ {
			f()
		}
	}

	// HTTP/1.1 over one keep-alive connection at a time.
	times(20, func() { do(c, bg, "GET", plain+"/ok") })
	times(5, func() { do(c, bg, "POST", plain+"/ok") })
	times(2, func() { do(c, bg, "HEAD", plain+"/ok") })
	times(2, func() { do(c, bg, "PURGE", plain+"/ok") })
	times(4, func() { do(c, bg, "GET", plain+"/status/404") })
	times(3, func() { do(c, bg, "GET", plain+"/status/503") })
	// Each redirect is two round trips: the 302, then the 200.
	times(3, func() { do(c, bg, "GET", plain+"/redirect?to=ok&token=secret") })
	// Concurrent requests: several connections, several goroutines.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			times(5, func() { do(c, bg, "GET", plain+"/ok") })
		}()
	}
	wg.Wait()

	// http.DefaultTransport behind a custom RoundTripper.
	dc := &http.Client{Transport: counting{http.DefaultTransport, t}}
	times(5, func() { do(dc, bg, "GET", plain+"/ok") })

	// A Transport used directly, no http.Client.
	times(3, func() {
		req, _ := http.NewRequest("DELETE", plain+"/status/204", nil)
		resp, err := tr.RoundTrip(req)
		t.record(req, resp, err)
		if err == nil {
			resp.Body.Close()
		}
	})

	// No response: a refused connection, deadlines, cancellation.
	if refused != "" {
		times(2, func() { do(c, bg, "GET", "http://"+refused+"/ok") })
	}
	times(2, func() {
		ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
		defer cancel()
		do(c, ctx, "GET", plain+"/slow")
	})
	tc := &http.Client{Transport: counting{tr, t}, Timeout: 100 * time.Millisecond}
	times(1, func() { do(tc, bg, "GET", plain+"/slow") })
	times(2, func() {
		ctx, cancel := context.WithCancel(bg)
		time.AfterFunc(100*time.Millisecond, cancel)
		do(c, ctx, "GET", plain+"/slow")
	})

	if secure != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			log.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			log.Fatalf("no certificate in %s", caFile)
		}
		// h2 negotiated by ALPN: a Transport with its own TLS config
		// needs ForceAttemptHTTP2.
		h2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
		times(6, func() { do(&http.Client{Transport: counting{h2, t}}, bg, "GET", secure+"/ok") })
		times(2, func() { do(&http.Client{Transport: counting{h2, t}}, bg, "GET", secure+"/status/404") })
		// HTTP/1.1 over TLS: no h2 when TLSNextProto is set empty.
		h1 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool},
			TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		times(3, func() { do(&http.Client{Transport: counting{h1, t}}, bg, "GET", secure+"/ok") })
		// A certificate nobody vouches for.
		untrusted := &http.Transport{}
		times(2, func() { do(&http.Client{Transport: counting{untrusted, t}}, bg, "GET", secure+"/ok") })
	}
	if h2cURL != "" {
		h2cRequests(t, h2cURL, do)
	}
}

// parseURL is url.Parse for flags the test wrote.
func parseURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		log.Fatal(err)
	}
	return u
}

// timeLoop sends n GETs to u one after another over one keep-alive
// connection and returns their mean duration in ns.
func timeLoop(u string, n, conns int) int64 {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns}}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < conns; i++ { // Go 1.21 builds this too: no range over an int
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				resp, err := c.Get(u)
				if err != nil {
					log.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	return time.Since(start).Nanoseconds() / int64(n)
}
