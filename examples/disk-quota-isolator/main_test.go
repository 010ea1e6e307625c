package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/isolators"
	"github.com/gearboxd/gearbox/isolators/isolatortest"
	"github.com/gearboxd/gearbox/isolators/plugin"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// The example plugin, served by the SDK and called through the agent's
// client, passes the contract suite and enforces its quota.
func TestPlugin(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dq.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- plugin.Serve(ctx, sock, &diskQuota{quota: 1 << 20}) }()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, err := plugin.NewClient(plugin.Config{Name: "disk-quota", Socket: sock, Required: true, Timeout: 2 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	isolatortest.Run(t, c, isolators.Resources{})

	sandbox := t.TempDir()
	ct := isolators.Container{ID: "x", Sandbox: sandbox}
	if l, err := c.Watch(context.Background(), ct); l != nil || err != nil {
		t.Fatalf("empty sandbox: %v %v", l, err)
	}
	os.WriteFile(filepath.Join(sandbox, "big"), make([]byte, 2<<20), 0o644)
	l, err := c.Watch(context.Background(), ct)
	if err != nil || l == nil || l.Reason != typesv1.Reason_REASON_CONTAINER_LIMITATION_DISK || !strings.Contains(l.Message, "1MiB") {
		t.Fatalf("over quota: %+v %v", l, err)
	}
	ct.Labels = map[string]string{"disk-quota": "10m"}
	if l, _ := c.Watch(context.Background(), ct); l != nil {
		t.Fatalf("the label's quota was not used: %+v", l)
	}
}
