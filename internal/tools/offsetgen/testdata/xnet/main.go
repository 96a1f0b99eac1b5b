// Command xnet is the template offsetgen builds with each golang.org/x/net release. It serves
// one HTTP/2 request with x/net's server (ServeConn, as h2c.NewHandler and ConfigureServer end up
// doing) over an in-memory connection, answered by x/net's client, so that the server's
// responseWriter, responseWriterState, stream and serverConn are reachable and the linker
// describes them in DWARF.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"

	"golang.org/x/net/http2"
)

func main() {
	srvConn, cliConn := net.Pipe()
	srv := &http2.Server{}
	go srv.ServeConn(srvConn, &http2.ServeConnOpts{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})})
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(cliConn)
	if err != nil {
		fmt.Println(err)
		return
	}
	req, _ := http.NewRequest(http.MethodGet, "http://template/", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode)
}
