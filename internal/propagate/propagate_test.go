package propagate

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeKernel answers as a kernel would, with no BPF.
type fakeKernel struct {
	load     error
	lockdown string
	lockErr  error
	admin    bool
	capErr   error
	loads    int
}

func (k *fakeKernel) LoadWriteUser() error       { k.loads++; return k.load }
func (k *fakeKernel) Lockdown() (string, error)  { return k.lockdown, k.lockErr }
func (k *fakeKernel) CapSysAdmin() (bool, error) { return k.admin, k.capErr }

var refused = fmt.Errorf("%w: verifier: program of this type cannot use helper bpf_probe_write_user#36", ErrWriteUserRefused)

func TestDecideHeaders(t *testing.T) {
	noFile := fmt.Errorf("/sys/kernel/security/lockdown absent (securityfs not mounted, or no lockdown LSM): %w", fs.ErrNotExist)
	tests := []struct {
		name       string
		k          fakeKernel
		state      State
		reason     string
		detailHas  string
		wantErrSet bool
	}{
		// The allowed path: never pretend to inject.
		{name: "allowed", k: fakeKernel{lockdown: "none", admin: true},
			state: Unavailable, reason: ReasonNotImplemented, detailHas: "not implemented"},
		{name: "lockdown integrity", k: fakeKernel{load: refused, lockdown: "integrity", admin: true},
			state: Refused, reason: ReasonLockdown, detailHas: "lockdown=integrity", wantErrSet: true},
		{name: "lockdown confidentiality, no admin either", k: fakeKernel{load: refused, lockdown: "confidentiality"},
			state: Refused, reason: ReasonLockdown, detailHas: "lockdown=confidentiality", wantErrSet: true},
		{name: "no CAP_SYS_ADMIN", k: fakeKernel{load: refused, lockdown: "none"},
			state: Refused, reason: ReasonNoCapSysAdmin, detailHas: "CAP_SYS_ADMIN", wantErrSet: true},
		{name: "no CAP_SYS_ADMIN, lockdown unreadable", k: fakeKernel{load: refused, lockErr: noFile},
			state: Refused, reason: ReasonNoCapSysAdmin, detailHas: "CAP_SYS_ADMIN, which obsd lacks (kernel lockdown, whose mode is unreadable here, may refuse it too)", wantErrSet: true},
		// This machine: securityfs not mounted, root, refused.
		{name: "lockdown unreadable, admin held", k: fakeKernel{load: refused, lockErr: noFile, admin: true},
			state: Refused, reason: ReasonLockdown, detailHas: "securityfs not mounted", wantErrSet: true},
		{name: "refused, nothing explains it", k: fakeKernel{load: refused, lockdown: "none", admin: true},
			state: Refused, reason: ReasonKernelRefused, detailHas: "refuses", wantErrSet: true},
		{name: "refused, nothing readable", k: fakeKernel{load: refused, lockErr: noFile, capErr: errors.New("capget: EPERM")},
			state: Refused, reason: ReasonKernelRefused, detailHas: "capget", wantErrSet: true},
		{name: "asking failed", k: fakeKernel{load: errors.New("operation not permitted"), lockdown: "integrity", admin: true},
			state: Unavailable, reason: ReasonProbeFailed, detailHas: "could not ask", wantErrSet: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := decideHeaders(&tt.k)
			if r.Mode != Headers || r.State != tt.state || r.Reason != tt.reason {
				t.Errorf("got %s %s (%s), want headers %s (%s)", r.Mode, r.State, r.Reason, tt.state, tt.reason)
			}
			if !strings.Contains(r.Detail, tt.detailHas) {
				t.Errorf("detail %q lacks %q", r.Detail, tt.detailHas)
			}
			if (r.Err != nil) != tt.wantErrSet {
				t.Errorf("err = %v, want set: %v", r.Err, tt.wantErrSet)
			}
			if tt.k.loads != 1 {
				t.Errorf("probe program loaded %d times, want 1", tt.k.loads)
			}
		})
	}
}

