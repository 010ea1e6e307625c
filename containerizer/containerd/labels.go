package containerd

import (
	"encoding"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/launchspec"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Labels on every gearbox container in containerd. They are the record a
// restarted agent recovers from.
const (
	labelID          = "gearbox.id"
	labelImage       = "gearbox.image"
	labelRuntime     = "gearbox.runtime"
	labelAutoRemove  = "gearbox.auto_remove"
	labelState       = "gearbox.state"
	labelReason      = "gearbox.reason"
	labelMessage     = "gearbox.message"
	labelExitCode    = "gearbox.exit_code"
	labelStartedAt   = "gearbox.started_at"
	labelFinishedAt  = "gearbox.finished_at"
	labelLogDriver   = "gearbox.log.driver"
	labelLogMaxSize  = "gearbox.log.max_size"
	labelLogMaxFiles = "gearbox.log.max_files"
	labelLogMode     = "gearbox.log.mode"
	labelPrivileged  = "gearbox.privileged"
	labelResources   = "gearbox.resources"
	labelStdin       = "gearbox.stdin"
	labelTTY         = "gearbox.tty"
	labelKillGrace   = "gearbox.kill_grace"
	labelPull        = "gearbox.pull"
	labelNetwork     = "gearbox.network"
	// User labels are kept under this prefix.
	labelUserPrefix = "gearbox.label/"
)

// containerd refuses labels whose key and value exceed 4096 bytes together.
const maxLabelValue = launchspec.MaxLabel

func launchLabels(cfg containerizer.LaunchConfig, image string) map[string]string {
	l := map[string]string{
		labelID:      string(cfg.ID),
		labelImage:   image,
		labelRuntime: cfg.Runtime,
	}
	if cfg.AutoRemove {
		l[labelAutoRemove] = "true"
	}
	l[labelLogDriver] = cfg.Log.Driver
	l[labelLogMaxSize] = strconv.FormatInt(cfg.Log.MaxSize, 10)
	l[labelLogMaxFiles] = strconv.Itoa(cfg.Log.MaxFiles)
	l[labelLogMode] = cfg.Log.Mode
	if cfg.Privileged {
		l[labelPrivileged] = "true"
	}
	if cfg.Stdin {
		l[labelStdin] = "true"
	}
	if cfg.TTY {
		l[labelTTY] = "true"
	}
	if cfg.KillGrace > 0 {
		l[labelKillGrace] = cfg.KillGrace.String()
	}
	if cfg.Pull != 0 {
		l[labelPull] = cfg.Pull.String()
	}
	if b, err := json.Marshal(cfg.Resources); err == nil {
		l[labelResources] = string(b)
	}
	if !cfg.Network.IsHost() {
		if b, err := json.Marshal(cfg.Network); err == nil {
			l[labelNetwork] = string(b)
		}
	}
	for k, v := range cfg.Labels {
		l[labelUserPrefix+k] = v
	}
	return l
}

// terminalLabels records a terminal state.
func terminalLabels(info containerizer.Container) map[string]string {
	l := map[string]string{
		labelState:      text(info.State),
		labelReason:     text(info.Reason),
		labelMessage:    clip(info.Message, maxLabelValue),
		labelFinishedAt: info.FinishedAt.UTC().Format(time.RFC3339Nano),
	}
	if !info.StartedAt.IsZero() {
		l[labelStartedAt] = info.StartedAt.UTC().Format(time.RFC3339Nano)
	}
	if info.ExitCode != nil {
		l[labelExitCode] = strconv.Itoa(int(*info.ExitCode))
	}
	return l
}

// applyLabels fills info from a container's labels.
func applyLabels(info *containerizer.Container, l map[string]string) {
	info.ID = containerizer.ContainerID(l[labelID])
	info.Image = l[labelImage]
	info.Runtime = l[labelRuntime]
	info.AutoRemove = l[labelAutoRemove] == "true"
	info.Log.Driver = l[labelLogDriver]
	if info.Log.Driver == "" {
		info.Log.Driver = "sandbox" // containers from before loggers were configurable
	}
	info.Log.MaxSize, _ = strconv.ParseInt(l[labelLogMaxSize], 10, 64)
	info.Log.MaxFiles, _ = strconv.Atoi(l[labelLogMaxFiles])
	info.Log.Mode = l[labelLogMode]
	info.Privileged = l[labelPrivileged] == "true"
	info.Stdin = l[labelStdin] == "true"
	info.TTY = l[labelTTY] == "true"
	info.KillGrace, _ = time.ParseDuration(l[labelKillGrace])
	info.Pull = containerizer.PullPolicy(typesv1.PullPolicy_value[l[labelPull]])
	if r := l[labelResources]; r != "" {
		json.Unmarshal([]byte(r), &info.Resources)
	}
	if n := l[labelNetwork]; n != "" {
		json.Unmarshal([]byte(n), &info.Network)
	}
	for k, v := range l {
		if uk, ok := strings.CutPrefix(k, labelUserPrefix); ok {
			if info.Labels == nil {
				info.Labels = map[string]string{}
			}
			info.Labels[uk] = v
		}
	}
	if s := l[labelState]; s != "" {
		// A name this gearbox does not know (a newer one wrote it) leaves
		// the field unspecified, as it did when these were strings.
		_ = info.State.UnmarshalText([]byte(s))
		_ = info.Reason.UnmarshalText([]byte(l[labelReason]))
		info.Message = l[labelMessage]
		info.FinishedAt, _ = time.Parse(time.RFC3339Nano, l[labelFinishedAt])
		info.StartedAt, _ = time.Parse(time.RFC3339Nano, l[labelStartedAt])
		if v, err := strconv.Atoi(l[labelExitCode]); err == nil {
			c := int32(v)
			info.ExitCode = &c
		}
	}
}

// text is a state's or reason's name, "" for the unspecified value.
func text(v encoding.TextMarshaler) string {
	b, _ := v.MarshalText()
	return string(b)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
