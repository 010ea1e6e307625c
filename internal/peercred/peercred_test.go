package peercred

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/grpc/credentials"
)

// The server side of a real unix socket reads the connecting process's
// uid, gid and supplementary groups from the kernel.
func TestReadsTheKernelsCredentials(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		c, err := net.Dial("unix", sock)
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	conn, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, ai, err := Creds{}.ServerHandshake(conn)
	if err != nil {
		t.Fatal(err)
	}
	info := ai.(Info)
	if int(info.UID) != os.Getuid() || int(info.GID) != os.Getgid() {
		t.Errorf("uid/gid %d/%d, want %d/%d", info.UID, info.GID, os.Getuid(), os.Getgid())
	}
	want, _ := os.Getgroups()
	var got []int
	for _, g := range info.Groups {
		got = append(got, int(g))
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("groups %v, want %v", got, want)
	}
	if info.SecurityLevel != credentials.NoSecurity {
		t.Errorf("security level %v", info.SecurityLevel)
	}
}

// A TCP connection is not a unix peer: it goes to the other credentials
// and carries no peer credentials.
func TestTCPGoesToOther(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		if c, err := net.Dial("tcp", lis.Addr().String()); err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	conn, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, ai, err := Creds{}.ServerHandshake(conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ai.(Info); ok {
		t.Fatal("a TCP client got unix peer credentials")
	}
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("a context without a peer has credentials")
	}
}

func TestIDs(t *testing.T) {
	got := Info{UID: 1000, GID: 100, Groups: []uint32{100, 27, 1001}}.String()
	if got != "uid:1000,gid:100,gid:27,gid:1001" {
		t.Errorf("got %q", got)
	}
}
