package master

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// LoadConfig reads a TOML file over the defaults (examples/master.toml).
// Unknown keys are errors: a misspelt key must not be silently ignored.
// Durations are written as Go writes them ("5s", "336h").
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, 0, len(und))
		for _, k := range und {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		return cfg, fmt.Errorf("config %s: unknown key(s) %s", path, strings.Join(keys, ", "))
	}
	return cfg, nil
}

// setting names config keys as a message to the user does, each with the
// flag that overrides it: "agent_ping_timeout (--agent-ping-timeout)";
// several: "tls_cert, tls_key and tls_client_ca (--tls-cert, --tls-key,
// --tls-client-ca)". It takes the flags' names.
func setting(flags ...string) string {
	keys := make([]string, len(flags))
	dashed := make([]string, len(flags))
	for i, f := range flags {
		keys[i], dashed[i] = strings.ReplaceAll(f, "-", "_"), "--"+f
	}
	k := keys[0]
	if n := len(keys); n > 1 {
		k = strings.Join(keys[:n-1], ", ") + " and " + keys[n-1]
	}
	return k + " (" + strings.Join(dashed, ", ") + ")"
}
