// disk-quota-isolator is an example isolator plugin, written with gearbox's
// SDK (isolators/plugin): a quota on each container's sandbox, enforced by
// polling as Mesos's disk/du isolator does. A container whose sandbox grows
// past its quota is ended with REASON_CONTAINER_LIMITATION_DISK.
//
// The quota is --quota, or the container's label disk-quota (64m, 1g).
// Inside the container, GEARBOX_DISK_QUOTA says it in bytes.
//
//	disk-quota-isolator --socket /run/gearbox/plugins/disk-quota.sock --quota 1g
//
//	# agent.toml
//	[[isolator_plugins]]
//	name = "disk-quota"
//	socket = "/run/gearbox/plugins/disk-quota.sock"
//	required = true
package main

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/gearboxd/gearbox/internal/units"
	"github.com/gearboxd/gearbox/isolators"
	"github.com/gearboxd/gearbox/isolators/plugin"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

type diskQuota struct {
	plugin.Base
	quota int64
}

func (d *diskQuota) quotaOf(c isolators.Container) (int64, error) {
	if v, ok := c.Labels["disk-quota"]; ok {
		return units.ParseSize(v)
	}
	return d.quota, nil
}

func (d *diskQuota) Prepare(_ context.Context, c isolators.Container) (plugin.Prepared, error) {
	q, err := d.quotaOf(c)
	if err != nil {
		return plugin.Prepared{}, fmt.Errorf("label disk-quota: %w", err)
	}
	return plugin.Prepared{Env: []string{fmt.Sprintf("GEARBOX_DISK_QUOTA=%d", q)}}, nil
}

func (d *diskQuota) Watch(_ context.Context, c isolators.Container) (*isolators.Limitation, error) {
	q, err := d.quotaOf(c)
	if err != nil {
		return nil, err
	}
	used := du(c.Sandbox)
	if used <= q {
		return nil, nil
	}
	return &isolators.Limitation{
		Reason:  typesv1.Reason_REASON_CONTAINER_LIMITATION_DISK,
		Message: fmt.Sprintf("the sandbox uses %s, over its quota of %s", units.FormatSize(used), units.FormatSize(q)),
	}, nil
}

func (d *diskQuota) Usage(_ context.Context, c isolators.Container, u *isolators.Usage) error {
	u.DiskBytes = uint64(du(c.Sandbox))
	return nil
}

// du adds up the sizes of the files under dir.
func du(dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}

func main() {
	socket := flag.String("socket", "/run/gearbox/plugins/disk-quota.sock", "unix socket to serve on")
	quota := flag.String("quota", "1g", "default quota per sandbox")
	flag.Parse()
	q, err := units.ParseSize(*quota)
	if err != nil {
		log.Fatalf("--quota: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(filepath.Dir(*socket), 0o700); err != nil {
		log.Fatal(err)
	}
	if err := plugin.Serve(ctx, *socket, &diskQuota{quota: q}); err != nil {
		log.Fatal(err)
	}
}
