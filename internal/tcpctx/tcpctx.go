// Package tcpctx carries W3C trace context from one obsd-instrumented
// process to another inside a TCP header option, with no write into either
// process's memory (issue 11 §3: it works under lockdown=integrity, where
// bpf_probe_write_user is refused).
//
// A Propagator loads the sock_ops program of bpf/tcpctx and attaches it at
// the cgroup v2 root. Then:
//
//   - a process registered with AddSender gets, on each TCP connection it
//     opens from then on, the header-option callbacks; while obsd_tcp_out
//     holds a context for the connection (SetOutgoing, or a uprobe writing
//     the shared map), every data segment it sends carries that context in
//     an experimental option (kind 253, ExID 0x0B5C, 28 bytes; see
//     bpf/include/tcpctx.h);
//   - a connection accepted on a (netns, port) registered with AddReceiver
//     has that option parsed from its incoming segments, and obsd_tcp_in
//     keeps the latest context per connection (Incoming);
//   - Adopt gives the connections a process opened, or its namespace
//     accepted, before these registrations the same callbacks (Linux 6.12+);
//   - with Options.Headers, a sender's connections opened from then on also
//     get a traceparent header in each HTTP/1.x request whose context
//     obsd_tcp_out holds when it is written (an sk_msg program on the
//     kernel's copy of the message: bpf_msg_push_data, no write into the
//     process), unless the request carries one already.
//
// Both maps are keyed by the connection as the process on that end sees it
// (Conn), so a server probe finds the caller's context from the accepted
// net.Conn's addresses and its network namespace. Entries are deleted when
// the connection closes.
//
// Needs Linux 5.10+ (BPF_SOCK_OPS_*_HDR_OPT_CB), a cgroup v2 hierarchy
// (hybrid is enough) and root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON).
package tcpctx

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"

	bpf "github.com/obsd-dev/obsd/bpf/tcpctx"
)

// Names of the maps a probe shares through ebpf.CollectionOptions'
// MapReplacements (Maps returns them by these names).
const (
	MapOut     = "obsd_tcp_out"
	MapIn      = "obsd_tcp_in"
	MapSenders = "obsd_tcp_senders"
	MapStreams = "obsd_tcp_streams"
)

// ErrNoCgroupV2 means no cgroup v2 hierarchy is mounted.
var ErrNoCgroupV2 = errors.New("no cgroup v2 hierarchy mounted (tcp propagation needs one; a hybrid host's /sys/fs/cgroup/unified is enough)")

// ErrHeadersUnsupported means the kernel lacks what the header injector needs.
var ErrHeadersUnsupported = errors.New("kernel lacks the sk_msg helpers the traceparent header injector needs (bpf_msg_push_data, bpf_loop: Linux 5.17 or newer)")

// ErrUnsupported means the kernel lacks the sock_ops header-option hooks.
var ErrUnsupported = errors.New("kernel lacks sock_ops TCP header-option helpers (needs Linux 5.10 or newer)")

// Conn is a TCP connection as the process on one end sees it: Local and
// Remote are what its net.Conn's LocalAddr and RemoteAddr say, and Netns the
// inode of its network namespace (NetnsOf). IPv4 addresses may be given
// plain or IPv4-mapped; the key is the same.
type Conn struct {
	Netns  uint32
	Local  netip.AddrPort
	Remote netip.AddrPort
}

// Context is a W3C trace context. Only the sampled bit (0x01) of Flags
// crosses the wire.
type Context struct {
	TraceID [16]byte
	SpanID  [8]byte
	Flags   byte
}

// Received is the latest context that arrived on a connection. Gen is 1 for
// the first and grows by one each time a different context arrives;
// TakenGen is whatever the consumer last stored (a probe records the Gen it
// used, so that a request which carried no new context is not linked to the
// previous one's caller).
type Received struct {
	Context
	Gen      uint32
	TakenGen uint32
}

