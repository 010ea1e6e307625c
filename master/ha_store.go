package master

import (
	"context"
	"log/slog"

	"github.com/gearboxd/gearbox/master/store/etcdstore"
)

// openHAStore opens the etcd registry of replicated masters.
func openHAStore(ctx context.Context, cfg Config, log *slog.Logger) (haStore, error) {
	return etcdstore.Open(ctx, etcdstore.Config{Endpoints: cfg.EtcdEndpoints, CA: cfg.EtcdCA, Cert: cfg.EtcdCert, Key: cfg.EtcdKey,
		Prefix: cfg.EtcdPrefix, Logger: log})
}
