package etcdtest

import (
	"context"
	"testing"
	"time"
)

// TestQuorum checks the harness does what the tests of replicated masters
// rely on: three members serve writes with one of them down, refuse them
// without a quorum, and serve them again once members come back.
func TestQuorum(t *testing.T) {
	c, err := Start(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	put := func(within time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		_, err := cli.Put(ctx, "k", "v")
		return err
	}
	if err := put(10 * time.Second); err != nil {
		t.Fatalf("put with 3 members: %v", err)
	}
	c.Kill(0)
	// If member 0 led, the first puts may time out until the other two
	// elect a leader (about a second): a quorum writes again within 15 s.
	deadline := time.Now().Add(15 * time.Second)
	for err = put(3 * time.Second); err != nil && time.Now().Before(deadline); err = put(3 * time.Second) {
	}
	if err != nil {
		t.Fatalf("put with 2 of 3 members: %v", err)
	}
	c.Kill(1)
	if err := put(3 * time.Second); err == nil {
		t.Fatal("put with 1 of 3 members succeeded; want it refused without a quorum")
	}
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := c.WaitHealthy(i, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := put(10 * time.Second); err != nil {
		t.Fatalf("put after the members came back: %v", err)
	}
	resp, err := cli.Get(context.Background(), "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get k: %v %v", resp, err)
	}
}