// Counters are the program's per-CPU counters, summed. The Lost* fields
// are contexts that did not cross.
type Counters struct {
	Written         uint64 // segments sent carrying the option
	Parsed          uint64 // segments whose option was read
	LostNoSpace     uint64 // a data segment with a context but no option space left (SACK blocks, TCP-MD5/AO)
	LostStoreFailed uint64 // reserved space the option could not be written into
	LostInFull      uint64 // obsd_tcp_in full: a connection's context not kept
	Malformed       uint64 // an option with obsd's ExID but the wrong length, ignored
	FlagsFailed     uint64 // connections that could not get the callbacks
	NetnsUnreadable uint64 // sockets whose network namespace could not be read

	// Options.Headers: requests given a traceparent header, and those left
	// as they were, by why.
	Headers           bool // the header injector is on (the fields below mean something)
	HeadersInjected   uint64
	HeadersPresent    uint64 // the request carried a traceparent already
	HeadersNotHTTP1   uint64 // the context's first message was not an HTTP/1.x request head (TLS, HTTP/2 not from its first byte)
	HeadersTooLong    uint64 // the head (HTTP/2: header block) was not whole in the first 4 KiB of its message
	HeadersFailed     uint64 // the kernel could not make room in the message
	HeadersRaced      uint64 // the scan buffer was reused mid-scan (a preempted sender)
	HeadersSockFailed uint64 // connections that could not get the header injector
	HeadersUnread     uint64 // HTTP/2 requests on a connection where an earlier header block could not be read whole
	HeadersNoStream   uint64 // HTTP/2 requests of a sender with no stream context (a client the stream sites miss)
	HeadersLost       uint64 // HTTP/2 connections whose frames the injector lost track of (a partial send): no headers on them since
}

// Options configure Open. The zero value attaches at the host's cgroup v2
// root.
type Options struct {
	// CgroupPath is the cgroup v2 directory to attach at; "" finds the root
	// of the hierarchy (CgroupV2Root). Only sockets created by tasks in this
	// cgroup or below it are seen: a child cgroup misses every process
	// outside it, which is why the default is the root.
	CgroupPath string
	// Headers adds a traceparent header to senders' outgoing HTTP/1.x
	// requests (--propagate=headers; needs sk_msg and bpf_msg_push_data,
	// Linux 5.17+). NoOptions leaves the TCP option out (headers only).
	Headers, NoOptions bool
	// noPushAtEnd makes the injector take the path of kernels that refuse
	// bpf_msg_push_data at a message's end (tests cover both here).
	noPushAtEnd bool
}

// Propagator owns the loaded program, its maps and its cgroup link.
type Propagator struct {
	objs bpfObjects
	// hdr holds the header injector (Options.Headers), attached to its
	// sockhash; nil fields otherwise.
	hdr    hdrObjects
	link   link.Link
	cgroup string
	// adopt gives connections opened before registration the callbacks
	// (Adopt); nil, with adoptErr saying why, where the kernel cannot.
	adopt    *adopter
	adoptErr error
}

// hdrObjects are bpfObjects and the header injector.
type hdrObjects struct {
	bpfObjects
	Headers *ebpf.Program `ebpf:"obsd_tcpctx_headers"`
}

type bpfObjects struct {
	Prog      *ebpf.Program `ebpf:"obsd_tcpctx"`
	Out       *ebpf.Map     `ebpf:"obsd_tcp_out"`
	Streams   *ebpf.Map     `ebpf:"obsd_tcp_streams"`
	In        *ebpf.Map     `ebpf:"obsd_tcp_in"`
	Senders   *ebpf.Map     `ebpf:"obsd_tcp_senders"`
	Receivers *ebpf.Map     `ebpf:"obsd_tcp_receivers"`
	Counters  *ebpf.Map     `ebpf:"obsd_tcp_counters"`
	// The sockets' maps, shared with the adopt iterator.
	Keys    *ebpf.Map `ebpf:"obsd_tcp_keys"`
	Socks   *ebpf.Map `ebpf:"obsd_tcp_socks"`
	HdrMark *ebpf.Map `ebpf:"obsd_tcp_hdr_mark"`
	HdrSeen *ebpf.Map `ebpf:"obsd_tcp_hdr_seen"`
}

