package main

import (
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// Hot restart in place, as some process managers do: on SIGHUP the server
// executes its own file again under the same pid, handing its listening
// socket to the new image, which serves on the same address. Connections
// open at that moment are closed by the exec; clients reconnect.

// inheritedListener returns the listener the previous image handed over in
// fd, or nil when fd is 0 (a fresh start).
func inheritedListener(fd int) net.Listener {
	if fd == 0 {
		return nil
	}
	ln, err := net.FileListener(os.NewFile(uintptr(fd), "inherited-listener"))
	if err != nil {
		log.Fatalf("inherited listener fd %d: %v", fd, err)
	}
	syscall.Close(fd) // FileListener holds its own duplicate
	return ln
}

// reexecOnHUP execs /proc/self/exe with the same flags plus -listen-fd
// when SIGHUP arrives.
func reexecOnHUP(ln net.Listener) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		<-hup
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			log.Fatalf("re-exec: %v", err)
		}
		fd := int(f.Fd())
		// File's duplicate is close-on-exec; the new image needs it open.
		if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETFD, 0); e != 0 {
			log.Fatalf("re-exec: clearing close-on-exec: %v", e)
		}
		args := []string{os.Args[0]}
		for _, a := range os.Args[1:] {
			if len(a) < 11 || a[:11] != "-listen-fd=" {
				args = append(args, a)
			}
		}
		args = append(args, "-listen-fd="+strconv.Itoa(fd))
		err = syscall.Exec("/proc/self/exe", args, os.Environ())
		fmt.Fprintln(os.Stderr, "re-exec failed:", err)
		os.Exit(1)
	}()
}
