// Package peercred makes the kernel's word on a unix socket peer a gRPC
// identity: its uid, primary gid and supplementary groups, read at
// connection time with SO_PEERCRED and SO_PEERGROUPS. Both are the
// credentials the peer had when it called connect(2), kept by the kernel
// with the socket, so no pid lookup can race a pid reuse. The agent's unix
// API socket and the master's both use it (agent/auth.go, master/auth.go).
package peercred

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
)

// Info is a unix socket peer's identity.
type Info struct {
	credentials.CommonAuthInfo
	UID, GID uint32
	// Groups are the supplementary groups (may include GID).
	Groups []uint32
}

// AuthType names the authentication.
func (Info) AuthType() string { return "unix-peercred" }

// IDs are the identities the peer holds, as role rules name them: uid:N,
// gid:N for its primary group, and gid:N for each supplementary group.
func (i Info) IDs() []string {
	ids := []string{"uid:" + strconv.FormatUint(uint64(i.UID), 10), "gid:" + strconv.FormatUint(uint64(i.GID), 10)}
	for _, g := range i.Groups {
		if g != i.GID {
			ids = append(ids, "gid:"+strconv.FormatUint(uint64(g), 10))
		}
	}
	return ids
}

// String is the identity for messages: uid:N,gid:N[,gid:N…].
func (i Info) String() string {
	s := ""
	for n, id := range i.IDs() {
		if n > 0 {
			s += ","
		}
		s += id
	}
	return s
}

// FromContext returns the peer's credentials when the call came over a
// unix socket served with Creds.
func FromContext(ctx context.Context) (Info, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Info{}, false
	}
	info, ok := p.AuthInfo.(Info)
	return info, ok
}

// Creds are server transport credentials: a unix socket connection gets
// the peer's kernel credentials as its identity (no encryption: the
// socket never leaves the host); any other connection is handed to
// Other (TLS, or none when Other is nil).
type Creds struct {
	Other credentials.TransportCredentials
}

func (c Creds) other() credentials.TransportCredentials {
	if c.Other == nil {
		return insecure.NewCredentials()
	}
	return c.Other
}

// ClientHandshake is the other credentials' (a client dialling a unix
// socket uses insecure credentials; the server reads who it is).
func (c Creds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.other().ClientHandshake(ctx, authority, conn)
}

// ServerHandshake reads a unix peer's credentials.
func (c Creds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return c.other().ServerHandshake(conn)
	}
	info, err := Read(uc)
	if err != nil {
		return nil, nil, err
	}
	return conn, info, nil
}

// Info is the other credentials' protocol.
func (c Creds) Info() credentials.ProtocolInfo { return c.other().Info() }

// Clone copies the credentials.
func (c Creds) Clone() credentials.TransportCredentials {
	if c.Other == nil {
		return c
	}
	return Creds{Other: c.Other.Clone()}
}

// OverrideServerName is the other credentials'.
func (c Creds) OverrideServerName(name string) error {
	if c.Other == nil {
		return nil
	}
	return c.Other.OverrideServerName(name) //nolint:staticcheck // part of the interface
}

// Read returns the kernel's credentials of a unix socket's peer.
func Read(uc *net.UnixConn) (Info, error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return Info{}, err
	}
	var (
		cred   *unix.Ucred
		groups []uint32
		cerr   error
	)
	if err := raw.Control(func(fd uintptr) {
		if cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); cerr != nil {
			return
		}
		groups, cerr = peerGroups(int(fd))
	}); err != nil {
		return Info{}, err
	}
	if cerr != nil {
		return Info{}, fmt.Errorf("reading the peer's credentials: %w", cerr)
	}
	return Info{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity},
		UID: cred.Uid, GID: cred.Gid, Groups: groups}, nil
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13): the supplementary groups
// the peer had at connect(2). x/sys has no helper for an array of gids
// (GetsockoptString stops at the first zero byte), so this calls
// getsockopt itself, growing the buffer when the kernel says ERANGE.
func peerGroups(fd int) ([]uint32, error) {
	n := 64
	for {
		buf := make([]uint32, n)
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == 0:
			return buf[:size/4], nil
		case errors.Is(errno, unix.ERANGE) && int(size/4) > n && n < 1<<16:
			n = int(size / 4)
		default:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
	}
}