func (o *bpfObjects) close() error {
	var errs []error
	for _, c := range []io.Closer{o.Prog, o.Out, o.Streams, o.In, o.Senders, o.Receivers, o.Counters, o.Keys, o.Socks, o.HdrMark, o.HdrSeen} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Open checks the kernel, loads the program and attaches it. Errors wrap
// ErrNoCgroupV2 or ErrUnsupported when those are the cause.
func Open(opts Options) (*Propagator, error) {
	for _, fn := range []asm.BuiltinFunc{asm.FnStoreHdrOpt, asm.FnLoadHdrOpt, asm.FnReserveHdrOpt, asm.FnSkcToTcpSock, asm.FnGetCurrentPidTgid, asm.FnSkStorageGet} {
		if err := features.HaveProgramHelper(ebpf.SockOps, fn); err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) {
				return nil, fmt.Errorf("checking sock_ops helper %v: %w", fn, ErrUnsupported)
			}
			return nil, fmt.Errorf("checking sock_ops helper %v: %w", fn, err)
		}
	}
	cg := opts.CgroupPath
	if cg == "" {
		var err error
		if cg, err = CgroupV2Root(); err != nil {
			return nil, err
		}
	}
	if opts.Headers {
		for _, fn := range []asm.BuiltinFunc{asm.FnMsgPushData, asm.FnMsgPullData, asm.FnMsgPopData, asm.FnSkStorageGet, asm.FnLoop, asm.FnProbeReadKernel} {
			if err := features.HaveProgramHelper(ebpf.SkMsg, fn); err != nil {
				if errors.Is(err, ebpf.ErrNotSupported) {
					return nil, fmt.Errorf("checking sk_msg helper %v: %w", fn, ErrHeadersUnsupported)
				}
				return nil, fmt.Errorf("checking sk_msg helper %v: %w", fn, err)
			}
		}
	}
	spec, err := bpf.Load()
	if err != nil {
		return nil, fmt.Errorf("reading the tcpctx BPF object: %w", err)
	}
	for name, v := range map[string]bool{"write_options": !opts.NoOptions, "inject_headers": opts.Headers, "push_at_end": !opts.noPushAtEnd} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("setting %s in the tcpctx BPF object: %w", name, err)
		}
	}
	p := &Propagator{cgroup: cg}
	if opts.Headers {
		err = spec.LoadAndAssign(&p.hdr, nil)
		p.objs = p.hdr.bpfObjects
	} else {
		err = spec.LoadAndAssign(&p.objs, nil)
	}
	if err != nil {
		p.closeObjs()
		return nil, fmt.Errorf("loading the tcpctx programs: %w", err)
	}
	if opts.Headers {
		err = link.RawAttachProgram(link.RawAttachProgramOptions{Target: p.objs.Socks.FD(), Program: p.hdr.Headers, Attach: ebpf.AttachSkMsgVerdict})
		if err != nil {
			p.closeObjs()
			return nil, fmt.Errorf("attaching the traceparent header program to its sockhash: %w", err)
		}
	}
	p.link, err = link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: ebpf.AttachCGroupSockOps, Program: p.objs.Prog})
	if err != nil {
		p.closeObjs()
		return nil, fmt.Errorf("attaching the tcpctx sock_ops program at cgroup %s: %w", cg, err)
	}
	p.adopt, p.adoptErr = loadAdopter(&p.objs, opts)
	return p, nil
}

// AdoptErr says why Adopt cannot run on this kernel (wrapping
// ErrAdoptUnsupported), nil when it can.
func (p *Propagator) AdoptErr() error { return p.adoptErr }

// Close detaches the program and releases the maps (a probe that shares
// them keeps its own references). Connections keep the callback flags
// already set, but with no program attached nothing runs for them.
func (p *Propagator) Close() error {
	var errs []error
	if p.link != nil {
		errs = append(errs, p.link.Close())
	}
	if p.adopt != nil {
		errs = append(errs, p.adopt.close())
	}
	errs = append(errs, p.closeObjs())
	return errors.Join(errs...)
}

// closeObjs releases the programs and maps. Closing the sockhash (its last
// reference) takes every socket out of it, back to the plain TCP path.
func (p *Propagator) closeObjs() error {
	errs := []error{p.objs.close()}
	if p.hdr.Headers != nil {
		errs = append(errs, p.hdr.Headers.Close())
	}
	return errors.Join(errs...)
}

// Cgroup is the cgroup v2 directory the program is attached at.
func (p *Propagator) Cgroup() string { return p.cgroup }

// Maps returns obsd_tcp_out, obsd_tcp_streams, obsd_tcp_in and
// obsd_tcp_senders by name, for a probe's
// ebpf.CollectionOptions.MapReplacements (its object declares them through
// bpf/include/tcpctx.h).
func (p *Propagator) Maps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{MapOut: p.objs.Out, MapStreams: p.objs.Streams, MapIn: p.objs.In, MapSenders: p.objs.Senders}
}

// AddSender lets the process tgid (as the host's pid namespace numbers it)
// carry context on the TCP connections it opens from now on. Connections it
// opened before are not affected.
func (p *Propagator) AddSender(tgid uint32) error {
	if err := p.objs.Senders.Put(tgid, uint8(1)); err != nil {
		return fmt.Errorf("registering sender %d: %w", tgid, err)
	}
	return nil
}

