package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gearboxd/gearbox/master"
	"github.com/gearboxd/gearbox/master/store"
	"github.com/gearboxd/gearbox/master/store/etcdstore"
)

func newMigrateStoreCmd() *cobra.Command {
	var (
		workDir string
		force   bool
		cfg     etcdstore.Config
	)
	cmd := &cobra.Command{
		Use:   "migrate-store",
		Short: "Copy a master's registry from its work dir (bbolt) into etcd, for replicated masters",
		Long: `Copy every agent, task, framework and role weight of WORK_DIR/registry.db into
etcd under --etcd-prefix, so that masters started with --etcd-endpoints go on
from it.

Stop the master first: it holds the file locked while it runs. The copy is
refused while a master leads on the prefix, and when the prefix already holds
a registry, unless --force (which replaces it).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(cfg.Endpoints) == 0 {
				return errors.New("--etcd-endpoints: give etcd's client URLs (http://host:2379,…)")
			}
			ctx, stop := signal.NotifyContext(ctxOf(cmd), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			n, err := migrateStore(ctx, workDir, cfg, force)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "copied %d agents, %d tasks, %d frameworks and %d role weights from %s to etcd at %v under %s\n",
				n.Agents, n.Tasks, n.Frameworks, n.Weights, filepath.Join(workDir, "registry.db"), cfg.Endpoints, cfg.Prefix)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&workDir, "work-dir", master.DefaultConfig().WorkDir, "the master's work dir, holding registry.db")
	f.StringSliceVar(&cfg.Endpoints, "etcd-endpoints", nil, "etcd's client URLs, comma-separated")
	f.StringVar(&cfg.CA, "etcd-ca", "", "CA that signed etcd's server certificates (TLS)")
	f.StringVar(&cfg.Cert, "etcd-cert", "", "client certificate for etcd (TLS)")
	f.StringVar(&cfg.Key, "etcd-key", "", "client key for etcd (TLS)")
	f.StringVar(&cfg.Prefix, "etcd-prefix", etcdstore.DefaultPrefix, "prefix of the registry's keys in etcd")
	f.BoolVar(&force, "force", false, "replace a registry the prefix already holds")
	return cmd
}

func migrateStore(ctx context.Context, workDir string, cfg etcdstore.Config, force bool) (etcdstore.Copied, error) {
	path := filepath.Join(workDir, "registry.db")
	if _, err := os.Stat(path); err != nil {
		return etcdstore.Copied{}, fmt.Errorf("no registry to copy (--work-dir is the master's work dir): %w", err)
	}
	from, err := store.OpenBolt(path, time.Second)
	if err != nil {
		// Held: the message says another master runs on the work dir.
		return etcdstore.Copied{}, fmt.Errorf("opening the registry to copy: %w", err)
	}
	defer from.Close()
	to, err := etcdstore.Open(ctx, cfg)
	if err != nil {
		return etcdstore.Copied{}, err
	}
	defer to.Close()
	return to.Migrate(ctx, from, force)
}
