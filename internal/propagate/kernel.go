package propagate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Kernel is what deciding on header injection asks of the running kernel.
// HostKernel asks the real one; tests fake it.
type Kernel interface {
	// LoadWriteUser loads, and closes at once, a program that calls
	// bpf_probe_write_user. nil means the kernel accepted it; an error
	// wrapping ErrWriteUserRefused means the verifier did not offer the
	// helper; any other error says nothing either way.
	LoadWriteUser() error
	// Lockdown returns the kernel lockdown mode in force: "none",
	// "integrity" or "confidentiality".
	Lockdown() (string, error)
	// CapSysAdmin reports whether obsd holds CAP_SYS_ADMIN in its
	// effective set: the kernel offers the helper only to it.
	CapSysAdmin() (bool, error)
}

// ErrWriteUserRefused is wrapped by Kernel.LoadWriteUser's error when the
// verifier answered that bpf_probe_write_user is an unknown function: the
// kernel withholds it from this program (lockdown, or no CAP_SYS_ADMIN).
var ErrWriteUserRefused = errors.New("the kernel refuses bpf_probe_write_user")

// HostKernel is the running kernel, seen from obsd's own process.
type HostKernel struct {
	// LockdownPath is the securityfs file of the lockdown mode; "" is
	// /sys/kernel/security/lockdown.
	LockdownPath string
}

// writeUserProbe is a complete, valid kprobe-type program whose only
// effect, if it ever ran, would be bpf_probe_write_user(NULL, stack, 8),
// which fails on the NULL destination. It is loaded to ask the verifier,
// never attached, so it never runs. It is built here with the asm package
// rather than compiled from C: nine instructions need no clang, no
// committed object and no generated code. The program must verify
// entirely for the answer to be "allowed" (cilium/ebpf's
// features.HaveProgramHelper also takes a rejection of the arguments as
// "available", which would let a half-valid program say yes).
func writeUserProbe() *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{
		Name: "obsd_wuser_prb",
		Type: ebpf.Kprobe,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, 0),                       // dst: NULL
			asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord), // 8 initialised bytes to write
			asm.Mov.Reg(asm.R2, asm.RFP),                 // src: the stack slot
			asm.Add.Imm(asm.R2, -8),
			asm.Mov.Imm(asm.R3, 8), // len
			asm.FnProbeWriteUser.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
		// bpf_probe_write_user is GPL-only.
		License: "GPL",
	}
}

// LoadWriteUser implements Kernel. Where the kernel allows the helper,
// loading prints its ratelimited warning "... is installing a program with
// bpf_probe_write_user helper that may corrupt user memory!" to the kernel
// log once: that is the kernel's own notice of what --propagate=headers
// asks for.
func (HostKernel) LoadWriteUser() error {
	prog, err := ebpf.NewProgramWithOptions(writeUserProbe(), ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch})
	if err == nil {
		return prog.Close()
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		// The verifier says "program of this type cannot use helper
		// bpf_probe_write_user#36" (older kernels: "unknown func
		// bpf_probe_write_user#36") when the program type's helper list
		// withholds it.
		for _, line := range verr.Log {
			if (strings.Contains(line, "cannot use helper") || strings.Contains(line, "unknown func")) && strings.Contains(line, "#36") {
				return fmt.Errorf("%w: verifier: %s", ErrWriteUserRefused, strings.TrimSpace(line))
			}
		}
	}
	return fmt.Errorf("loading a bpf_probe_write_user probe program: %w", err)
}

// Lockdown implements Kernel: the bracketed word of the securityfs file,
// e.g. "none [integrity] confidentiality".
func (k HostKernel) Lockdown() (string, error) {
	path := k.LockdownPath
	if path == "" {
		path = "/sys/kernel/security/lockdown"
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s absent (securityfs not mounted, or no lockdown LSM): %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return "", fmt.Errorf("reading lockdown mode: %w", err)
	}
	return ParseLockdown(string(b))
}

// ParseLockdown returns the active mode of the lockdown file's content,
// the word in brackets.
func ParseLockdown(s string) (string, error) {
	for _, f := range strings.Fields(s) {
		if len(f) > 2 && f[0] == '[' && f[len(f)-1] == ']' {
			return f[1 : len(f)-1], nil
		}
	}
	return "", fmt.Errorf("reading lockdown mode: no [active] mode in %q", strings.TrimSpace(s))
}

// CapSysAdmin implements Kernel with capget(2).
func (HostKernel) CapSysAdmin() (bool, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData // version 3: 64 bits in two halves
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, fmt.Errorf("reading capabilities: %w", err)
	}
	const c = unix.CAP_SYS_ADMIN
	return data[c/32].Effective&(1<<(c%32)) != 0, nil
}
