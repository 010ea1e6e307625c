package agent

import (
	"context"
	"errors"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// toStatus is the one place where errors become gRPC statuses.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	// Only an error that is itself a status passes through: a status
	// wrapped deeper (a plugin's, containerd's) is a cause, and the class
	// of the error around it decides the code.
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errdefs.IsInvalidArgument(err):
		code = codes.InvalidArgument
	case errdefs.IsNotFound(err):
		code = codes.NotFound
	case errdefs.IsAlreadyExists(err):
		code = codes.AlreadyExists
	case errdefs.IsFailedPrecondition(err), errdefs.IsConflict(err):
		code = codes.FailedPrecondition
	case errdefs.IsUnavailable(err):
		code = codes.Unavailable
	case errdefs.IsPermissionDenied(err):
		code = codes.PermissionDenied
	case errdefs.IsResourceExhausted(err):
		code = codes.ResourceExhausted
	case errdefs.IsNotImplemented(err):
		code = codes.Unimplemented
	}
	st := status.New(code, err.Error())
	if info, ok := errs.InfoOf(err); ok {
		st = typesv1.WithErrorInfo(st, info.Reason, info.Metadata)
	}
	var le *containerizer.LaunchError
	if errors.As(err, &le) {
		st = typesv1.WithErrorReason(st, string(le.Failure))
	}
	return st.Err()
}
