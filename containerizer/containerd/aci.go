package containerd

import (
	"context"
	"io"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/internal/errs"
)

// convertACI turns an ACI into an OCI layout tar (see aciImage).
func (z *Containerizer) convertACI(ctx context.Context, f io.ReadSeeker, manifest []byte, in *importName) (io.Reader, func(), error) {
	return nil, nil, errs.New(errdefs.ErrNotImplemented, "ACI import is not implemented yet")
}
