package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tailBuffer keeps the last max bytes written, for error messages about a
// child that logs without bound (obsd at debug level, a crashing server).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// proc is a long-running child: the server or obsd.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer // stderr, and stdout unless redirected
	done chan struct{}
	err  error // valid once done is closed
}

// startProc starts argv with env (nil: this process's environment);
// stdout, if not nil, receives the child's stdout. The child gets SIGKILL
// if this process dies first.
func startProc(name string, argv, env []string, stdout io.Writer) (*proc, error) {
	return startProcIO(name, argv, env, nil, stdout)
}

// startProcIO is startProc with stdin (nil: /dev/null).
func startProcIO(name string, argv, env []string, stdin io.Reader, stdout io.Writer) (*proc, error) {
	p := &proc{name: name, out: &tailBuffer{max: 64 << 10}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stderr = p.out
	p.cmd.Stdout = stdout
	p.cmd.Stdin = stdin
	p.cmd.Env = env
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the child to end with SIGTERM (obsd then detaches cleanly) and
// kills it after grace. It is safe to call more than once.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) failure(what string) error {
	return fmt.Errorf("%s: %s exited (%v); its output:\n%s", what, p.name, p.err, p.out)
}

// startServer runs the sample server pinned to cpu and returns it with the
// address it printed.
func startServer(ctx context.Context, taskset, bin string, cpu int) (*proc, string, error) {
	pr, pw := io.Pipe()
	p, err := startProc("httpserver", []string{taskset, "-c", fmt.Sprint(cpu), bin, "-addr", "127.0.0.1:0"}, nil, pw)
	if err != nil {
		return nil, "", err
	}
	first := make(chan string, 1)
	go func() {
		r := bufio.NewReader(pr)
		line, _ := r.ReadString('\n')
		first <- strings.TrimSpace(line)
		io.Copy(io.Discard, r)
	}()
	go func() {
		<-p.done
		pw.Close()
	}()
	select {
	case addr := <-first:
		if addr == "" {
			p.stop(time.Second)
			return nil, "", p.failure("start httpserver")
		}
		if !strings.HasPrefix(addr, "127.") {
			p.stop(time.Second)
			return nil, "", fmt.Errorf("start httpserver: it listens on %q, not on loopback", addr)
		}
		return p, addr, nil
	case <-time.After(10 * time.Second):
		p.stop(time.Second)
		return nil, "", errors.New("start httpserver: no address printed within 10s")
	case <-ctx.Done():
		p.stop(time.Second)
		return nil, "", ctx.Err()
	}
}

var obsdListenRE = regexp.MustCompile(`obsd running"?\s+listen=(\S+)`)

// startObsd runs obsd on pid with env and waits until its /metrics shows
// the process instrumented.
func startObsd(ctx context.Context, argv, env []string, traces string, pid int) (*proc, string, error) {
	argv = append(argv, "--pid", fmt.Sprint(pid), "--listen", "127.0.0.1:0", "--traces", traces)
	p, err := startProc("obsd", argv, env, nil) // stdout to /dev/null
	if err != nil {
		return nil, "", err
	}
	fail := func(err error) (*proc, string, error) {
		p.stop(5 * time.Second)
		return nil, "", fmt.Errorf("%w; obsd's output:\n%s", err, p.out)
	}
	var base string
	deadline := time.Now().Add(20 * time.Second)
	for base == "" {
		if m := obsdListenRE.FindStringSubmatch(p.out.String()); m != nil {
			base = "http://" + m[1]
			break
		}
		if time.Now().After(deadline) {
			return fail(errors.New("start obsd: no `obsd running listen=` line within 20s"))
		}
		select {
		case <-p.done:
			return nil, "", p.failure("start obsd")
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !strings.HasPrefix(base, "http://127.") {
		return fail(fmt.Errorf("start obsd: it serves on %s, not on loopback", base))
	}
	for {
		text, err := scrape(ctx, base)
		if err == nil {
			if n, ok := sumMetric(text, "obsd_instrumented_processes"); ok && n == 1 {
				return p, base, nil
			}
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("start obsd: /metrics did not show obsd_instrumented_processes 1 within 20s (last scrape error: %v)", err))
		}
		select {
		case <-p.done:
			return nil, "", p.failure("start obsd")
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runWrk runs wrk pinned to cpu against url and parses its summary.
func runWrk(ctx context.Context, taskset, wrk string, cpu int, d time.Duration, url string) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d+20*time.Second)
	defer cancel()
	secs := fmt.Sprintf("%ds", int(d/time.Second))
	cmd := exec.CommandContext(ctx, taskset, "-c", fmt.Sprint(cpu), wrk, "-t1", "-c16", "-d"+secs, url)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("run wrk %s: %w; output:\n%s", url, err, out)
	}
	res, err := parseWrk(string(out))
	if err != nil {
		return wrkResult{}, fmt.Errorf("run wrk %s: %w; output:\n%s", url, err, out)
	}
	return res, nil
}
