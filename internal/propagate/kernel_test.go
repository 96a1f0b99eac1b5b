package propagate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

func TestParseLockdown(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		wantErr  bool
	}{
		{in: "none [integrity] confidentiality\n", want: "integrity"},
		{in: "[none] integrity confidentiality\n", want: "none"},
		{in: "none integrity [confidentiality]", want: "confidentiality"},
		{in: "none integrity confidentiality", wantErr: true},
		{in: "", wantErr: true},
		{in: "[]", wantErr: true},
	} {
		got, err := ParseLockdown(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseLockdown(%q) = %q, %v; want %q (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestHostKernelLockdownFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lockdown")
	if err := os.WriteFile(path, []byte("none [integrity] confidentiality\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := (HostKernel{LockdownPath: path}).Lockdown(); err != nil || got != "integrity" {
		t.Errorf("Lockdown() = %q, %v; want integrity", got, err)
	}
	_, err := HostKernel{LockdownPath: filepath.Join(dir, "absent")}.Lockdown()
	if err == nil || !strings.Contains(err.Error(), "securityfs not mounted") {
		t.Errorf("Lockdown() of an absent file = %v, want an error naming securityfs", err)
	}
}

// TestHostKernelWriteUser asks this kernel for real. On these machines
// (lockdown=integrity, securityfs not mounted) the verifier withholds
// the helper; a kernel that allows it must load the program fully, and
// either way the answer must agree with the lockdown file when it is
// readable.
func TestHostKernelWriteUser(t *testing.T) {
	e2e.RequireRoot(t)
	k := HostKernel{}
	err := k.LoadWriteUser()
	lock, lockErr := k.Lockdown()
	t.Logf("LoadWriteUser: %v; lockdown %q (%v)", err, lock, lockErr)
	switch {
	case err == nil:
		if lockErr == nil && lock != "none" {
			t.Errorf("the kernel loaded a bpf_probe_write_user program under lockdown=%s", lock)
		}
	case errors.Is(err, ErrWriteUserRefused):
		if !strings.Contains(err.Error(), "bpf_probe_write_user#36") {
			t.Errorf("refusal %q does not quote the verifier's line", err)
		}
		if lockErr == nil && lock == "none" {
			if admin, _ := k.CapSysAdmin(); admin {
				t.Logf("refused with lockdown=none and CAP_SYS_ADMIN: an LSM's lockdown hook?")
			}
		}
	default:
		t.Fatalf("asking the kernel failed: %v", err)
	}
	if admin, err := k.CapSysAdmin(); err != nil || !admin {
		t.Errorf("CapSysAdmin() = %v, %v; root holds CAP_SYS_ADMIN", admin, err)
	}
}