// RemoveSender undoes AddSender for new connections.
func (p *Propagator) RemoveSender(tgid uint32) error {
	if err := p.objs.Senders.Delete(tgid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("removing sender %d: %w", tgid, err)
	}
	return nil
}

// ForgetSender removes sender tgid and deletes the outgoing contexts its
// probes left (struct tcpctx_out's tgid): a connection opened before
// AddSender never gets the close callback that deletes its entry. Returns
// how many entries were deleted.
func (p *Propagator) ForgetSender(tgid uint32) (int, error) {
	err := p.RemoveSender(tgid)
	var (
		k     bpf.Key
		v     bpf.Out
		stale []bpf.Key
	)
	it := p.objs.Out.Iterate()
	for it.Next(&k, &v) {
		if v.Tgid == tgid {
			stale = append(stale, k)
		}
	}
	if ierr := it.Err(); ierr != nil {
		err = errors.Join(err, fmt.Errorf("reading the outgoing contexts: %w", ierr))
	}
	n := 0
	for _, k := range stale {
		if derr := p.objs.Out.Delete(k); derr == nil {
			n++
		} else if !errors.Is(derr, ebpf.ErrKeyNotExist) {
			err = errors.Join(err, fmt.Errorf("deleting an outgoing context of %d: %w", tgid, derr))
		}
	}
	return n, err
}

// AddReceiver parses the context of connections accepted from now on on
// port (0: every port) in the network namespace netns.
func (p *Propagator) AddReceiver(netns uint32, port uint16) error {
	if err := p.objs.Receivers.Put(bpf.RxKey{Netns: netns, Port: port}, uint8(1)); err != nil {
		return fmt.Errorf("registering receiver netns %d port %d: %w", netns, port, err)
	}
	return nil
}

// RemoveReceiver undoes AddReceiver for new connections.
func (p *Propagator) RemoveReceiver(netns uint32, port uint16) error {
	if err := p.objs.Receivers.Delete(bpf.RxKey{Netns: netns, Port: port}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("removing receiver netns %d port %d: %w", netns, port, err)
	}
	return nil
}

// SetOutgoing makes c's next data segments carry ctx (what a client probe
// does before a request's first byte is written).
func (p *Propagator) SetOutgoing(c Conn, ctx Context) error {
	v := bpf.Out{TraceId: ctx.TraceID, SpanId: ctx.SpanID, Flags: ctx.Flags}
	if err := p.objs.Out.Put(key(c), v); err != nil {
		return fmt.Errorf("setting the outgoing context of %v: %w", c, err)
	}
	return nil
}

// SetOutgoingStream gives HTTP/2 stream sid of c the context ctx for the
// header injector (what an HTTP/2 or gRPC client probe does before the
// stream's HEADERS frame is written); the injector consumes it.
func (p *Propagator) SetOutgoingStream(c Conn, sid uint32, ctx Context) error {
	v := bpf.Out{TraceId: ctx.TraceID, SpanId: ctx.SpanID, Flags: ctx.Flags}
	if err := p.objs.Streams.Put(bpf.StreamKey{Conn: key(c), Sid: sid}, v); err != nil {
		return fmt.Errorf("setting the outgoing context of stream %d of %v: %w", sid, c, err)
	}
	return nil
}

// ClearOutgoing stops c's segments carrying a context.
func (p *Propagator) ClearOutgoing(c Conn) error {
	if err := p.objs.Out.Delete(key(c)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("clearing the outgoing context of %v: %w", c, err)
	}
	return nil
}

// Incoming returns the latest context received on c, and false when none
// has arrived (or c is closed).
func (p *Propagator) Incoming(c Conn) (Received, bool, error) {
	var v bpf.In
	if err := p.objs.In.Lookup(key(c), &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Received{}, false, nil
		}
		return Received{}, false, fmt.Errorf("reading the incoming context of %v: %w", c, err)
	}
	return Received{
		Context:  Context{TraceID: v.TraceId, SpanID: v.SpanId, Flags: v.Flags},
		Gen:      v.Gen,
		TakenGen: v.TakenGen,
	}, true, nil
}

