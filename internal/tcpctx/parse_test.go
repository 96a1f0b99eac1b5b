package tcpctx

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestCgroup2Mount(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo, want string
		err                   error
	}{
		{
			name: "hybrid",
			mountinfo: `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`,
			want: "/sys/fs/cgroup/unified",
		},
		{
			name:      "unified, with optional fields",
			mountinfo: "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate\n",
			want:      "/sys/fs/cgroup",
		},
		{
			name: "a bind mount of a subtree is not the root",
			mountinfo: `50 40 0:37 /kubepods/pod1 /mnt/sub rw - cgroup2 cgroup2 rw
51 40 0:37 / /mnt/cg\040root rw - cgroup2 cgroup2 rw
`,
			want: "/mnt/cg root",
		},
		{
			name:      "v1 only",
			mountinfo: "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n",
			err:       ErrNoCgroupV2,
		},
		{name: "empty", err: ErrNoCgroupV2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cgroup2Mount(strings.NewReader(tc.mountinfo))
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseNsLink(t *testing.T) {
	for _, tc := range []struct {
		link string
		want uint32
		ok   bool
	}{
		{"net:[4026531840]", 4026531840, true},
		{"net:[12]", 12, true},
		{"mnt:[4026531840]", 0, false},
		{"net:[x]", 0, false},
		{"net:[4026531840", 0, false},
		{"net:[99999999999]", 0, false},
	} {
		got, err := parseNsLink(tc.link)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseNsLink(%q) = %d, %v; want %d, ok %v", tc.link, got, err, tc.want, tc.ok)
		}
	}
}

// TestKey checks the key's layout against what the sock_ops program forms:
// ports in host order, IPv4 as IPv4-mapped whichever form Go gave it in.
func TestKey(t *testing.T) {
	plain := key(Conn{Netns: 7, Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.2:8080")})
	mapped := key(Conn{Netns: 7, Local: netip.MustParseAddrPort("[::ffff:10.0.0.1]:40000"), Remote: netip.MustParseAddrPort("[::ffff:10.0.0.2]:8080")})
	if plain != mapped {
		t.Fatalf("plain %+v != mapped %+v", plain, mapped)
	}
	want := [16]byte{10: 0xff, 11: 0xff, 12: 10, 15: 1}
	if plain.Netns != 7 || plain.Lport != 40000 || plain.Rport != 8080 || plain.Laddr != want {
		t.Fatalf("key %+v", plain)
	}
	v6 := key(Conn{Local: netip.MustParseAddrPort("[fe80::1%eth0]:1"), Remote: netip.MustParseAddrPort("[2001:db8::2]:2")})
	if v6.Laddr != netip.MustParseAddr("fe80::1").As16() || v6.Raddr != netip.MustParseAddr("2001:db8::2").As16() {
		t.Fatalf("v6 key %+v", v6)
	}
}
