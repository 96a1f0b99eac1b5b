package kube

import (
	"strings"
	"testing"
)

const (
	id1 = "0b6f1c9e2d7a4f3b8c5e6d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e"
	id2 = "f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff00"
)

// Samples shaped like /proc/PID/cgroup of containers on real nodes: the
// paths each runtime and cgroup driver create (kubelet's kubepods layout,
// containerd's and CRI-O's systemd units, Docker outside Kubernetes), on
// cgroup v1, v2 and hybrid hosts.
func TestParseCgroup(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    CgroupContainer
		wantOK  bool
		wantErr string
	}{
		{name: "v2 containerd systemd", wantOK: true, want: CgroupContainer{id1, RuntimeContainerd},
			data: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e3d4c_5b6a_7980_a1b2_c3d4e5f60718.slice/cri-containerd-" + id1 + ".scope\n"},
		{name: "v2 containerd cgroupfs", wantOK: true, want: CgroupContainer{id1, RuntimeUnknown},
			data: "0::/kubepods/besteffort/pod1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718/" + id1 + "\n"},
		{name: "v2 CRI-O systemd", wantOK: true, want: CgroupContainer{id1, RuntimeCRIO},
			data: "0::/kubepods.slice/kubepods-pod1f2e3d4c_5b6a_7980_a1b2_c3d4e5f60718.slice/crio-" + id1 + ".scope\n"},
		{name: "v2 CRI-O conmon is not the container",
			data: "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1f2e3d4c_5b6a.slice/crio-conmon-" + id1 + ".scope\n"},
		{name: "v2 Docker systemd", wantOK: true, want: CgroupContainer{id1, RuntimeDocker},
			data: "0::/system.slice/docker-" + id1 + ".scope\n"},
		{name: "v2 podman", wantOK: true, want: CgroupContainer{id1, RuntimePodman},
			data: "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id1 + ".scope/container\n"},
		{name: "v2 sub-cgroup made by the container", wantOK: true, want: CgroupContainer{id1, RuntimeContainerd},
			data: "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice/cri-containerd-" + id1 + ".scope/app/worker\n"},
		{name: "v2 relative to a cgroup namespace", wantOK: true, want: CgroupContainer{id1, RuntimeContainerd},
			data: "0::/../../kubepods-besteffort-pod1f2e3d4c_5b6a.slice/cri-containerd-" + id1 + ".scope\n"},
		{name: "v2 host process", data: "0::/system.slice/containerd.service\n"},
		{name: "v2 root", data: "0::/\n"},
		{name: "v1 Docker cgroupfs", wantOK: true, want: CgroupContainer{id1, RuntimeUnknown}, data: strings.Join([]string{
			"12:pids:/docker/" + id1,
			"11:hugetlb:/docker/" + id1,
			"10:net_cls,net_prio:/docker/" + id1,
			"9:cpu,cpuacct:/docker/" + id1,
			"8:memory:/docker/" + id1,
			"1:name=systemd:/docker/" + id1,
			"0::/system.slice/containerd.service",
		}, "\n") + "\n"},
		{name: "v1 kubelet cgroupfs (dockershim or containerd)", wantOK: true, want: CgroupContainer{id1, RuntimeUnknown}, data: strings.Join([]string{
			"11:devices:/kubepods/burstable/pod1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718/" + id1,
			"4:memory:/kubepods/burstable/pod1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718/" + id1,
			"1:name=systemd:/kubepods/burstable/pod1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718/" + id1,
		}, "\n")},
		{name: "hybrid: v1 systemd names the runtime, v2 only the systemd unit", wantOK: true, want: CgroupContainer{id1, RuntimeCRIO}, data: strings.Join([]string{
			"10:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podx.slice/crio-" + id1 + ".scope",
			"1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podx.slice/crio-" + id1 + ".scope",
			"0::/",
		}, "\n")},
		{name: "bare ID on one line, scope on another", wantOK: true, want: CgroupContainer{id1, RuntimeContainerd}, data: strings.Join([]string{
			"4:memory:/kubepods/besteffort/podx/" + id1,
			"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice/cri-containerd-" + id1 + ".scope",
		}, "\n")},
		{name: "almost IDs are not", data: strings.Join([]string{
			"0::/docker/" + id1[:63],                     // too short
			"1:pids:/docker/" + strings.ToUpper(id1),     // not lower case
			"2:memory:/kubepods/x/cri-containerd-" + id1, // no .scope
			"3:cpu:/kubepods/x/cri-containerd-" + id1 + "x.scope",
		}, "\n")},
		{name: "two containers", wantErr: "differs", data: "4:memory:/docker/" + id1 + "\n0::/docker/" + id2 + "\n"},
		{name: "empty file"},
		{name: "no colon", wantErr: "line 1", data: "garbage\n"},
		{name: "one colon", wantErr: "line 2", data: "0::/\n12:memory\n"},
		{name: "hierarchy ID not a number", wantErr: "not a number", data: "x:memory:/docker/" + id1 + "\n"},
		{name: "relative path", wantErr: "does not start with /", data: "0::docker/" + id1 + "\n"},
		{name: "NUL bytes", wantErr: "line 1", data: "\x00\x00\x00\n"},
		{name: "malformed line beside a good one", wantErr: "line 2", data: "0::/docker/" + id1 + "\n::\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := ParseCgroup([]byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if ok {
					t.Errorf("ok with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("got %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func FuzzParseCgroup(f *testing.F) {
	f.Add([]byte("0::/kubepods.slice/cri-containerd-" + id1 + ".scope\n"))
	f.Add([]byte("4:memory:/docker/" + id1 + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, ok, err := ParseCgroup(data)
		if ok && (err != nil || !isID(c.ID)) {
			t.Fatalf("ok with %+v, %v", c, err)
		}
	})
}

func TestParseContainerID(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"containerd://" + id1, id1, true},
		{"cri-o://" + id1, id1, true},
		{"docker://" + id1, id1, true},
		{id1, "", false},
		{"containerd://abc", "", false},
		{"", "", false},
	} {
		got, ok := ParseContainerID(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseContainerID(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
