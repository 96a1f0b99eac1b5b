// Package nsenter runs a piece of code inside another process's network
// namespace: what sockets a thread creates, and what namespace-scoped
// kernel objects it opens (a sock_diag socket, a bpf_iter over TCP
// sockets), belong to the namespace the thread is in at that moment.
package nsenter

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// ErrMoved means the namespace file no longer names the namespace the
// caller expected (its process moved, or its pid was reused).
var ErrMoved = errors.New("process left the network namespace")

// Do runs fn on an OS thread moved into the network namespace at nsPath (a
// /proc/PID/ns/net file), then moves the thread back. With wantIno not 0
// it first checks the namespace's inode and returns ErrMoved if it
// differs. setns changes only the calling thread, so the goroutine is
// pinned to it; a thread that cannot be brought back ends locked and the
// Go runtime discards it. Needs CAP_SYS_ADMIN. Errors opening nsPath wrap
// the open's error (os.ErrNotExist and ESRCH for a process gone).
func Do(nsPath string, wantIno uint64, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored, err := doLocked(nsPath, wantIno, fn)
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// doLocked is Do's body, on a locked thread; it reports whether the thread
// is back in its own namespace.
func doLocked(nsPath string, wantIno uint64, fn func() error) (restored bool, err error) {
	own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("opening own network namespace: %w", err)
	}
	defer unix.Close(own)
	target, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("opening network namespace %s: %w", nsPath, err)
	}
	defer unix.Close(target)
	if wantIno != 0 {
		var st unix.Stat_t
		if err := unix.Fstat(target, &st); err != nil {
			return true, fmt.Errorf("checking network namespace %s: %w", nsPath, err)
		}
		if st.Ino != wantIno {
			return true, ErrMoved
		}
	}
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("entering network namespace %s: %w", nsPath, err)
	}
	err = fn()
	if errBack := unix.Setns(own, unix.CLONE_NEWNET); errBack != nil {
		return false, errors.Join(err, fmt.Errorf("returning to own network namespace: %w", errBack))
	}
	return true, err
}
