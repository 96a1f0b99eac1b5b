package tcpctx

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/obsd-dev/obsd/bpf/tcpctx/adopt"
	"github.com/obsd-dev/obsd/internal/nsenter"
)

// ErrAdoptUnsupported means the kernel cannot give existing connections the
// callbacks (bpf_iter over TCP sockets with bpf_setsockopt's
// TCP_BPF_SOCK_OPS_CB_FLAGS, Linux 6.12+): only connections opened after
// registration carry context.
var ErrAdoptUnsupported = errors.New("the kernel cannot give existing TCP connections the sock_ops callbacks (bpf_iter/tcp with TCP_BPF_SOCK_OPS_CB_FLAGS, Linux 6.12 or newer)")

// adopter runs bpf/tcpctx/adopt's iterator, one namespace at a time.
type adopter struct {
	mu     sync.Mutex
	prog   *ebpf.Program
	inodes *ebpf.Map
	listen *ebpf.Map
	vars   struct{ adopted, failed, lastErr *ebpf.Variable }
	iter   *link.Iter
}

// Adopted is the outcome of one Adopt: connections given the callbacks (or,
// with Options.Headers, the header injector), and those the kernel refused
// (with its last error).
type Adopted struct {
	Connections, Failed uint64
	LastErr             error
}

// loadAdopter loads the iterator with the sock_ops program's receivers and
// sockets' maps, and o's choice of mechanisms.
func loadAdopter(shared *bpfObjects, o Options) (*adopter, error) {
	spec, err := adopt.Load()
	if err != nil {
		return nil, fmt.Errorf("reading the adopt BPF object: %w", err)
	}
	for name, v := range map[string]bool{"write_options": !o.NoOptions, "inject_headers": o.Headers} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("setting %s in the adopt BPF object: %w", name, err)
		}
	}
	var objs struct {
		Prog    *ebpf.Program  `ebpf:"obsd_tcp_adopt_iter"`
		Inodes  *ebpf.Map      `ebpf:"obsd_tcp_adopt"`
		Listen  *ebpf.Map      `ebpf:"obsd_tcp_adopt_listen"`
		Adopted *ebpf.Variable `ebpf:"adopted"`
		Failed  *ebpf.Variable `ebpf:"failed"`
		LastErr *ebpf.Variable `ebpf:"last_err"`
	}
	opts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{"obsd_tcp_receivers": shared.Receivers,
		"obsd_tcp_keys": shared.Keys, "obsd_tcp_socks": shared.Socks, "obsd_tcp_hdr_mark": shared.HdrMark,
		"obsd_tcp_hdr_seen": shared.HdrSeen, "obsd_tcp_out": shared.Out, "obsd_tcp_streams": shared.Streams}}
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
		return nil, errors.Join(ErrAdoptUnsupported, fmt.Errorf("loading the adopt iterator: %w", err))
	}
	it, err := link.AttachIter(link.IterOptions{Program: objs.Prog})
	if err != nil {
		objs.Prog.Close()
		objs.Inodes.Close()
		objs.Listen.Close()
		return nil, errors.Join(ErrAdoptUnsupported, fmt.Errorf("attaching the adopt iterator: %w", err))
	}
	a := &adopter{prog: objs.Prog, inodes: objs.Inodes, listen: objs.Listen, iter: it}
	a.vars.adopted, a.vars.failed, a.vars.lastErr = objs.Adopted, objs.Failed, objs.LastErr
	return a, nil
}

func (a *adopter) close() error {
	return errors.Join(a.iter.Close(), a.prog.Close(), a.inodes.Close(), a.listen.Close())
}

// Adopt gives the TCP connections process pid opened before AddSender the
// write callbacks (and, with Options.Headers, the header injector), and
// those accepted in its network namespace before
// AddReceiver the parse callbacks, as if both had been registered first
// (only what is registered now: a process not a sender gets no write
// callbacks, as the sock_ops program would not give it). Needs
// CAP_SYS_ADMIN (it enters pid's namespace). The error wraps
// ErrAdoptUnsupported where the kernel cannot.
func (p *Propagator) Adopt(pid int) (Adopted, error) {
	return p.adoptIn(fmt.Sprintf("/proc/%d/ns/net", pid), pid)
}

// adoptIn is Adopt for pid's sockets in the network namespace at nsPath.
func (p *Propagator) adoptIn(nsPath string, pid int) (Adopted, error) {
	if p.adopt == nil {
		return Adopted{}, p.adoptErr
	}
	sender := true
	var one uint8
	if err := p.objs.Senders.Lookup(uint32(pid), &one); errors.Is(err, ebpf.ErrKeyNotExist) {
		sender = false
	}
	return p.adopt.run(nsPath, pid, sender)
}

func (a *adopter) run(nsPath string, pid int, sender bool) (Adopted, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var inodes []uint64
	if sender {
		var err error
		if inodes, err = socketInodes(pid); err != nil {
			return Adopted{}, err
		}
	}
	// Both maps start and end empty: a stale inode could name a later
	// process's socket, a stale port another namespace's listener.
	clear := func() error {
		return errors.Join(clearMap[uint64](a.inodes), clearMap[uint16](a.listen))
	}
	if err := clear(); err != nil {
		return Adopted{}, err
	}
	defer clear()
	for _, ino := range inodes {
		if err := a.inodes.Put(ino, uint8(1)); err != nil {
			return Adopted{}, fmt.Errorf("listing socket %d of %d for adoption: %w", ino, pid, err)
		}
	}
	for _, v := range []*ebpf.Variable{a.vars.adopted, a.vars.failed, a.vars.lastErr} {
		if err := v.Set(int64(0)); err != nil {
			return Adopted{}, fmt.Errorf("resetting the adopt counters: %w", err)
		}
	}
	// The iterator walks the namespace of the task that creates it.
	err := nsenter.Do(nsPath, 0, func() error {
		r, err := a.iter.Open()
		if err != nil {
			return fmt.Errorf("opening the adopt iterator: %w", err)
		}
		defer r.Close()
		if _, err := io.Copy(io.Discard, r); err != nil {
			return fmt.Errorf("running the adopt iterator: %w", err)
		}
		return nil
	})
	if err != nil {
		return Adopted{}, fmt.Errorf("adopting the connections of %d: %w", pid, err)
	}
	var out Adopted
	var lastErr int64
	if err := errors.Join(a.vars.adopted.Get(&out.Connections), a.vars.failed.Get(&out.Failed), a.vars.lastErr.Get(&lastErr)); err != nil {
		return out, fmt.Errorf("reading the adopt counters: %w", err)
	}
	if out.Failed > 0 {
		out.LastErr = unix.Errno(-lastErr)
	}
	return out, nil
}

// clearMap deletes every entry of m, whose keys are K.
func clearMap[K any](m *ebpf.Map) error {
	var (
		k    K
		keys []K
	)
	v := make([]byte, m.ValueSize())
	it := m.Iterate()
	for it.Next(&k, v) {
		keys = append(keys, k)
	}
	err := it.Err()
	for _, k := range keys {
		if derr := m.Delete(k); derr != nil && !errors.Is(derr, ebpf.ErrKeyNotExist) {
			err = errors.Join(err, derr)
		}
	}
	if err != nil {
		return fmt.Errorf("emptying %s: %w", m, err)
	}
	return nil
}

// socketInodes lists the inodes of pid's sockets ("socket:[N]" links in
// /proc/PID/fd). A descriptor closed meanwhile is skipped.
func socketInodes(pid int) ([]uint64, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing the descriptors of %d: %w", pid, err)
	}
	var out []uint64
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		s, ok := strings.CutPrefix(l, "socket:[")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}
