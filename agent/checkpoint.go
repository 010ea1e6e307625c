package agent

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/atomicfile"
	"github.com/gearboxd/gearbox/internal/ids"
)

// CheckpointVersion is the schema of the files under work_dir/meta.
const CheckpointVersion = 1

// checkpoint keeps, under work_dir/meta, what the agent must not forget
// across a restart or a crash:
//
//	meta/agent.json              schema version, agent ID, boot ID
//	meta/containers/<id>.json    each container's launch and last known state
//
// Every file is written with internal/atomicfile: when a write returns,
// the new content is on disk under its name (file and directory fsynced),
// and a crash at any point leaves the old content or the new one. What
// that promises:
//
//   - a container's file is durable before containerd is asked to create
//     it (the containerizer checkpoints it first), so after a crash or a
//     power loss the agent never finds in containerd a container it does
//     not know, and never takes it for an unknown one and deletes its
//     sandbox. Until 2026-12 these files were not fsynced, which did just
//     that after a power loss;
//   - each later state (running, exited) is durable before the master is
//     told of it (OnChange writes it, then queues the status update);
//   - a removal is not fsynced: a file that a power loss brings back names
//     a container containerd no longer has, which recovery shows as
//     vanished (TASK_LOST, or TASK_GONE after a reboot) until removed again.
//
// The cost is an fsync of a small file and of its directory per write,
// a few milliseconds on these disks, paid on each state change.
// Otherwise a file that cannot be read stops the agent with a message
// naming it; nothing is killed. With a master, meta/master.json (the agent ID it
// assigned) and meta/updates/ (status updates it has not acknowledged)
// live here too; agent/master.go keeps them.
type checkpoint struct {
	dir string
	mu  sync.Mutex
}

type agentMeta struct {
	SchemaVersion int    `json:"schema_version"`
	AgentID       string `json:"agent_id"`
	BootID        string `json:"boot_id"`
}

type containerRecord struct {
	SchemaVersion int                     `json:"schema_version"`
	Container     containerizer.Container `json:"container"`
}

// ErrCorruptCheckpoint is wrapped by every error about an unreadable file.
var ErrCorruptCheckpoint = errors.New("corrupt checkpoint")

func newCheckpoint(workDir string) (*checkpoint, error) {
	c := &checkpoint{dir: filepath.Join(workDir, "meta")}
	if err := os.MkdirAll(filepath.Join(c.dir, "containers"), 0o700); err != nil {
		return nil, err
	}
	// Writes of agent.json or master.json a crash interrupted.
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if atomicfile.Leftover(e.Name()) {
			os.Remove(filepath.Join(c.dir, e.Name()))
		}
	}
	return c, nil
}

func (c *checkpoint) corrupt(path string, err error) error {
	return fmt.Errorf("%w: %s cannot be read (%v). The agent stopped and touched no container. "+
		"Move the file aside (mv %s %s.corrupt) and start the agent again: a container file moved aside makes that container unknown, "+
		"so start with --unknown-containers=keep to keep it running", ErrCorruptCheckpoint, path, err, path, path)
}

// loadMeta returns the agent's meta; ok is false on a first start.
func (c *checkpoint) loadMeta() (agentMeta, bool, error) {
	var m agentMeta
	path := filepath.Join(c.dir, "agent.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, false, c.corrupt(path, err)
	}
	if m.SchemaVersion != CheckpointVersion {
		return m, false, c.corrupt(path, fmt.Errorf("schema version %d, this agent reads %d", m.SchemaVersion, CheckpointVersion))
	}
	if m.AgentID == "" {
		return m, false, c.corrupt(path, errors.New("no agent ID"))
	}
	return m, true, nil
}

func (c *checkpoint) saveMeta(m agentMeta) error {
	m.SchemaVersion = CheckpointVersion
	return c.write(filepath.Join(c.dir, "agent.json"), m)
}

// loadContainers reads every container file. After a reboot an unreadable
// one is dropped: its container is gone with the host's previous boot.
func (c *checkpoint) loadContainers(rebooted bool, log func(path string, err error)) (map[containerizer.ContainerID]containerizer.Container, error) {
	dir := filepath.Join(c.dir, "containers")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[containerizer.ContainerID]containerizer.Container{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") {
			if atomicfile.Leftover(name) {
				os.Remove(filepath.Join(dir, name)) // a write the agent did not finish
			}
			continue
		}
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var r containerRecord
		if err := json.Unmarshal(data, &r); err != nil {
			if rebooted {
				log(path, err)
				os.Remove(path)
				continue
			}
			return nil, c.corrupt(path, err)
		}
		if r.SchemaVersion != CheckpointVersion {
			return nil, c.corrupt(path, fmt.Errorf("schema version %d, this agent reads %d", r.SchemaVersion, CheckpointVersion))
		}
		id := r.Container.ID
		if ids.Validate(string(id)) != nil || string(id)+".json" != name {
			return nil, c.corrupt(path, fmt.Errorf("it names container %q", id))
		}
		out[id] = r.Container
	}
	return out, nil
}

// update records a container's state, or forgets it once removed.
func (c *checkpoint) update(ct containerizer.Container, removed bool) error {
	if ids.Validate(string(ct.ID)) != nil {
		return fmt.Errorf("not checkpointing invalid container ID %q", ct.ID)
	}
	path := filepath.Join(c.dir, "containers", string(ct.ID)+".json")
	if removed {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return c.write(path, containerRecord{SchemaVersion: CheckpointVersion, Container: ct})
}

// write stores v as JSON at path, durably (atomicfile.Write).
func (c *checkpoint) write(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return atomicfile.Write(path, append(data, '\n'), 0o600)
}

// bootID identifies this boot of the host.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func newAgentID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// updatesDir holds the master client's unacknowledged status updates.
func (c *checkpoint) updatesDir() string { return filepath.Join(c.dir, "updates") }

// loadMasterMeta returns the agent ID a master assigned, if one did.
func (c *checkpoint) loadMasterMeta() (masterMeta, error) {
	var m masterMeta
	path := filepath.Join(c.dir, "master.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, c.corrupt(path, err)
	}
	return m, nil
}

// saveMasterMeta keeps the agent ID a master assigned, durably.
func (c *checkpoint) saveMasterMeta(m masterMeta) error {
	return c.write(filepath.Join(c.dir, "master.json"), m)
}
