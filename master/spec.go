package master

import (
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gearboxd/gearbox/internal/launchspec"
	"github.com/gearboxd/gearbox/master/store"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// taskSpec is the container a LaunchTask asks for: its container spec,
// with the older fields (image, command, resources) filled in where the
// spec leaves them out, and refused where the two disagree. It is checked
// as the agent checks a LaunchContainer (launchspec), so that a task the
// agent would refuse is refused here, with the same words.
func taskSpec(req *masterv1.LaunchTaskRequest) (*agentv1.LaunchContainerRequest, error) {
	spec := &agentv1.LaunchContainerRequest{}
	if req.GetContainer() != nil {
		spec = proto.Clone(req.GetContainer()).(*agentv1.LaunchContainerRequest)
	}
	if id := spec.GetContainerId(); id != "" && id != req.GetTaskId() {
		return nil, status.Errorf(codes.InvalidArgument, "container.container_id %q differs from task_id %q: a task's container is named by the task's ID (leave container_id empty)", id, req.GetTaskId())
	}
	spec.ContainerId = req.GetTaskId()
	if img := req.GetImage(); img != "" {
		if spec.Image != "" && spec.Image != img {
			return nil, status.Errorf(codes.InvalidArgument, "image %q and container.image %q disagree: give one, or the same in both", img, spec.Image)
		}
		spec.Image = img
	}
	if spec.Image == "" {
		return nil, status.Error(codes.InvalidArgument, "no image: name the image the task runs")
	}
	if cmd := req.GetCommand(); len(cmd) > 0 {
		if spec.Cmd != nil && !slices.Equal(spec.Cmd.GetValues(), cmd) {
			return nil, status.Errorf(codes.InvalidArgument, "command %q and container.cmd %q disagree: give one, or the same in both", cmd, spec.Cmd.GetValues())
		}
		spec.Cmd = &agentv1.StringList{Values: cmd}
	}
	if err := mergeResources(spec, req.GetResources()); err != nil {
		return nil, err
	}
	if err := launchspec.Validate(spec); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "container: %v", err)
	}
	return spec, nil
}

// mergeResources fills the spec's cpus and memory from the older
// resources field, refusing values that differ.
func mergeResources(spec *agentv1.LaunchContainerRequest, r *masterv1.Resources) error {
	if r.GetCpus() == 0 && r.GetMemoryBytes() == 0 {
		return nil
	}
	if spec.Resources == nil {
		spec.Resources = &agentv1.Resources{}
	}
	if c := r.GetCpus(); c > 0 {
		if spec.Resources.Cpus > 0 && spec.Resources.Cpus != c {
			return status.Errorf(codes.InvalidArgument, "resources.cpus %g and container.resources.cpus %g disagree: give one, or the same in both", c, spec.Resources.Cpus)
		}
		spec.Resources.Cpus = c
	}
	if m := r.GetMemoryBytes(); m > 0 {
		if spec.Resources.Memory > 0 && spec.Resources.Memory != m {
			return status.Errorf(codes.InvalidArgument, "resources.memory_bytes %d and container.resources.memory %d disagree: give one, or the same in both", m, spec.Resources.Memory)
		}
		spec.Resources.Memory = m
	}
	return nil
}

// taskToAgent is a task as its agent gets it: with its whole container
// spec, credentials included. Only LaunchTask messages carry it.
func taskToAgent(t *store.Task) *masterv1.Task {
	pt := taskToProto(t)
	if t.Container != nil {
		pt.Container = t.Container.Spec
	}
	return pt
}

// publicSpec is a task's container spec as the operator API, events and
// logs show it: without registry credentials, which the master keeps
// only to send to the agent.
func publicSpec(c *store.Container) *agentv1.LaunchContainerRequest {
	if c == nil || c.Spec == nil {
		return nil
	}
	if c.Spec.RegistryAuth == nil {
		return c.Spec
	}
	out := proto.Clone(c.Spec).(*agentv1.LaunchContainerRequest)
	out.RegistryAuth = nil
	return out
}
