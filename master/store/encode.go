package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The kinds of registry entries: bbolt's buckets and etcd's key prefixes
// are named after them.
const (
	KindAgents     = "agents"
	KindTasks      = "tasks"
	KindFrameworks = "frameworks"
	KindWeights    = "weights"
)

// Kinds lists the kinds in the order a batch's writes come.
var Kinds = []string{KindAgents, KindTasks, KindFrameworks, KindWeights}

// Write is one registry entry's new value; a nil Value deletes the entry.
type Write struct {
	Kind  string
	ID    string
	Value []byte
}

// Encode turns a batch into the writes every Store makes: JSON values (a
// role's weight as its number), each entry once, ordered by kind (Kinds)
// then ID. An entry given twice keeps the last value, and a delete wins
// over a put, as applying the puts then the deletes would leave it. An
// empty ID or role is refused.
func (b Batch) Encode() ([]Write, error) {
	byKind := map[string]map[string][]byte{}
	put := func(kind, id string, v any) error {
		if id == "" {
			return fmt.Errorf("an empty ID cannot be stored (%s)", kind)
		}
		data, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding %s %q: %w", kind, id, err)
		}
		byKind[kind][id] = data
		return nil
	}
	for _, k := range Kinds {
		byKind[k] = map[string][]byte{}
	}
	var err error
	for _, a := range b.Agents {
		err = errors.Join(err, put(KindAgents, a.ID, a))
	}
	for _, t := range b.Tasks {
		err = errors.Join(err, put(KindTasks, t.ID, t))
	}
	for _, f := range b.Frameworks {
		err = errors.Join(err, put(KindFrameworks, f.ID, f))
	}
	for role, w := range b.Weights {
		if role == "" {
			return nil, errors.New("a weight of an empty role cannot be stored")
		}
		if w != 0 {
			byKind[KindWeights][role] = []byte(strconv.FormatFloat(w, 'g', -1, 64))
		}
	}
	if err != nil {
		return nil, err
	}
	del := func(kind string, ids []string) {
		for _, id := range ids {
			byKind[kind][id] = nil
		}
	}
	del(KindAgents, b.DeleteAgents)
	del(KindTasks, b.DeleteTasks)
	del(KindFrameworks, b.DeleteFrameworks)
	for role, w := range b.Weights {
		if w == 0 {
			del(KindWeights, []string{role})
		}
	}
	var out []Write
	for _, k := range Kinds {
		start := len(out)
		for id, v := range byKind[k] {
			out = append(out, Write{Kind: k, ID: id, Value: v})
		}
		slices.SortFunc(out[start:], func(x, y Write) int { return strings.Compare(x.ID, y.ID) })
	}
	return out, nil
}

// Decode reads one stored entry of a kind.
func Decode[T any](kind, id string, data []byte) (T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("registry entry %s %q: %w", kind, id, err)
	}
	return v, nil
}

// DecodeWeight reads one stored role's weight.
func DecodeWeight(role string, data []byte) (float64, error) {
	w, err := strconv.ParseFloat(string(data), 64)
	if err != nil {
		return 0, fmt.Errorf("registry weight of role %q: %w", role, err)
	}
	return w, nil
}
