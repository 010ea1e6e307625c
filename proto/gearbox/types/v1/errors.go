package typesv1

// Hand-written, next to the generated code: the google.rpc.ErrorInfo
// details gearbox's agents and masters attach to their errors, in the one
// package both sides (and the CLI) import, as etcd's api/v3rpc/rpctypes
// does. The reasons are part of the wire API: never rename one.

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the domain of every ErrorInfo gearbox attaches.
const ErrorDomain = "gearbox.dev"

// ErrorInfo reasons.
const (
	// ErrorReasonAgentMarkedGone: the master refuses an agent an operator
	// marked gone (FailedPrecondition). The agent must kill its tasks and
	// may not register again under its ID.
	ErrorReasonAgentMarkedGone = "AGENT_MARKED_GONE"
	// ErrorReasonMasterStopping: the master is stopping (Unavailable), a
	// planned absence rather than a fault; register again.
	ErrorReasonMasterStopping = "MASTER_STOPPING"
	// ErrorReasonNotLeader: a standby master (HA on etcd) refuses a call
	// only the leader takes (Unavailable). Metadata "leader" is the
	// leader's address (host:port), empty while no master leads: call it
	// there, or try the next master after a pause.
	ErrorReasonNotLeader = "NOT_LEADER"
	// ErrorReasonCommandNotFound: the agent created a container but its
	// command does not exist (Docker's exit status 127).
	ErrorReasonCommandNotFound = "COMMAND_NOT_FOUND"
	// ErrorReasonCommandNotExecutable: the container's command exists but
	// cannot be executed (Docker's exit status 126).
	ErrorReasonCommandNotExecutable = "COMMAND_NOT_EXECUTABLE"

	// The agent's refusals a client may answer with a next step. Metadata
	// "image" names the image as the caller gave it, "container_id" the
	// container.

	// ErrorReasonImageNotFound: the image is not in the agent's store (NotFound).
	ErrorReasonImageNotFound = "IMAGE_NOT_FOUND"
	// ErrorReasonImageInUse: containers use the image (FailedPrecondition).
	ErrorReasonImageInUse = "IMAGE_IN_USE"
	// ErrorReasonImageUnnamed: an archive to import names no image (InvalidArgument).
	ErrorReasonImageUnnamed = "IMAGE_UNNAMED"
	// ErrorReasonNoCommand: the image has neither entrypoint nor cmd and
	// the request gave none (InvalidArgument).
	ErrorReasonNoCommand = "NO_COMMAND"
	// ErrorReasonContainerNotFound: no such container (NotFound).
	ErrorReasonContainerNotFound = "CONTAINER_NOT_FOUND"
	// ErrorReasonContainerExists: the container ID is taken (AlreadyExists).
	ErrorReasonContainerExists = "CONTAINER_EXISTS"
	// ErrorReasonContainerRunning: a removal without force of a running
	// container (FailedPrecondition).
	ErrorReasonContainerRunning = "CONTAINER_RUNNING"
	// ErrorReasonStdinNeedsTTY: stdin for a container's main process
	// without a terminal (InvalidArgument).
	ErrorReasonStdinNeedsTTY = "STDIN_NEEDS_TTY"
)

// WithErrorReason returns st with an ErrorInfo of reason in ErrorDomain; st
// itself if the detail cannot be attached (the code and message still say
// what happened).
func WithErrorReason(st *status.Status, reason string) *status.Status {
	return WithErrorInfo(st, reason, nil)
}

// WithErrorInfo is WithErrorReason with metadata.
func WithErrorInfo(st *status.Status, reason string, metadata map[string]string) *status.Status {
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: metadata}); err == nil {
		return d
	}
	return st
}

// ErrorInfo is the ErrorInfo in ErrorDomain that err's gRPC status
// carries, or nil.
func ErrorInfo(err error) *errdetails.ErrorInfo {
	var se interface{ GRPCStatus() *status.Status }
	if err == nil || !errors.As(err, &se) {
		return nil
	}
	for _, d := range se.GRPCStatus().Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Domain == ErrorDomain {
			return ei
		}
	}
	return nil
}

// NotLeader is the error a standby master answers with: Unavailable, and
// ErrorInfo NOT_LEADER naming the leader's address (empty: none known).
func NotLeader(leader string) error {
	msg := "this master is a standby: no master leads at the moment; try again shortly"
	if leader != "" {
		msg = "this master is a standby: the leader is " + leader
	}
	return WithErrorInfo(status.New(codes.Unavailable, msg), ErrorReasonNotLeader, map[string]string{"leader": leader}).Err()
}

// LeaderHint says whether err is a standby's NOT_LEADER answer, and the
// leader's address it names ("" when it knows none).
func LeaderHint(err error) (leader string, ok bool) {
	ei := ErrorInfo(err)
	if ei.GetReason() != ErrorReasonNotLeader {
		return "", false
	}
	return ei.GetMetadata()["leader"], true
}

// ErrorReason is the reason of ErrorInfo(err), or "".
func ErrorReason(err error) string {
	return ErrorInfo(err).GetReason()
}
