package propagate

import (
	"errors"
	"os"
	"os/exec"
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

// lockdownOutside reads the lockdown mode without HostKernel: from
// securityfs, mounted in a private mount namespace when the host has not
// mounted it (as on the machines these tests were written on), so nothing
// changes outside the test.
func lockdownOutside(t *testing.T) string {
	t.Helper()
	const path = "/sys/kernel/security/lockdown"
	b, err := os.ReadFile(path)
	if err != nil {
		unshare := e2e.RequireTool(t, "unshare")
		out, uerr := exec.Command(unshare, "--mount", "sh", "-c",
			"mount -t securityfs securityfs /sys/kernel/security 2>/dev/null; cat "+path).Output()
		if uerr != nil {
			e2e.Skip(t, "cannot read the lockdown mode (%v, then in a private mount namespace: %v)", err, uerr)
		}
		b = out
	}
	mode, err := ParseLockdown(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return mode
}

// TestHostKernelWriteUser asks this kernel for real, as root: the program
// loads exactly when lockdown is off (root holds CAP_SYS_ADMIN), and a
// refusal quotes the verifier.
func TestHostKernelWriteUser(t *testing.T) {
	e2e.RequireRoot(t)
	k := HostKernel{}
	if admin, err := k.CapSysAdmin(); err != nil || !admin {
		t.Fatalf("CapSysAdmin() = %v, %v; root holds CAP_SYS_ADMIN", admin, err)
	}
	lock := lockdownOutside(t)
	err := k.LoadWriteUser()
	t.Logf("lockdown=%s; LoadWriteUser: %v", lock, err)
	switch {
	case lock == "none" && err != nil:
		t.Errorf("lockdown=none, root: the kernel should load the program: %v", err)
	case lock != "none" && !errors.Is(err, ErrWriteUserRefused):
		t.Errorf("lockdown=%s: LoadWriteUser() = %v, want ErrWriteUserRefused", lock, err)
	case err != nil && !strings.Contains(err.Error(), "bpf_probe_write_user#36"):
		t.Errorf("refusal %q does not quote the verifier's line", err)
	}
	// Where securityfs is mounted, HostKernel reads the same mode.
	if got, err := k.Lockdown(); err == nil && got != lock {
		t.Errorf("Lockdown() = %q, securityfs says %q", got, lock)
	}
}
