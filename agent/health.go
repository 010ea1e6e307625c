package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/checks"
	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/atomicfile"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/ids"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// health runs the containers' health checks for the agent: one
// checks.Scheduler for all of them. A container's check is resolved at
// launch (the request's, else the image's HEALTHCHECK unless
// no_healthcheck) and checkpointed under work_dir/meta/checks/<id>.json
// before it runs, so that a new agent checks the containers it recovers.
// The checkpoint goes with the container (RemoveContainer); checks stop
// when it is terminal and start again if it runs again with the same ID.
// A container that fails its check consecutive_failures times is killed
// with its kill policy's grace and ends TASK_KILLED with
// REASON_TASK_UNHEALTHY and the last output.
type health struct {
	log   *slog.Logger
	dir   string
	sched *checks.Scheduler
	// cz is set once the containerizer is built, before the scheduler runs.
	cz containerizer.Containers
	sx containerizer.Sessions
	// onChange hears every change of a container's health (the master
	// client); nil without a master.
	onChange func(c containerizer.Container, s checks.Status)

	mu   sync.Mutex
	recs map[containerizer.ContainerID]healthRecord
	// running: the start (StartedAt) the scheduler checks, per container.
	running map[containerizer.ContainerID]time.Time
}

// healthRecord is a container's check as checkpointed.
type healthRecord struct {
	SchemaVersion int          `json:"schema_version"`
	Check         checks.Check `json:"check"`
	// KillGrace is the kill policy's grace period: SIGTERM, then SIGKILL.
	KillGrace time.Duration `json:"kill_grace,omitempty"`
}

func newHealth(workDir string, log *slog.Logger) (*health, error) {
	h := &health{log: log, dir: filepath.Join(workDir, "meta", "checks"),
		recs: map[containerizer.ContainerID]healthRecord{}, running: map[containerizer.ContainerID]time.Time{}}
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(h.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		path := filepath.Join(h.dir, e.Name())
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || ids.Validate(id) != nil {
			os.Remove(path) // a write the agent did not finish
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var r healthRecord
		if err := json.Unmarshal(data, &r); err != nil || r.SchemaVersion != CheckpointVersion {
			return nil, fmt.Errorf("%w: %s cannot be read (%v): move it aside and start the agent again; that container then runs unchecked", ErrCorruptCheckpoint, path, err)
		}
		h.recs[containerizer.ContainerID(id)] = r
	}
	h.sched = checks.New(checks.Config{
		Env:      checks.Env{Exec: h.exec, Pid: h.pid},
		Workers:  16,
		OnChange: h.changed,
		OnFailed: h.failed,
		Log:      log,
	})
	return h, nil
}

// resolve is the check a launch asks for: the request's (validated: an
// error is InvalidArgument naming the field), or nil. The image's
// HEALTHCHECK is looked at once the container exists (start).
func resolveHealth(req *agentv1.LaunchContainerRequest) (*checks.Check, error) {
	if req.GetHealthCheck() == nil || req.GetNoHealthcheck() {
		if req.GetHealthCheck() != nil {
			return nil, errs.New(errdefs.ErrInvalidArgument, "no_healthcheck: contradicts health_check: give one or the other")
		}
		return nil, nil
	}
	c, err := checks.FromProto(req.GetHealthCheck())
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// start checks a container that was just launched: with c when the launch
// gave one, else with its image's HEALTHCHECK unless noImage.
func (h *health) start(info containerizer.Container, c *checks.Check, noImage bool, grace time.Duration) {
	if c == nil && !noImage && info.ImageHealthcheck != nil {
		ih := info.ImageHealthcheck
		if p := checks.FromDocker(ih.Test, ih.Interval, ih.Timeout, ih.StartPeriod, ih.Retries); p != nil {
			ic, err := checks.FromProto(p)
			if err != nil {
				h.log.Warn("the image's HEALTHCHECK is not usable; the container runs unchecked", "container_id", info.ID, "image", info.Image, "err", err)
			} else {
				c = &ic
			}
		}
	}
	if c == nil {
		return
	}
	r := healthRecord{SchemaVersion: CheckpointVersion, Check: *c, KillGrace: grace}
	if err := h.save(info.ID, r); err != nil {
		h.log.Error("checkpointing a container's health check; it is checked until the agent stops", "container_id", info.ID, "err", err)
	}
	h.mu.Lock()
	h.recs[info.ID] = r
	h.mu.Unlock()
	h.observe(info, false)
	// It may have ended, or even been removed (auto_remove), before its
	// check was known.
	now, err := h.cz.Get(context.Background(), info.ID)
	switch {
	case errdefs.IsNotFound(err):
		h.observe(info, true)
	case err == nil && now.State.Terminal():
		h.observe(now, false)
	}
}

func (h *health) save(id containerizer.ContainerID, r healthRecord) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(h.dir, string(id)+".json"), append(data, '\n'), 0o600)
}

