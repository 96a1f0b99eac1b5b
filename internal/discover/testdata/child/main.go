// Command child is a target process for discover's tests. It optionally
// listens on or dials a TCP address, prints one line (the listening port,
// or "ready"), and then lives until its stdin closes or it is killed. The
// line "exec" on stdin makes it exec its own file again, keeping its pid;
// "listen ADDR" makes it listen (too) and print the port.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"syscall"
)

func main() {
	listen := flag.String("listen", "", "address to listen on, e.g. 127.0.0.1:0")
	dial := flag.String("dial", "", "address to connect to and stay connected")
	flag.Parse()

	var keep []io.Closer
	if *dial != "" {
		c, err := net.Dial("tcp", *dial)
		if err != nil {
			log.Fatalf("dialing: %v", err)
		}
		keep = append(keep, c)
	}
	if *listen != "" {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			log.Fatalf("listening: %v", err)
		}
		keep = append(keep, ln)
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	} else {
		fmt.Println("ready")
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if addr, ok := strings.CutPrefix(in.Text(), "listen "); ok {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				log.Fatalf("listening: %v", err)
			}
			keep = append(keep, ln)
			fmt.Println(ln.Addr().(*net.TCPAddr).Port)
			continue
		}
		if in.Text() != "exec" {
			continue
		}
		for _, c := range keep {
			c.Close()
		}
		self, err := os.Executable()
		if err != nil {
			log.Fatalf("finding own executable: %v", err)
		}
		log.Fatalf("exec: %v", syscall.Exec(self, os.Args, os.Environ()))
	}
}
