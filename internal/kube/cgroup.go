package kube

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Container runtimes as told by the cgroup names they create. A bare ID
// (cgroupfs driver, kubelet's layout) does not say which runtime made it.
const (
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimeDocker     = "docker"
	RuntimePodman     = "podman"
	RuntimeUnknown    = ""
)

// idLen is the length of a container ID as containerd, CRI-O and Docker
// make them: 32 random bytes in lower-case hex.
const idLen = 64

// scopePrefixes are the systemd-driver unit names of container cgroups, by
// runtime: "cri-containerd-<id>.scope", "crio-<id>.scope",
// "docker-<id>.scope", "libpod-<id>.scope". CRI-O's "crio-conmon-<id>.scope"
// holds the monitor process, not the container, so it does not match.
var scopePrefixes = []struct{ prefix, runtime string }{
	{"cri-containerd-", RuntimeContainerd},
	{"crio-", RuntimeCRIO},
	{"docker-", RuntimeDocker},
	{"libpod-", RuntimePodman},
}

// CgroupContainer is what a process's cgroups say about its container.
type CgroupContainer struct {
	// ID is the 64-hex-digit container ID, as in a pod's
	// status.containerStatuses[].containerID after "<runtime>://".
	ID string
	// Runtime is one of the Runtime* constants; RuntimeUnknown for a bare
	// ID (cgroupfs driver).
	Runtime string
}

// ParseCgroup reads the container of a process from the contents of
// /proc/PID/cgroup, one "hierarchy-ID:controllers:path" line per hierarchy
// (cgroup v1) plus "0::path" for the unified hierarchy (cgroup v2), both
// present on hybrid systems. The container is the deepest path component
// that names one, so sub-cgroups a container makes and paths relative to a
// cgroup namespace ("/../../kubepods-…") are understood. ok is false for a
// process in no container. A malformed line, or lines naming different
// containers, are an error, never a panic.
func ParseCgroup(data []byte) (c CgroupContainer, ok bool, err error) {
	var errs []error
	for n, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		path, err := cgroupPath(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n+1, err))
			continue
		}
		got, found := containerInPath(path)
		if !found {
			continue
		}
		if ok && got.ID != c.ID {
			return CgroupContainer{}, false, fmt.Errorf("line %d: container %s differs from %s on an earlier line", n+1, short(got.ID), short(c.ID))
		}
		// The systemd driver's name says the runtime; keep it even when
		// another hierarchy shows the bare ID.
		if !ok || c.Runtime == RuntimeUnknown {
			c = got
		}
		ok = true
	}
	if len(errs) > 0 {
		return CgroupContainer{}, false, fmt.Errorf("parsing cgroup file: %w", errors.Join(errs...))
	}
	return c, ok, nil
}

// cgroupPath checks one line of /proc/PID/cgroup and returns its path.
func cgroupPath(line string) (string, error) {
	id, rest, ok := strings.Cut(line, ":")
	if !ok {
		return "", fmt.Errorf("%q: want hierarchy-ID:controllers:path", trunc(line))
	}
	if _, err := strconv.ParseUint(id, 10, 32); err != nil {
		return "", fmt.Errorf("%q: hierarchy ID %q is not a number", trunc(line), trunc(id))
	}
	_, path, ok := strings.Cut(rest, ":")
	if !ok {
		return "", fmt.Errorf("%q: want hierarchy-ID:controllers:path", trunc(line))
	}
	if !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("%q: path does not start with /", trunc(line))
	}
	return path, nil
}

// containerInPath finds the deepest component of a cgroup path naming a
// container.
func containerInPath(path string) (CgroupContainer, bool) {
	for path != "" {
		i := strings.LastIndexByte(path, '/')
		comp := path[i+1:]
		path = path[:max(i, 0)]
		if isID(comp) {
			return CgroupContainer{ID: comp}, true
		}
		name, ok := strings.CutSuffix(comp, ".scope")
		if !ok {
			continue
		}
		for _, s := range scopePrefixes {
			if id, ok := strings.CutPrefix(name, s.prefix); ok && isID(id) {
				return CgroupContainer{ID: id, Runtime: s.runtime}, true
			}
		}
	}
	return CgroupContainer{}, false
}

func isID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ParseContainerID splits a pod status's "<runtime>://<id>" and returns the
// ID when it is one ParseCgroup can find.
func ParseContainerID(s string) (string, bool) {
	_, id, ok := strings.Cut(s, "://")
	if !ok || !isID(id) {
		return "", false
	}
	return id, true
}

func short(id string) string { return id[:min(len(id), 12)] }

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