// observe follows a container's state (the containerizer's OnChange, and
// recovery): checks run while it runs, stop when it is terminal, and are
// forgotten with it.
func (h *health) observe(c containerizer.Container, removed bool) {
	h.mu.Lock()
	r, ok := h.recs[c.ID]
	started, checked := h.running[c.ID]
	switch {
	case !ok:
	case removed:
		delete(h.recs, c.ID)
		delete(h.running, c.ID)
		os.Remove(filepath.Join(h.dir, string(c.ID)+".json"))
	case c.State == containerizer.TaskRunning && (!checked || !started.Equal(c.StartedAt)):
		h.running[c.ID] = c.StartedAt
		h.mu.Unlock()
		h.sched.Add(string(c.ID), r.Check, c.StartedAt)
		return
	case c.State.Terminal() && checked:
		delete(h.running, c.ID)
	default:
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	h.sched.Remove(string(c.ID))
}

// recover starts checking the recovered containers that have a check and
// forgets the checks of containers that are gone.
func (h *health) recover(cs []containerizer.Container) {
	known := map[containerizer.ContainerID]bool{}
	for _, c := range cs {
		known[c.ID] = true
		h.observe(c, false)
	}
	h.mu.Lock()
	var gone []containerizer.ContainerID
	for id := range h.recs {
		if !known[id] {
			gone = append(gone, id)
		}
	}
	h.mu.Unlock()
	for _, id := range gone {
		h.observe(containerizer.Container{ID: id}, true)
	}
}

// status is a container's health for the Agent API; ok is false when it
// has no check running.
func (h *health) status(id containerizer.ContainerID) (checks.Status, bool) {
	return h.sched.Status(string(id))
}

func (h *health) exec(ctx context.Context, id string, args []string, out io.Writer) (int32, error) {
	e, err := h.sx.Exec(ctx, containerizer.ContainerID(id), containerizer.ExecConfig{Args: args}, containerizer.ExecIO{Stdout: out, Stderr: out})
	if err != nil {
		return -1, err
	}
	defer e.Close()
	return e.Wait(ctx)
}

func (h *health) pid(ctx context.Context, id string) (uint32, error) {
	c, err := h.cz.Get(ctx, containerizer.ContainerID(id))
	if err != nil {
		return 0, err
	}
	if c.State != containerizer.TaskRunning {
		return 0, fmt.Errorf("container %s is not running (%s)", id, c.State)
	}
	return c.Pid, nil
}

func (h *health) changed(id string, s checks.Status) {
	if h.onChange == nil {
		return
	}
	c, err := h.cz.Get(context.Background(), containerizer.ContainerID(id))
	if err != nil || c.State != containerizer.TaskRunning {
		return
	}
	h.onChange(c, s)
}

// failed kills a container whose check failed consecutive_failures times,
// with its kill policy's grace.
func (h *health) failed(id string, c checks.Check, s checks.Status) {
	h.mu.Lock()
	r := h.recs[containerizer.ContainerID(id)]
	h.mu.Unlock()
	req := containerizer.KillRequest{Signal: syscall.SIGKILL, Reason: typesv1.Reason_REASON_TASK_UNHEALTHY,
		Message: fmt.Sprintf("killed after %d failed health checks in a row (%s); last output: %s", s.Failures, c, s.Output)}
	if r.KillGrace > 0 {
		req.Signal, req.Grace = syscall.SIGTERM, r.KillGrace
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := h.cz.Kill(ctx, containerizer.ContainerID(id), req)
	if err != nil && !errors.Is(err, context.Canceled) {
		h.log.Info("killing a container that failed its health check", "container_id", id, "err", err)
		return
	}
	h.log.Warn("killed a container that failed its health check", "container_id", id, "output", s.Output)
}

// healthToProto fills a container's health fields.
func healthToProto(p *agentv1.Container, s checks.Status) {
	p.Health, p.HealthOutput, p.HealthFailures, p.HealthCheckedAt = s.State, s.Output, uint32(s.Failures), ts(s.CheckedAt)
}

// launchChecked is admission.launch with the health check req asks for:
// validated before anything is launched, run once the container runs.
func (ad *admission) launchChecked(ctx context.Context, cfg containerizer.LaunchConfig, req *agentv1.LaunchContainerRequest) (containerizer.Container, error) {
	hc, err := resolveHealth(req)
	if err != nil {
		return containerizer.Container{}, err
	}
	c, err := ad.launch(ctx, cfg)
	if err == nil && ad.health != nil && c.State == containerizer.TaskRunning {
		ad.health.start(c, hc, req.GetNoHealthcheck(), req.GetKillPolicy().GetGracePeriod().AsDuration())
	}
	return c, err
}