func TestSetup(t *testing.T) {
	lockdown := &fakeKernel{load: refused, lockdown: "integrity", admin: true}
	tests := []struct {
		name   string
		opts   Options
		metric string // exposition of obsd_trace_propagation_info after its HELP/TYPE
		check  string // "" when Check is nil
		warns  []string
		loads  int
	}{
		{name: "none asks nothing", opts: Options{Mode: None, Kernel: lockdown}},
		{name: "headers under lockdown", opts: Options{Mode: Headers, Kernel: lockdown},
			metric: `obsd_trace_propagation_info{mode="headers",reason="lockdown",state="refused"} 1`,
			check:  "headers refused (lockdown): the kernel refuses bpf_probe_write_user under lockdown=integrity; no traceparent is added to outgoing requests; metrics, spans and other probes unaffected",
			warns:  []string{"trace propagation refused"}, loads: 1},
		{name: "headers allowed", opts: Options{Mode: Headers, Kernel: &fakeKernel{lockdown: "none", admin: true}},
			metric: `obsd_trace_propagation_info{mode="headers",reason="not_implemented",state="unavailable"} 1`,
			check:  "headers unavailable (not_implemented): the kernel allows bpf_probe_write_user, but header injection is not implemented in this obsd",
			warns:  []string{"trace propagation unavailable"}, loads: 1},
		{name: "tcp not wired", opts: Options{Mode: TCP, Kernel: lockdown},
			metric: `obsd_trace_propagation_info{mode="tcp",reason="not_wired",state="unavailable"} 1`,
			check:  "tcp unavailable (not_wired): this build of obsd has no TCP-option propagation yet",
			warns:  []string{"trace propagation unavailable"}},
		{name: "tcp wired and active", opts: Options{Mode: TCP, Kernel: lockdown, TCP: func() Result { return Result{State: Active} }},
			metric: `obsd_trace_propagation_info{mode="tcp",reason="",state="active"} 1`},
		{name: "both", opts: Options{Mode: TCP | Headers, Kernel: lockdown},
			metric: `obsd_trace_propagation_info{mode="headers",reason="lockdown",state="refused"} 1` + "\n" +
				`obsd_trace_propagation_info{mode="tcp",reason="not_wired",state="unavailable"} 1`,
			check: "tcp unavailable (not_wired): this build of obsd has no TCP-option propagation yet; no trace context crosses services; headers refused (lockdown)",
			warns: []string{"trace propagation unavailable", "trace propagation refused"}, loads: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := *tt.opts.Kernel.(*fakeKernel)
			tt.opts.Kernel = &k
			var logs bytes.Buffer
			tt.opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			p := Setup(tt.opts)

			if k.loads != tt.loads {
				t.Errorf("probe program loaded %d times, want %d", k.loads, tt.loads)
			}
			want := ""
			if tt.metric != "" {
				want = "# HELP obsd_trace_propagation_info " + infoHelp + "\n# TYPE obsd_trace_propagation_info gauge\n" + tt.metric + "\n"
			}
			if err := testutil.CollectAndCompare(p.Collector(), strings.NewReader(want)); err != nil {
				t.Error(err)
			}
			err := p.Check()
			switch {
			case tt.check == "" && err != nil:
				t.Errorf("Check() = %v, want nil", err)
			case tt.check != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.check) || !strings.HasSuffix(err.Error(), "metrics, spans and other probes unaffected")):
				t.Errorf("Check() = %v, want it to start %q", err, tt.check)
			}
			// One warning per mechanism that is off, and nothing else at warn.
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				if strings.Contains(line, "level=WARN") {
					got = append(got, line)
				}
			}
			if len(got) != len(tt.warns) {
				t.Fatalf("%d warnings, want %d:\n%s", len(got), len(tt.warns), logs.String())
			}
			for i, w := range tt.warns {
				if !strings.Contains(got[i], w) || !strings.Contains(got[i], "still_working=") {
					t.Errorf("warning %q lacks %q or what still works", got[i], w)
				}
			}
			// Setup decides once: asking again costs nothing and changes
			// nothing.
			if err2 := p.Check(); fmt.Sprint(err2) != fmt.Sprint(err) || k.loads != tt.loads {
				t.Errorf("second Check() = %v after %d loads", err2, k.loads)
			}
		})
	}
}
