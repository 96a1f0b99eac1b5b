package e2e

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"
)

// Stopped is a process started stopped at its first instruction, so that
// obsd can instrument a short-lived program (a client that calls at once
// and exits) before it does anything. Resume lets it run.
type Stopped struct {
	*Proc
	resume chan struct{}
	done   chan error
}

// StartStopped starts cmd traced (PTRACE_TRACEME: the kernel stops it with
// SIGTRAP when execve completes) and returns once it is stopped there, in
// the new executable. Its output goes to cmd's own Stdout and Stderr.
// The tracer must be one OS thread throughout, so one locked goroutine
// starts the process and later detaches from it.
func StartStopped(t testing.TB, cmd *exec.Cmd) *Stopped {
	t.Helper()
	s := &Stopped{resume: make(chan struct{}), done: make(chan error, 1)}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Ptrace = true
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		// os/exec has waited for the exec to succeed; the stop is next.
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(cmd.Process.Pid, &ws, syscall.WALL, nil); err != nil || !ws.Stopped() {
			cmd.Process.Kill()
			started <- err
			return
		}
		started <- nil
		<-s.resume
		s.done <- syscall.PtraceDetach(cmd.Process.Pid)
	}()
	if err := <-started; err != nil {
		t.Fatalf("starting %s stopped: %v", cmd.Path, err)
	}
	s.Proc = &Proc{Cmd: cmd}
	t.Cleanup(func() {
		s.Resume(t)
		cmd.Process.Kill()
		cmd.Wait()
	})
	return s
}

// Resume detaches from the process, which then runs; later calls do
// nothing.
func (s *Stopped) Resume(t testing.TB) {
	t.Helper()
	select {
	case <-s.resume:
		return
	default:
	}
	close(s.resume)
	if err := <-s.done; err != nil {
		t.Fatalf("resuming pid %d: %v", s.PID(), err)
	}
}
