package main

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"

	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// explain is an error as the CLI prints it: what happened, then what to
// type next. The agent's messages say only what happened (the same error
// may answer a master's launch); the ErrorInfo they carry lets the CLI,
// which knows the command it runs, add the next step.
func explain(cmd *cobra.Command, err error) string {
	return describe(err) + hint(cmd, err)
}

// hint is the next step for an error of the agent, "" if there is none to give.
func hint(cmd *cobra.Command, err error) string {
	if cmd == nil {
		return ""
	}
	if cmd.Name() == "agent" && errdefs.IsUnavailable(err) {
		// The agent could not reach containerd at start.
		return "; to try gearbox without a containerd of the host's, gearbox dev starts a private one"
	}
	info := typesv1.ErrorInfo(err)
	if info == nil {
		return ""
	}
	image, id := info.GetMetadata()["image"], info.GetMetadata()["container_id"]
	or := func(s, dflt string) string {
		if s == "" {
			return dflt
		}
		return s
	}
	switch info.GetReason() {
	case typesv1.ErrorReasonImageNotFound:
		if cmd.CommandPath() == "gearbox image rm" {
			return " (gearbox image ls lists them)"
		}
		return fmt.Sprintf(": pull it first (gearbox image pull %s) or import it (gearbox image import FILE)", or(image, "IMAGE"))
	case typesv1.ErrorReasonImageInUse:
		return fmt.Sprintf(": remove them first or force it (gearbox image rm -f %s)", or(image, "IMAGE"))
	case typesv1.ErrorReasonImageUnnamed:
		return ": give it a name (gearbox image import --name REF FILE)"
	case typesv1.ErrorReasonNoCommand:
		if cmd.Name() == "debug" {
			return fmt.Sprintf(": give a command (gearbox debug %s --image %s -- CMD…)", or(id, "ID"), or(image, "IMAGE"))
		}
		return fmt.Sprintf(": give a command (gearbox run %s CMD…)", or(image, "IMAGE"))
	case typesv1.ErrorReasonContainerNotFound:
		return " (gearbox ps -a lists them)"
	case typesv1.ErrorReasonContainerExists:
		return fmt.Sprintf(": choose another name or remove it (gearbox rm %s)", or(id, "ID"))
	case typesv1.ErrorReasonContainerRunning:
		return fmt.Sprintf(": kill it first (gearbox kill %[1]s) or force the removal (gearbox rm -f %[1]s)", or(id, "ID"))
	case typesv1.ErrorReasonStdinNeedsTTY:
		return " (-i without -t): add -t, or run the command in a session (gearbox exec -i)"
	}
	return ""
}
