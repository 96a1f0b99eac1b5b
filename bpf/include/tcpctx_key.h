/* The key of a TCP connection in the --propagate maps (issue 11 §3), shared
 * by the sock_ops program, the adopt iterator and the uprobes (through
 * tcpctx.h). */
#ifndef OBSD_TCPCTX_KEY_H
#define OBSD_TCPCTX_KEY_H

#include <linux/types.h>

/* A connection as the process on this end sees it, 40 bytes, no padding.
 * A uprobe forms it from the Go connection's *net.netFD: laddr and raddr
 * (net.Addr interfaces holding *net.TCPAddr{IP []byte, Port int, ...}).
 * An AF_INET socket's TCPAddr.IP has 4 bytes: write them IPv4-mapped
 * (::ffff:a.b.c.d, 10 zero bytes, 0xff 0xff, the 4 bytes); an AF_INET6
 * socket's (Go's dual-stack ":port" listeners included) has 16, already
 * IPv4-mapped for an IPv4 peer: copy them. netns is the inode of the
 * process's network namespace (/proc/PID/ns/net reads "net:[inode]"),
 * which user space supplies per process. */
struct tcpctx_key {
	__u32 netns;     /* network namespace inode */
	__u16 lport;     /* local port, host byte order */
	__u16 rport;     /* remote port, host byte order */
	__u8 laddr[16];  /* local address, IPv6 or IPv4-mapped */
	__u8 raddr[16];  /* remote address, IPv6 or IPv4-mapped */
};

#endif