// Counters sums the per-CPU counters.
func (p *Propagator) Counters() (Counters, error) {
	var sums [bpf.NumCounters]uint64
	for i := range sums {
		var per []uint64
		if err := p.objs.Counters.Lookup(uint32(i), &per); err != nil {
			return Counters{}, fmt.Errorf("reading tcpctx counter %d: %w", i, err)
		}
		for _, v := range per {
			sums[i] += v
		}
	}
	return Counters{
		Written:         sums[bpf.CounterWritten],
		Parsed:          sums[bpf.CounterParsed],
		LostNoSpace:     sums[bpf.CounterNoSpace],
		LostStoreFailed: sums[bpf.CounterStoreFailed],
		LostInFull:      sums[bpf.CounterInFull],
		Malformed:       sums[bpf.CounterMalformed],
		FlagsFailed:     sums[bpf.CounterFlagsFailed],
		NetnsUnreadable: sums[bpf.CounterNetnsFailed],

		Headers:           p.hdr.Headers != nil,
		HeadersInjected:   sums[bpf.CounterHdrInjected],
		HeadersPresent:    sums[bpf.CounterHdrPresent],
		HeadersNotHTTP1:   sums[bpf.CounterHdrNotHTTP1],
		HeadersTooLong:    sums[bpf.CounterHdrTooLong],
		HeadersFailed:     sums[bpf.CounterHdrFailed],
		HeadersRaced:      sums[bpf.CounterHdrRaced],
		HeadersSockFailed: sums[bpf.CounterSocksFailed],
		HeadersLost:       sums[bpf.CounterHdrH2Lost],
		HeadersUnread:     sums[bpf.CounterHdrH2Unread],
		HeadersNoStream:   sums[bpf.CounterHdrH2NoCtx],
	}, nil
}

// key is Conn in the layout of struct tcpctx_key.
func key(c Conn) bpf.Key {
	return bpf.Key{
		Netns: c.Netns,
		Lport: c.Local.Port(),
		Rport: c.Remote.Port(),
		Laddr: addr16(c.Local.Addr()),
		Raddr: addr16(c.Remote.Addr()),
	}
}

// addr16 is a's 16-byte form, IPv4 as IPv4-mapped (how the kernel's AF_INET6
// sockets and Go's 16-byte net.IP both hold it). A zone is dropped: the
// kernel's key has none.
func addr16(a netip.Addr) [16]byte {
	if a.Is4() {
		return netip.AddrFrom16(a.As16()).As16()
	}
	return a.As16()
}

// NetnsOf returns the inode of process pid's network namespace, the Netns of
// its connections: the number in /proc/PID/ns/net's "net:[inode]".
func NetnsOf(pid int) (uint32, error) {
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the network namespace of pid %d: %w", pid, err)
	}
	return parseNsLink(l)
}

func parseNsLink(l string) (uint32, error) {
	s, ok := strings.CutPrefix(l, "net:[")
	if s, ok2 := strings.CutSuffix(s, "]"); ok && ok2 {
		n, err := strconv.ParseUint(s, 10, 32)
		if err == nil {
			return uint32(n), nil
		}
	}
	return 0, fmt.Errorf("unexpected network namespace link %q", l)
}

// CgroupV2Root returns the directory of the host's cgroup v2 hierarchy root.
// When obsd runs in its own cgroup namespace (a container), its own cgroup2
// mount is only its container's subtree, so the root is taken from the
// host's init (pid 1, with hostPID) through /proc/1/root.
func CgroupV2Root() (string, error) {
	self, errSelf := os.Readlink("/proc/self/ns/cgroup")
	host, errHost := os.Readlink("/proc/1/ns/cgroup")
	if errSelf == nil && errHost == nil && self != host {
		f, err := os.Open("/proc/1/mountinfo")
		if err == nil {
			defer f.Close()
			mp, err := cgroup2Mount(f)
			if err != nil {
				return "", fmt.Errorf("finding the host's cgroup v2 mount in /proc/1/mountinfo: %w", err)
			}
			return filepath.Join("/proc/1/root", mp), nil
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("finding the cgroup v2 mount: %w", err)
	}
	defer f.Close()
	mp, err := cgroup2Mount(f)
	if err != nil {
		return "", fmt.Errorf("finding the cgroup v2 mount in /proc/self/mountinfo: %w", err)
	}
	return mp, nil
}

// cgroup2Mount returns the mount point of the first cgroup2 filesystem in a
// mountinfo file whose root is the hierarchy's root ("/"), unescaping octal
// escapes (proc(5): fields are "id parent major:minor root mountpoint
// options [optional...] - fstype source superoptions").
func cgroup2Mount(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) {
			continue
		}
		if fields[sep+1] != "cgroup2" || fields[3] != "/" {
			continue
		}
		return unescapeMountinfo(fields[4]), nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading mountinfo: %w", err)
	}
	return "", ErrNoCgroupV2
}

// unescapeMountinfo undoes the kernel's \ooo escapes of space, tab, newline
// and backslash in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
